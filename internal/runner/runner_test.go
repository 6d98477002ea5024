package runner

import (
	"context"
	"strings"
	"testing"

	"google.golang.org/protobuf/types/known/timestamppb"

	contractualv1 "github.com/contractual/contractual/contracts/gen/contractual/v1"
	"github.com/contractual/contractual/internal/decision"
	"github.com/contractual/contractual/internal/errs"
	"github.com/contractual/contractual/internal/metrics"
	"github.com/contractual/contractual/internal/principal"
)

// TestExecuteTextkit runs a real Go-built tool under its real contract and
// checks the response and the audit event.
func TestExecuteTextkit(t *testing.T) {
	t.Parallel() // compiling textkit takes seconds under -race
	f := newFixture(t, Config{})
	ct := f.publish(readFile(t, "tools/textkit/textkit.wasm"), string(readFile(t, "tools/textkit/contract.yaml")))
	input := `{"text": "Hello, Contractual World!"}`
	d := f.decision(ct, "slugify", input)
	resp, err := f.svc.Execute(context.Background(), f.request(d, input))
	if err != nil {
		t.Fatal(err)
	}
	if got, want := string(resp.GetOutput()), `{"slug":"hello-contractual-world"}`; got != want {
		t.Fatalf("output %s, want %s", got, want)
	}

	ev := f.audit.last(t)
	canon, _ := decision.Canonical([]byte(input))
	want := &contractualv1.AuditEvent{
		Service: "runner", Principal: "device:test", Action: ActionRun, Outcome: "ok",
		ContractDigest: d.GetContractDigest(), ModuleDigest: ct.GetModule(), Tool: "textkit.slugify",
		InputHash: decision.Hash(canon), OutputHash: decision.Hash(resp.GetOutput()),
		DurationUs: resp.GetDurationUs(), DecisionId: d.GetId(),
	}
	if ev.String() != want.String() {
		t.Fatalf("audit event\n got %v\nwant %v", ev, want)
	}
	if len(f.audit.all()) != 1 {
		t.Fatalf("%d audit events, want 1", len(f.audit.all()))
	}
}

// TestCanonicalInput: the module gets the canonical input, whatever
// spelling of it the request carries, since that is what was decided.
// count_vowels counts the vowels of the bytes it gets: the "u" of the
// escape in the request's spelling is not in the canonical one.
func TestCanonicalInput(t *testing.T) {
	f := newFixture(t, Config{})
	ct := f.count("count")
	d := f.decision(ct, "count_vowels", `{"x":"b"}`)
	resp, err := f.svc.Execute(context.Background(), f.request(d, "{ \"x\" : \"\\u0062\" }"))
	if err != nil {
		t.Fatal(err)
	}
	if got := string(resp.GetOutput()); got != `{"count": 0}` {
		t.Fatalf("output %s: the module did not get the canonical input", got)
	}
}

// TestModuleCached: the second call of a tool fetches the contract's state
// and nothing else.
func TestModuleCached(t *testing.T) {
	f := newFixture(t, Config{})
	ct := f.count("count")
	for range 3 {
		if _, err := f.svc.Execute(context.Background(), f.call(ct, "count_vowels", `{"x":"hello"}`)); err != nil {
			t.Fatal(err)
		}
	}
	for method, want := range map[string]int{"GetVerifier": 1, "GetModule": 1, "GetContract": 3} {
		if got := f.policy.count(method); got != want {
			t.Errorf("%s called %d times, want %d", method, got, want)
		}
	}
}

