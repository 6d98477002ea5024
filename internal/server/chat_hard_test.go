package server_test

import (
	"context"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/durationpb"

	contractualv1 "github.com/contractual/contractual/contracts/gen/contractual/v1"
	"github.com/contractual/contractual/contracts/gen/contractual/v1/contractualv1connect"
	"github.com/contractual/contractual/internal/engine/modeltest"
	"github.com/contractual/contractual/internal/server"
)

// both answers and proposes at once, which the schema does not allow.
const both = `{"answer": "done", "calls": [{"tool": "textkit.slugify", "input": "{\"text\": \"Hello World\"}"}]}`

const slugCall = `{"answer": null, "calls": [{"tool": "textkit.slugify", "input": "{\"text\": \"Hello World\"}"}]}`

// lastEvent is the turn's last event.
func lastEvent(t *testing.T, evs []*contractualv1.SessionEvent) *contractualv1.SessionEvent {
	t.Helper()
	if len(evs) == 0 {
		t.Fatal("no events")
	}
	return evs[len(evs)-1]
}

// TestChatHardModelFailures: malformed structured output is retried and
// then fails the turn; the provider's errors and silence fail it with the
// mapped reason.
func TestChatHardModelFailures(t *testing.T) {
	m := modeltest.New(t)
	s, _ := startChat(t, m)
	tok, _ := owner(t, s)
	publishApproved(t, s, tok)
	c := sessionClient(s, tok)
	for _, tc := range []struct {
		name  string
		turns []modeltest.Turn
		want  string
	}{
		{"not-json", []modeltest.Turn{{Content: "sure, I'll do that"}, {Content: "{oops"}, {Content: "no"}}, "no valid proposal after 3 attempts"},
		{"wrong-shape", []modeltest.Turn{{Content: `{"reply": "hi"}`}, {Content: `[]`}, {Content: `{"answer": 3, "calls": []}`}}, "no valid proposal after 3 attempts"},
		{"unknown-tool", []modeltest.Turn{{Content: `{"answer": null, "calls": [{"tool": "shell.exec", "input": {}}]}`}, {Content: `{"answer": null, "calls": [{"tool": "shell.exec", "input": {}}]}`}, {Content: `{"answer": null, "calls": [{"tool": "x", "input": {}}]}`}}, "no valid proposal after 3 attempts"},
		{"answer-and-calls", []modeltest.Turn{{Content: both}, {Content: both}, {Content: both}}, "no valid proposal after 3 attempts"},
		{"status-401", []modeltest.Turn{{Status: 401, ErrMessage: "Incorrect API key provided"}}, "Incorrect API key"},
		{"status-429", []modeltest.Turn{{Status: 429, ErrMessage: "Rate limit reached"}}, "Rate limit"},
		{"status-500", []modeltest.Turn{{Status: 500, ErrMessage: "The server had an error"}}, "server had an error"},
		{"malformed-body", []modeltest.Turn{{Raw: `{"choices": [`}}, "malformed"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m.Push(tc.turns...)
			before := len(m.Requests())
			open, err := c.OpenSession(context.Background(), &contractualv1.OpenSessionRequest{})
			if err != nil {
				t.Fatal(err)
			}
			evs := send(t, c, open.GetSession().GetId(), "Slugify Hello World")
			last := lastEvent(t, evs)
			if last.GetKind() != contractualv1.SessionEventKind_SESSION_EVENT_KIND_TURN_FAILED || !strings.Contains(last.GetText(), tc.want) {
				t.Errorf("last event %v %q, want TURN_FAILED with %q; %s", last.GetKind(), last.GetText(), tc.want, kinds(evs))
			}
			if n := len(m.Requests()) - before; n != len(tc.turns) {
				t.Errorf("%d model requests, want %d", n, len(tc.turns))
			}
			for _, e := range evs {
				if e.GetKind() == contractualv1.SessionEventKind_SESSION_EVENT_KIND_PROPOSAL {
					t.Errorf("an invalid response was acted on: %v", e)
				}
			}
		})
	}
}

