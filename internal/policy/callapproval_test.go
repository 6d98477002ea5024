package policy

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	contractualv1 "github.com/contractual/contractual/contracts/gen/contractual/v1"
	"github.com/contractual/contractual/internal/decision"
	"github.com/contractual/contractual/internal/errs"
	"github.com/contractual/contractual/internal/principal"
)

// highRisk publishes and approves a high-risk counter contract.
func highRisk(t *testing.T) *fixture {
	t.Helper()
	f := newFixture(t)
	wasm := hostile(t, "count")
	f.approve(f.publish(wasm, counter(wasm, "1.0.0", "high", "")).GetRecord().GetDigest())
	return f
}

// evalAs evaluates a call for principal who and fails on error.
func (f *fixture) evalAs(who, input string) *contractualv1.Decision {
	f.t.Helper()
	resp, err := f.s.Evaluate(context.Background(), &contractualv1.EvaluateRequest{Tool: "counter.count_vowels", Input: []byte(input), Principal: who})
	if err != nil {
		f.t.Fatalf("evaluate %s: %v", input, err)
	}
	return resp.GetDecision()
}

// approveCall approves call approval id as the owner's laptop.
func (f *fixture) approveCall(id string) *contractualv1.CallApproval {
	f.t.Helper()
	resp, err := f.s.ApproveCall(asOwner, &contractualv1.ApproveCallRequest{Id: id, Reason: "I asked for it"})
	if err != nil {
		f.t.Fatalf("approve call %s: %v", id, err)
	}
	return resp.GetApproval()
}

// wantVerdict fails unless d has verdict v.
func wantVerdict(t *testing.T, d *contractualv1.Decision, v contractualv1.Verdict) {
	t.Helper()
	if d.GetVerdict() != v {
		t.Fatalf("verdict %v (%s), want %v", d.GetVerdict(), d.GetReason(), v)
	}
}

