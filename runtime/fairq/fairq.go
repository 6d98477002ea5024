// Package fairq shares a fixed number of slots fairly among flows of calls.
//
// A flow is the calls of one principal to one tool (a Key). When a slot
// frees, the waiting calls are served round-robin across principals and,
// within a principal, round-robin across its tools; the calls of one flow
// in order. So a principal that floods the queue gets one turn per round,
// like everyone else, however many calls it has waiting, and a newcomer is
// served within one grant per waiting principal.
//
// Waiting is bounded: Acquire fails with errs.ResourceExhausted, at once
// when too many calls already wait (overall or in the caller's flow), and
// after MaxWait otherwise. Holding may be capped per principal and per flow
// (for slots that cannot be taken back, so that one principal never holds
// every one); without caps the queue is work-conserving.
//
// A holder that runs long gives its slot up when asked: Yield, called at
// the holder's interruption points, hands the slot to another flow once the
// holder has had it for a quantum and some other flow waits, and returns
// when the holder has it again. Suspend and Resume give the slot up around
// a wait that needs no slot (an HTTP request).
package fairq

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/contractual/contractual/internal/errs"
)

// DefaultQuantum is the Quantum of a Queue whose Options leave it zero: a
// waiting call waits about this long per flow ahead of it (measured by
// BenchmarkExecuteFlooded in internal/runner: 100 µs kept a small tool
// within 2.5× of its idle latency under a flood, 250 µs and 1 ms did not).
const DefaultQuantum = 100 * time.Microsecond

// Key names a flow: the calls of one principal to one tool.
type Key struct {
	Principal string
	Tool      string
}

// Options configure a Queue. Zero fields take the defaults noted.
type Options struct {
	// Name names the queue in its errors ("runner", "sandbox").
	Name string
	// Slots is the number of slots (at least 1).
	Slots int
	// MaxWait bounds how long Acquire waits for a slot before it fails with
	// errs.ResourceExhausted. Zero: until ctx ends. Negative: never wait.
	MaxWait time.Duration
	// MaxWaiting bounds the calls waiting in Acquire at once; beyond it
	// Acquire fails at once. Zero: no bound.
	MaxWaiting int
	// MaxFlowWaiting bounds the calls of one flow waiting in Acquire at
	// once. Zero: no bound besides MaxWaiting.
	MaxFlowWaiting int
	// MaxPrincipalHeld and MaxFlowHeld cap the slots that one principal,
	// resp. one flow, holds at once, even when the others are free. Zero:
	// Slots (no cap).
	MaxPrincipalHeld int
	MaxFlowHeld      int
	// Quantum is how long a holder keeps its slot before Yield gives it to
	// a waiting flow. Zero: DefaultQuantum.
	Quantum time.Duration
	// Now and AfterFunc are the clock; nil means the time package's. Tests
	// inject a fake so that nothing depends on real time.
	Now       func() time.Time
	AfterFunc func(d time.Duration, f func()) (stop func() bool)
}

// Queue is a fair queue of slots. It is safe for concurrent use.
type Queue struct {
	opts Options

	mu         sync.Mutex
	free       int
	flows      map[Key]*flow
	principals map[string]*principal
	// active holds the principals with waiting calls, in round-robin
	// order; next is the index of the one served next.
	active []*principal
	next   int
	// waiting counts every waiting call; fresh counts those that entered
	// through Acquire (the rest gave a slot up and want it back).
	waiting, fresh int
	// nwaiting mirrors waiting for Yield's lock-free check.
	nwaiting atomic.Int64
}

type principal struct {
	name string
	held int
	// active holds the principal's flows with waiting calls, in
	// round-robin order; next is the index of the one served next.
	active []*flow
	next   int
}

type flow struct {
	key   Key
	p     *principal
	held  int
	fresh int
	// queue holds the waiting calls: those that want their slot back
	// first, then new calls in arrival order.
	queue []*Slot
}