// TestToolFailures: a module that fails is audited as a run, with its
// error kind, and the caller gets that kind.
func TestToolFailures(t *testing.T) {
	f := newFixture(t, Config{})
	trap := hostile(t, "trap.wasm")
	trapC := f.publish(trap, smallContract(trap, "trap", []string{"run"}, ""))
	loop := hostile(t, "loop.wasm")
	// Short enough to keep the test quick, long enough for ok to succeed
	// on a loaded machine.
	loopC := f.publish(loop, smallContract(loop, "loop", []string{"run", "ok"}, "limits: {timeout_ms: 2000}\n"))

	for _, tc := range []struct {
		ct     *contractualv1.Contract
		export string
		kind   errs.Kind
		msg    string
	}{
		{trapC, "run", errs.ToolFailed, "tool trapped"},
		{loopC, "run", errs.DeadlineExceeded, "exceeded its 2s timeout"},
	} {
		t.Run(tc.ct.GetName(), func(t *testing.T) {
			resp, err := f.svc.Execute(context.Background(), f.call(tc.ct, tc.export, `{}`))
			wantKind(t, err, tc.kind, tc.msg)
			if resp != nil {
				t.Fatalf("response %v with an error", resp)
			}
			ev := f.audit.last(t)
			if ev.GetAction() != ActionRun || ev.GetOutcome() != tc.kind.String() || ev.GetDetail() != err.Error() || ev.GetOutputHash() != "" {
				t.Fatalf("audit event %v", ev)
			}
		})
	}
	// The same module still runs when it behaves.
	resp, err := f.svc.Execute(context.Background(), f.call(loopC, "ok", `{}`))
	if err != nil || string(resp.GetOutput()) != "ok" {
		t.Fatalf("ok: %v %v", resp, err)
	}
}

// TestAuditOutage: when the audit log cannot record a call, the caller gets
// errs.Unavailable and not the output; the decision stays spent.
func TestAuditOutage(t *testing.T) {
	f := newFixture(t, Config{})
	ct := f.count("count")
	f.audit.setFail(errs.E(errs.Unavailable, "disk on fire"))

	req := f.call(ct, "count_vowels", `{"x":"hello"}`)
	resp, err := f.svc.Execute(context.Background(), req)
	wantKind(t, err, errs.Unavailable, "output is withheld")
	if resp != nil {
		t.Fatalf("output returned without an audit record: %v", resp)
	}

	// A refusal fails closed too, and keeps its reason in the message.
	req2 := f.call(ct, "count_vowels", `{"x":"hello"}`)
	req2.Input = []byte(`{"x":"hellp"}`)
	_, err = f.svc.Execute(context.Background(), req2)
	wantKind(t, err, errs.Unavailable, "is for input")

	f.audit.setFail(nil)
	_, err = f.svc.Execute(context.Background(), req)
	wantKind(t, err, errs.PermissionDenied, "was already used")
}

// TestAuditOutlivesCaller: a call whose caller has gone is still recorded
// (the recorder, like a networked client, fails on a canceled context).
func TestAuditOutlivesCaller(t *testing.T) {
	f := newFixture(t, Config{})
	ct := f.count("count")
	ctx, cancel := context.WithCancel(context.Background())
	f.policy.mu.Lock()
	f.policy.hook = func(m string) {
		if m == "GetContract" {
			cancel() // the caller gives up mid-call
		}
	}
	f.policy.mu.Unlock()
	_, err := f.svc.Execute(ctx, f.call(ct, "count_vowels", `{}`))
	if err != nil && strings.Contains(err.Error(), "audit") {
		t.Fatalf("audit failed with the caller's context: %v", err)
	}
	if n := len(f.audit.all()); n != 1 {
		t.Fatalf("%d audit events, want 1", n)
	}
}

