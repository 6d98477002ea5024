package fairq

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/contractual/contractual/internal/errs"
)

// fakeClock is a clock that moves only when told; its timers fire in
// Advance.
type fakeClock struct {
	mu     sync.Mutex
	now    time.Time
	timers []*fakeTimer
}

type fakeTimer struct {
	at   time.Time
	f    func()
	done bool
}

func newClock() *fakeClock { return &fakeClock{now: time.Unix(1_700_000_000, 0)} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) AfterFunc(d time.Duration, f func()) func() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	t := &fakeTimer{at: c.now.Add(d), f: f}
	c.timers = append(c.timers, t)
	return func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		stopped := !t.done
		t.done = true
		return stopped
	}
}

// Advance moves the clock by d and runs the timers that are then due.
func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	var due []func()
	for _, t := range c.timers {
		if !t.done && !t.at.After(c.now) {
			t.done = true
			due = append(due, t.f)
		}
	}
	c.mu.Unlock()
	for _, f := range due {
		f()
	}
}

func newQueue(c *fakeClock, opts Options) *Queue {
	opts.Name = "test"
	opts.Now, opts.AfterFunc = c.Now, c.AfterFunc
	return New(opts)
}

// waitWaiting yields until n calls wait in q.
func waitWaiting(q *Queue, n int) {
	for q.Waiting() != n {
		runtime.Gosched()
	}
}

// acquireAsync calls Acquire in a goroutine; the channel gets its outcome.
func acquireAsync(ctx context.Context, q *Queue, k Key) <-chan result {
	ch := make(chan result, 1)
	go func() {
		s, err := q.Acquire(ctx, k)
		ch <- result{s, err}
	}()
	return ch
}

type result struct {
	s   *Slot
	err error
}

func mustAcquire(t *testing.T, q *Queue, k Key) *Slot {
	t.Helper()
	s, err := q.Acquire(context.Background(), k)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func wantKind(t *testing.T, err error, k errs.Kind, want string) {
	t.Helper()
	if errs.KindOf(err) != k || err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("got %v (%s), want %s containing %q", err, errs.KindOf(err), k, want)
	}
}

// pending reports whether ch has no outcome yet.
func pending(ch <-chan result) bool {
	select {
	case r := <-ch:
		panic(fmt.Sprintf("returned early: %v", r.err))
	default:
		return true
	}
}

var (
	floodKey = Key{"device:flood", "loop.run"}
	smallKey = Key{"device:small", "count.count"}
)

// TestRefusedAfterMaxWait: a queued call is refused with
// resource_exhausted once it has waited MaxWait, and not before.
func TestRefusedAfterMaxWait(t *testing.T) {
	c := newClock()
	q := newQueue(c, Options{Slots: 1, MaxWait: time.Second})
	hog := mustAcquire(t, q, floodKey)
	ch := acquireAsync(context.Background(), q, smallKey)
	waitWaiting(q, 1)
	c.Advance(time.Second - time.Nanosecond)
	pending(ch)
	c.Advance(time.Nanosecond)
	r := <-ch
	wantKind(t, r.err, errs.ResourceExhausted, "test busy: no slot was free within 1s")
	if q.Waiting() != 0 {
		t.Fatalf("%d waiting after the refusal", q.Waiting())
	}
	hog.Release()
	mustAcquire(t, q, smallKey).Release()
}

