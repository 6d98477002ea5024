package runner

import (
	"context"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	contractualv1 "github.com/contractual/contractual/contracts/gen/contractual/v1"
	"github.com/contractual/contractual/internal/errs"
)

// TestRefusals: every way a call can lack authority is refused with a
// clear error, audited as call.refused, and runs nothing. Every run is
// audited as call.run (TestExecuteTextkit, TestToolFailures), so a refusal
// whose log holds no call.run event ran no module.
func TestRefusals(t *testing.T) {
	const input = `{"text":"hello"}`
	type setup struct {
		f  *fixture
		ct *contractualv1.Contract
	}
	tests := []struct {
		name string
		// req builds the request; it may change policy's state.
		req  func(s setup) *contractualv1.ExecuteRequest
		kind errs.Kind
		msg  string
	}{
		{"no decision", func(s setup) *contractualv1.ExecuteRequest {
			return &contractualv1.ExecuteRequest{Input: []byte(input)}
		}, errs.PermissionDenied, "invalid decision: no decision"},
		{"input not JSON", func(s setup) *contractualv1.ExecuteRequest {
			r := s.f.call(s.ct, "count_vowels", input)
			r.Input = []byte(`{"text":`)
			return r
		}, errs.Invalid, "input is not valid JSON"},
		{"signed by another key", func(s setup) *contractualv1.ExecuteRequest {
			_, stranger := newKey(t)
			return signWith(t, stranger, s.f.decision(s.ct, "count_vowels", input), input)
		}, errs.PermissionDenied, "bad signature"},
		{"tampered decision", func(s setup) *contractualv1.ExecuteRequest {
			r := s.f.call(s.ct, "count_vowels", input)
			r.Decision.Decision[len(r.Decision.Decision)-1] ^= 1
			return r
		}, errs.PermissionDenied, "bad signature"},
		{"tampered signature", func(s setup) *contractualv1.ExecuteRequest {
			r := s.f.call(s.ct, "count_vowels", input)
			r.Decision.Signature[0] ^= 1
			return r
		}, errs.PermissionDenied, "bad signature"},
		{"expired", func(s setup) *contractualv1.ExecuteRequest {
			return s.f.request(s.f.decision(s.ct, "count_vowels", input, func(d *contractualv1.Decision) {
				d.ExpiresAt = timestamppb.New(s.f.clock.now().Add(-time.Second))
			}), input)
		}, errs.PermissionDenied, "has expired"},
		{"verdict deny", func(s setup) *contractualv1.ExecuteRequest {
			return s.f.request(s.f.decision(s.ct, "count_vowels", input, func(d *contractualv1.Decision) {
				d.Verdict = contractualv1.Verdict_VERDICT_DENY
			}), input)
		}, errs.PermissionDenied, "is VERDICT_DENY, not allow"},
		{"verdict approval required", func(s setup) *contractualv1.ExecuteRequest {
			return s.f.request(s.f.decision(s.ct, "count_vowels", input, func(d *contractualv1.Decision) {
				d.Verdict = contractualv1.Verdict_VERDICT_APPROVAL_REQUIRED
			}), input)
		}, errs.PermissionDenied, "is VERDICT_APPROVAL_REQUIRED, not allow"},
		{"input changed by one byte", func(s setup) *contractualv1.ExecuteRequest {
			r := s.f.call(s.ct, "count_vowels", input)
			r.Input = []byte(`{"text":"hellp"}`)
			return r
		}, errs.PermissionDenied, "is for input sha256:"},
		{"decision without id", func(s setup) *contractualv1.ExecuteRequest {
			return s.f.request(s.f.decision(s.ct, "count_vowels", input, func(d *contractualv1.Decision) { d.Id = "" }), input)
		}, errs.PermissionDenied, "decision has no id"},
		{"decision without issue time", func(s setup) *contractualv1.ExecuteRequest {
			return s.f.request(s.f.decision(s.ct, "count_vowels", input, func(d *contractualv1.Decision) { d.IssuedAt = nil }), input)
		}, errs.PermissionDenied, "has no issue time"},
		{"decision issued before the runner started", func(s setup) *contractualv1.ExecuteRequest {
			// As if the runner restarted after the decision was issued
			// (and maybe executed): the spent ids are gone.
			r := s.f.call(s.ct, "count_vowels", input)
			s.f.svc.started = s.f.clock.now().Add(time.Nanosecond)
			return r
		}, errs.PermissionDenied, "before this runner started"},
		{"replayed", func(s setup) *contractualv1.ExecuteRequest {
			r := s.f.call(s.ct, "count_vowels", input)
			if _, err := s.f.svc.Execute(context.Background(), r); err != nil {
				t.Fatal(err)
			}
			return r
		}, errs.PermissionDenied, "decision d-1 was already used"},
		{"contract revoked after the decision", func(s setup) *contractualv1.ExecuteRequest {
			r := s.f.call(s.ct, "count_vowels", input)
			s.f.policy.setState(digestOf(t, s.ct), contractualv1.ContractState_CONTRACT_STATE_REVOKED)
			return r
		}, errs.PermissionDenied, "is revoked, not approved"},
		{"contract pending", func(s setup) *contractualv1.ExecuteRequest {
			s.f.policy.setState(digestOf(t, s.ct), contractualv1.ContractState_CONTRACT_STATE_PENDING)
			return s.f.call(s.ct, "count_vowels", input)
		}, errs.PermissionDenied, "is pending, not approved"},
		{"unknown contract", func(s setup) *contractualv1.ExecuteRequest {
			return s.f.request(s.f.decision(s.ct, "count_vowels", input, func(d *contractualv1.Decision) {
				d.ContractDigest = "sha256:00"
			}), input)
		}, errs.PermissionDenied, "which policy does not have"},
		{"contract content changed in policy", func(s setup) *contractualv1.ExecuteRequest {
			digest := digestOf(t, s.ct)
			s.f.policy.mu.Lock()
			s.f.policy.records[digest].Contract.Limits.TimeoutMs++
			s.f.policy.mu.Unlock()
			return s.f.call(s.ct, "count_vowels", input)
		}, errs.PermissionDenied, "contract digest mismatch"},
		{"module bytes not matching the digest", func(s setup) *contractualv1.ExecuteRequest {
			s.f.policy.mu.Lock()
			wasm := append([]byte(nil), s.f.policy.modules[s.ct.GetModule()]...)
			wasm[len(wasm)-1] ^= 1
			s.f.policy.modules[s.ct.GetModule()] = wasm
			s.f.policy.mu.Unlock()
			return s.f.call(s.ct, "count_vowels", input)
		}, errs.PermissionDenied, "module digest mismatch"},
		{"module missing from policy", func(s setup) *contractualv1.ExecuteRequest {
			s.f.policy.mu.Lock()
			delete(s.f.policy.modules, s.ct.GetModule())
			s.f.policy.mu.Unlock()
			return s.f.call(s.ct, "count_vowels", input)
		}, errs.FailedPrecondition, "is not in policy"},
		{"decision for another module", func(s setup) *contractualv1.ExecuteRequest {
			return s.f.request(s.f.decision(s.ct, "count_vowels", input, func(d *contractualv1.Decision) {
				d.ModuleDigest = "sha256:" + "ab"
			}), input)
		}, errs.PermissionDenied, "is for module sha256:ab"},
		{"export not in contract", func(s setup) *contractualv1.ExecuteRequest {
			// count.wasm exports "memory" too; only count_vowels is a tool.
			return s.f.call(s.ct, "memory", input)
		}, errs.PermissionDenied, `has no tool "memory"`},
		{"export of the module not in contract", func(s setup) *contractualv1.ExecuteRequest {
			// loop.wasm's run spins until its timeout; the contract lists
			// only ok. Had it run, the error would be DeadlineExceeded.
			loop := hostile(t, "loop.wasm")
			ct := s.f.publish(loop, smallContract(loop, "loop", []string{"ok"}, ""))
			return s.f.call(ct, "run", input)
		}, errs.PermissionDenied, `has no tool "run"`},
		{"tool name not the contract's", func(s setup) *contractualv1.ExecuteRequest {
			return s.f.request(s.f.decision(s.ct, "count_vowels", input, func(d *contractualv1.Decision) {
				d.Tool = "other.count_vowels"
			}), input)
		}, errs.PermissionDenied, `names tool "other.count_vowels"`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, Config{})
			s := setup{f: f, ct: f.count("count")}
			req := tc.req(s)
			before := len(f.audit.all())
			resp, err := f.svc.Execute(context.Background(), req)
			wantKind(t, err, tc.kind, tc.msg)
			if resp != nil {
				t.Fatalf("response %v with a refusal", resp)
			}
			evs := f.audit.all()
			if len(evs) != before+1 {
				t.Fatalf("%d audit events, want %d", len(evs), before+1)
			}
			ev := evs[len(evs)-1]
			if ev.GetAction() != ActionRefused || ev.GetOutcome() != tc.kind.String() || ev.GetDetail() != err.Error() ||
				ev.GetOutputHash() != "" || ev.GetDurationUs() != 0 {
				t.Fatalf("audit event %v", ev)
			}
			for _, ev := range evs[before:] {
				if ev.GetAction() == ActionRun {
					t.Fatalf("the module ran: %v", ev)
				}
			}
		})
	}
}