// TestChatHardModelTimeout: a provider that never answers fails the turn
// once the model request's timeout passes.
func TestChatHardModelTimeout(t *testing.T) {
	never := make(chan struct{})
	m := modeltest.New(t, modeltest.Turn{Release: never})
	s, _ := startChat(t, m, func(c *server.Config) { c.Engine.Model.Timeout = 500 * time.Millisecond })
	tok, _ := owner(t, s)
	publishApproved(t, s, tok)
	c := sessionClient(s, tok)
	o, err := c.OpenSession(context.Background(), &contractualv1.OpenSessionRequest{})
	if err != nil {
		t.Fatal(err)
	}
	evs := send(t, c, o.GetSession().GetId(), "hello")
	if last := lastEvent(t, evs); last.GetKind() != contractualv1.SessionEventKind_SESSION_EVENT_KIND_TURN_FAILED || !strings.Contains(last.GetText(), "did not answer in time") {
		t.Errorf("%s %q", kinds(evs), last.GetText())
	}
}

// TestChatHardTurns: one turn at a time; a session closed during a turn;
// another device sees nothing of it; budgets end a turn; the audit log
// records every step.
func TestChatHardTurns(t *testing.T) {
	m := modeltest.New(t)
	s, _ := startChat(t, m)
	tok, _ := owner(t, s)
	publishApproved(t, s, tok)
	c := sessionClient(s, tok)
	ctx := context.Background()
	open := func(b *contractualv1.SessionBudget) string {
		o, err := c.OpenSession(ctx, &contractualv1.OpenSessionRequest{Budget: b})
		if err != nil {
			t.Fatal(err)
		}
		return o.GetSession().GetId()
	}

	// One turn at a time, then closed during the turn.
	release := make(chan struct{})
	m.Push(modeltest.Turn{Release: release})
	id := open(nil)
	var wg sync.WaitGroup
	var first []*contractualv1.SessionEvent
	wg.Add(1)
	go func() { defer wg.Done(); first = send(t, c, id, "Slugify Hello World") }()
	<-m.Arrived()
	st, err := c.Send(ctx, &contractualv1.SendRequest{SessionId: id, Text: "again"})
	if err == nil {
		for st.Receive() {
		}
		err = st.Err()
	}
	if connect.CodeOf(err) != connect.CodeFailedPrecondition {
		t.Errorf("a second Send while a turn runs: %v", err)
	}
	other := sessionClient(s, pairAgent(t, s, tok, "other-device"))
	if _, err := other.GetSession(ctx, &contractualv1.GetSessionRequest{Id: id}); connect.CodeOf(err) != connect.CodeNotFound {
		t.Errorf("another device's GetSession: %v", err)
	}
	if _, err := other.CloseSession(ctx, &contractualv1.CloseSessionRequest{Id: id}); connect.CodeOf(err) != connect.CodeNotFound {
		t.Errorf("another device's CloseSession: %v", err)
	}
	ost, err := other.Send(ctx, &contractualv1.SendRequest{SessionId: id, Text: "hi"})
	if err == nil {
		for ost.Receive() {
		}
		err = ost.Err()
	}
	if connect.CodeOf(err) != connect.CodeNotFound {
		t.Errorf("another device's Send: %v", err)
	}
	if list, err := other.ListSessions(ctx, &contractualv1.ListSessionsRequest{}); err != nil || len(list.GetSessions()) != 0 {
		t.Errorf("another device's list: %v %v", list, err)
	}
	closed, err := c.CloseSession(ctx, &contractualv1.CloseSessionRequest{Id: id})
	if err != nil || closed.GetSession().GetState() != contractualv1.SessionState_SESSION_STATE_CLOSED {
		t.Errorf("close during the turn: %v %v", closed, err)
	}
	wg.Wait()
	close(release)
	if last := lastEvent(t, first); last.GetKind() != contractualv1.SessionEventKind_SESSION_EVENT_KIND_TURN_FAILED || !strings.Contains(last.GetText(), "closed during the turn") {
		t.Errorf("the closed turn ended with %v %q", last.GetKind(), last.GetText())
	}

	// Budgets: tool calls, then tokens, end the turn mid-way.
	m.Push(modeltest.Turn{Content: slugCall}, modeltest.Turn{Content: slugCall})
	evs := send(t, c, open(&contractualv1.SessionBudget{ToolCalls: 1}), "twice")
	if last := lastEvent(t, evs); !strings.Contains(last.GetText(), "tool-call budget (1) is spent") || last.GetUsage().GetToolCalls() != 1 {
		t.Errorf("tool-call budget: %s, %q %v", kinds(evs), last.GetText(), last.GetUsage())
	}
	m.Push(modeltest.Turn{Content: slugCall, PromptTokens: 900, CompletionTokens: 200})
	evs = send(t, c, open(&contractualv1.SessionBudget{Tokens: 1000}), "big")
	if last := lastEvent(t, evs); !strings.Contains(last.GetText(), "token budget (1000) is spent") {
		t.Errorf("token budget: %s, %q", kinds(evs), last.GetText())
	}

	// The wall-time budget ends a turn whose model request is held.
	held := make(chan struct{})
	defer close(held)
	m.Push(modeltest.Turn{Release: held})
	evs = send(t, c, open(&contractualv1.SessionBudget{WallTime: durationpb.New(300 * time.Millisecond)}), "slow")
	if last := lastEvent(t, evs); last.GetKind() != contractualv1.SessionEventKind_SESSION_EVENT_KIND_TURN_FAILED || !strings.Contains(last.GetText(), "wall-time budget") {
		t.Errorf("wall-time budget: %s, %q", kinds(evs), last.GetText())
	}

	// A whole turn, in the audit log.
	m.Push(modeltest.Turn{Content: slugCall}, modeltest.Turn{Content: `{"answer": "hello-world", "calls": []}`})
	sid := open(nil)
	send(t, c, sid, "Slugify Hello World")
	au := contractualv1connect.NewAuditServiceClient(http.DefaultClient, s.URL, connect.WithInterceptors(bearer(tok)))
	tail, err := au.Tail(ctx, &contractualv1.TailRequest{Limit: 1000})
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]*contractualv1.AuditEvent{}
	for _, e := range tail.GetEvents() {
		if e.GetPrincipal() == "session:"+sid {
			seen[e.GetAction()] = e
		}
	}
	for _, a := range []string{"session.open", "session.proposal", "call.decision", "call.run", "session.result", "session.turn"} {
		if seen[a] == nil {
			t.Errorf("no %s in the audit log for the session; it has %v", a, keys(seen))
		}
	}
	if e := seen["session.proposal"]; e != nil && e.GetInputHash() == "" {
		t.Errorf("session.proposal without an input hash: %v", e)
	}
	if e := seen["session.result"]; e != nil && e.GetOutputHash() == "" {
		t.Errorf("session.result without an output hash: %v", e)
	}
}

