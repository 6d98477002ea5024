package server_test

import (
	"context"
	"net/http"
	"strings"
	"testing"

	"connectrpc.com/connect"

	contractualv1 "github.com/contractual/contractual/contracts/gen/contractual/v1"
	"github.com/contractual/contractual/contracts/gen/contractual/v1/contractualv1connect"
	"github.com/contractual/contractual/internal/engine"
	"github.com/contractual/contractual/internal/engine/modeltest"
	"github.com/contractual/contractual/internal/rpc"
	"github.com/contractual/contractual/internal/server"
)

// startChat runs an all-in-one server whose engine talks to the scripted
// model m directly (a loopback provider).
func startChat(t *testing.T, m *modeltest.Server, mut ...func(*server.Config)) (*server.Server, string) {
	t.Helper()
	dir := t.TempDir()
	cfg := server.Config{DataDir: dir, Addr: "127.0.0.1:0",
		Engine: engine.Config{Model: engine.ModelConfig{Model: "scripted", BaseURL: m.URL}}}
	for _, f := range mut {
		f(&cfg)
	}
	s, err := server.Start(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close(context.Background()) })
	return s, dir
}

// sessionClient is a device's SessionService client through the gateway.
func sessionClient(s *server.Server, tok string) contractualv1connect.SessionServiceClient {
	return contractualv1connect.NewSessionServiceClient(http.DefaultClient, s.URL, connect.WithInterceptors(rpc.Bearer(tok)))
}

// send sends text to session and returns the turn's events.
func send(t *testing.T, c contractualv1connect.SessionServiceClient, session, text string) []*contractualv1.SessionEvent {
	t.Helper()
	st, err := c.Send(context.Background(), &contractualv1.SendRequest{SessionId: session, Text: text})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	var evs []*contractualv1.SessionEvent
	for st.Receive() {
		evs = append(evs, st.Msg().GetEvent())
	}
	if err := st.Err(); err != nil {
		t.Fatalf("send: %v", err)
	}
	return evs
}

// kinds names the events' kinds, for messages.
func kinds(evs []*contractualv1.SessionEvent) string {
	var k []string
	for _, e := range evs {
		k = append(k, strings.TrimPrefix(e.GetKind().String(), "SESSION_EVENT_KIND_"))
	}
	return strings.Join(k, " ")
}

