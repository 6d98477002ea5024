package broker

import (
	"context"
	"strings"
	"unicode/utf8"

	contractualv1 "github.com/contractual/contractual/contracts/gen/contractual/v1"
	"github.com/contractual/contractual/internal/errs"
)

// Audit actions the broker records.
const (
	actionPut     = "secret.put"
	actionDelete  = "secret.delete"
	actionRotate  = "secret.rotate_key"
	actionRelease = "secret.release"
	actionRefused = "secret.refused"
	// A webhook signature checked for the scheduler (VerifyMac).
	actionVerifyMAC = "secret.verify_mac"
)

// service is the audit events' service field.
const service = "broker"

// Bounds of the text the broker puts into an audit event.
const (
	maxDetailBytes = 4096
	maxShortBytes  = 256
)

// outcomeOK is the outcome of an operation that succeeded.
const outcomeOK = "ok"

// audit appends events and returns only once they are durable. A failure
// is errs.Unavailable: the caller must then not act. The append runs on a
// context detached from the caller's cancellation, bounded by
// Options.AuditTimeout. Events never hold a secret value: callers build
// them from names, versions, digests and error messages only.
func (s *Service) audit(ctx context.Context, events ...*contractualv1.AuditEvent) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.opts.AuditTimeout)
	defer cancel()
	if _, err := s.auditor.Append(ctx, &contractualv1.AppendRequest{Events: events}); err != nil {
		return errs.Wrap(errs.Unavailable, err, "broker: the audit log cannot record %s, so nothing was done", events[0].GetAction())
	}
	return nil
}

// auditRefusal records that an operation was refused with err, and returns
// the error for the caller: err itself, or errs.Unavailable (keeping err's
// message) if the refusal could not be recorded.
func (s *Service) auditRefusal(ctx context.Context, ev *contractualv1.AuditEvent, err error) error {
	ev.Action = actionRefused
	ev.Outcome = errs.KindOf(err).String()
	ev.Detail = clip(err.Error(), maxDetailBytes)
	if aerr := s.audit(ctx, ev); aerr != nil {
		return errs.E(errs.Unavailable, "%v (and the audit log cannot record the refusal: %v)", err, aerr)
	}
	return err
}

// event returns an audit event of the broker.
func event(action, who, detail string) *contractualv1.AuditEvent {
	return &contractualv1.AuditEvent{
		Service:   service,
		Principal: clip(who, maxShortBytes),
		Action:    action,
		Outcome:   outcomeOK,
		Detail:    clip(detail, maxDetailBytes),
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