// TestRefusedAtOnce: beyond MaxWaiting, MaxFlowWaiting, or with a negative
// MaxWait, a call that finds no free slot is refused without waiting.
func TestRefusedAtOnce(t *testing.T) {
	t.Run("no wait", func(t *testing.T) {
		q := newQueue(newClock(), Options{Slots: 2, MaxWait: -1})
		a, b := mustAcquire(t, q, floodKey), mustAcquire(t, q, floodKey)
		_, err := q.Acquire(context.Background(), smallKey)
		wantKind(t, err, errs.ResourceExhausted, "test busy: all 2 slots are taken")
		a.Release()
		b.Release()
	})
	t.Run("queue full", func(t *testing.T) {
		q := newQueue(newClock(), Options{Slots: 1, MaxWaiting: 2})
		hog := mustAcquire(t, q, floodKey)
		ctx, cancel := context.WithCancel(context.Background())
		w1 := acquireAsync(ctx, q, Key{"device:a", "t"})
		w2 := acquireAsync(ctx, q, Key{"device:b", "t"})
		waitWaiting(q, 2)
		_, err := q.Acquire(context.Background(), smallKey)
		wantKind(t, err, errs.ResourceExhausted, "2 calls are already waiting")
		cancel()
		for _, w := range []<-chan result{w1, w2} {
			wantKind(t, (<-w).err, errs.Unavailable, "canceled while waiting for a test slot")
		}
		hog.Release()
	})
	t.Run("flow full", func(t *testing.T) {
		q := newQueue(newClock(), Options{Slots: 1, MaxFlowWaiting: 1})
		hog := mustAcquire(t, q, smallKey)
		w := acquireAsync(context.Background(), q, floodKey)
		waitWaiting(q, 1)
		_, err := q.Acquire(context.Background(), floodKey)
		wantKind(t, err, errs.ResourceExhausted, "1 calls of device:flood to loop.run are already waiting")
		// Another flow may still wait.
		other := acquireAsync(context.Background(), q, Key{"device:flood", "other"})
		waitWaiting(q, 2)
		hog.Release()
		(<-w).s.Release()
		(<-other).s.Release()
	})
}

// TestContextEnds: a waiting call whose context ends gets the kind that
// says why, and leaves the queue as it was.
func TestContextEnds(t *testing.T) {
	q := newQueue(newClock(), Options{Slots: 1})
	hog := mustAcquire(t, q, floodKey)
	ctx, cancel := context.WithCancel(context.Background())
	ch := acquireAsync(ctx, q, smallKey)
	waitWaiting(q, 1)
	cancel()
	r := <-ch
	wantKind(t, r.err, errs.Unavailable, "call canceled while waiting for a test slot")
	if !errors.Is(r.err, context.Canceled) {
		t.Errorf("%v does not wrap context.Canceled", r.err)
	}
	dctx, dcancel := context.WithDeadline(context.Background(), time.Unix(1, 0)) // already past
	defer dcancel()
	_, err := q.Acquire(dctx, smallKey)
	wantKind(t, err, errs.DeadlineExceeded, "deadline reached while waiting for a test slot")
	if q.Waiting() != 0 {
		t.Fatalf("%d waiting", q.Waiting())
	}
	hog.Release()
	mustAcquire(t, q, smallKey).Release()
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.free != 1 || len(q.flows) != 0 || len(q.principals) != 0 || len(q.active) != 0 {
		t.Fatalf("state left behind: free %d, %d flows, %d principals, %d active", q.free, len(q.flows), len(q.principals), len(q.active))
	}
}

// grantOrder queues the calls of keys one after another behind a holder,
// then releases the holder; every call releases its slot as soon as it has
// it. It returns the order in which the calls got a slot.
func grantOrder(t *testing.T, q *Queue, keys []Key) []Key {
	t.Helper()
	hog := mustAcquire(t, q, Key{"device:hog", "hog"})
	var mu sync.Mutex
	var order []Key
	var wg sync.WaitGroup
	for i, k := range keys {
		wg.Go(func() {
			s, err := q.Acquire(context.Background(), k)
			if err != nil {
				t.Error(err)
				return
			}
			mu.Lock()
			order = append(order, k)
			mu.Unlock()
			s.Release()
		})
		waitWaiting(q, i+1)
	}
	hog.Release()
	wg.Wait()
	return order
}

// TestFloodCannotStarve: with one slot, one principal's flood of waiting
// calls ahead of three other principals' calls; each of those gets the
// slot within one grant per waiting principal, where FIFO would serve it
// after the whole flood.
func TestFloodCannotStarve(t *testing.T) {
	q := newQueue(newClock(), Options{Slots: 1})
	var keys []Key
	for range 20 {
		keys = append(keys, floodKey)
	}
	others := []Key{{"device:b", "t"}, {"job:c", "t"}, {"session:d", "t"}}
	keys = append(keys, others...)
	order := grantOrder(t, q, keys)
	for _, k := range others {
		if i := slices.Index(order, k); i < 0 || i >= 4 {
			t.Errorf("%v got the slot as grant %d of %d, want within the first 4: %v", k, i, len(order), order)
		}
	}
}

