package scheduler

import (
	"container/heap"
	"context"
	"fmt"
	"sync"
	"time"

	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	contractualv1 "github.com/contractual/contractual/contracts/gen/contractual/v1"
	"github.com/contractual/contractual/internal/rpc"
	"github.com/contractual/contractual/internal/schedule"
)

// enqueueTimeout bounds one Enqueue call.
const enqueueTimeout = 30 * time.Second

// fireLoop fires the due triggers until ctx ends: it sleeps on the clock
// until the soonest fire time, or until the jobs change. A flush request
// (tests) is answered once everything due at its arrival has fired and the
// loop sleeps again.
func (s *Service) fireLoop(ctx context.Context) {
	var flushed []chan struct{}
	for {
		wait, ok := s.fireDue(ctx)
		var timer <-chan time.Time
		if ok {
			timer = s.clock.After(wait)
		}
		for _, done := range flushed {
			close(done)
		}
		flushed = flushed[:0]
		select {
		case <-ctx.Done():
			return
		case <-timer:
		case <-s.kick:
		case done := <-s.flush:
			flushed = append(flushed, done)
		}
	}
}

// fireDue fires every trigger due now, a batch at a time, and returns how
// long until the next one is due (false: none is).
func (s *Service) fireDue(ctx context.Context) (time.Duration, bool) {
	for ctx.Err() == nil {
		s.fireMu.Lock()
		now := s.clock.Now().UTC()
		s.mu.Lock()
		var batch []*entry
		for len(s.due) > 0 && !s.due[0].at.After(now) && len(batch) < s.opts.Batch {
			batch = append(batch, heap.Pop(&s.due).(*entry))
		}
		var wait time.Duration
		ok := len(s.due) > 0
		if ok {
			wait = s.due[0].at.Sub(now)
		}
		s.mu.Unlock()
		if len(batch) == 0 {
			s.fireMu.Unlock()
			return wait, ok
		}
		s.fire(ctx, now, batch)
		s.fireMu.Unlock()
	}
	return 0, false
}

// firing is what one due entry does now.
type firing struct {
	e     *entry
	times []time.Time // the fire times to enqueue, oldest first
	// through and next are the entry's state once they are enqueued.
	through, next time.Time
	events        []*contractualv1.AuditEvent // skipped or dropped fire times
	fired         []*contractualv1.AuditEvent // one per fire time enqueued
	failed        bool
}

// plan decides what e, due at now, fires: its fire time, if it is not
// more than MisfireThreshold late; else what the misfire policy makes of
// every fire time missed since e.through.
func (s *Service) plan(e *entry, now time.Time) *firing {
	f := &firing{e: e}
	if now.Sub(e.next) <= s.opts.MisfireThreshold {
		f.times = []time.Time{e.next}
		f.through, f.next = e.next, e.tr.Next(e.next)
		return f
	}
	d := schedule.Catch(e.tr, e.through, now, e.misfire)
	f.times, f.next, f.through = d.Missed, d.Next, now
	if !d.Dropped {
		return f
	}
	first := e.tr.Next(e.through)
	ev := s.jobEvent(e, actionSkipped, "")
	if e.misfire.CatchUp == 0 {
		ev.Detail = fmt.Sprintf("%s: the fire times from %s to %s were missed and skipped (misfire policy skip); next %s",
			e.describe, stamp(first), stamp(now), stampOr(d.Next))
	} else {
		ev.Action = actionDropped
		ev.Detail = fmt.Sprintf("%s: the fire times from %s until before %s were missed and dropped (misfire policy catch up at most %d); %d run late; next %s",
			e.describe, stamp(first), stamp(d.Missed[0]), e.misfire.CatchUp, len(d.Missed), stampOr(d.Next))
	}
	f.events = append(f.events, ev)
	return f
}

// fire enqueues the firings of batch, due at now, then audits and records
// those enqueued in full. An entry whose firing failed stays due and is
// retried with backoff; enqueueing it again is harmless, the worker
// returns the run it has.
func (s *Service) fire(ctx context.Context, now time.Time, batch []*entry) {
	fs := make([]*firing, len(batch))
	for i, e := range batch {
		fs[i] = s.plan(e, now)
	}
	// Entries in parallel, each one's fire times in order.
	sem := make(chan struct{}, s.opts.Parallel)
	var wg sync.WaitGroup
	for _, f := range fs {
		if len(f.times) == 0 {
			continue
		}
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			for _, at := range f.times {
				ev, err := s.enqueue(ctx, f.e, at)
				if err != nil {
					s.log.Warn("enqueueing a run", "job", f.e.id, "scheduled_at", at, "err", rpc.FromConnect(err))
					f.failed = true
					return
				}
				f.fired = append(f.fired, ev)
			}
		})
	}
	wg.Wait()

	// Audit what was enqueued (and skipped) before recording it: a firing
	// not recorded is enqueued again, which the worker makes a no-op.
	var events []*contractualv1.AuditEvent
	for _, f := range fs {
		if !f.failed {
			events = append(events, f.fired...)
			events = append(events, f.events...)
		}
	}
	if len(events) > 0 {
		if err := s.audit(ctx, events...); err != nil {
			s.log.Warn("auditing firings; they will be enqueued again", "err", err)
			for _, f := range fs {
				f.failed = true
			}
		}
	}

	var save []*entry
	s.mu.Lock()
	for _, f := range fs {
		e := f.e
		if f.failed {
			e.retry = min(max(2*e.retry, retryMin), retryMax)
			e.at = now.Add(e.retry)
			heap.Push(&s.due, e)
			continue
		}
		e.retry = 0
		e.through, e.next = f.through, f.next
		if n := len(f.times); n > 0 {
			e.lastFired = f.times[n-1]
		}
		e.at = e.next
		s.schedule(e)
		c := *e
		save = append(save, &c)
	}
	s.mu.Unlock()
	if len(save) > 0 {
		if err := s.saveTriggers(context.WithoutCancel(ctx), save, nil); err != nil {
			// Enqueued and audited, in memory: a restart before the next
			// record enqueues these again, which the worker makes a no-op.
			s.log.Warn("recording firings", "err", err)
		}
	}
}

// emptyPayload is the payload of a time trigger's run.
var emptyPayload = structpb.NewStructValue(&structpb.Struct{})

// enqueue enqueues e's firing at t and returns its audit event.
func (s *Service) enqueue(ctx context.Context, e *entry, t time.Time) (*contractualv1.AuditEvent, error) {
	ctx, cancel := context.WithTimeout(ctx, enqueueTimeout)
	defer cancel()
	resp, err := s.deps.Queue.Enqueue(ctx, &contractualv1.EnqueueRequest{
		JobId: e.id, JobDigest: e.digest, Trigger: e.kind, ScheduledAt: timestamppb.New(t), Payload: emptyPayload,
	})
	if err != nil {
		return nil, err
	}
	late := s.clock.Now().Sub(t)
	ev := s.jobEvent(e, actionFired, "")
	if resp.GetExisted() {
		ev.Outcome = outcomeExisted
	}
	ev.Detail = fmt.Sprintf("%s: scheduled at %s, enqueued %s late as run %s (version %s)",
		e.describe, stamp(t), late.Round(time.Millisecond), clip(resp.GetRun().GetId(), maxShortBytes), e.digest)
	return ev, nil
}

// stamp formats t for audit details.
func stamp(t time.Time) string { return t.UTC().Format(time.RFC3339) }

// stampOr is stamp(t), or "none" for the zero time.
func stampOr(t time.Time) string {
	if t.IsZero() {
		return "none"
	}
	return stamp(t)
}
