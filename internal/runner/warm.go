package runner

import (
	"context"
	"errors"
	"sync"
	"time"

	contractualv1 "github.com/contractual/contractual/contracts/gen/contractual/v1"
	"github.com/contractual/contractual/internal/rpc"
)

// Backoff of the change feed after an error.
const (
	followRetryMin = time.Second
	followRetryMax = 30 * time.Second
)

// follower keeps the module cache in step with policy's contracts through
// policy's change feed (WatchContracts): it compiles the module of each
// newly published contract in the background, one at a time, while the
// owner reviews it (if it fits without evicting anything), and of each
// newly approved one (to the front of the cache), so that the first call
// after approval finds it loaded; at start (or when the feed starts over)
// it compiles the approved contracts newest first, as many as fit in the
// cache without evicting anything; and it drops the module of a rejected,
// revoked or superseded contract from the cache and its compiled code from
// disk.
//
// The feed only saves work: a call never depends on it, since every call
// checks its contract with policy and loads what is missing.
type follower struct {
	s    *Service
	kick chan struct{} // wakes the warming goroutine

	mu sync.Mutex
	// approved and pending map the approved, resp. pending contracts'
	// digests to their modules' (pending: those published since the feed's
	// last snapshot).
	approved, pending map[string]string
	// queue is the contracts to warm, next first; warming is set while one
	// is being warmed.
	queue   []warmJob
	warming bool
	// epoch and revision are those of the last answer applied in full.
	epoch    string
	revision uint64
}

// warmJob is one contract to compile ahead of its first call; fill marks
// the start's compiles, which stop when the cache is full.
type warmJob struct {
	digest string
	fill   bool
}

func newFollower(s *Service) *follower {
	return &follower{s: s, kick: make(chan struct{}, 1), approved: map[string]string{}, pending: map[string]string{}}
}

// run follows policy until ctx ends.
func (f *follower) run(ctx context.Context) {
	var wg sync.WaitGroup
	wg.Go(func() { f.warmLoop(ctx) })
	f.watchLoop(ctx)
	wg.Wait()
}

// watchLoop applies the feed's answers until ctx ends, retrying with
// backoff when policy cannot be reached.
func (f *follower) watchLoop(ctx context.Context) {
	req := &contractualv1.WatchContractsRequest{}
	retry := followRetryMin
	for ctx.Err() == nil {
		resp, err := f.s.policy.WatchContracts(ctx, req)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			f.s.log.Warn("watching policy's contracts", "err", rpc.FromConnect(err), "retry in", retry)
			t := time.NewTimer(retry)
			select {
			case <-t.C:
			case <-ctx.Done():
				t.Stop()
				return
			}
			retry = min(2*retry, followRetryMax)
			continue
		}
		retry = followRetryMin
		f.apply(resp)
		req = &contractualv1.WatchContractsRequest{Epoch: resp.GetEpoch(), Revision: resp.GetRevision()}
	}
}

