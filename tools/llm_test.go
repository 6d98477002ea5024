package tools_test

import (
	"context"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/contractual/contractual/contracts/contract"
	contractualv1 "github.com/contractual/contractual/contracts/gen/contractual/v1"
	"github.com/contractual/contractual/internal/errs"
	"github.com/contractual/contractual/runtime/egress"
	"github.com/contractual/contractual/runtime/egress/egresstest"
	"github.com/contractual/contractual/runtime/sandbox"
	"github.com/contractual/contractual/runtime/secretscan"
)

const llmKey = "sk-proj-Q3vN8xTt0aLmW2pRzY7kE5uH1cJ9bD4f"

// llmSecret hands out LLM_API_KEY for the api.openai.com audience only, as
// the broker would for a decided call, and counts what it is asked for.
type llmSecret struct{ asked atomic.Int32 }

func (s *llmSecret) Secret(_ context.Context, name string, aud egress.Audience) ([]byte, error) {
	s.asked.Add(1)
	if name != "LLM_API_KEY" || aud.String() != "https://api.openai.com" {
		return nil, errs.E(errs.PermissionDenied, "no secret %s for %s", name, aud)
	}
	return []byte(llmKey), nil
}

// llmRequest is what the provider got.
type llmRequest struct{ Method, Host, Path, Auth, ContentType, Accept, UserAgent, Body string }

// llmServer is a Chat Completions endpoint; the request's model picks the
// answer: "echo" writes the Authorization header back in the message,
// "rate-limited" is a 429, "broken" a 500, "binary" a body that is not
// UTF-8, and a request with "stream": true gets server-sent events.
type llmServer struct {
	mu   sync.Mutex
	reqs []llmRequest
}

const (
	llmAnswer = `{"id":"chatcmpl-1","object":"chat.completion","created":1764554400,"model":"gpt-4o-mini","choices":[{"index":0,"message":{"role":"assistant","content":"Hello <b>&</b> \"there\"\n"},"finish_reason":"stop"}],"usage":{"prompt_tokens":9,"completion_tokens":4,"total_tokens":13}}` + "\n"
	llm429    = `{"error":{"message":"Rate limit reached for gpt-4o-mini","type":"requests","param":null,"code":"rate_limit_exceeded"}}` + "\n"
	llm500    = `{"error":{"message":"The server had an error while processing your request.","type":"server_error","param":null,"code":null}}` + "\n"
	llmSSE    = "data: {\"id\":\"chatcmpl-2\",\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"Hel\"}}]}\n\n" +
		"data: {\"id\":\"chatcmpl-2\",\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"lo ✓\"},\"finish_reason\":\"stop\"}]}\n\n" +
		"data: [DONE]\n\n"
)

func (s *llmServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	s.mu.Lock()
	s.reqs = append(s.reqs, llmRequest{r.Method, r.Host, r.URL.Path, r.Header.Get("Authorization"),
		r.Header.Get("Content-Type"), r.Header.Get("Accept"), r.Header.Get("User-Agent"), string(body)})
	s.mu.Unlock()
	if r.Header.Get("Authorization") != "Bearer "+llmKey {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusUnauthorized)
		w.Write([]byte(`{"error":{"message":"Incorrect API key provided.","type":"invalid_request_error","code":"invalid_api_key"}}`))
		return
	}
	var req struct {
		Model  string
		Stream bool
	}
	json.Unmarshal(body, &req)
	switch {
	case req.Stream:
		w.Header().Set("Content-Type", "text/event-stream")
		for _, ev := range strings.SplitAfter(llmSSE, "\n\n") {
			w.Write([]byte(ev))
			w.(http.Flusher).Flush()
		}
	case req.Model == "echo":
		w.Header().Set("Content-Type", "application/json")
		auth := r.Header.Get("Authorization")
		json.NewEncoder(w).Encode(map[string]any{"choices": []any{map[string]any{"message": map[string]any{
			"role": "assistant", "content": fmt.Sprintf("you sent %s (base64 %s, hex %s)", auth,
				base64.StdEncoding.EncodeToString([]byte(auth)), hex.EncodeToString([]byte(llmKey))),
		}}}})
	case req.Model == "rate-limited":
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusTooManyRequests)
		w.Write([]byte(llm429))
	case req.Model == "broken":
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusInternalServerError)
		w.Write([]byte(llm500))
	case req.Model == "binary":
		w.Header().Set("Content-Type", "application/octet-stream")
		w.Write([]byte{0xff, 0xfe, 0x00, 0x01})
	default:
		w.Header().Set("Content-Type", "application/json")
		w.Write([]byte(llmAnswer))
	}
}