// New returns a Queue.
func New(opts Options) *Queue {
	opts.Slots = max(opts.Slots, 1)
	if opts.MaxPrincipalHeld <= 0 {
		opts.MaxPrincipalHeld = opts.Slots
	}
	if opts.MaxFlowHeld <= 0 {
		opts.MaxFlowHeld = opts.Slots
	}
	if opts.Quantum <= 0 {
		opts.Quantum = DefaultQuantum
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.AfterFunc == nil {
		opts.AfterFunc = func(d time.Duration, f func()) func() bool { return time.AfterFunc(d, f).Stop }
	}
	if opts.Name == "" {
		opts.Name = "queue"
	}
	return &Queue{opts: opts, free: opts.Slots, flows: make(map[Key]*flow), principals: make(map[string]*principal)}
}

// Slots returns the number of slots.
func (q *Queue) Slots() int { return q.opts.Slots }

// Held returns the number of slots held.
func (q *Queue) Held() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.opts.Slots - q.free
}

// Waiting returns the number of calls waiting for a slot.
func (q *Queue) Waiting() int { return int(q.nwaiting.Load()) }

// Slot states.
const (
	idle = iota
	waiting
	held
)

// Slot is one call's claim on a slot, held from Acquire until Release. Its
// methods are for the one goroutine of that call.
type Slot struct {
	q *Queue
	f *flow
	// since is when the call last got the slot; only the holder uses it.
	since time.Time

	// Guarded by q.mu:
	state int
	// back is set while the call waits to get back a slot it gave up.
	back bool
	// ready is closed when the wait ends: granted, or refused with err.
	ready chan struct{}
	err   error
}

// Acquire waits for a slot for a call of flow k; see the package comment
// for the order and the bounds. The caller must Release the slot.
func (q *Queue) Acquire(ctx context.Context, k Key) (*Slot, error) {
	q.mu.Lock()
	f := q.flow(k)
	s := &Slot{q: q, f: f}
	if q.free > 0 && q.eligible(f) {
		// Every waiting call is ineligible, or dispatch would have served
		// it: nobody is passed over.
		q.take(s)
		q.mu.Unlock()
		s.since = q.opts.Now()
		return s, nil
	}
	var refused error
	switch {
	case q.opts.MaxWait < 0:
		refused = q.busy("all %d slots are taken", q.opts.Slots)
	case q.opts.MaxWaiting > 0 && q.fresh >= q.opts.MaxWaiting:
		refused = q.busy("%d calls are already waiting", q.fresh)
	case q.opts.MaxFlowWaiting > 0 && f.fresh >= q.opts.MaxFlowWaiting:
		refused = q.busy("%d calls of %s to %s are already waiting", f.fresh, k.Principal, k.Tool)
	}
	if refused != nil {
		q.forget(f)
		q.mu.Unlock()
		return nil, refused
	}
	q.enqueue(s, false)
	q.mu.Unlock()

	var stop func() bool
	if d := q.opts.MaxWait; d > 0 {
		stop = q.opts.AfterFunc(d, func() {
			q.mu.Lock()
			defer q.mu.Unlock()
			if s.state == waiting {
				q.dequeue(s)
				s.err = q.busy("no slot was free within %s", d)
				close(s.ready)
			}
		})
	}
	err := s.wait(ctx)
	if stop != nil {
		stop()
	}
	if err != nil {
		return nil, err
	}
	return s, nil
}

// Release gives the slot back. It does nothing if the call does not hold
// one (it gave it up and did not get it back).
func (s *Slot) Release() {
	q := s.q
	q.mu.Lock()
	defer q.mu.Unlock()
	if s.state != held {
		return
	}
	q.put(s)
	q.forget(s.f)
	q.dispatch()
}

