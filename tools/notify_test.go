package tools_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/contractual/contractual/contracts/contract"
	contractualv1 "github.com/contractual/contractual/contracts/gen/contractual/v1"
	"github.com/contractual/contractual/internal/errs"
	"github.com/contractual/contractual/runtime/egress"
	"github.com/contractual/contractual/runtime/egress/egresstest"
	"github.com/contractual/contractual/runtime/sandbox"
)

const ntfyToken = "tk_AgQdq7mVBoFD37zQVN29RhuMzNIz2"

// ntfySecret hands out NTFY_TOKEN for the ntfy.sh audience only, as the
// broker would for a decided call, and counts what it is asked for.
type ntfySecret struct{ asked atomic.Int32 }

func (s *ntfySecret) Secret(_ context.Context, name string, aud egress.Audience) ([]byte, error) {
	s.asked.Add(1)
	if name != "NTFY_TOKEN" || aud.String() != "https://ntfy.sh" {
		return nil, errs.E(errs.PermissionDenied, "no secret %s for %s", name, aud)
	}
	return []byte(ntfyToken), nil
}

// ntfyServer is ntfy.sh's publish endpoint for one topic: it keeps what it
// is sent and answers as ntfy does; with echo set, it writes the request's
// Authorization header back in the "topic" field.
type ntfyServer struct {
	mu   sync.Mutex
	reqs []ntfyRequest
	echo atomic.Bool
}

type ntfyRequest struct{ Method, Path, Auth, ContentType, Body string }

func (s *ntfyServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	s.mu.Lock()
	s.reqs = append(s.reqs, ntfyRequest{r.Method, r.URL.Path, r.Header.Get("Authorization"), r.Header.Get("Content-Type"), string(body)})
	s.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	if r.Header.Get("Authorization") != "Bearer "+ntfyToken {
		w.WriteHeader(http.StatusForbidden)
		w.Write([]byte(`{"code":40301,"http":403,"error":"forbidden","link":"https://ntfy.sh/docs/publish/#authentication"}` + "\n"))
		return
	}
	topic := strings.TrimPrefix(r.URL.Path, "/")
	if s.echo.Load() {
		topic = r.Header.Get("Authorization")
	}
	json.NewEncoder(w).Encode(map[string]any{"id": "sPs71M8A2T", "time": 1764554400, "expires": 1764597600, "event": "message", "topic": topic, "message": string(body)})
}

func (s *ntfyServer) requests() []ntfyRequest {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]ntfyRequest(nil), s.reqs...)
}

func newNtfy(t *testing.T) (*ntfyServer, egress.Config) {
	s := &ntfyServer{}
	srv := egresstest.NewTLSServer(s, "ntfy.sh", "ntfy.example.com")
	t.Cleanup(srv.Close)
	dialer, roots := egresstest.New(map[string]*httptest.Server{"ntfy.sh": srv, "ntfy.example.com": srv})
	return s, egress.Config{Dialer: dialer, RootCAs: roots}
}

// TestNotifyPost: the text reaches the topic as the body of one POST, with
// the token injected by the host from the secret source; the module never
// sees the token, not even when the server echoes it back.
func TestNotifyPost(t *testing.T) {
	srv, cfg := newNtfy(t)
	m, c := load(t, newEngine(t, cfg), "notify")
	tool := toolOf(c, "post")
	text := "The latest 2 items from 1 feed.\n\nThe Go Blog\n- Go 1.26 is released (2026-02-10)\n  https://go.dev/blog/go1.26"
	input, _ := json.Marshal(map[string]string{"text": text})
	if err := contract.CheckInput(tool, input); err != nil {
		t.Fatal(err)
	}
	secrets := &ntfySecret{}
	res, err := m.CallTool(context.Background(), tool, input, sandbox.WithSecrets(secrets))
	if err != nil {
		t.Fatal(err)
	}
	if err := contract.CheckOutput(tool, res.Output); err != nil || string(res.Output) != `{"id":"sPs71M8A2T","time":1764554400,"topic":"contractual-digest"}` {
		t.Errorf("output %s (%v)", res.Output, err)
	}
	want := ntfyRequest{"POST", "/contractual-digest", "Bearer " + ntfyToken, "text/plain; charset=utf-8", text}
	if got := srv.requests(); len(got) != 1 || got[0] != want {
		t.Errorf("ntfy got %+v, want %+v", got, want)
	}
	if len(res.Released) != 1 || string(res.Released[0]) != ntfyToken {
		t.Errorf("released %q", res.Released)
	}
	if len(res.Egress) != 1 || res.Egress[0].URL != "https://ntfy.sh/contractual-digest" || res.Egress[0].Status != 200 {
		t.Errorf("egress %+v", res.Egress)
	}

	// A server that echoes the token: the module gets it redacted.
	srv.echo.Store(true)
	res, err = m.CallTool(context.Background(), tool, input, sandbox.WithSecrets(secrets))
	if err != nil {
		t.Fatal(err)
	}
	var out struct{ Topic string }
	json.Unmarshal(res.Output, &out)
	if strings.Contains(string(res.Output), ntfyToken) || !strings.HasPrefix(out.Topic, "Bearer ") {
		t.Errorf("echoed token reached the module: %s", res.Output)
	}
	srv.echo.Store(false)

	// Without a secret source the request cannot be made with its token.
	_, err = m.CallTool(context.Background(), tool, input)
	if errs.KindOf(err) != errs.FailedPrecondition {
		t.Errorf("no secrets: %v", err)
	}
	if n := len(srv.requests()); n != 2 {
		t.Errorf("ntfy got %d requests, want 2", n)
	}
}

