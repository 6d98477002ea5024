package broker

import (
	"context"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	contractualv1 "github.com/contractual/contractual/contracts/gen/contractual/v1"
	"github.com/contractual/contractual/internal/decision"
	"github.com/contractual/contractual/internal/errs"
	"github.com/contractual/contractual/internal/principal"
)

func TestHandleHappyPath(t *testing.T) {
	e := newEnv(t)
	e.put("API_KEY", "old")
	e.put("API_KEY", secretValue)
	resp, err := e.svc.IssueHandle(runnerCtx(), &contractualv1.IssueHandleRequest{
		Decision: e.decision(e.granting), Secret: "API_KEY", Audience: "https://api.example.com",
	})
	if err != nil {
		t.Fatal(err)
	}
	if want := e.clock.Now().Add(DefaultHandleTTL); !resp.GetExpiresAt().AsTime().Equal(want) {
		t.Fatalf("expires %v, want %v", resp.GetExpiresAt().AsTime(), want)
	}
	got, err := e.redeem(resp.GetHandle())
	if err != nil {
		t.Fatal(err)
	}
	if string(got.GetValue()) != secretValue || got.GetVersion() != 2 {
		t.Fatalf("redeemed version %d, right value %v", got.GetVersion(), string(got.GetValue()) == secretValue)
	}
	evs := e.audit.all()
	rel := evs[len(evs)-1]
	if rel.GetAction() != actionRelease || rel.GetOutcome() != outcomeOK || rel.GetPrincipal() != "device:phone" ||
		rel.GetDecisionId() != "dec-1" || rel.GetInputHash() != decision.Hash([]byte(`{}`)) ||
		rel.GetContractDigest() != e.granting || !strings.Contains(rel.GetDetail(), "API_KEY version 2") ||
		!strings.Contains(rel.GetDetail(), "https://api.example.com") {
		t.Fatalf("release event %v", rel)
	}
	list, err := e.svc.ListSecrets(ownerCtx(), &contractualv1.ListSecretsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if lu := list.GetSecrets()[0].GetLastUsedAt(); lu == nil || !lu.AsTime().Equal(e.clock.Now()) {
		t.Fatalf("last used %v, want %v", lu, e.clock.Now())
	}
}

func TestHandleExpiryIsDecisionBound(t *testing.T) {
	e := newEnv(t)
	e.put("API_KEY", secretValue)
	exp := e.clock.Now().Add(2 * time.Second)
	resp, err := e.svc.IssueHandle(runnerCtx(), &contractualv1.IssueHandleRequest{
		Decision: e.decision(e.granting, func(d *contractualv1.Decision) { d.ExpiresAt = timestamppb.New(exp) }),
		Secret:   "API_KEY", Audience: "https://api.example.com",
	})
	if err != nil {
		t.Fatal(err)
	}
	if !resp.GetExpiresAt().AsTime().Equal(exp) {
		t.Fatalf("handle expires %v, after its decision %v", resp.GetExpiresAt().AsTime(), exp)
	}
}

func TestIssueRefusals(t *testing.T) {
	e := newEnv(t)
	e.put("API_KEY", secretValue)
	e.put("OTHER", secretValue)
	pending := e.addContract(strings.Replace(grantingYAML, "name: keyed", "name: pending", 1), contractualv1.ContractState_CONTRACT_STATE_PENDING)
	other, err := decision.NewKeyset()
	if err != nil {
		t.Fatal(err)
	}
	forger, err := decision.NewSigner(other)
	if err != nil {
		t.Fatal(err)
	}
	forged := func() *contractualv1.SignedDecision {
		sd := e.decision(e.granting)
		d := new(contractualv1.Decision)
		if err := proto.Unmarshal(sd.GetDecision(), d); err != nil {
			t.Fatal(err)
		}
		f, err := forger.Sign(d)
		if err != nil {
			t.Fatal(err)
		}
		return f
	}
	tampered := func() *contractualv1.SignedDecision {
		sd := e.decision(e.plain)
		good := e.decision(e.granting)
		return &contractualv1.SignedDecision{Decision: good.GetDecision(), Signature: sd.GetSignature()}
	}
	deny := func(d *contractualv1.Decision) { d.Verdict = contractualv1.Verdict_VERDICT_DENY }
	expired := func(d *contractualv1.Decision) { d.ExpiresAt = timestamppb.New(e.clock.Now()) }
	otherModule := func(d *contractualv1.Decision) { d.ModuleDigest = "sha256:" + strings.Repeat("0", 64) }
	unknown := func(d *contractualv1.Decision) { d.ContractDigest = "sha256:" + strings.Repeat("1", 64) }
	api := "https://api.example.com"
	cases := []struct {
		name     string
		ctx      context.Context
		sd       *contractualv1.SignedDecision
		secret   string
		audience string
		kind     errs.Kind
		want     string
	}{
		{"owner asks", ownerCtx(), e.decision(e.granting), "API_KEY", api, errs.PermissionDenied, "only service:runner"},
		{"no principal", context.Background(), e.decision(e.granting), "API_KEY", api, errs.PermissionDenied, "only service:runner"},
		{"other service", principal.With(context.Background(), principal.Service("engine")), e.decision(e.granting), "API_KEY", api, errs.PermissionDenied, "only service:runner"},
		{"no decision", runnerCtx(), nil, "API_KEY", api, errs.PermissionDenied, "no decision"},
		{"forged signature", runnerCtx(), forged(), "API_KEY", api, errs.PermissionDenied, "signature"},
		{"swapped signature", runnerCtx(), tampered(), "API_KEY", api, errs.PermissionDenied, "signature"},
		{"deny verdict", runnerCtx(), e.decision(e.granting, deny), "API_KEY", api, errs.PermissionDenied, "not allow"},
		{"expired decision", runnerCtx(), e.decision(e.granting, expired), "API_KEY", api, errs.PermissionDenied, "expired"},
		{"unknown contract", runnerCtx(), e.decision(e.granting, unknown), "API_KEY", api, errs.PermissionDenied, "does not have"},
		{"pending contract", runnerCtx(), e.decision(pending), "API_KEY", api, errs.PermissionDenied, "not approved"},
		{"other module", runnerCtx(), e.decision(e.granting, otherModule), "API_KEY", api, errs.PermissionDenied, "module"},
		{"wrong audience", runnerCtx(), e.decision(e.granting), "API_KEY", "https://other.example.com", errs.PermissionDenied, "does not grant"},
		{"http audience", runnerCtx(), e.decision(e.granting), "API_KEY", "http://api.example.com", errs.PermissionDenied, "does not grant"},
		{"ungranted secret", runnerCtx(), e.decision(e.granting), "OTHER", api, errs.PermissionDenied, "does not grant"},
		{"malformed secret", runnerCtx(), e.decision(e.granting), "api_key", api, errs.Invalid, "malformed"},
		{"missing secret", runnerCtx(), e.decision(e.granting), "API_KEY", api, errs.NotFound, "no secret"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if c.kind == errs.NotFound {
				if _, err := e.svc.DeleteSecret(ownerCtx(), &contractualv1.DeleteSecretRequest{Name: "API_KEY"}); err != nil {
					t.Fatal(err)
				}
			}
			n := len(e.audit.all())
			_, err := e.svc.IssueHandle(c.ctx, &contractualv1.IssueHandleRequest{Decision: c.sd, Secret: c.secret, Audience: c.audience})
			wantKind(t, err, c.kind)
			if !strings.Contains(err.Error(), c.want) {
				t.Fatalf("error %q does not say %q", err, c.want)
			}
			evs := e.audit.all()
			if len(evs) != n+1 || evs[n].GetAction() != actionRefused {
				t.Fatalf("refusal not audited: %v", evs[n:])
			}
		})
	}
	e.assertNoLeak()
	if len(e.svc.handles) != 0 {
		t.Fatalf("%d handles issued by refusals", len(e.svc.handles))
	}
}