func keys[V any](m map[string]V) []string {
	var k []string
	for s := range m {
		k = append(k, s)
	}
	return k
}

// TestChatHardArtifacts: a result larger than ResultBytes is kept whole as
// an artifact; the model sees its head and the reference; it expires after
// ArtifactTTL (by the engine's clock).
func TestChatHardArtifacts(t *testing.T) {
	var mu sync.Mutex
	now := time.Now()
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	big := strings.Repeat("Word ", 2000)
	m := modeltest.New(t,
		modeltest.Turn{Content: `{"answer": null, "calls": [{"tool": "textkit.slugify", "input": "{\"text\": \"` + big + `\"}"}]}`},
		modeltest.Turn{Content: `{"answer": "done", "calls": []}`})
	s, _ := startChat(t, m, func(c *server.Config) {
		c.Engine.ResultBytes = 1024
		c.Engine.ArtifactTTL = time.Hour
		c.Engine.Now = clock
	})
	tok, _ := owner(t, s)
	publishApproved(t, s, tok)
	c := sessionClient(s, tok)
	ctx := context.Background()
	o, err := c.OpenSession(ctx, &contractualv1.OpenSessionRequest{})
	if err != nil {
		t.Fatal(err)
	}
	id := o.GetSession().GetId()
	var res *contractualv1.SessionEvent
	for _, e := range send(t, c, id, "slugify") {
		if e.GetKind() == contractualv1.SessionEventKind_SESSION_EVENT_KIND_RESULT {
			res = e
		}
	}
	if res == nil || res.GetArtifact() == "" || res.GetOutputBytes() <= 1024 {
		t.Fatalf("result %v", res)
	}
	got, err := c.GetArtifact(ctx, &contractualv1.GetArtifactRequest{SessionId: id, Digest: res.GetArtifact()})
	if err != nil || int64(len(got.GetContent())) != res.GetOutputBytes() || !strings.Contains(string(got.GetContent()), strings.Repeat("word-", 1999)+"word") {
		t.Fatalf("artifact: %d bytes, %v", len(got.GetContent()), err)
	}
	reqs := m.Requests()
	seen := reqs[1].Messages[len(reqs[1].Messages)-1].Content
	if !strings.Contains(seen, res.GetArtifact()) || strings.Contains(seen, strings.Repeat("word-", 1999)) || len(seen) > 2048 {
		t.Errorf("the model saw %d bytes: %.500s", len(seen), seen)
	}
	mu.Lock()
	now = now.Add(2 * time.Hour)
	mu.Unlock()
	// Another result prunes; the artifact is gone either way.
	m.Push(modeltest.Turn{Content: `{"answer": null, "calls": [{"tool": "textkit.slugify", "input": "{\"text\": \"` + big + `x\"}"}]}`},
		modeltest.Turn{Content: `{"answer": "done", "calls": []}`})
	send(t, c, id, "again")
	if _, err := c.GetArtifact(ctx, &contractualv1.GetArtifactRequest{SessionId: id, Digest: res.GetArtifact()}); connect.CodeOf(err) != connect.CodeNotFound {
		t.Errorf("an expired artifact: %v", err)
	}
}