// apply brings the follower's view and the cache in line with one answer
// of the feed.
func (f *follower) apply(resp *contractualv1.WatchContractsResponse) {
	var dropped []string
	f.mu.Lock()
	if resp.GetSnapshot() {
		f.approved = make(map[string]string, len(resp.GetChanges()))
		f.pending = map[string]string{}
		f.queue = f.queue[:0]
		for _, c := range resp.GetChanges() {
			if c.GetState() == contractualv1.ContractState_CONTRACT_STATE_PENDING {
				f.pending[c.GetDigest()] = c.GetModule()
			} else {
				f.approved[c.GetDigest()] = c.GetModule()
			}
			f.queue = append(f.queue, warmJob{digest: c.GetDigest(), fill: true})
		}
		for _, d := range f.s.modules.cached() {
			_, ok := f.approved[d]
			if _, p := f.pending[d]; !ok && !p {
				dropped = append(dropped, d)
			}
		}
	} else {
		var fresh []warmJob
		for _, c := range resp.GetChanges() {
			switch c.GetState() {
			case contractualv1.ContractState_CONTRACT_STATE_APPROVED:
				delete(f.pending, c.GetDigest())
				f.approved[c.GetDigest()] = c.GetModule()
				fresh = append(fresh, warmJob{digest: c.GetDigest()})
			case contractualv1.ContractState_CONTRACT_STATE_PENDING:
				f.pending[c.GetDigest()] = c.GetModule()
				fresh = append(fresh, warmJob{digest: c.GetDigest(), fill: true})
			default:
				delete(f.approved, c.GetDigest())
				delete(f.pending, c.GetDigest())
				dropped = append(dropped, c.GetDigest())
			}
		}
		f.queue = append(fresh, f.queue...)
	}
	keep := make(map[string]bool, len(f.approved)+len(f.pending))
	for _, m := range f.approved {
		keep[m] = true
	}
	for _, m := range f.pending {
		keep[m] = true
	}
	f.mu.Unlock()

	for _, d := range dropped {
		f.s.modules.drop(d)
	}
	if resp.GetSnapshot() || len(dropped) > 0 {
		gone, err := f.s.modules.engine.Prune(func(module string) bool { return keep[module] })
		if err != nil {
			f.s.log.Warn("pruning compiled code", "err", err)
		}
		if len(gone) > 0 {
			f.s.log.Info("compiled code pruned", "modules", gone)
		}
	}
	f.mu.Lock()
	f.epoch, f.revision = resp.GetEpoch(), resp.GetRevision()
	f.mu.Unlock()
	f.s.modules.signal()
	select {
	case f.kick <- struct{}{}:
	default:
	}
}

// next takes the next job whose contract is still approved or pending, and
// marks the follower warming until done is called.
func (f *follower) next() (warmJob, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for len(f.queue) > 0 {
		j := f.queue[0]
		f.queue = f.queue[1:]
		_, ok := f.approved[j.digest]
		if _, p := f.pending[j.digest]; ok || p {
			f.warming = true
			return j, true
		}
	}
	return warmJob{}, false
}

// done ends the job next returned.
func (f *follower) done() {
	f.mu.Lock()
	f.warming = false
	f.mu.Unlock()
	f.s.modules.signal()
}

// at returns the epoch and revision of the last answer applied in full.
func (f *follower) at() (string, uint64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.epoch, f.revision
}

// idle reports whether nothing is queued or being warmed.
func (f *follower) idle() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.queue) == 0 && !f.warming
}

// stopFill drops the start's remaining jobs: the cache is full.
func (f *follower) stopFill() {
	f.mu.Lock()
	defer f.mu.Unlock()
	q := f.queue[:0]
	for _, j := range f.queue {
		if !j.fill {
			q = append(q, j)
		}
	}
	f.queue = q
}

// warmLoop compiles the queued contracts' modules, one at a time, until
// ctx ends.
func (f *follower) warmLoop(ctx context.Context) {
	for {
		select {
		case <-f.kick:
		case <-ctx.Done():
			return
		}
		for ctx.Err() == nil {
			j, ok := f.next()
			if !ok {
				break
			}
			f.warm(ctx, j)
			f.done()
		}
	}
}

// warm compiles the module of j's contract, if it is still approved or
// pending: a pending one only while it fits without evicting anything.
func (f *follower) warm(ctx context.Context, j warmJob) {
	start := time.Now()
	resp, err := f.s.policy.GetContract(ctx, &contractualv1.GetContractRequest{Digest: j.digest})
	switch {
	case err != nil:
		err = rpc.FromConnect(err)
	case resp.GetRecord().GetState() == contractualv1.ContractState_CONTRACT_STATE_APPROVED:
		err = f.s.modules.warm(ctx, j.digest, resp.GetRecord().GetContract(), j.fill)
	case resp.GetRecord().GetState() == contractualv1.ContractState_CONTRACT_STATE_PENDING:
		err = f.s.modules.warm(ctx, j.digest, resp.GetRecord().GetContract(), true)
	default:
		return
	}
	switch {
	case err == nil:
		f.s.log.Debug("module warmed", "contract", j.digest, "took", time.Since(start))
	case errors.Is(err, errFull):
		f.s.log.Debug("module not warmed: the module cache is full", "contract", j.digest)
		if j.fill {
			f.stopFill()
		}
	case ctx.Err() != nil: // closing
	default:
		f.s.log.Warn("warming a module", "contract", j.digest, "err", err)
	}
}