// TestToolCannotStarve: within one principal, a flood of calls to one
// tool does not hold back a call to another.
func TestToolCannotStarve(t *testing.T) {
	q := newQueue(newClock(), Options{Slots: 1})
	var keys []Key
	for range 20 {
		keys = append(keys, Key{"device:a", "slow"})
	}
	quick := Key{"device:a", "quick"}
	order := grantOrder(t, q, append(keys, quick))
	if i := slices.Index(order, quick); i < 0 || i >= 2 {
		t.Errorf("the other tool got the slot as grant %d, want within the first 2: %v", i, order)
	}
}

// TestCaps: one flow, or one principal, never holds more than its cap,
// even with slots free; other flows and principals take the rest, and a
// capped call gets a slot when its own flow or principal frees one.
func TestCaps(t *testing.T) {
	q := newQueue(newClock(), Options{Slots: 4, MaxFlowHeld: 2, MaxPrincipalHeld: 3})
	x1, x2 := mustAcquire(t, q, Key{"device:a", "x"}), mustAcquire(t, q, Key{"device:a", "x"})
	x3 := acquireAsync(context.Background(), q, Key{"device:a", "x"})
	waitWaiting(q, 1) // two slots are free, but tool x holds its 2
	y := mustAcquire(t, q, Key{"device:a", "y"})
	z := acquireAsync(context.Background(), q, Key{"device:a", "z"})
	waitWaiting(q, 2) // one slot is free, but device:a holds its 3
	b := mustAcquire(t, q, Key{"device:b", "x"})
	pending(x3)
	pending(z)

	y.Release() // device:a may take one more: z, since x is still at its cap
	r := <-z
	if r.err != nil {
		t.Fatal(r.err)
	}
	pending(x3)
	x1.Release()
	(<-x3).s.Release()
	for _, s := range []*Slot{x2, r.s, b} {
		s.Release()
	}
}

// TestYield: a holder keeps its slot until it has had it for a quantum and
// another flow waits; then Yield hands the slot over and returns once the
// holder has it back.
func TestYield(t *testing.T) {
	c := newClock()
	q := newQueue(c, Options{Slots: 1, Quantum: time.Millisecond})
	hog := mustAcquire(t, q, floodKey)
	if err := hog.Yield(context.Background()); err != nil { // nobody waits
		t.Fatal(err)
	}
	small := acquireAsync(context.Background(), q, smallKey)
	waitWaiting(q, 1)
	c.Advance(time.Millisecond - time.Nanosecond)
	if err := hog.Yield(context.Background()); err != nil { // within its quantum
		t.Fatal(err)
	}
	pending(small)

	c.Advance(time.Nanosecond)
	yielded := make(chan error, 1)
	go func() { yielded <- hog.Yield(context.Background()) }()
	r := <-small // the waiter gets the slot while the hog is in Yield
	if r.err != nil {
		t.Fatal(r.err)
	}
	waitWaiting(q, 1)
	select {
	case err := <-yielded:
		t.Fatalf("Yield returned (%v) while the other call holds the only slot", err)
	default:
	}
	r.s.Release()
	if err := <-yielded; err != nil {
		t.Fatal(err)
	}
	// The hog holds the slot again.
	q.mu.Lock()
	if q.free != 0 || hog.state != held {
		t.Errorf("after Yield: free %d, state %d", q.free, hog.state)
	}
	q.mu.Unlock()
	hog.Release()
}

// TestYieldOwnFlow: Yield keeps the slot when only calls of the holder's
// own flow wait: they would come after it anyway.
func TestYieldOwnFlow(t *testing.T) {
	c := newClock()
	q := newQueue(c, Options{Slots: 1, Quantum: time.Millisecond})
	hog := mustAcquire(t, q, floodKey)
	next := acquireAsync(context.Background(), q, floodKey)
	waitWaiting(q, 1)
	c.Advance(time.Hour)
	if err := hog.Yield(context.Background()); err != nil {
		t.Fatal(err)
	}
	pending(next)
	hog.Release()
	(<-next).s.Release()
}