// TestNotifyTextLimit: the schema caps text at 4096 characters and the
// module at 4096 bytes (ntfy's message size), before anything is sent.
func TestNotifyTextLimit(t *testing.T) {
	srv, cfg := newNtfy(t)
	m, c := load(t, newEngine(t, cfg), "notify")
	tool := toolOf(c, "post")
	if err := contract.CheckInput(tool, []byte(`{"text": "`+strings.Repeat("a", 4097)+`"}`)); errs.KindOf(err) != errs.Invalid {
		t.Errorf("4097 characters: %v", err)
	}
	input := []byte(`{"text": "` + strings.Repeat("é", 4096) + `"}`) // 4096 characters, 8192 bytes
	if err := contract.CheckInput(tool, input); err != nil {
		t.Fatal(err)
	}
	_, err := m.CallTool(context.Background(), tool, input, sandbox.WithSecrets(&ntfySecret{}))
	if errs.KindOf(err) != errs.ToolFailed || !strings.Contains(err.Error(), "at most 4096 bytes") {
		t.Errorf("8192 bytes: %v", err)
	}
	if n := len(srv.requests()); n != 0 {
		t.Errorf("ntfy got %d requests", n)
	}
}

// loadEdited loads a tool's committed module under its contract changed by
// edit: what a publisher's mistake, or a module ignoring its config, would
// ask the host for.
func loadEdited(t *testing.T, e *sandbox.Engine, name string, edit func(*contractualv1.Contract)) (*sandbox.Module, *contractualv1.Contract) {
	t.Helper()
	data, err := os.ReadFile(name + "/contract.yaml")
	if err != nil {
		t.Fatal(err)
	}
	c, err := contract.Load(data, name+"/contract.yaml")
	if err != nil {
		t.Fatal(err)
	}
	c = proto.Clone(c).(*contractualv1.Contract)
	edit(c)
	wasm, err := os.ReadFile(name + "/" + name + ".wasm")
	if err != nil {
		t.Fatal(err)
	}
	m, err := e.Load(context.Background(), wasm, sandbox.GrantsFor(c))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close(context.Background()) })
	return m, c
}

// TestNotifyOtherDestinationRefused: a request anywhere but the contract's
// one topic (another ntfy server, another topic on ntfy.sh) is refused by
// the host before it is dialed, and the token is never fetched.
func TestNotifyOtherDestinationRefused(t *testing.T) {
	for _, tt := range []struct{ key, value, url string }{
		{"server", "https://ntfy.example.com", "https://ntfy.example.com/contractual-digest"},
		{"topic", "someone-elses-topic", "https://ntfy.sh/someone-elses-topic"},
	} {
		t.Run(tt.key, func(t *testing.T) {
			srv, cfg := newNtfy(t)
			m, c := loadEdited(t, newEngine(t, cfg), "notify", func(c *contractualv1.Contract) {
				c.Capabilities.Config[tt.key] = tt.value
			})
			secrets := &ntfySecret{}
			_, err := m.CallTool(context.Background(), toolOf(c, "post"), []byte(`{"text":"hello"}`), sandbox.WithSecrets(secrets))
			if errs.KindOf(err) != errs.PermissionDenied || !strings.Contains(err.Error(), tt.url) {
				t.Errorf("POST %s: %v", tt.url, err)
			}
			if n := len(srv.requests()); n != 0 || secrets.asked.Load() != 0 {
				t.Errorf("ntfy got %d requests; the token was asked for %d times", n, secrets.asked.Load())
			}
			if d := cfg.Dialer.(*egresstest.Dialer).Dialed(); len(d) != 0 {
				t.Errorf("dialed %v", d)
			}
		})
	}
}