// TestChat is one session end to end: the model proposes a call, policy
// allows it, the runner runs it, the model answers from the result.
func TestChat(t *testing.T) {
	m := modeltest.New(t,
		modeltest.Turn{Content: `{"answer": null, "calls": [{"tool": "textkit.slugify", "input": "{\"text\": \"Hello World\"}"}]}`, PromptTokens: 100, CompletionTokens: 20},
		modeltest.Turn{Content: `{"answer": "The slug is hello-world.", "calls": []}`, PromptTokens: 150, CompletionTokens: 10},
	)
	s, _ := startChat(t, m)
	tok, _ := owner(t, s)
	publishApproved(t, s, tok)
	c := sessionClient(s, tok)
	tools, err := c.ListTools(context.Background(), &contractualv1.ListToolsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, tl := range tools.GetTools() {
		names = append(names, tl.GetName())
		if tl.GetDescription() == "" || !strings.HasPrefix(tl.GetContractDigest(), "sha256:") || tl.GetRisk() != contractualv1.Risk_RISK_LOW {
			t.Errorf("ListTools: %v", tl)
		}
	}
	if strings.Join(names, " ") != "textkit.json_pick textkit.slugify textkit.word_count" {
		t.Errorf("ListTools: %v", names)
	}
	open, err := c.OpenSession(context.Background(), &contractualv1.OpenSessionRequest{})
	if err != nil {
		t.Fatal(err)
	}
	sess := open.GetSession()
	if !strings.HasPrefix(sess.GetPrincipal(), "session:") || len(sess.GetTools()) != 3 {
		t.Fatalf("session %v", sess)
	}
	evs := send(t, c, sess.GetId(), "Slugify Hello World")
	want := "USER MODEL PROPOSAL DECISION RESULT MODEL ANSWER TURN_END"
	if got := kinds(evs); got != want {
		t.Fatalf("events %s, want %s", got, want)
	}
	if d := evs[3]; d.GetVerdict() != contractualv1.Verdict_VERDICT_ALLOW || d.GetDecisionId() == "" {
		t.Errorf("decision %v", d)
	}
	if r := evs[4]; !strings.Contains(r.GetOutput(), "hello-world") || r.GetOutputSha256() == "" {
		t.Errorf("result %v", r)
	}
	if a := evs[6]; a.GetText() != "The slug is hello-world." {
		t.Errorf("answer %q", a.GetText())
	}
	u := evs[7].GetUsage()
	if u.GetToolCalls() != 1 || u.GetPromptTokens() != 250 || u.GetCompletionTokens() != 30 || u.GetTurns() != 1 {
		t.Errorf("usage %v", u)
	}
	reqs := m.Requests()
	if len(reqs) != 2 {
		t.Fatalf("%d model requests", len(reqs))
	}
	last := reqs[1].Messages[len(reqs[1].Messages)-1]
	if last.Role != "user" || !strings.Contains(last.Content, `<tool-output call="t1.1.1" tool="textkit.slugify" status="ok" trust="untrusted">`) ||
		!strings.Contains(last.Content, "hello-world") {
		t.Errorf("the result's message to the model: %s", last.Content)
	}
	got, err := c.GetSession(context.Background(), &contractualv1.GetSessionRequest{Id: sess.GetId()})
	if err != nil {
		t.Fatal(err)
	}
	if got.GetSession().GetState() != contractualv1.SessionState_SESSION_STATE_IDLE || len(got.GetEvents()) != len(evs) {
		t.Errorf("session after the turn: %v, %d events", got.GetSession(), len(got.GetEvents()))
	}
}

// TestChatScopes: sessions are for devices with scope invoke, on the
// streams as on the unary calls; a read-only device is refused before the
// engine sees the call, and a device without a token never gets a stream.
func TestChatScopes(t *testing.T) {
	m := modeltest.New(t)
	s, _ := startChat(t, m)
	tok, _ := owner(t, s)
	publishApproved(t, s, tok)
	open, err := sessionClient(s, tok).OpenSession(context.Background(), &contractualv1.OpenSessionRequest{})
	if err != nil {
		t.Fatal(err)
	}
	id := open.GetSession().GetId()
	reader, _ := pairScoped(t, s, tok, "dashboard", "read")
	rc := sessionClient(s, reader)
	if _, err := rc.OpenSession(context.Background(), &contractualv1.OpenSessionRequest{}); connect.CodeOf(err) != connect.CodePermissionDenied {
		t.Errorf("a read-only device opens a session: %v", err)
	}
	if _, err := rc.ListTools(context.Background(), &contractualv1.ListToolsRequest{}); connect.CodeOf(err) != connect.CodePermissionDenied {
		t.Errorf("a read-only device lists a session's tools: %v", err)
	}
	for name, call := range map[string]func(c contractualv1connect.SessionServiceClient) error{
		"Send": func(c contractualv1connect.SessionServiceClient) error {
			st, err := c.Send(context.Background(), &contractualv1.SendRequest{SessionId: id, Text: "hi"})
			if err != nil {
				return err
			}
			defer st.Close()
			for st.Receive() {
				t.Errorf("Send streamed %v", st.Msg())
			}
			return st.Err()
		},
		"WatchSession": func(c contractualv1connect.SessionServiceClient) error {
			st, err := c.WatchSession(context.Background(), &contractualv1.WatchSessionRequest{SessionId: id})
			if err != nil {
				return err
			}
			defer st.Close()
			for st.Receive() {
				t.Errorf("WatchSession streamed %v", st.Msg())
			}
			return st.Err()
		},
	} {
		if err := call(rc); connect.CodeOf(err) != connect.CodePermissionDenied || !strings.Contains(err.Error(), "scope invoke") {
			t.Errorf("%s by a read-only device: %v", name, err)
		}
		anon := contractualv1connect.NewSessionServiceClient(http.DefaultClient, s.URL)
		if err := call(anon); connect.CodeOf(err) != connect.CodeUnauthenticated {
			t.Errorf("%s without a token: %v", name, err)
		}
	}
	if len(m.Requests()) != 0 {
		t.Errorf("the model was asked %d times", len(m.Requests()))
	}
}
