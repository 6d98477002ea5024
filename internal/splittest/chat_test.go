package splittest_test

import (
	"context"
	"net/http"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"connectrpc.com/connect"

	contractualv1 "github.com/contractual/contractual/contracts/gen/contractual/v1"
	"github.com/contractual/contractual/contracts/gen/contractual/v1/contractualv1connect"
	"github.com/contractual/contractual/internal/authz"
	"github.com/contractual/contractual/internal/engine/modeltest"
	"github.com/contractual/contractual/internal/pki"
	"github.com/contractual/contractual/internal/rpc"
	"github.com/contractual/contractual/internal/splittest"
)

// TestSplitChat: through the split — the engine its binary's code, on its
// own certificate — a device opens a chat session at the gateway, which
// passes it to the engine over mutual TLS; the scripted model (a keyless
// provider on loopback) proposes textkit.slugify, policy decides it for
// the session, the runner runs it, and the model answers from the result.
// And the engine's certificate is held to its row of the table: it cannot
// call the broker, nor have policy decide for a device; no other service
// may call the engine's SessionService.
func TestSplitChat(t *testing.T) {
	m := modeltest.New(t,
		modeltest.Turn{Content: `{"answer": null, "calls": [{"tool": "textkit.slugify", "input": "{\"text\": \"Hello Split World\"}"}]}`, PromptTokens: 100, CompletionTokens: 20},
		modeltest.Turn{Content: `{"answer": "The slug is hello-split-world.", "calls": []}`, PromptTokens: 150, CompletionTokens: 10},
	)
	s := splittest.StartWith(t, splittest.Options{Engine: []string{"--model=scripted", "--model-url=" + m.URL}})
	d := owner(t, s)
	ctx := context.Background()
	textkit := regexp.MustCompile(`(?m)^module: .*$`).ReplaceAllString(string(read(t, "tools/textkit/contract.yaml")), "module: %s")
	if _, _, err := d.PublishApproved(ctx, read(t, "tools/textkit/textkit.wasm"), textkit); err != nil {
		t.Fatal(err)
	}

	c := contractualv1connect.NewSessionServiceClient(d.HTTP, s.URL, connect.WithInterceptors(rpc.Bearer(d.Token)))
	open, err := c.OpenSession(ctx, &contractualv1.OpenSessionRequest{Tools: []string{"textkit.slugify"}})
	if err != nil {
		t.Fatalf("OpenSession through the split gateway: %v\n%s", err, s.Log(authz.Engine))
	}
	sess := open.GetSession()
	if !strings.HasPrefix(sess.GetPrincipal(), "session:") {
		t.Fatalf("session %v", sess)
	}
	st, err := c.Send(ctx, &contractualv1.SendRequest{SessionId: sess.GetId(), Text: "Slugify Hello Split World"})
	if err != nil {
		t.Fatal(err)
	}
	var evs []*contractualv1.SessionEvent
	for st.Receive() {
		evs = append(evs, st.Msg().GetEvent())
	}
	if err := st.Err(); err != nil {
		t.Fatalf("Send: %v\n%s", err, s.Log(authz.Engine))
	}
	st.Close()
	if got, want := kinds(evs), "USER MODEL PROPOSAL DECISION RESULT MODEL ANSWER TURN_END"; got != want {
		t.Fatalf("events %s, want %s\n%s", got, want, s.Log(authz.Engine))
	}
	if p := evs[2]; p.GetTool() != "textkit.slugify" {
		t.Errorf("proposal %v", p)
	}
	if dec := evs[3]; dec.GetVerdict() != contractualv1.Verdict_VERDICT_ALLOW || dec.GetDecisionId() == "" {
		t.Errorf("decision %v", dec)
	}
	if r := evs[4]; r.GetError() || !strings.Contains(r.GetOutput(), "hello-split-world") {
		t.Errorf("result %v", r)
	}
	if a := evs[6]; a.GetText() != "The slug is hello-split-world." {
		t.Errorf("answer %q", a.GetText())
	}
	if reqs := m.Requests(); len(reqs) != 2 || !strings.Contains(reqs[1].Messages[len(reqs[1].Messages)-1].Content, "hello-split-world") {
		t.Errorf("the model got %d requests; the last: %v", len(reqs), reqs)
	}
	// The engine recorded the session's steps to audit, over mutual TLS.
	aud := contractualv1connect.NewAuditServiceClient(d.HTTP, s.URL, connect.WithInterceptors(bearer(d.Token)))
	tail, err := aud.Tail(ctx, &contractualv1.TailRequest{Limit: 100})
	if err != nil {
		t.Fatal(err)
	}
	seen := false
	for _, ev := range tail.GetEvents() {
		seen = seen || ev.GetService() == "engine"
	}
	if !seen {
		t.Errorf("no engine event in the audit log: %v", tail.GetEvents())
	}

	// A client with service svc's certificate, calling service to.
	as := func(svc, to authz.Service) (*http.Client, string) {
		src, err := pki.NewSource(filepath.Join(s.Certs, string(svc)), pki.SourceOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return &http.Client{Transport: src.Transport(string(to))}, "https://" + s.Addrs[to]
	}
	t.Run("the engine calling the broker", func(t *testing.T) {
		hc, url := as(authz.Engine, authz.Broker)
		_, err := contractualv1connect.NewBrokerInternalServiceClient(hc, url).IssueHandle(ctx, &contractualv1.IssueHandleRequest{})
		if connect.CodeOf(err) != connect.CodePermissionDenied || !strings.Contains(err.Error(), "engine may not call /contractual.v1.BrokerInternalService/IssueHandle") {
			t.Fatalf("engine → IssueHandle: %v", err)
		}
		_, err = contractualv1connect.NewBrokerServiceClient(hc, url).ListSecrets(ctx, &contractualv1.ListSecretsRequest{})
		if connect.CodeOf(err) != connect.CodePermissionDenied {
			t.Fatalf("engine → ListSecrets: %v", err)
		}
	})
	t.Run("the engine deciding for a device", func(t *testing.T) {
		hc, url := as(authz.Engine, authz.Policy)
		pc := contractualv1connect.NewPolicyInternalServiceClient(hc, url)
		in := []byte(`{"text": "x"}`)
		_, err := pc.Evaluate(ctx, &contractualv1.EvaluateRequest{Tool: "textkit.slugify", Input: in, Principal: "device:" + strings.Repeat("a", 16)})
		if connect.CodeOf(err) != connect.CodePermissionDenied || !strings.Contains(err.Error(), "engine may not act for device:") {
			t.Fatalf("engine → Evaluate for a device: %v", err)
		}
		// The same certificate decides for the session.
		ev, err := pc.Evaluate(ctx, &contractualv1.EvaluateRequest{Tool: "textkit.slugify", Input: in, Principal: sess.GetPrincipal()})
		if err != nil || ev.GetDecision().GetVerdict() != contractualv1.Verdict_VERDICT_ALLOW {
			t.Fatalf("engine → Evaluate for its session: %v, %v", ev.GetDecision(), err)
		}
	})
	t.Run("another service calling the engine", func(t *testing.T) {
		for _, svc := range []authz.Service{authz.Runner, authz.Policy, authz.Broker, authz.Audit} {
			hc, url := as(svc, authz.Engine)
			_, err := contractualv1connect.NewSessionServiceClient(hc, url).ListSessions(ctx, &contractualv1.ListSessionsRequest{})
			if connect.CodeOf(err) != connect.CodePermissionDenied || !strings.Contains(err.Error(), string(svc)+" may not call /contractual.v1.SessionService/ListSessions") {
				t.Errorf("%s → ListSessions: %v", svc, err)
			}
		}
	})
}

// kinds names the events' kinds, for messages.
func kinds(evs []*contractualv1.SessionEvent) string {
	var k []string
	for _, e := range evs {
		k = append(k, strings.TrimPrefix(e.GetKind().String(), "SESSION_EVENT_KIND_"))
	}
	return strings.Join(k, " ")
}