// TestKeyRotation: the runner fetches policy's keys again when a decision
// fails only its signature, at most once per KeyRefetchPeriod.
func TestKeyRotation(t *testing.T) {
	f := newFixture(t, Config{KeyRefetchPeriod: DefaultKeyRefetchPeriod})
	ct := f.count("count")
	run := func(req *contractualv1.ExecuteRequest) error {
		_, err := f.svc.Execute(context.Background(), req)
		return err
	}
	if err := run(f.call(ct, "count_vowels", `{}`)); err != nil {
		t.Fatal(err)
	}
	f.clock.advance(DefaultKeyRefetchPeriod)
	f.rotate()
	if err := run(f.call(ct, "count_vowels", `{}`)); err != nil {
		t.Fatalf("after rotation: %v", err)
	}
	if n := f.policy.count("GetVerifier"); n != 2 {
		t.Fatalf("GetVerifier called %d times, want 2", n)
	}

	// A decision that fails only its signature within the period: no fetch.
	_, stranger := newKey(t)
	bad := signWith(t, stranger, f.decision(ct, "count_vowels", `{}`), `{}`)
	wantKind(t, run(bad), errs.PermissionDenied, "bad signature")
	// One that would fail anyway (expired) never prompts a fetch.
	f.clock.advance(DefaultKeyRefetchPeriod)
	expired := signWith(t, stranger, f.decision(ct, "count_vowels", `{}`, func(d *contractualv1.Decision) {
		d.ExpiresAt = timestamppb.New(f.clock.now())
	}), `{}`)
	wantKind(t, run(expired), errs.PermissionDenied, "bad signature")
	if n := f.policy.count("GetVerifier"); n != 2 {
		t.Fatalf("GetVerifier called %d times, want 2", n)
	}
	// After the period, a signature failure fetches again (and fails).
	wantKind(t, run(bad), errs.PermissionDenied, "bad signature")
	if n := f.policy.count("GetVerifier"); n != 3 {
		t.Fatalf("GetVerifier called %d times, want 3", n)
	}
}

// TestVerifierUnavailable: no keys, no run; the call is audited as refused
// and a later call fetches again.
func TestVerifierUnavailable(t *testing.T) {
	f := newFixture(t, Config{})
	ct := f.count("count")
	f.policy.mu.Lock()
	f.policy.public = []byte("not a keyset")
	f.policy.mu.Unlock()
	ctx := principal.With(context.Background(), "device:sender")
	_, err := f.svc.Execute(ctx, f.call(ct, "count_vowels", `{}`))
	wantKind(t, err, errs.Unavailable, "keyset is unusable")
	if ev := f.audit.last(t); ev.GetAction() != ActionRefused || ev.GetPrincipal() != "device:sender" || ev.GetDecisionId() != "" {
		t.Fatalf("audit event %v", ev)
	}
	f.rotate()
	if _, err := f.svc.Execute(ctx, f.call(ct, "count_vowels", `{}`)); err != nil {
		t.Fatal(err)
	}
}

// TestClose: a closed runner refuses calls.
func TestClose(t *testing.T) {
	f := newFixture(t, Config{})
	ct := f.count("count")
	if _, err := f.svc.Execute(context.Background(), f.call(ct, "count_vowels", `{}`)); err != nil {
		t.Fatal(err)
	}
	if err := f.svc.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	_, err := f.svc.Execute(context.Background(), f.call(ct, "count_vowels", `{}`))
	wantKind(t, err, errs.Unavailable, "runner is closed")
	if n := f.svc.modules.len(); n != 0 {
		t.Fatalf("%d modules cached after Close", n)
	}
}

// TestNewChecks: New refuses a missing dependency, each of them: none
// is optional.
func TestNewChecks(t *testing.T) {
	full := Deps{Policy: &fakePolicy{}, Broker: noSecrets{}, Audit: &recorder{}, Engine: engine, Metrics: metrics.NewRegistry().Tools()}
	for name, drop := range map[string]func(*Deps){
		"policy":  func(d *Deps) { d.Policy = nil },
		"broker":  func(d *Deps) { d.Broker = nil },
		"audit":   func(d *Deps) { d.Audit = nil },
		"engine":  func(d *Deps) { d.Engine = nil },
		"metrics": func(d *Deps) { d.Metrics = nil },
	} {
		d := full
		drop(&d)
		if _, err := New(context.Background(), Config{}, d); !errs.Is(err, errs.Invalid) {
			t.Errorf("New without %s: %v", name, err)
		}
	}
	if _, err := New(context.Background(), Config{MaxConcurrent: -1}, Deps{Policy: &fakePolicy{}, Broker: noSecrets{}, Audit: &recorder{}, Engine: engine, Metrics: metrics.NewRegistry().Tools()}); !errs.Is(err, errs.Invalid) {
		t.Fatalf("New with MaxConcurrent -1: %v", err)
	}
}
