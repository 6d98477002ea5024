package runner

import (
	"container/heap"
	"sync"
	"time"

	"github.com/contractual/contractual/internal/errs"
)

// spentSet remembers the ids of decisions that were executed, each until it
// expires: after that Verify refuses the decision anyway, so the id can be
// forgotten. Memory is bounded by max; when it is reached, spend refuses
// (fail closed) rather than forget an unexpired id.
type spentSet struct {
	mu  sync.Mutex
	max int
	ids map[string]struct{}
	// queue orders ids by expiry, soonest first.
	queue byExpiry
}

func newSpentSet(max int) *spentSet {
	return &spentSet{max: max, ids: make(map[string]struct{})}
}

// spend marks decision id, which expires at exp, as executed at now. It
// fails if id was spent before or if the set is full.
func (s *spentSet) spend(id string, exp, now time.Time) error {
	if id == "" {
		return errs.E(errs.PermissionDenied, "decision has no id, so it cannot be held to a single use")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.forget(now)
	if _, dup := s.ids[id]; dup {
		return errs.E(errs.PermissionDenied, "decision %s was already used: a decision runs once", id)
	}
	if len(s.ids) >= s.max {
		return errs.E(errs.ResourceExhausted,
			"runner holds %d unexpired spent decisions, its limit; try again when some expire", len(s.ids))
	}
	s.ids[id] = struct{}{}
	heap.Push(&s.queue, spent{id: id, exp: exp})
	return nil
}

// forget drops the ids that expired at or before now.
func (s *spentSet) forget(now time.Time) {
	for len(s.queue) > 0 && !now.Before(s.queue[0].exp) {
		delete(s.ids, heap.Pop(&s.queue).(spent).id)
	}
}

// len returns the number of ids held.
func (s *spentSet) len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.ids)
}

// spent is one spent decision.
type spent struct {
	id  string
	exp time.Time
}

// byExpiry is a min-heap of spent decisions by expiry.
type byExpiry []spent

func (h byExpiry) Len() int           { return len(h) }
func (h byExpiry) Less(i, j int) bool { return h[i].exp.Before(h[j].exp) }
func (h byExpiry) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *byExpiry) Push(x any)        { *h = append(*h, x.(spent)) }
func (h *byExpiry) Pop() any {
	old := *h
	x := old[len(old)-1]
	*h = old[:len(old)-1]
	return x
}
