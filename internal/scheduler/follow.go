package scheduler

import (
	"context"
	"time"

	contractualv1 "github.com/contractual/contractual/contracts/gen/contractual/v1"
	"github.com/contractual/contractual/internal/rpc"
)

// follow applies policy's feed of approved jobs until ctx ends, retrying
// with backoff when policy cannot be reached; after an error it asks for
// the whole set again.
func (s *Service) follow(ctx context.Context) {
	req := &contractualv1.WatchJobsRequest{}
	retry := retryMin
	for ctx.Err() == nil {
		resp, err := s.deps.Jobs.WatchJobs(ctx, req)
		if err == nil {
			err = s.apply(ctx, resp)
		}
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			s.log.Warn("following policy's jobs", "err", rpc.FromConnect(err), "retry in", retry)
			select {
			case <-s.clock.After(retry):
			case <-ctx.Done():
				return
			}
			retry = min(2*retry, retryMax)
			req = &contractualv1.WatchJobsRequest{}
			continue
		}
		retry = retryMin
		req = &contractualv1.WatchJobsRequest{Epoch: resp.GetEpoch(), Revision: resp.GetRevision()}
	}
}

// apply brings the jobs in line with one answer of the feed, in memory
// and in the store, and wakes the fire loop. A snapshot replaces the set
// (a job missing from it stops); changes apply in order: an approved
// version replaces the job's trigger (keeping its state), and a paused,
// deleted or superseded version of the job's current one stops it.
func (s *Service) apply(ctx context.Context, resp *contractualv1.WatchJobsResponse) error {
	s.fireMu.Lock()
	defer s.fireMu.Unlock()
	now := s.clock.Now().UTC()
	touched := map[string]bool{}
	s.mu.Lock()
	if resp.GetSnapshot() {
		seen := map[string]bool{}
		for _, rec := range resp.GetJobs() {
			if rec.GetState() == contractualv1.JobState_JOB_STATE_APPROVED {
				seen[rec.GetId()] = true
				s.approve(rec, now, touched)
			}
		}
		for id, e := range s.jobs {
			if !seen[id] {
				s.stop(e, touched)
			}
		}
		for id := range s.stored {
			if !seen[id] {
				touched[id] = true
			}
		}
		s.stored, s.synced = nil, true
	} else {
		for _, rec := range resp.GetJobs() {
			cur := s.jobs[rec.GetId()]
			switch {
			case rec.GetState() == contractualv1.JobState_JOB_STATE_APPROVED:
				s.approve(rec, now, touched)
			case cur != nil && (cur.digest == rec.GetDigest() || rec.GetState() == contractualv1.JobState_JOB_STATE_DELETED):
				s.stop(cur, touched)
			}
		}
	}
	var save []*entry
	var gone []string
	for id := range touched {
		if e := s.jobs[id]; e != nil {
			c := *e
			save = append(save, &c)
		} else {
			gone = append(gone, id)
		}
	}
	s.mu.Unlock()
	if err := s.saveTriggers(ctx, save, gone); err != nil {
		return err
	}
	s.wake()
	return nil
}

// approve makes rec the job's approved version. Its trigger starts after
// both its approval (rec.decided_at: for a resumed job, its resumption)
// and the last fire time dealt with: the same version after a restart
// keeps its state, a new version of a job fires no time twice, a resumed
// job fires nothing of its pause, and fire times since then, missed while
// the scheduler was down, are misfires. Called with s.mu held.
func (s *Service) approve(rec *contractualv1.JobRecord, now time.Time, touched map[string]bool) {
	id := rec.GetId()
	cur := s.jobs[id]
	if cur == nil {
		cur = s.stored[id]
	}
	approvedAt := now
	if d := rec.GetDecidedAt(); d != nil && d.AsTime().Before(now) {
		approvedAt = d.AsTime().UTC()
	}
	if cur != nil && cur.digest == rec.GetDigest() && cur.kind != "" && !approvedAt.After(cur.through) {
		return // the version it has
	}
	e, err := newEntry(rec)
	if err != nil {
		s.log.Warn("an approved job's trigger does not parse: it does not fire", "job", id, "err", err)
		if old := s.jobs[id]; old != nil {
			s.stop(old, touched)
		}
		return
	}
	// Fire times before the version's approval (or its resumption, a
	// fresh approval) never fire, nor those dealt with already.
	e.through = approvedAt
	if cur != nil {
		e.lastFired = cur.lastFired
		if cur.through.After(e.through) {
			e.through = cur.through
		}
	}
	if e.tr != nil {
		e.next = e.tr.Next(e.through)
	}
	e.at = e.next
	if old := s.jobs[id]; old != nil {
		s.unschedule(old)
	}
	s.jobs[id] = e
	s.schedule(e)
	touched[id] = true
}

// stop forgets e's job: it fires no more. Called with s.mu held.
func (s *Service) stop(e *entry, touched map[string]bool) {
	s.unschedule(e)
	delete(s.jobs, e.id)
	touched[e.id] = true
}