// TestUnnamedSecretUnreachable checks that a contract that names no secret
// gets no handle, whatever secret and audience the runner asks for.
func TestUnnamedSecretUnreachable(t *testing.T) {
	e := newEnv(t)
	e.put("API_KEY", secretValue)
	audiences := []string{"https://api.example.com", "http://api.example.com", "https://other.example.com",
		"https://api.example.com:443", "https://API.EXAMPLE.COM", "", "https://*.example.com", "api.example.com"}
	for _, aud := range audiences {
		for _, secret := range []string{"API_KEY", "OTHER"} {
			_, err := e.svc.IssueHandle(runnerCtx(), &contractualv1.IssueHandleRequest{
				Decision: e.decision(e.plain), Secret: secret, Audience: aud,
			})
			wantKind(t, err, errs.PermissionDenied)
		}
	}
	e.assertNoLeak()
}

func TestRedeemRefusals(t *testing.T) {
	api := "https://api.example.com"
	cases := []struct {
		name string
		// redeem is called with a freshly issued handle.
		redeem func(e *env, h string) error
		want   string
	}{
		{"forged", func(e *env, h string) error {
			_, err := e.redeem(strings.Repeat("A", len(h)))
			return err
		}, "unknown handle"},
		{"malformed", func(e *env, h string) error {
			_, err := e.redeem("not a handle")
			return err
		}, "unknown handle"},
		{"replayed", func(e *env, h string) error {
			if _, err := e.redeem(h); err != nil {
				t.Fatal(err)
			}
			_, err := e.redeem(h)
			return err
		}, "unknown handle"},
		{"expired", func(e *env, h string) error {
			e.clock.Advance(DefaultHandleTTL)
			_, err := e.redeem(h)
			return err
		}, "expired"},
		{"wrong audience", func(e *env, h string) error {
			_, err := e.svc.RedeemHandle(runnerCtx(), &contractualv1.RedeemHandleRequest{Handle: h, Audience: "https://evil.example.net"})
			return err
		}, "not https://evil.example.net"},
		{"wrong caller", func(e *env, h string) error {
			_, err := e.svc.RedeemHandle(ownerCtx(), &contractualv1.RedeemHandleRequest{Handle: h, Audience: api})
			return err
		}, "issued to service:runner"},
		{"no caller", func(e *env, h string) error {
			_, err := e.svc.RedeemHandle(context.Background(), &contractualv1.RedeemHandleRequest{Handle: h, Audience: api})
			return err
		}, "issued to service:runner"},
		{"lost in a restart", func(e *env, h string) error {
			e.svc.Close(context.Background())
			e.svc = e.open()
			_, err := e.redeem(h)
			return err
		}, "unknown handle"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			e := newEnv(t)
			e.put("API_KEY", secretValue)
			h := e.issue()
			n := len(e.audit.all())
			err := c.redeem(e, h)
			wantKind(t, err, errs.PermissionDenied)
			if !strings.Contains(err.Error(), c.want) {
				t.Fatalf("error %q does not say %q", err, c.want)
			}
			last := e.audit.all()[len(e.audit.all())-1]
			if len(e.audit.all()) <= n || last.GetAction() != actionRefused || last.GetOutcome() != "permission_denied" {
				t.Fatalf("refusal not audited: %v", last)
			}
			// A refused handle is spent, whatever the reason.
			if c.name != "forged" && c.name != "malformed" {
				_, err = e.redeem(h)
				wantKind(t, err, errs.PermissionDenied)
			}
			e.assertNoLeak()
		})
	}
}