// TestCallApprovalExactBinding checks the whole one-shot flow: approval
// required creates a pending approval that keeps the exact input and who
// asked; asking again finds it; approved, the same call is allowed once,
// naming it; one changed byte of input is a new approval, as is the same
// input from another principal; every step is audited.
func TestCallApprovalExactBinding(t *testing.T) {
	f := highRisk(t)
	n := f.audit.len()
	d := f.evalAs("device:phone", `{"text": "hello"}`)
	wantVerdict(t, d, contractualv1.Verdict_VERDICT_APPROVAL_REQUIRED)
	id := d.GetApprovalId()
	if id == "" || !strings.Contains(d.GetReason(), id) {
		t.Fatalf("decision names no pending approval: %v", d)
	}
	if evs := f.audit.since(n); evs[0].GetAction() != actionCallRequest || evs[0].GetPrincipal() != "device:phone" {
		t.Fatalf("first event %v, want the request by device:phone", evs[0])
	}
	got, err := f.s.GetCallApproval(asOwner, &contractualv1.GetCallApprovalRequest{Id: id})
	if err != nil {
		t.Fatal(err)
	}
	a := got.GetApproval()
	if a.GetState() != callPending || string(a.GetCanonicalInput()) != `{"text":"hello"}` || a.GetPrincipal() != "device:phone" ||
		a.GetTool() != "counter.count_vowels" || a.GetInputHash() != d.GetInputHash() || a.GetContractDigest() != d.GetContractDigest() ||
		!a.GetExpiresAt().AsTime().Equal(fixed.Add(DefaultCallApprovalTTL)) {
		t.Fatalf("pending approval %v", a)
	}
	// The same call again (another spelling of the same JSON) finds it.
	if again := f.evalAs("device:phone", `{ "text" : "hello" }`); again.GetApprovalId() != id {
		t.Fatalf("the same call got approval %s, want %s", again.GetApprovalId(), id)
	}
	// One changed byte, or another principal: another approval.
	other := f.evalAs("device:phone", `{"text": "hellO"}`).GetApprovalId()
	tablet := f.evalAs("device:tablet", `{"text": "hello"}`).GetApprovalId()
	if other == "" || other == id || tablet == "" || tablet == id || tablet == other {
		t.Fatalf("approvals %s, %s, %s: want three different ones", id, other, tablet)
	}
	list, err := f.s.ListCallApprovals(asOwner, &contractualv1.ListCallApprovalsRequest{})
	if err != nil || len(list.GetApprovals()) != 3 {
		t.Fatalf("pending list %v, %v: want 3", list, err)
	}

	if a := f.approveCall(id); a.GetState() != callApproved || a.GetDecidedBy() != ownerDevice {
		t.Fatalf("approved: %v", a)
	}
	// The changed call is still waiting.
	wantVerdict(t, f.evalAs("device:phone", `{"text": "hellO"}`), contractualv1.Verdict_VERDICT_APPROVAL_REQUIRED)

	n = f.audit.len()
	resp, err := f.s.Evaluate(context.Background(), &contractualv1.EvaluateRequest{Tool: "counter.count_vowels", Input: []byte(`{"text":"hello"}`), Principal: "device:phone"})
	if err != nil {
		t.Fatal(err)
	}
	d = resp.GetDecision()
	wantVerdict(t, d, contractualv1.Verdict_VERDICT_ALLOW)
	if d.GetApprovalId() != id || !strings.Contains(d.GetReason(), id) {
		t.Fatalf("allow does not name approval %s: %v", id, d)
	}
	evs := f.audit.since(n)
	if len(evs) != 2 || evs[0].GetAction() != actionCallUse || evs[0].GetDecisionId() != d.GetId() || evs[1].GetOutcome() != "allow" {
		t.Fatalf("audit events %v, want the use and the allow", evs)
	}
	// The runner accepts the decision: it is a real allow.
	pub, _ := f.s.GetVerifier(context.Background(), &contractualv1.GetVerifierRequest{})
	v, err := decision.NewVerifier(pub.GetPublicKeyset())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := v.Verify(resp.GetSigned(), resp.GetCanonicalInput(), fixed); err != nil {
		t.Fatalf("verify the allow: %v", err)
	}
	// Used up: the same call needs a new approval.
	next := f.evalAs("device:phone", `{"text": "hello"}`)
	wantVerdict(t, next, contractualv1.Verdict_VERDICT_APPROVAL_REQUIRED)
	if next.GetApprovalId() == id || next.GetApprovalId() == "" {
		t.Fatalf("after use, approval %q, want a new one", next.GetApprovalId())
	}
	got, _ = f.s.GetCallApproval(asOwner, &contractualv1.GetCallApprovalRequest{Id: id})
	if a := got.GetApproval(); a.GetState() != callUsed || a.GetUsedBy() != d.GetId() {
		t.Fatalf("used approval %v", a)
	}
	_, err = f.s.ApproveCall(asOwner, &contractualv1.ApproveCallRequest{Id: id})
	wantErr(t, err, errs.FailedPrecondition, "is used")
}

// TestCallApprovalSingleUse checks that of many concurrent evaluations of
// an approved call exactly one is allowed.
func TestCallApprovalSingleUse(t *testing.T) {
	f := highRisk(t)
	id := f.evalAs("device:phone", `{"text": "once"}`).GetApprovalId()
	f.approveCall(id)
	const n = 8
	verdicts := make([]*contractualv1.Decision, n)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range n {
		wg.Go(func() {
			<-start
			resp, err := f.s.Evaluate(context.Background(), &contractualv1.EvaluateRequest{Tool: "counter.count_vowels", Input: []byte(`{"text": "once"}`), Principal: "device:phone"})
			if err != nil {
				t.Error(err)
				return
			}
			verdicts[i] = resp.GetDecision()
		})
	}
	close(start)
	wg.Wait()
	allowed := 0
	for _, d := range verdicts {
		if d.GetVerdict() == contractualv1.Verdict_VERDICT_ALLOW {
			allowed++
			if d.GetApprovalId() != id {
				t.Errorf("allowed under %s, want %s", d.GetApprovalId(), id)
			}
		}
	}
	if allowed != 1 {
		t.Fatalf("%d of %d concurrent evaluations allowed, want exactly 1", allowed, n)
	}
}

