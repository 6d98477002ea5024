package ui_test

import (
	"html"
	"net/http"
	"strings"
	"testing"

	contractualv1 "github.com/contractual/contractual/contracts/gen/contractual/v1"
	"github.com/contractual/contractual/internal/pairing"
)

// TestUICallApprovals: the Approvals pages list pending call approvals
// with the exact input escaped and who asked; the page of one shows its
// permissions card; the browser approves another device's call and may
// only deny its own; a read-only browser sees but cannot decide; a
// foreign-origin post changes nothing.
func TestUICallApprovals(t *testing.T) {
	e := newEnv(t, envOptions{pairing: pairing.Config{BeginsPerSourcePerMinute: 100}})
	a := e.pairFirst("laptop")
	d := e.publish("greeter", func(s string) string { return strings.Replace(s, "risk: low", "risk: high", 1) })
	if _, err := e.policy.Approve(e.owner(), &contractualv1.ApproveRequest{Digest: d}); err != nil {
		t.Fatal(err)
	}
	ask := func(who, name string) string {
		t.Helper()
		resp, err := e.policy.Evaluate(e.ctx, &contractualv1.EvaluateRequest{Tool: "greeter.greet", Input: []byte(`{"name": "` + name + `"}`), Principal: who})
		if err != nil || resp.GetDecision().GetApprovalId() == "" {
			t.Fatalf("evaluate: %v, %v", resp, err)
		}
		return resp.GetDecision().GetApprovalId()
	}
	theirs := ask("device:agent", "<script>alert(1)</script>")
	own := ask("device:"+a.id, "me")
	state := func(id string) contractualv1.CallApprovalState {
		t.Helper()
		resp, err := e.policy.GetCallApproval(e.owner(), &contractualv1.GetCallApprovalRequest{Id: id})
		if err != nil {
			t.Fatal(err)
		}
		return resp.GetApproval().GetState()
	}

	list := a.get("/ui/approvals")
	for _, want := range []string{`data-id="` + theirs + `" data-state="pending"`, `data-id="` + own + `"`, "greeter.greet",
		html.EscapeString(`"name": "<script>alert(1)</script>"`), "device:agent", `<strong class="device-name">laptop</strong>`} {
		if list.StatusCode != http.StatusOK || !strings.Contains(list.body, want) {
			t.Errorf("the approvals list lacks %s:\n%s", want, list.body)
		}
	}
	if strings.Contains(list.body, "<script>alert") {
		t.Error("the approvals list renders the input's markup")
	}
	page := a.get("/ui/approvals/" + theirs).body
	for _, want := range []string{`id="permissions-card"`, `data-export="greet" data-risk="high"`, "greeting", `id="approve"`, `id="deny"`} {
		if !strings.Contains(page, want) {
			t.Errorf("the approval page lacks %s", want)
		}
	}
	if p := a.get("/ui/approvals/" + own).body; !strings.Contains(p, `id="own-call"`) || strings.Contains(p, `id="approve"`) {
		t.Error("the page of this browser's own call offers to approve it")
	}
	if r := a.get("/ui/approvals/not-an-id"); r.StatusCode != http.StatusBadRequest {
		t.Errorf("a malformed id: %d", r.StatusCode)
	}

	// Read only: sees, cannot decide.
	ro := e.pairBy(a, "wall display", "read")
	if p := ro.get("/ui/approvals/" + theirs); p.StatusCode != http.StatusOK || !strings.Contains(p.body, `id="decide-not-allowed"`) || strings.Contains(p.body, `id="decide-form"`) {
		t.Errorf("read-only approval page: %d", p.StatusCode)
	}
	if r := ro.postForm("/ui/approvals/"+theirs+"/approve", ro.form()); r.StatusCode != http.StatusForbidden || !strings.Contains(errorText(r.body), "needs scope approve") {
		t.Errorf("read-only approve: %d %q", r.StatusCode, errorText(r.body))
	}
	// Another origin: refused before anything.
	a.origin = "https://evil.example"
	if r := a.postForm("/ui/approvals/"+theirs+"/approve", a.form()); r.StatusCode != http.StatusForbidden {
		t.Errorf("a foreign-origin approve: %d", r.StatusCode)
	}
	a.origin = e.srv.URL
	if state(theirs) != contractualv1.CallApprovalState_CALL_APPROVAL_STATE_PENDING {
		t.Fatal("a refused post decided the call")
	}

	// Its own call: refused; another's: approved.
	if r := a.postForm("/ui/approvals/"+own+"/approve", a.form()); r.StatusCode != http.StatusForbidden || !strings.Contains(errorText(r.body), "own channel") {
		t.Errorf("approving its own call: %d %q", r.StatusCode, errorText(r.body))
	}
	r := a.postForm("/ui/approvals/"+theirs+"/approve", a.form("reason", "ok"))
	if r.StatusCode != http.StatusSeeOther || r.Header.Get("Location") != "/ui/approvals/"+theirs+"?done=call-approved" {
		t.Fatalf("approve: %d %s", r.StatusCode, errorText(r.body))
	}
	if !strings.Contains(flashText(a.get(r.Header.Get("Location")).body), "Call approved") {
		t.Error("no flash after approving")
	}
	if r := a.postForm("/ui/approvals/"+own+"/deny", a.form()); r.StatusCode != http.StatusSeeOther {
		t.Fatalf("deny its own call: %d %s", r.StatusCode, errorText(r.body))
	}
	if state(theirs) != contractualv1.CallApprovalState_CALL_APPROVAL_STATE_APPROVED || state(own) != contractualv1.CallApprovalState_CALL_APPROVAL_STATE_DENIED {
		t.Fatalf("after the posts: %v, %v", state(theirs), state(own))
	}
	if denied := a.get("/ui/approvals?state=denied").body; !strings.Contains(denied, `data-id="`+own+`" data-state="denied"`) {
		t.Error("the denied filter does not list the denied call")
	}
}