func TestRedeemAuditOutageReleasesNothing(t *testing.T) {
	e := newEnv(t)
	e.put("API_KEY", secretValue)
	h := e.issue()
	e.audit.setFailing(true)
	resp, err := e.redeem(h)
	wantKind(t, err, errs.Unavailable)
	if resp != nil {
		t.Fatalf("a value left without an audit record: %v", resp != nil)
	}
	e.audit.setFailing(false)
	// The handle is spent: the runner must ask for a new one.
	_, err = e.redeem(h)
	wantKind(t, err, errs.PermissionDenied)
	if _, err := e.redeem(e.issue()); err != nil {
		t.Fatal(err)
	}
	for _, ev := range e.audit.all() {
		if ev.GetAction() == actionRelease && ev.GetOutcome() == outcomeOK && strings.Count(ev.GetDetail(), "released") != 1 {
			t.Fatalf("odd release event %v", ev)
		}
	}
	e.assertNoLeak()
}

func TestTooManyHandles(t *testing.T) {
	e := newEnv(t)
	e.svc.opts.MaxHandles = 2
	e.put("API_KEY", secretValue)
	e.issue()
	e.issue()
	_, err := e.svc.IssueHandle(runnerCtx(), &contractualv1.IssueHandleRequest{
		Decision: e.decision(e.granting), Secret: "API_KEY", Audience: "https://api.example.com",
	})
	wantKind(t, err, errs.ResourceExhausted)
	e.clock.Advance(DefaultHandleTTL) // expired handles are swept
	e.issue()
}

// assertNoLeak checks that no recorded audit event holds the value.
func (e *env) assertNoLeak() {
	e.t.Helper()
	for _, ev := range e.audit.all() {
		b, err := proto.Marshal(ev)
		if err != nil {
			e.t.Fatal(err)
		}
		if strings.Contains(string(b), secretValue) {
			e.t.Fatalf("audit event %s holds the secret value", ev.GetAction())
		}
	}
}
