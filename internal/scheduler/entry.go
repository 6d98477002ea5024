package scheduler

import (
	"container/heap"
	"fmt"
	"time"

	contractualv1 "github.com/contractual/contractual/contracts/gen/contractual/v1"
	"github.com/contractual/contractual/internal/errs"
	"github.com/contractual/contractual/internal/schedule"
)

// Trigger kinds, as EnqueueRequest.trigger names them.
const (
	kindCron    = "cron"
	kindOnce    = "once"
	kindWebhook = "webhook"
)

// entry is one approved job's trigger and its state.
type entry struct {
	id, digest string
	kind       string
	describe   string // the trigger in words, for the store and audit
	tr         schedule.Trigger
	misfire    schedule.Misfire
	webhook    *contractualv1.WebhookTrigger

	// through: every fire time at or before it was dealt with. next: the
	// first fire time after through (zero: none, ever). lastFired: the
	// last fire time enqueued.
	through, next, lastFired time.Time

	// at is when the fire loop looks at the entry next: next, or later
	// while a failed firing backs off (retry).
	at    time.Time
	retry time.Duration
	index int // in the heap; -1 if not there
}

// newEntry reads rec's trigger and misfire policy. Its state is unset.
func newEntry(rec *contractualv1.JobRecord) (*entry, error) {
	j := rec.GetJob()
	e := &entry{id: rec.GetId(), digest: rec.GetDigest(), index: -1}
	if m := j.GetMisfire(); m.GetPolicy() == contractualv1.MisfirePolicy_MISFIRE_POLICY_CATCH_UP {
		e.misfire.CatchUp = int(m.GetMaxCatchUp())
	}
	switch tr := j.GetTrigger(); {
	case tr.GetCron() != nil:
		c, err := schedule.Parse(tr.GetCron().GetExpression(), tr.GetCron().GetTimeZone())
		if err != nil {
			return nil, err
		}
		e.kind, e.tr, e.describe = kindCron, c, "cron "+c.String()
	case tr.GetOnce() != nil:
		at, err := time.Parse(time.RFC3339, tr.GetOnce().GetAt())
		if err != nil {
			return nil, errs.Wrap(errs.Invalid, err, "once: %q is not an RFC 3339 time", tr.GetOnce().GetAt())
		}
		e.kind, e.tr, e.describe = kindOnce, schedule.At{T: at.UTC()}, "once at "+at.UTC().Format(time.RFC3339)
	case tr.GetWebhook() != nil:
		e.kind, e.webhook = kindWebhook, tr.GetWebhook()
		e.describe = fmt.Sprintf("webhook signed with secret %s", tr.GetWebhook().GetSecret())
	default:
		return nil, errs.E(errs.Invalid, "job %s has no trigger", rec.GetId())
	}
	return e, nil
}

// dueHeap orders entries by at, soonest first.
type dueHeap []*entry

func (h dueHeap) Len() int           { return len(h) }
func (h dueHeap) Less(i, j int) bool { return h[i].at.Before(h[j].at) }
func (h dueHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].index, h[j].index = i, j
}
func (h *dueHeap) Push(x any) {
	e := x.(*entry)
	e.index = len(*h)
	*h = append(*h, e)
}
func (h *dueHeap) Pop() any {
	old := *h
	e := old[len(old)-1]
	old[len(old)-1] = nil
	*h = old[:len(old)-1]
	e.index = -1
	return e
}

// schedule puts e in the heap at e.at if it has a fire time, else out of
// it. Called with s.mu held.
func (s *Service) schedule(e *entry) {
	if e.index >= 0 {
		heap.Remove(&s.due, e.index)
	}
	if !e.next.IsZero() {
		heap.Push(&s.due, e)
	}
}

// unschedule takes e out of the heap. Called with s.mu held.
func (s *Service) unschedule(e *entry) {
	if e.index >= 0 {
		heap.Remove(&s.due, e.index)
	}
}
