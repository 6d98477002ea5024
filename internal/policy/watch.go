package policy

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/hex"
	"slices"
	"sync"
	"time"

	"google.golang.org/protobuf/proto"

	contractualv1 "github.com/contractual/contractual/contracts/gen/contractual/v1"
	"github.com/contractual/contractual/internal/errs"
)

// DefaultWatchWait is how long WatchContracts waits for a change before it
// answers that there is none.
const DefaultWatchWait = 30 * time.Second

// feedLength bounds the changes kept for WatchContracts; a caller further
// behind gets the whole approved set again.
const feedLength = 1024

// feed is the log of the changes of the contracts that
// WatchContracts serves. Its revisions count the changes since Open; its
// epoch, random, tells one Open from another.
type feed struct {
	epoch string

	mu  sync.Mutex
	rev uint64
	// log holds the last changes; log[i] has revision rev-len(log)+1+i.
	log []*contractualv1.ApprovalChange
	// wake is closed, and replaced, at each change.
	wake chan struct{}
	// pending holds the newest pending contracts (at most feedLength),
	// oldest first, for snapshots: a runner that starts while the owner
	// reviews a contract compiles it too.
	pending []*contractualv1.ApprovalChange
}

func newFeed() *feed {
	var b [8]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails
	return &feed{epoch: hex.EncodeToString(b[:]), wake: make(chan struct{})}
}

// approvalChange is the change of rec to state.
func approvalChange(rec *contractualv1.ContractRecord, state contractualv1.ContractState) *contractualv1.ApprovalChange {
	return &contractualv1.ApprovalChange{
		Digest: rec.GetDigest(), Name: rec.GetContract().GetName(), Module: rec.GetContract().GetModule(), State: state,
	}
}

// setApproved stores a, the approved set after changes, and publishes the
// changes, together: a snapshot never sees one without the other. Called
// with s.mu held.
func (s *Service) setApproved(a *approvedSet, changes ...*contractualv1.ApprovalChange) {
	f := s.feed
	f.mu.Lock()
	defer f.mu.Unlock()
	s.approved.Store(a)
	if len(changes) == 0 {
		return
	}
	for _, c := range changes {
		f.pending = slices.DeleteFunc(f.pending, func(p *contractualv1.ApprovalChange) bool { return p.GetDigest() == c.GetDigest() })
		if c.GetState() == pending {
			f.pending = append(f.pending, c)
		}
	}
	if n := len(f.pending) - feedLength; n > 0 {
		f.pending = slices.Clone(f.pending[n:])
	}
	f.rev += uint64(len(changes))
	f.log = append(f.log, changes...)
	if n := len(f.log) - feedLength; n > 0 {
		f.log = slices.Clone(f.log[n:])
	}
	close(f.wake)
	f.wake = make(chan struct{})
}

// WatchContracts answers with the changes of the approved contracts after
// the request's revision, waiting up to Options.WatchWait for one if there
// is none yet; or with the whole approved set (snapshot), newest approval
// first, if policy no longer knows that revision. Its cost does not grow
// with the number of contracts, but for a snapshot.
func (s *Service) WatchContracts(ctx context.Context, req *contractualv1.WatchContractsRequest) (*contractualv1.WatchContractsResponse, error) {
	timer := time.NewTimer(s.opts.WatchWait)
	defer timer.Stop()
	for {
		resp, wake := s.since(req.GetEpoch(), req.GetRevision())
		if resp != nil {
			return resp, nil
		}
		select {
		case <-wake:
		case <-timer.C:
			return &contractualv1.WatchContractsResponse{Epoch: s.feed.epoch, Revision: req.GetRevision()}, nil
		case <-ctx.Done():
			return nil, errs.Wrap(errs.Unavailable, ctx.Err(), "watching contracts: canceled")
		}
	}
}

// since returns the answer to a caller at epoch and rev, or, if there is
// nothing new, nil and the channel closed at the next change.
func (s *Service) since(epoch string, rev uint64) (*contractualv1.WatchContractsResponse, <-chan struct{}) {
	f := s.feed
	f.mu.Lock()
	defer f.mu.Unlock()
	resp := &contractualv1.WatchContractsResponse{Epoch: f.epoch, Revision: f.rev}
	behind := f.rev - rev
	switch {
	case epoch != f.epoch || rev > f.rev || behind > uint64(len(f.log)):
		resp.Snapshot = true
		resp.Changes = snapshot(s.approved.Load())
		for _, c := range slices.Backward(f.pending) {
			resp.Changes = append(resp.Changes, proto.CloneOf(c))
		}
	case behind == 0:
		return nil, f.wake
	default:
		for _, c := range f.log[uint64(len(f.log))-behind:] {
			resp.Changes = append(resp.Changes, proto.CloneOf(c))
		}
	}
	return resp, nil
}

// snapshot lists a's contracts as approvals, newest approval first; since
// adds the pending ones, newest first.
func snapshot(a *approvedSet) []*contractualv1.ApprovalChange {
	es := make([]*entry, 0, len(a.byDigest))
	for _, e := range a.byDigest {
		es = append(es, e)
	}
	slices.SortFunc(es, func(x, y *entry) int {
		if c := y.rec.GetDecidedAt().AsTime().Compare(x.rec.GetDecidedAt().AsTime()); c != 0 {
			return c
		}
		return cmp.Compare(x.rec.GetDigest(), y.rec.GetDigest())
	})
	out := make([]*contractualv1.ApprovalChange, len(es))
	for i, e := range es {
		out[i] = approvalChange(e.rec, approved)
	}
	return out
}