// Yield gives the slot to another flow if the call has held it for a
// quantum and a call of another flow waits, and returns once the call has
// a slot again: ahead of its flow's new calls, after one turn of every
// other waiting principal. It fails only when ctx ends while it waits;
// the call then holds no slot. Yield is cheap when nothing waits.
func (s *Slot) Yield(ctx context.Context) error {
	q := s.q
	if q.nwaiting.Load() == 0 {
		return nil
	}
	now := q.opts.Now()
	if now.Sub(s.since) < q.opts.Quantum {
		return nil
	}
	q.mu.Lock()
	if s.state != held || q.waiting == len(s.f.queue) {
		// Only calls of its own flow wait, and they come after it.
		q.mu.Unlock()
		s.since = now
		return nil
	}
	q.put(s)
	q.enqueue(s, true)
	q.behind(s.f)
	q.dispatch()
	q.mu.Unlock()
	return s.wait(ctx)
}

// Suspend gives the slot up while the call waits for something that needs
// none; Resume gets it back.
func (s *Slot) Suspend() { s.Release() }

// Resume waits for a slot again after Suspend, ahead of the flow's new
// calls. It fails only when ctx ends first; the call then holds no slot.
func (s *Slot) Resume(ctx context.Context) error {
	q := s.q
	q.mu.Lock()
	if s.state != idle {
		q.mu.Unlock()
		return nil
	}
	s.f = q.flow(s.f.key) // the flow may have been forgotten meanwhile
	q.enqueue(s, true)
	q.dispatch()
	q.mu.Unlock()
	return s.wait(ctx)
}

// wait waits until s is granted or refused, or ctx ends.
func (s *Slot) wait(ctx context.Context) error {
	q := s.q
	select {
	case <-s.ready:
	case <-ctx.Done():
		q.mu.Lock()
		if s.state == waiting {
			q.dequeue(s)
			q.forget(s.f)
			q.mu.Unlock()
			return q.ended(ctx)
		}
		granted := s.state == held
		q.mu.Unlock()
		if granted {
			s.Release()
			return q.ended(ctx)
		}
	}
	if s.err != nil {
		return s.err
	}
	s.since = q.opts.Now()
	return nil
}

// busy is the error of a call refused for lack of room.
func (q *Queue) busy(format string, args ...any) error {
	return errs.E(errs.ResourceExhausted, "%s busy: %s; try again later", q.opts.Name, fmt.Sprintf(format, args...))
}

// ended is the error of a call whose context ended while it waited.
func (q *Queue) ended(ctx context.Context) error {
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		return errs.Wrap(errs.DeadlineExceeded, ctx.Err(), "deadline reached while waiting for a %s slot", q.opts.Name)
	}
	return errs.Wrap(errs.Unavailable, ctx.Err(), "call canceled while waiting for a %s slot", q.opts.Name)
}

// The methods below are called with q.mu held.

// flow returns the flow of k, creating it (and its principal) if needed.
func (q *Queue) flow(k Key) *flow {
	if f, ok := q.flows[k]; ok {
		return f
	}
	p, ok := q.principals[k.Principal]
	if !ok {
		p = &principal{name: k.Principal}
		q.principals[k.Principal] = p
	}
	f := &flow{key: k, p: p}
	q.flows[k] = f
	return f
}

// forget drops f, and its principal, once nothing of theirs holds or waits.
func (q *Queue) forget(f *flow) {
	if f.held > 0 || len(f.queue) > 0 || q.flows[f.key] != f {
		return
	}
	delete(q.flows, f.key)
	if p := f.p; p.held == 0 && len(p.active) == 0 {
		delete(q.principals, p.name)
	}
}

// eligible reports whether f may take one more slot under the caps.
func (q *Queue) eligible(f *flow) bool {
	return f.held < q.opts.MaxFlowHeld && f.p.held < q.opts.MaxPrincipalHeld
}

// take gives s a free slot.
func (q *Queue) take(s *Slot) {
	q.free--
	s.f.held++
	s.f.p.held++
	s.state = held
}

// put takes s's slot back.
func (q *Queue) put(s *Slot) {
	q.free++
	s.f.held--
	s.f.p.held--
	s.state = idle
}