// TestChatHardRelay: the engine reaches the model through llm.chat; the
// provider's stand-in gets the key, which no model request's body carries;
// with the relay's contract revoked, the turn fails saying so.
func TestChatHardRelay(t *testing.T) {
	w := newChatWorld(t, true)
	w.m.Push(modeltest.Turn{Content: slugCall}, modeltest.Turn{Content: `{"answer": "hello-world", "calls": []}`})
	evs := send(t, w.c, w.open(t, nil, nil).GetId(), "Slugify Hello World")
	if last := lastEvent(t, evs); last.GetKind() != contractualv1.SessionEventKind_SESSION_EVENT_KIND_TURN_END {
		t.Fatalf("relayed turn: %s %q", kinds(evs), last.GetText())
	}
	n := 0
	for _, h := range w.in.all() {
		if h.host != "api.openai.com" {
			continue
		}
		n++
		if h.header.Get("Authorization") != "Bearer "+llmKey || h.uri != "/v1/chat/completions" {
			t.Errorf("the provider got %s with Authorization %q", h.uri, h.header.Get("Authorization"))
		}
		if leaks(llmKey, h.body) {
			t.Errorf("a relayed body carries the key")
		}
	}
	if n != 2 {
		t.Errorf("%d requests reached the provider", n)
	}
	for _, r := range w.m.Requests() {
		if leaks(llmKey, r.Body) {
			t.Errorf("a model request's body carries the key")
		}
	}
	for _, e := range evs {
		if e.GetTool() == "llm.chat" {
			t.Errorf("the relay shows as a session's call: %v", e)
		}
	}
	// The relay is approved, but no session may use it: ListTools leaves
	// it out, and asking for it is refused.
	tools, err := w.c.ListTools(context.Background(), &contractualv1.ListToolsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	for _, tl := range tools.GetTools() {
		if tl.GetName() == "llm.chat" {
			t.Errorf("ListTools offers the relay: %v", tl)
		}
	}
	if _, err := w.c.OpenSession(context.Background(), &contractualv1.OpenSessionRequest{Tools: []string{"llm.chat"}}); connect.CodeOf(err) != connect.CodeInvalidArgument {
		t.Errorf("a session asking for the relay: %v", err)
	}
	if _, err := w.pol.Revoke(context.Background(), &contractualv1.RevokeRequest{Digest: w.digests["llm"]}); err != nil {
		t.Fatal(err)
	}
	evs = send(t, w.c, w.open(t, nil, nil).GetId(), "Slugify Hello World")
	if last := lastEvent(t, evs); last.GetKind() != contractualv1.SessionEventKind_SESSION_EVENT_KIND_TURN_FAILED || !strings.Contains(last.GetText(), "llm.chat") {
		t.Errorf("with the relay revoked: %s %q", kinds(evs), last.GetText())
	}
}