// TestCallApprovalExpiry checks, on an injected clock, that a pending
// approval and an approved unused one expire, recorded in the audit log,
// and that the call then needs a new approval.
func TestCallApprovalExpiry(t *testing.T) {
	f := highRisk(t)
	pending := f.evalAs("device:phone", `{"text": "a"}`).GetApprovalId()
	approvedID := f.evalAs("device:phone", `{"text": "b"}`).GetApprovalId()
	f.now = f.now.Add(DefaultCallApprovalTTL - time.Second)
	f.approveCall(approvedID) // usable for another TTL from now
	f.now = f.now.Add(time.Second)
	_, err := f.s.ApproveCall(asOwner, &contractualv1.ApproveCallRequest{Id: pending})
	wantErr(t, err, errs.FailedPrecondition, "is expired")
	n := f.audit.len()
	f.now = f.now.Add(DefaultCallApprovalTTL)
	list, err := f.s.ListCallApprovals(asOwner, &contractualv1.ListCallApprovalsRequest{State: callExpired})
	if err != nil || len(list.GetApprovals()) != 2 {
		t.Fatalf("expired list %v, %v: want both", list, err)
	}
	onlyEvent(t, f.audit.since(n), actionCallExpire, outcomeOK)
	d := f.evalAs("device:phone", `{"text": "b"}`)
	wantVerdict(t, d, contractualv1.Verdict_VERDICT_APPROVAL_REQUIRED)
	if d.GetApprovalId() == approvedID {
		t.Fatal("an expired approval was found again")
	}
	w, err := f.s.WaitCallApproval(context.Background(), &contractualv1.WaitCallApprovalRequest{Id: approvedID, MaxWait: durationpb.New(time.Minute)})
	if err != nil || w.GetApproval().GetState() != callExpired {
		t.Fatalf("wait on an expired approval: %v, %v", w, err)
	}
}

// TestCallApprovalNotFromTheCaller checks that the device that asked
// cannot approve its own call (it may deny it), and that a session or a
// job never approves.
func TestCallApprovalNotFromTheCaller(t *testing.T) {
	f := highRisk(t)
	id := f.evalAs(ownerDevice, `{"text": "mine"}`).GetApprovalId()
	n := f.audit.len()
	_, err := f.s.ApproveCall(asOwner, &contractualv1.ApproveCallRequest{Id: id})
	wantErr(t, err, errs.PermissionDenied, "caller's own channel")
	onlyEvent(t, f.audit.since(n), actionCallApprove, "permission_denied")
	for _, who := range []string{"session:chat", "job:nightly"} {
		_, err := f.s.ApproveCall(principal.With(context.Background(), who), &contractualv1.ApproveCallRequest{Id: id})
		wantErr(t, err, errs.PermissionDenied)
	}
	got, _ := f.s.GetCallApproval(asOwner, &contractualv1.GetCallApprovalRequest{Id: id})
	if got.GetApproval().GetState() != callPending {
		t.Fatalf("after refusals: %v", got.GetApproval())
	}
	wantVerdict(t, f.evalAs(ownerDevice, `{"text": "mine"}`), contractualv1.Verdict_VERDICT_APPROVAL_REQUIRED)
}

