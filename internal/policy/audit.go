package policy

import (
	"context"
	"strings"
	"unicode/utf8"

	contractualv1 "github.com/contractual/contractual/contracts/gen/contractual/v1"
	"github.com/contractual/contractual/internal/errs"
)

// Audit actions policy records.
const (
	actionPublish  = "contract.publish"
	actionApprove  = "contract.approve"
	actionReject   = "contract.reject"
	actionRevoke   = "contract.revoke"
	actionDecision = "call.decision"
	actionRefused  = "call.refused"
)

// service is the audit events' service field.
const service = "policy"

// Bounds of the text policy puts into an audit event (see internal/audit).
const (
	maxDetailBytes = 4096
	maxShortBytes  = 256
)

// outcomeOK is the outcome of a contract operation that succeeded.
const outcomeOK = "ok"

// outcomeOf is the outcome of an operation that failed: its error kind.
func outcomeOf(err error) string { return errs.KindOf(err).String() }

// audit appends events and returns only once they are durable. A failure
// is errs.Unavailable: the caller must then not act. The append runs on a
// context detached from the caller's cancellation (a state change that
// was recorded must also be committed), bounded by Options.AuditTimeout.
func (s *Service) audit(ctx context.Context, events ...*contractualv1.AuditEvent) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.opts.AuditTimeout)
	defer cancel()
	if _, err := s.auditor.Append(ctx, &contractualv1.AppendRequest{Events: events}); err != nil {
		return errs.Wrap(errs.Unavailable, err, "policy: the audit log cannot record %s, so nothing was done", events[0].GetAction())
	}
	return nil
}

// auditRefusal records that an operation was refused with err, and returns
// the error for the caller: err itself, or errs.Unavailable (keeping err's
// message) if the refusal could not be recorded.
func (s *Service) auditRefusal(ctx context.Context, ev *contractualv1.AuditEvent, err error) error {
	ev.Outcome = outcomeOf(err)
	ev.Detail = clip(err.Error(), maxDetailBytes)
	if aerr := s.audit(ctx, ev); aerr != nil {
		return errs.E(errs.Unavailable, "%v (and the audit log cannot record the refusal: %v)", err, aerr)
	}
	return err
}

// event returns an audit event of policy with the given action, principal
// and contract.
func event(action, who string, rec *contractualv1.ContractRecord) *contractualv1.AuditEvent {
	return &contractualv1.AuditEvent{
		Service:        service,
		Principal:      clip(who, maxShortBytes),
		Action:         action,
		ContractDigest: rec.GetDigest(),
		ModuleDigest:   rec.GetContract().GetModule(),
	}
}

// clip makes s valid UTF-8 of at most max bytes, cut at a rune boundary,
// with "…" marking a cut.
func clip(s string, max int) string {
	s = strings.ToValidUTF8(s, "\uFFFD")
	if len(s) <= max {
		return s
	}
	const ellipsis = "…"
	cut := max - len(ellipsis)
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + ellipsis
}