func (s *llmServer) requests() []llmRequest {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]llmRequest(nil), s.reqs...)
}

// newLLM serves api.openai.com and, to show that it is never reached,
// api.groq.com.
func newLLM(t *testing.T) (*llmServer, egress.Config) {
	s := &llmServer{}
	srv := egresstest.NewTLSServer(s, "api.openai.com", "api.groq.com")
	t.Cleanup(srv.Close)
	dialer, roots := egresstest.New(map[string]*httptest.Server{"api.openai.com": srv, "api.groq.com": srv})
	return s, egress.Config{Dialer: dialer, RootCAs: roots}
}

type llmOutput struct {
	Status      int    `json:"status"`
	ContentType string `json:"content_type"`
	Body        string `json:"body"`
}

// callLLM calls llm.chat as the runner does (input and output held to the
// tool's schemas) and decodes the output.
func callLLM(t *testing.T, m *sandbox.Module, c *contractualv1.Contract, input string, secrets egress.SecretSource) (llmOutput, *sandbox.Result) {
	t.Helper()
	tool := toolOf(c, "chat")
	if err := contract.CheckInput(tool, []byte(input)); err != nil {
		t.Fatalf("input %s: %v", input, err)
	}
	res, err := m.CallTool(context.Background(), tool, []byte(input), sandbox.WithSecrets(secrets))
	if err != nil {
		t.Fatalf("chat(%s): %v", input, err)
	}
	if err := contract.CheckOutput(tool, res.Output); err != nil {
		t.Fatalf("output %s: %v", res.Output, err)
	}
	var out llmOutput
	dec := json.NewDecoder(strings.NewReader(string(res.Output)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&out); err != nil {
		t.Fatalf("output %s: %v", res.Output, err)
	}
	return out, res
}

// TestLLMChat: the request body reaches POST /v1/chat/completions byte for
// byte, with the key injected by the host; the provider's answer comes back
// whole as {status, content_type, body}.
func TestLLMChat(t *testing.T) {
	srv, cfg := newLLM(t)
	m, c := load(t, newEngine(t, cfg), "llm")
	// Odd spacing, escapes, key order and fields the tool knows nothing
	// about: all of it is the provider's and is sent as it is.
	input := `{ "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi \u00e9 <&>"}],
  "model":"gpt-4o-mini", "temperature": 0.2, "tools": [{"type": "function", "function": {"name": "notify_post", "parameters": {"type": "object"}}}], "tool_choice": "auto" }`
	secrets := &llmSecret{}
	out, res := callLLM(t, m, c, input, secrets)
	if out != (llmOutput{200, "application/json", llmAnswer}) {
		t.Errorf("output %+v", out)
	}
	want := llmRequest{"POST", "api.openai.com", "/v1/chat/completions", "Bearer " + llmKey,
		"application/json", "application/json, text/event-stream", "contractual-llm/1.0", input}
	if got := srv.requests(); len(got) != 1 || got[0] != want {
		t.Errorf("provider got %+v,\nwant %+v", got, want)
	}
	if len(res.Released) != 1 || string(res.Released[0]) != llmKey {
		t.Errorf("released %q", res.Released)
	}
	if len(res.Egress) != 1 || res.Egress[0].URL != "https://api.openai.com/v1/chat/completions" || res.Egress[0].Status != 200 {
		t.Errorf("egress %+v", res.Egress)
	}

	// Without a secret source the request cannot be made with its key: the
	// host refuses it, a tool error.
	_, err := m.CallTool(context.Background(), toolOf(c, "chat"), []byte(input))
	if errs.KindOf(err) != errs.FailedPrecondition {
		t.Errorf("no secrets: %v", err)
	}
	if n := len(srv.requests()); n != 1 {
		t.Errorf("provider got %d requests, want 1", n)
	}
}

// TestLLMErrorStatuses: a provider's error is its answer, not the tool's
// failure: the caller gets the status and body and maps them itself.
func TestLLMErrorStatuses(t *testing.T) {
	srv, cfg := newLLM(t)
	m, c := load(t, newEngine(t, cfg), "llm")
	for _, tt := range []struct {
		model  string
		status int
		body   string
	}{
		{"rate-limited", 429, llm429},
		{"broken", 500, llm500},
	} {
		out, res := callLLM(t, m, c, `{"model": "`+tt.model+`", "messages": [{"role": "user", "content": "hi"}]}`, &llmSecret{})
		if out != (llmOutput{tt.status, "application/json", tt.body}) {
			t.Errorf("%s: output %+v", tt.model, out)
		}
		if len(res.Egress) != 1 || res.Egress[0].Status != tt.status {
			t.Errorf("%s: egress %+v", tt.model, res.Egress)
		}
	}
	// A wrong key is the provider's 401, also passed on.
	out, _ := callLLM(t, m, c, `{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}`, otherKey{})
	if out.Status != 401 || !strings.Contains(out.Body, "invalid_api_key") {
		t.Errorf("wrong key: output %+v", out)
	}
	if n := len(srv.requests()); n != 3 {
		t.Errorf("provider got %d requests, want 3", n)
	}
}

type otherKey struct{}

func (otherKey) Secret(context.Context, string, egress.Audience) ([]byte, error) {
	return []byte("sk-wrong-0000000000000000"), nil
}

// TestLLMStream: a streamed answer (server-sent events) comes back whole,
// event for event, with its content type.
func TestLLMStream(t *testing.T) {
	_, cfg := newLLM(t)
	m, c := load(t, newEngine(t, cfg), "llm")
	out, _ := callLLM(t, m, c, `{"model": "gpt-4o-mini", "stream": true, "messages": [{"role": "user", "content": "hi"}]}`, &llmSecret{})
	if out != (llmOutput{200, "text/event-stream", llmSSE}) {
		t.Errorf("output %+v", out)
	}
}

// TestLLMKeyEchoRedacted: a provider that writes the Authorization header
// back into its answer: the caller gets the answer with the key redacted,
// in every spelling.
func TestLLMKeyEchoRedacted(t *testing.T) {
	_, cfg := newLLM(t)
	m, c := load(t, newEngine(t, cfg), "llm")
	out, res := callLLM(t, m, c, `{"model": "echo", "messages": [{"role": "user", "content": "what is my key?"}]}`, &llmSecret{})
	if out.Status != 200 || !strings.Contains(out.Body, "you sent Bearer [REDACTED] (base64 ") || strings.Count(out.Body, "[REDACTED]") != 3 {
		t.Errorf("output %+v", out)
	}
	for _, spelled := range []string{llmKey, llmKey[:20], base64.StdEncoding.EncodeToString([]byte("Bearer " + llmKey)), hex.EncodeToString([]byte(llmKey))} {
		if strings.Contains(string(res.Output), spelled) {
			t.Errorf("the output holds the key (%s): %s", spelled, res.Output)
		}
	}
	if secretscan.New([][]byte{[]byte(llmKey)}).Contains(res.Output) {
		t.Errorf("the output holds the key in some spelling: %s", res.Output)
	}
}

// TestLLMOtherProviderRefused: a contract whose config url names another
// host (or a private address) than its egress rule does gets its request
// refused by the host before anything is dialed, and the key is never
// fetched.
func TestLLMOtherProviderRefused(t *testing.T) {
	srv, cfg := newLLM(t)
	e := newEngine(t, cfg) // one engine: the module is compiled once
	for _, url := range []string{
		"https://api.groq.com/openai/v1/chat/completions",
		"https://api.openai.com.evil.example/v1/chat/completions",
		"https://127.0.0.1/v1/chat/completions",
		"https://localhost/v1/chat/completions",
	} {
		t.Run(url, func(t *testing.T) {
			m, c := loadEdited(t, e, "llm", func(c *contractualv1.Contract) {
				c.Capabilities.Config["url"] = url
			})
			secrets := &llmSecret{}
			_, err := m.CallTool(context.Background(), toolOf(c, "chat"), []byte(`{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}`), sandbox.WithSecrets(secrets))
			if errs.KindOf(err) != errs.PermissionDenied {
				t.Errorf("POST %s: %v", url, err)
			}
			if n := len(srv.requests()); n != 0 || secrets.asked.Load() != 0 {
				t.Errorf("provider got %d requests; the key was asked for %d times", n, secrets.asked.Load())
			}
			if d := cfg.Dialer.(*egresstest.Dialer).Dialed(); len(d) != 0 {
				t.Errorf("dialed %v", d)
			}
		})
	}
}

// TestLLMBadConfig: a config url that is not https://…/chat/completions is
// the contract's mistake, reported before anything is sent.
func TestLLMBadConfig(t *testing.T) {
	srv, cfg := newLLM(t)
	e := newEngine(t, cfg)
	for _, url := range []string{
		"", "http://api.openai.com/v1/chat/completions", "https://api.openai.com/v1/completions",
		"https://api.openai.com/v1/chat/completions?x=1", "https://user@api.openai.com/v1/chat/completions",
		"https:///chat/completions",
	} {
		m, c := loadEdited(t, e, "llm", func(c *contractualv1.Contract) {
			c.Capabilities.Config["url"] = url
		})
		_, err := m.CallTool(context.Background(), toolOf(c, "chat"), []byte(`{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}`), sandbox.WithSecrets(&llmSecret{}))
		if errs.KindOf(err) != errs.ToolFailed || !strings.Contains(err.Error(), "config: ") {
			t.Errorf("url %q: %v", url, err)
		}
		if n := len(srv.requests()); n != 0 {
			t.Errorf("url %q: provider got %d requests", url, n)
		}
	}
}

// TestLLMInvalidInput: what is not a Chat Completions request is refused
// by the schema and, called directly, by the module, before anything is
// sent; a body that is not UTF-8 is a tool error.
func TestLLMInvalidInput(t *testing.T) {
	srv, cfg := newLLM(t)
	m, c := load(t, newEngine(t, cfg), "llm")
	tool := toolOf(c, "chat")
	for _, input := range []string{
		``, `null`, `[]`, `"hi"`, `{}`,
		`{"model": "gpt-4o-mini"}`,
		`{"model": "gpt-4o-mini", "messages": []}`,
		`{"model": "gpt-4o-mini", "messages": {"role": "user"}}`,
		`{"model": "", "messages": [{"role": "user", "content": "hi"}]}`,
		`{"model": 4, "messages": [{"role": "user", "content": "hi"}]}`,
		`{"messages": [{"role": "user", "content": "hi"}]}`,
	} {
		if err := contract.CheckInput(tool, []byte(input)); errs.KindOf(err) != errs.Invalid {
			t.Errorf("schema, input %q: %v", input, err)
		}
		_, err := m.CallTool(context.Background(), tool, []byte(input), sandbox.WithSecrets(&llmSecret{}))
		if errs.KindOf(err) != errs.ToolFailed || !strings.Contains(err.Error(), "invalid input") {
			t.Errorf("module, input %q: %v", input, err)
		}
	}
	if n := len(srv.requests()); n != 0 {
		t.Errorf("provider got %d requests", n)
	}
	// Trailing data after the object is not a request either.
	_, err := m.CallTool(context.Background(), tool, []byte(`{"model": "m", "messages": [1]} {}`), sandbox.WithSecrets(&llmSecret{}))
	if errs.KindOf(err) != errs.ToolFailed || !strings.Contains(err.Error(), "trailing data") {
		t.Errorf("trailing data: %v", err)
	}

	_, err = m.CallTool(context.Background(), tool, []byte(`{"model": "binary", "messages": [{"role": "user", "content": "hi"}]}`), sandbox.WithSecrets(&llmSecret{}))
	if errs.KindOf(err) != errs.ToolFailed || !strings.Contains(err.Error(), "not UTF-8") {
		t.Errorf("binary body: %v", err)
	}
}
