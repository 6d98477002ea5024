package broker

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"fmt"

	contractualv1 "github.com/contractual/contractual/contracts/gen/contractual/v1"
	"github.com/contractual/contractual/internal/errs"
	"github.com/contractual/contractual/internal/principal"
)

// macCaller is the one principal that may ask for a MAC check: the
// scheduler, for webhook signatures.
var macCaller = principal.Service("scheduler")

// outcomeMismatch is the outcome of a MAC check that found a wrong MAC.
const outcomeMismatch = "mismatch"

// VerifyMac reports whether req's MAC is the HMAC-SHA256 of its message
// keyed by the current value of the secret it names, for the scheduler
// only. The check is audited (valid or not) before the answer; if the audit
// log cannot record it, the caller gets an error. The value never leaves
// the broker, and the answer says nothing but valid or not.
func (s *Service) VerifyMac(ctx context.Context, req *contractualv1.VerifyMacRequest) (*contractualv1.VerifyMacResponse, error) {
	caller := principal.From(ctx)
	ev := event(actionVerifyMAC, caller, "")
	if caller != macCaller {
		return nil, s.auditRefusal(ctx, ev,
			errs.E(errs.PermissionDenied, "%s may not check MACs: only %s may", clip(orNone(caller), 100), macCaller))
	}
	if err := checkName(req.GetSecret()); err != nil {
		return nil, s.auditRefusal(ctx, ev, err)
	}
	if len(req.GetMac()) != sha256.Size {
		return nil, s.auditRefusal(ctx, ev, errs.E(errs.Invalid, "a MAC is %d bytes (HMAC-SHA256), not %d", sha256.Size, len(req.GetMac())))
	}
	s.mu.RLock()
	version, ct, err := latest(ctx, s.db, req.GetSecret())
	var key []byte
	if err == nil {
		key, err = s.data.open(req.GetSecret(), version, ct)
	}
	s.mu.RUnlock()
	if err != nil {
		return nil, s.auditRefusal(ctx, ev, err)
	}
	m := hmac.New(sha256.New, key)
	m.Write(req.GetMessage())
	clear(key)
	valid := hmac.Equal(m.Sum(nil), req.GetMac())
	ev.Detail = fmt.Sprintf("secret %s version %d: the MAC of a %d byte message is valid", req.GetSecret(), version, len(req.GetMessage()))
	if !valid {
		ev.Outcome = outcomeMismatch
		ev.Detail = fmt.Sprintf("secret %s version %d: the MAC of a %d byte message does not match", req.GetSecret(), version, len(req.GetMessage()))
	}
	if err := s.audit(ctx, ev); err != nil {
		return nil, err
	}
	return &contractualv1.VerifyMacResponse{Valid: valid}, nil
}
