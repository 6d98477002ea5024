package pairing

import (
	"context"
	"strings"
	"testing"

	contractualv1 "github.com/contractual/contractual/contracts/gen/contractual/v1"
	"github.com/contractual/contractual/internal/audit"
	"github.com/contractual/contractual/internal/errs"
)

// auditedFixture is a fixture whose store records to a real audit log.
func auditedFixture(t *testing.T) (*fixture, *audit.Service) {
	t.Helper()
	f := newFixture(t, Config{})
	return f, f.log
}

// actions returns "action principal outcome" of every event in log.
func actions(t *testing.T, log *audit.Service) []string {
	t.Helper()
	resp, err := log.Tail(context.Background(), &contractualv1.TailRequest{Limit: 1000})
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range resp.GetEvents() {
		if e.GetService() != auditService {
			t.Errorf("event %s has service %q", e.GetAction(), e.GetService())
		}
		out = append(out, e.GetAction()+" "+e.GetPrincipal()+" "+e.GetOutcome())
	}
	return out
}

// TestAuditTrail: every pairing change and every refusal that is not
// routine lands in the audit log, in order, attributed to who did it.
func TestAuditTrail(t *testing.T) {
	f, log := auditedFixture(t)
	first, _ := f.pairFirst()
	second, _ := f.pairBy(first, "phone")
	third := newDevice(t)
	r := f.begin(third, "tablet")
	if err := f.s.Reject(f.ctx, r.Code, Principal(first.id)); err != nil {
		t.Fatal(err)
	}
	// Refused: a rejected request's completion, a second rejection, a
	// revoked device approving.
	_, _, err := f.s.Complete(f.ctx, third.id, r.Nonce, third.sign(r.Nonce))
	wantKind(t, err, errs.PermissionDenied)
	wantKind(t, f.s.Reject(f.ctx, r.Code, Principal(first.id)), errs.FailedPrecondition)
	if err := f.s.Revoke(f.ctx, second.id, Principal(first.id)); err != nil {
		t.Fatal(err)
	}
	wantKind(t, f.s.Revoke(f.ctx, first.id, Principal(second.id)), errs.PermissionDenied)
	// Routine, not recorded: malformed input, polling before approval.
	wantKind(t, f.s.Approve(f.ctx, "??", Principal(first.id)), errs.Invalid)
	fourth := newDevice(t)
	r4 := f.begin(fourth, "watch")
	_, _, err = f.s.Complete(f.ctx, fourth.id, r4.Nonce, fourth.sign(r4.Nonce))
	wantKind(t, err, errs.FailedPrecondition)

	p1, p2, p3, p4 := Principal(first.id), Principal(second.id), Principal(third.id), Principal(fourth.id)
	want := []string{
		"pairing.request " + p1 + " ok",
		"pairing.approve setup-code ok",
		"device.pair " + p1 + " ok",
		"pairing.request " + p2 + " ok",
		"pairing.approve " + p1 + " ok",
		"device.pair " + p2 + " ok",
		"pairing.request " + p3 + " ok",
		"pairing.reject " + p1 + " ok",
		"device.pair " + p3 + " permission_denied",
		"pairing.reject " + p1 + " failed_precondition",
		"device.revoke " + p1 + " ok",
		"device.revoke " + p2 + " permission_denied",
		"pairing.request " + p4 + " ok",
	}
	got := actions(t, log)
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("audit trail:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

// TestAuditOutageChangesNothing: with the audit log gone, approval,
// revocation and completion are refused and leave the store as it was.
func TestAuditOutageChangesNothing(t *testing.T) {
	f, log := auditedFixture(t)
	first, firstTok := f.pairFirst()
	d := newDevice(t)
	r := f.begin(d, "phone")
	if err := log.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	wantKind(t, f.s.Approve(f.ctx, r.Code, Principal(first.id)), errs.Unavailable)
	pending, err := f.s.Pending(f.ctx)
	if err != nil || len(pending) != 1 || pending[0].State != Pending {
		t.Fatalf("after a failed approval: %+v, %v", pending, err)
	}
	wantKind(t, f.s.Revoke(f.ctx, first.id, Principal(first.id)), errs.Unavailable)
	if _, err := f.s.Authenticate(f.ctx, firstTok, "test"); err != nil {
		t.Fatalf("the device whose revocation failed: %v", err)
	}
	_, err = f.s.Begin(f.ctx, newDevice(t).pub, "tablet", ScopeOwner, KindClient)
	wantKind(t, err, errs.Unavailable)
	if pending, _ := f.s.Pending(f.ctx); len(pending) != 1 {
		t.Fatalf("a begin that could not be audited left %d pending requests", len(pending))
	}
}

// TestBeginPerSource: one address cannot use up the pairing queue; others
// still get through.
func TestBeginPerSource(t *testing.T) {
	f := newFixture(t, Config{BeginsPerSourcePerMinute: 3, BeginsPerMinute: 100, MaxPending: 100})
	from := func(src string) error {
		_, err := f.s.Begin(WithSource(f.ctx, src), newDevice(t).pub, "d", ScopeOwner, KindClient)
		return err
	}
	for i := range 3 {
		if err := from("203.0.113.7"); err != nil {
			t.Fatalf("begin %d: %v", i, err)
		}
	}
	wantKind(t, from("203.0.113.7"), errs.ResourceExhausted)
	// Beginning again with one key (which replaces its request) counts too.
	again := newDevice(t)
	for i := range 3 {
		if _, err := f.s.Begin(WithSource(f.ctx, "192.0.2.9"), again.pub, "d", ScopeOwner, KindClient); err != nil {
			t.Fatalf("begin again %d: %v", i, err)
		}
	}
	_, err := f.s.Begin(WithSource(f.ctx, "192.0.2.9"), again.pub, "d", ScopeOwner, KindClient)
	wantKind(t, err, errs.ResourceExhausted)
	if err := from("198.51.100.2"); err != nil {
		t.Fatalf("another source: %v", err)
	}
	f.clk.Advance(61e9)
	if err := from("203.0.113.7"); err != nil {
		t.Fatalf("after the window: %v", err)
	}
}

func wantKind(t *testing.T, err error, k errs.Kind) {
	t.Helper()
	if errs.KindOf(err) != k || err == nil {
		t.Fatalf("got %v (%s), want kind %s", err, errs.KindOf(err), k)
	}
}
