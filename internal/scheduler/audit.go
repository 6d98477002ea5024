package scheduler

import (
	"context"
	"strings"
	"unicode/utf8"

	contractualv1 "github.com/contractual/contractual/contracts/gen/contractual/v1"
	"github.com/contractual/contractual/internal/errs"
)

// Audit actions the scheduler records.
const (
	// A trigger fired: its run was enqueued.
	actionFired = "trigger.fired"
	// Missed fire times were skipped (misfire policy skip).
	actionSkipped = "trigger.skipped"
	// Missed fire times beyond the catch-up limit were dropped.
	actionDropped = "trigger.dropped"
	// A webhook delivery was refused.
	actionWebhookRefused = "webhook.refused"
)

// service is the audit events' service field.
const service = "scheduler"

// Outcomes besides an error kind.
const (
	outcomeOK = "ok"
	// The worker already had the run: a firing enqueued again.
	outcomeExisted = "existed"
)

// Bounds of the text the scheduler puts into an audit event.
const (
	maxDetailBytes = 4096
	maxShortBytes  = 256
)

// audit appends events and returns once they are durable, on a context
// detached from ctx's cancellation, bounded by Config.AuditTimeout.
func (s *Service) audit(ctx context.Context, events ...*contractualv1.AuditEvent) error {
	for _, ev := range events {
		ev.Detail = clip(ev.GetDetail(), maxDetailBytes)
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.opts.AuditTimeout)
	defer cancel()
	if _, err := s.deps.Audit.Append(ctx, &contractualv1.AppendRequest{Events: events}); err != nil {
		return errs.Wrap(errs.Unavailable, err, "scheduler: the audit log cannot record %s", events[0].GetAction())
	}
	return nil
}

// jobEvent is an event about e's job, acting as the job.
func (s *Service) jobEvent(e *entry, action, detail string) *contractualv1.AuditEvent {
	return &contractualv1.AuditEvent{
		Service: service, Principal: "job:" + e.id, Action: action, Outcome: outcomeOK,
		Detail: clip(detail, maxDetailBytes),
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
