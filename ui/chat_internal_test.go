package ui

import (
	"strings"
	"testing"

	contractualv1 "github.com/contractual/contractual/contracts/gen/contractual/v1"
)

// TestTranscript groups a turn's events: each proposal with its
// decisions (held, then allowed), its approval and its result; messages
// and a failure in order. A malformed approval id or artifact is dropped,
// never linked.
func TestTranscript(t *testing.T) {
	ev := func(k contractualv1.SessionEventKind, seq int64, f func(*contractualv1.SessionEvent)) *contractualv1.SessionEvent {
		e := &contractualv1.SessionEvent{Kind: k, Seq: seq}
		if f != nil {
			f(e)
		}
		return e
	}
	const approval = "0123456789abcdef0123456789abcdef"
	items := transcript([]*contractualv1.SessionEvent{
		ev(contractualv1.SessionEventKind_SESSION_EVENT_KIND_USER, 1, func(e *contractualv1.SessionEvent) { e.Text = "hi" }),
		ev(contractualv1.SessionEventKind_SESSION_EVENT_KIND_MODEL, 2, nil),
		ev(contractualv1.SessionEventKind_SESSION_EVENT_KIND_PROPOSAL, 3, func(e *contractualv1.SessionEvent) {
			e.CallId, e.Tool, e.Input = "t1.1.1", "greeter.greet", `{"name":"\u003cb\u003e"}`
		}),
		ev(contractualv1.SessionEventKind_SESSION_EVENT_KIND_PROPOSAL, 4, func(e *contractualv1.SessionEvent) {
			e.CallId, e.Tool, e.Input = "t1.1.2", "textkit.slugify", `{"text":"x"}`
		}),
		ev(contractualv1.SessionEventKind_SESSION_EVENT_KIND_DECISION, 5, func(e *contractualv1.SessionEvent) {
			e.CallId, e.Verdict, e.Reason = "t1.1.1", contractualv1.Verdict_VERDICT_APPROVAL_REQUIRED, "high risk"
		}),
		ev(contractualv1.SessionEventKind_SESSION_EVENT_KIND_APPROVAL_AWAITED, 6, func(e *contractualv1.SessionEvent) { e.CallId, e.ApprovalId = "t1.1.1", approval }),
		ev(contractualv1.SessionEventKind_SESSION_EVENT_KIND_DECISION, 7, func(e *contractualv1.SessionEvent) {
			e.CallId, e.Verdict, e.DecisionId = "t1.1.1", contractualv1.Verdict_VERDICT_ALLOW, "d1"
		}),
		ev(contractualv1.SessionEventKind_SESSION_EVENT_KIND_RESULT, 8, func(e *contractualv1.SessionEvent) {
			e.CallId, e.Output, e.Artifact = "t1.1.1", `{"message":"Hello, \u003cb\u003e!"}`, "sha256:../../evil"
		}),
		ev(contractualv1.SessionEventKind_SESSION_EVENT_KIND_DECISION, 9, func(e *contractualv1.SessionEvent) {
			e.CallId, e.Verdict, e.Reason = "t1.1.2", contractualv1.Verdict_VERDICT_DENY, "budget spent"
		}),
		ev(contractualv1.SessionEventKind_SESSION_EVENT_KIND_APPROVAL_AWAITED, 10, func(e *contractualv1.SessionEvent) { e.CallId, e.ApprovalId = "t1.1.2", "../x" }),
		ev(contractualv1.SessionEventKind_SESSION_EVENT_KIND_ANSWER, 11, func(e *contractualv1.SessionEvent) { e.Text = "done" }),
		ev(contractualv1.SessionEventKind_SESSION_EVENT_KIND_TURN_FAILED, 12, func(e *contractualv1.SessionEvent) { e.Text = "budget" }),
	})
	var kinds []string
	for _, it := range items {
		kinds = append(kinds, it.Kind)
	}
	if got := strings.Join(kinds, " "); got != "user call call answer failed" {
		t.Fatalf("items %s", got)
	}
	g := items[1].Call
	if g.Tool != "greeter.greet" || g.Input != "{\n  \"name\": \"<b>\"\n}" || g.ApprovalID != approval ||
		len(g.Decisions) != 2 || g.Decisions[0].Verdict != "held" || g.Decisions[1].Verdict != "allowed" || g.Decisions[1].ID != "d1" {
		t.Errorf("the greeting: %+v", g)
	}
	if g.Result == nil || g.Result.Output != "{\n  \"message\": \"Hello, <b>!\"\n}" || g.Result.Artifact != "" {
		t.Errorf("the greeting's result: %+v", g.Result)
	}
	s := items[2].Call
	if len(s.Decisions) != 1 || s.Decisions[0].Verdict != "denied" || s.Decisions[0].Reason != "budget spent" || s.ApprovalID != "" || s.Result != nil {
		t.Errorf("the slugify: %+v", s)
	}
}

// TestChatText clips long output by bytes and by lines, at a character
// boundary, and leaves text that is not JSON as it is.
func TestChatText(t *testing.T) {
	if got, clipped := chatText("not json <b>", 100, 10); got != "not json <b>" || clipped {
		t.Errorf("text: %q %v", got, clipped)
	}
	if got, clipped := chatText(`{"a": 1} trailing`, 100, 10); got != `{"a": 1} trailing` || clipped {
		t.Errorf("JSON then text: %q %v", got, clipped)
	}
	if got, clipped := chatText(strings.Repeat("é", 10), 5, 10); got != "éé" || !clipped {
		t.Errorf("bytes: %q %v", got, clipped)
	}
	if got, clipped := chatText("a\nb\nc\nd", 100, 2); got != "a\nb\n" || !clipped {
		t.Errorf("lines: %q %v", got, clipped)
	}
}
