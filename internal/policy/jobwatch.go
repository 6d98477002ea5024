package policy

import (
	"cmp"
	"context"
	"slices"
	"sync"
	"time"

	"google.golang.org/protobuf/proto"

	contractualv1 "github.com/contractual/contractual/contracts/gen/contractual/v1"
	"github.com/contractual/contractual/internal/errs"
)

// jobFeed is the log of the changes of the jobs that may run, which
// WatchJobs serves, and the set of those jobs (the approved, unpaused
// versions), kept together so that a snapshot and a revision always agree.
// Like the contracts' feed, its revisions count the changes since Open and
// its random epoch tells one Open from another.
type jobFeed struct {
	epoch string

	mu  sync.Mutex
	rev uint64
	// log holds the last changes; log[i] has revision rev-len(log)+1+i.
	log []*contractualv1.JobRecord
	// wake is closed, and replaced, at each change.
	wake chan struct{}
	// running is the approved version of each job that may run, by id.
	running map[string]*contractualv1.JobRecord
}

func newJobFeed(running []*contractualv1.JobRecord) *jobFeed {
	f := &jobFeed{epoch: newFeed().epoch, wake: make(chan struct{}), running: make(map[string]*contractualv1.JobRecord, len(running))}
	for _, rec := range running {
		f.running[rec.GetId()] = rec
	}
	return f
}

// publish records committed changes of job versions, in order: an approved
// version becomes its job's running one; any other state of a job's
// running version stops it. Changes of versions that never ran (a pending
// one created or rejected) are not the feed's business.
func (f *jobFeed) publish(changes ...*contractualv1.JobRecord) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var news []*contractualv1.JobRecord
	for _, c := range changes {
		cur := f.running[c.GetId()]
		switch {
		case c.GetState() == jobApproved:
			f.running[c.GetId()] = proto.CloneOf(c)
		case cur != nil && cur.GetDigest() == c.GetDigest():
			delete(f.running, c.GetId())
		case c.GetState() != jobDeleted && c.GetState() != jobPaused && c.GetState() != jobSuperseded:
			continue
		}
		news = append(news, proto.CloneOf(c))
	}
	if len(news) == 0 {
		return
	}
	f.rev += uint64(len(news))
	f.log = append(f.log, news...)
	if n := len(f.log) - feedLength; n > 0 {
		f.log = slices.Clone(f.log[n:])
	}
	close(f.wake)
	f.wake = make(chan struct{})
}

// WatchJobs answers with the changes of the jobs that may run after the
// request's revision — a job approved (its new running version), paused,
// superseded or deleted — waiting up to Config.WatchWait for one if there
// is none yet; or, if policy no longer knows that revision, with every
// running job (snapshot), newest approval first.
func (s *Service) WatchJobs(ctx context.Context, req *contractualv1.WatchJobsRequest) (*contractualv1.WatchJobsResponse, error) {
	timer := time.NewTimer(s.opts.WatchWait)
	defer timer.Stop()
	for {
		resp, wake := s.jobs.since(req.GetEpoch(), req.GetRevision())
		if resp != nil {
			return resp, nil
		}
		select {
		case <-wake:
		case <-timer.C:
			return &contractualv1.WatchJobsResponse{Epoch: s.jobs.epoch, Revision: req.GetRevision()}, nil
		case <-ctx.Done():
			return nil, errs.Wrap(errs.Unavailable, ctx.Err(), "watching jobs: canceled")
		}
	}
}

// since returns the answer to a caller at epoch and rev, or, if there is
// nothing new, nil and the channel closed at the next change.
func (f *jobFeed) since(epoch string, rev uint64) (*contractualv1.WatchJobsResponse, <-chan struct{}) {
	f.mu.Lock()
	defer f.mu.Unlock()
	resp := &contractualv1.WatchJobsResponse{Epoch: f.epoch, Revision: f.rev}
	behind := f.rev - rev
	switch {
	case epoch != f.epoch || rev > f.rev || behind > uint64(len(f.log)):
		resp.Snapshot = true
		for _, rec := range f.running {
			resp.Jobs = append(resp.Jobs, proto.CloneOf(rec))
		}
		slices.SortFunc(resp.Jobs, func(x, y *contractualv1.JobRecord) int {
			if c := y.GetDecidedAt().AsTime().Compare(x.GetDecidedAt().AsTime()); c != 0 {
				return c
			}
			return cmp.Compare(x.GetId(), y.GetId())
		})
	case behind == 0:
		return nil, f.wake
	default:
		for _, c := range f.log[uint64(len(f.log))-behind:] {
			resp.Jobs = append(resp.Jobs, proto.CloneOf(c))
		}
	}
	return resp, nil
}
