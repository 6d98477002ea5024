package broker

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"testing"

	contractualv1 "github.com/contractual/contractual/contracts/gen/contractual/v1"
	"github.com/contractual/contractual/internal/errs"
	"github.com/contractual/contractual/internal/principal"
)

func schedulerCtx() context.Context {
	return principal.With(context.Background(), principal.Service("scheduler"))
}

func mac(key, msg string) []byte {
	m := hmac.New(sha256.New, []byte(key))
	m.Write([]byte(msg))
	return m.Sum(nil)
}

// TestVerifyMac: the scheduler learns whether a MAC is right under the
// secret's current value, and nothing else; every check is audited, and
// only the scheduler may ask.
func TestVerifyMac(t *testing.T) {
	e := newEnv(t)
	e.put("HOOK_KEY", "old key")
	e.put("HOOK_KEY", secretValue)
	const msg = "1767225600.d-1.{\"x\":1}"
	verify := func(ctx context.Context, secret string, m []byte) (*contractualv1.VerifyMacResponse, error) {
		return e.svc.VerifyMac(ctx, &contractualv1.VerifyMacRequest{Secret: secret, Message: []byte(msg), Mac: m})
	}
	resp, err := verify(schedulerCtx(), "HOOK_KEY", mac(secretValue, msg))
	if err != nil || !resp.GetValid() {
		t.Fatalf("the right MAC: %v, %v", resp, err)
	}
	for name, m := range map[string][]byte{
		"the old version's key": mac("old key", msg),
		"another message":       mac(secretValue, msg+" "),
	} {
		resp, err := verify(schedulerCtx(), "HOOK_KEY", m)
		if err != nil || resp.GetValid() {
			t.Errorf("%s: %v, %v; want not valid", name, resp, err)
		}
	}
	_, err = verify(schedulerCtx(), "HOOK_KEY", []byte("short"))
	wantKind(t, err, errs.Invalid)
	_, err = verify(schedulerCtx(), "NO_SUCH_KEY", mac(secretValue, msg))
	wantKind(t, err, errs.NotFound)
	for _, ctx := range []context.Context{runnerCtx(), ownerCtx(), context.Background()} {
		_, err := verify(ctx, "HOOK_KEY", mac(secretValue, msg))
		wantKind(t, err, errs.PermissionDenied)
	}
	var ok, mismatch, refused int
	for _, ev := range e.audit.all() {
		switch {
		case ev.GetAction() == actionVerifyMAC && ev.GetOutcome() == outcomeOK:
			ok++
		case ev.GetAction() == actionVerifyMAC && ev.GetOutcome() == outcomeMismatch:
			mismatch++
		case ev.GetAction() == actionRefused:
			refused++
		}
	}
	if ok != 1 || mismatch != 2 || refused != 5 {
		t.Errorf("audited %d valid, %d mismatches, %d refusals; want 1, 2, 5", ok, mismatch, refused)
	}
	e.assertNoLeak()

	// No audit, no answer.
	e.audit.setFailing(true)
	_, err = verify(schedulerCtx(), "HOOK_KEY", mac(secretValue, msg))
	wantKind(t, err, errs.Unavailable)
}
