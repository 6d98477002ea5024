package policy

import (
	"context"
	"fmt"
	"strings"
	"testing"

	contractualv1 "github.com/contractual/contractual/contracts/gen/contractual/v1"
	"github.com/contractual/contractual/internal/errs"
	"github.com/contractual/contractual/internal/principal"
)

// op is one of Approve, Reject, Revoke.
type op func(ctx context.Context, s *Service, digest string) error

var ops = map[string]op{
	"approve": func(ctx context.Context, s *Service, d string) error {
		_, err := s.Approve(ctx, &contractualv1.ApproveRequest{Digest: d})
		return err
	},
	"reject": func(ctx context.Context, s *Service, d string) error {
		_, err := s.Reject(ctx, &contractualv1.RejectRequest{Digest: d, Reason: "no"})
		return err
	},
	"revoke": func(ctx context.Context, s *Service, d string) error {
		_, err := s.Revoke(ctx, &contractualv1.RevokeRequest{Digest: d, Reason: "stop"})
		return err
	},
}

// inState publishes a fresh counter contract and brings it to state st.
func inState(t *testing.T, f *fixture, st contractualv1.ContractState, version string) string {
	t.Helper()
	wasm := hostile(t, "count")
	d := f.publish(wasm, counter(wasm, version, "low", "")).GetRecord().GetDigest()
	path := map[contractualv1.ContractState][]string{
		pending:  nil,
		approved: {"approve"},
		rejected: {"reject"},
		revoked:  {"approve", "revoke"},
	}[st]
	for _, name := range path {
		if err := ops[name](asOwner, f.s, d); err != nil {
			t.Fatal(err)
		}
	}
	return d
}

// TestStateMachine tries every operation in every state: pending →
// approved | rejected, approved → revoked, and nothing else. A refused
// operation changes nothing and is audited with its error kind.
func TestStateMachine(t *testing.T) {
	allowed := map[string]contractualv1.ContractState{
		"pending approve": approved,
		"pending reject":  rejected,
		"approved revoke": revoked,
	}
	f := newFixture(t)
	i := 0
	for _, from := range []contractualv1.ContractState{pending, approved, rejected, revoked} {
		for _, name := range []string{"approve", "reject", "revoke"} {
			i++
			t.Run(stateName(from)+"/"+name, func(t *testing.T) {
				d := inState(t, f, from, fmt.Sprintf("1.0.%d", i))
				before, n := f.snapshot(), f.audit.len()
				err := ops[name](asOwner, f.s, d)
				want, ok := allowed[stateName(from)+" "+name]
				if ok {
					if err != nil || f.state(d) != want {
						t.Fatalf("%s of a %s contract: %v, state %v", name, stateName(from), err, f.state(d))
					}
					onlyEvent(t, f.audit.since(n), "contract."+name, outcomeOK)
					return
				}
				tr := map[string]transition{"approve": approve, "reject": reject, "revoke": revoke}[name]
				wantErr(t, err, errs.FailedPrecondition, "cannot "+name, d, "is "+stateName(from),
					"only a "+stateName(tr.from)+" contract can be "+tr.done)
				if after := f.snapshot(); after != before {
					t.Fatalf("a refused %s changed the store:\n%s\nvs\n%s", name, before, after)
				}
				onlyEvent(t, f.audit.since(n), "contract."+name, "failed_precondition")
			})
		}
	}
}

// TestDecideErrors checks the errors of Approve, Reject and Revoke that do
// not depend on the state, and that they change nothing.
func TestDecideErrors(t *testing.T) {
	f := newFixture(t)
	d := inState(t, f, pending, "1.0.0")
	unknown := "sha256:" + strings.Repeat("0", 64)
	tests := []struct {
		name   string
		ctx    context.Context
		digest string
		kind   errs.Kind
		msg    string
	}{
		{"unknown digest", asOwner, unknown, errs.NotFound, "no contract " + unknown},
		{"malformed digest", asOwner, "sha256:ABC", errs.Invalid, `contract digest "sha256:ABC" is malformed`},
		{"no digest", asOwner, "", errs.Invalid, "contract digest is required"},
		{"no principal", context.Background(), d, errs.Unauthenticated, "no principal"},
		{"a session", principal.With(context.Background(), "session:chat1"), d, errs.PermissionDenied, "session:chat1 may not publish or decide contracts"},
		{"a job", principal.With(context.Background(), "job:nightly"), d, errs.PermissionDenied, "job:nightly may not"},
	}
	for _, tc := range tests {
		for name, op := range ops {
			t.Run(tc.name+"/"+name, func(t *testing.T) {
				before, n := f.snapshot(), f.audit.len()
				wantErr(t, op(tc.ctx, f.s, tc.digest), tc.kind, tc.msg)
				if after := f.snapshot(); after != before {
					t.Fatalf("the store changed:\n%s\nvs\n%s", before, after)
				}
				onlyEvent(t, f.audit.since(n), "contract."+name, tc.kind.String())
			})
		}
	}
	t.Run("long reason", func(t *testing.T) {
		_, err := f.s.Approve(asOwner, &contractualv1.ApproveRequest{Digest: d, Reason: strings.Repeat("x", maxReasonBytes+1)})
		wantErr(t, err, errs.Invalid, "reason is 1025 bytes")
	})
	t.Run("device may approve", func(t *testing.T) {
		if _, err := f.s.Approve(principal.With(context.Background(), "device:laptop"), &contractualv1.ApproveRequest{Digest: d}); err != nil {
			t.Fatal(err)
		}
	})
}