// enqueue makes s wait in its flow: at the front if it wants its slot
// back, else at the back. A flow or principal that starts waiting joins
// the end of its round.
func (q *Queue) enqueue(s *Slot, back bool) {
	f, p := s.f, s.f.p
	s.state, s.back, s.err, s.ready = waiting, back, nil, make(chan struct{})
	if back {
		f.queue = slices.Insert(f.queue, 0, s)
	} else {
		f.queue = append(f.queue, s)
		f.fresh++
		q.fresh++
	}
	q.waiting++
	q.nwaiting.Store(int64(q.waiting))
	if len(f.queue) == 1 {
		p.active, p.next = joinRound(p.active, p.next, f)
		if len(p.active) == 1 {
			q.active, q.next = joinRound(q.active, q.next, p)
		}
	}
}

// dequeue removes the waiting s from its flow.
func (q *Queue) dequeue(s *Slot) {
	f := s.f
	f.queue = slices.DeleteFunc(f.queue, func(w *Slot) bool { return w == s })
	q.unwait(s)
	if len(f.queue) == 0 {
		q.leaveRounds(f)
	}
}

// unwait updates the counts of a call that stops waiting.
func (q *Queue) unwait(s *Slot) {
	q.waiting--
	q.nwaiting.Store(int64(q.waiting))
	if !s.back {
		s.f.fresh--
		q.fresh--
	}
	s.state = idle
}

// leaveRounds takes f, which has no waiting call left, out of its
// principal's round, and the principal out of the queue's if it has no
// waiting flow left.
func (q *Queue) leaveRounds(f *flow) {
	p := f.p
	p.active, p.next = leaveRound(p.active, p.next, f)
	if len(p.active) == 0 {
		q.active, q.next = leaveRound(q.active, q.next, p)
	}
}

// behind makes f, and its principal, the last of their rounds: they just
// had their turn. Without it a holder that yields while its flow has calls
// waiting could find its flow next in the round and get the slot back.
func (q *Queue) behind(f *flow) {
	p := f.p
	if i := slices.Index(p.active, f); i >= 0 {
		p.next = (i + 1) % len(p.active)
	}
	if i := slices.Index(q.active, p); i >= 0 {
		q.next = (i + 1) % len(q.active)
	}
}

// dispatch grants free slots to waiting calls: the next principal in the
// round that may take a slot, its next flow that may, that flow's first
// call.
func (q *Queue) dispatch() {
	for q.free > 0 && q.waiting > 0 {
		f := q.pick()
		if f == nil {
			return // every waiting call is capped
		}
		s := f.queue[0]
		f.queue = f.queue[1:]
		q.unwait(s)
		if len(f.queue) == 0 {
			q.leaveRounds(f)
		}
		q.take(s)
		close(s.ready)
	}
}

// pick returns the flow served next, advancing both rounds past it, or nil
// if no waiting flow may take a slot.
func (q *Queue) pick() *flow {
	for i := range q.active {
		pi := (q.next + i) % len(q.active)
		p := q.active[pi]
		if p.held >= q.opts.MaxPrincipalHeld {
			continue
		}
		for j := range p.active {
			fi := (p.next + j) % len(p.active)
			if f := p.active[fi]; f.held < q.opts.MaxFlowHeld {
				q.next, p.next = (pi+1)%len(q.active), (fi+1)%len(p.active)
				return f
			}
		}
	}
	return nil
}

// joinRound adds x to the round r whose next member is r[next], as its
// last member (just before r[next]), and returns the new round and next.
func joinRound[T comparable](r []T, next int, x T) ([]T, int) {
	next = min(next, len(r))
	return slices.Insert(r, next, x), next + 1
}

// leaveRound removes x from the round r, keeping next on the member that
// was to come next.
func leaveRound[T comparable](r []T, next int, x T) ([]T, int) {
	i := slices.Index(r, x)
	if i < 0 {
		return r, next
	}
	r = slices.Delete(r, i, i+1)
	if i < next {
		next--
	}
	if next >= len(r) {
		next = 0
	}
	return r, next
}