// TestYieldBehindOwnFlow: a holder whose own flow has calls waiting too
// gives the slot to the other flow's call, not back to its own flow.
func TestYieldBehindOwnFlow(t *testing.T) {
	c := newClock()
	q := newQueue(c, Options{Slots: 1, Quantum: time.Millisecond})
	hog := mustAcquire(t, q, floodKey)
	same := acquireAsync(context.Background(), q, floodKey)
	waitWaiting(q, 1)
	small := acquireAsync(context.Background(), q, smallKey)
	waitWaiting(q, 2)
	c.Advance(time.Millisecond)
	yielded := make(chan error, 1)
	go func() { yielded <- hog.Yield(context.Background()) }()
	var r result
	select {
	case r = <-small:
	case err := <-yielded:
		t.Fatalf("Yield returned (%v) holding the slot while another flow waits", err)
	}
	if r.err != nil {
		t.Fatal(r.err)
	}
	waitWaiting(q, 2) // the hog, ahead of its flow's other call
	r.s.Release()
	if err := <-yielded; err != nil {
		t.Fatal(err)
	}
	pending(same)
	hog.Release()
	(<-same).s.Release()
}

// TestYieldContextEnds: a holder whose context ends while it waits to get
// its slot back fails, holds nothing, and its Release does nothing.
func TestYieldContextEnds(t *testing.T) {
	c := newClock()
	q := newQueue(c, Options{Slots: 1})
	hog := mustAcquire(t, q, floodKey)
	small := acquireAsync(context.Background(), q, smallKey)
	waitWaiting(q, 1)
	c.Advance(DefaultQuantum)
	ctx, cancel := context.WithCancel(context.Background())
	yielded := make(chan error, 1)
	go func() { yielded <- hog.Yield(ctx) }()
	r := <-small
	waitWaiting(q, 1)
	cancel()
	wantKind(t, <-yielded, errs.Unavailable, "canceled")
	hog.Release() // no-op
	q.mu.Lock()
	if q.free != 0 {
		t.Errorf("free %d while the small call holds the only slot", q.free)
	}
	q.mu.Unlock()
	r.s.Release()
	mustAcquire(t, q, smallKey).Release()
}

// TestSuspendResume: a suspended call holds no slot; Resume gets one back
// ahead of its flow's new calls.
func TestSuspendResume(t *testing.T) {
	q := newQueue(newClock(), Options{Slots: 1})
	a := mustAcquire(t, q, floodKey)
	a.Suspend()
	b := mustAcquire(t, q, smallKey) // the slot is free while a waits outside
	newer := acquireAsync(context.Background(), q, floodKey)
	waitWaiting(q, 1)
	resumed := make(chan error, 1)
	go func() { resumed <- a.Resume(context.Background()) }()
	waitWaiting(q, 2)
	b.Release()
	if err := <-resumed; err != nil {
		t.Fatal(err)
	}
	pending(newer)
	a.Release()
	(<-newer).s.Release()
}

// TestNeverOverSlots hammers a queue with calls that acquire, yield,
// suspend and release at random, with the real clock: no more calls than
// slots ever hold one at once, and every call is served.
func TestNeverOverSlots(t *testing.T) {
	const slots = 3
	q := New(Options{Name: "test", Slots: slots, Quantum: time.Nanosecond})
	var holding atomic.Int64
	enter := func() {
		if n := holding.Add(1); n > slots {
			t.Errorf("%d calls hold a slot, over %d", n, slots)
		}
	}
	var wg sync.WaitGroup
	var served atomic.Int64
	for g := range 16 {
		wg.Go(func() {
			r := rand.New(rand.NewPCG(uint64(g), 1))
			for range 200 {
				k := Key{fmt.Sprintf("device:%d", r.IntN(4)), fmt.Sprintf("t%d", r.IntN(3))}
				s, err := q.Acquire(context.Background(), k)
				if err != nil {
					t.Error(err)
					return
				}
				enter()
				for range r.IntN(4) {
					holding.Add(-1)
					if r.IntN(2) == 0 {
						s.Suspend()
						runtime.Gosched()
						if err := s.Resume(context.Background()); err != nil {
							t.Error(err)
						}
					} else if err := s.Yield(context.Background()); err != nil {
						t.Error(err)
					}
					enter()
				}
				holding.Add(-1)
				s.Release()
				served.Add(1)
			}
		})
	}
	wg.Wait()
	if served.Load() != 16*200 {
		t.Fatalf("%d calls served", served.Load())
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.free != slots || q.waiting != 0 || len(q.flows) != 0 || len(q.principals) != 0 || len(q.active) != 0 {
		t.Fatalf("state left behind: free %d, waiting %d, %d flows, %d principals, %d active",
			q.free, q.waiting, len(q.flows), len(q.principals), len(q.active))
	}
}