// TestCallApprovalDeny checks that the waiter sees a denial, that the
// same call is then denied, naming the denial and its reason, until the
// denial expires, and that it is then a new approval.
func TestCallApprovalDeny(t *testing.T) {
	f := highRisk(t)
	id := f.evalAs("device:phone", `{"text": "no"}`).GetApprovalId()
	waited := make(chan *contractualv1.WaitCallApprovalResponse)
	go func() {
		w, err := f.s.WaitCallApproval(context.Background(), &contractualv1.WaitCallApprovalRequest{Id: id, MaxWait: durationpb.New(2 * time.Minute)})
		if err != nil {
			t.Error(err)
		}
		waited <- w
	}()
	n := f.audit.len()
	resp, err := f.s.DenyCall(asOwner, &contractualv1.DenyCallRequest{Id: id, Reason: "not now"})
	if err != nil || resp.GetApproval().GetState() != callDenied || resp.GetApproval().GetReason() != "not now" {
		t.Fatalf("deny: %v, %v", resp, err)
	}
	onlyEvent(t, f.audit.since(n), actionCallDeny, outcomeOK)
	if w := <-waited; w.GetApproval().GetState() != callDenied {
		t.Fatalf("the waiter saw %v", w.GetApproval())
	}
	_, err = f.s.ApproveCall(asOwner, &contractualv1.ApproveCallRequest{Id: id})
	wantErr(t, err, errs.FailedPrecondition, "is denied")
	d := f.evalAs("device:phone", `{"text": "no"}`)
	wantVerdict(t, d, contractualv1.Verdict_VERDICT_DENY)
	if d.GetApprovalId() != id || !strings.Contains(d.GetReason(), "not now") {
		t.Fatalf("the denied call again: %v", d)
	}
	// Another call is not denied with it.
	wantVerdict(t, f.evalAs("device:phone", `{"text": "No"}`), contractualv1.Verdict_VERDICT_APPROVAL_REQUIRED)
	f.now = f.now.Add(DefaultCallApprovalTTL)
	d = f.evalAs("device:phone", `{"text": "no"}`)
	wantVerdict(t, d, contractualv1.Verdict_VERDICT_APPROVAL_REQUIRED)
	if d.GetApprovalId() == id || d.GetApprovalId() == "" {
		t.Fatalf("after the denial expired: %v", d)
	}
}

// TestCallApprovalWaitPending checks that a wait on a pending approval
// returns it pending after max_wait, and at once for an unknown id.
func TestCallApprovalWaitPending(t *testing.T) {
	f := highRisk(t)
	id := f.evalAs("device:phone", `{"text": "wait"}`).GetApprovalId()
	w, err := f.s.WaitCallApproval(context.Background(), &contractualv1.WaitCallApprovalRequest{Id: id, MaxWait: durationpb.New(time.Millisecond)})
	if err != nil || w.GetApproval().GetState() != callPending {
		t.Fatalf("wait: %v, %v", w, err)
	}
	_, err = f.s.WaitCallApproval(context.Background(), &contractualv1.WaitCallApprovalRequest{Id: "nope"})
	wantErr(t, err, errs.NotFound)
}

// TestCallApprovalPendingBound checks that one principal's pending call
// approvals are bounded, and that another principal is not held back.
func TestCallApprovalPendingBound(t *testing.T) {
	f := highRisk(t)
	for i := range MaxPendingCalls {
		f.evalAs("device:phone", fmt.Sprintf(`{"text": "%d"}`, i))
	}
	_, err := f.s.Evaluate(context.Background(), &contractualv1.EvaluateRequest{Tool: "counter.count_vowels", Input: []byte(`{"text": "one more"}`), Principal: "device:phone"})
	wantErr(t, err, errs.ResourceExhausted, "pending")
	// Asking again for a pending call still answers, naming it.
	if d := f.evalAs("device:phone", `{"text": "0"}`); d.GetApprovalId() == "" {
		t.Fatalf("a pending call asked again: %v", d)
	}
	wantVerdict(t, f.evalAs("device:tablet", `{"text": "one more"}`), contractualv1.Verdict_VERDICT_APPROVAL_REQUIRED)
}

// TestCallApprovalMigration checks that a store of schema version 1 (no
// call approvals) opens, gains the table, and keeps its contracts.
func TestCallApprovalMigration(t *testing.T) {
	f := highRisk(t)
	for _, q := range []string{`DROP TABLE call_approvals`, `PRAGMA user_version = 1`} {
		if _, err := f.s.db.Exec(q); err != nil {
			t.Fatal(err)
		}
	}
	f.reopen()
	var v int
	if err := f.s.db.QueryRow(`PRAGMA user_version`).Scan(&v); err != nil || v != schemaVersion {
		t.Fatalf("schema version %d, %v", v, err)
	}
	if d := f.evalAs("device:phone", `{"text": "after"}`); d.GetApprovalId() == "" {
		t.Fatalf("after the migration: %v", d)
	}
}
