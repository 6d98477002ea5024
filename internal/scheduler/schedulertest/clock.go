// Package schedulertest holds what tests of the scheduler, and of the
// server that runs it, share: a clock moved by hand.
package schedulertest

import (
	"slices"
	"sync"
	"testing"
	"time"
)

// Clock is a scheduler.Clock moved by hand: After's channels receive when
// the clock reaches their time, and a test can wait until something waits
// on the clock for a given time (the scheduler has taken the job whose
// next firing that is).
type Clock struct {
	mu      sync.Mutex
	now     time.Time
	waiters []waiter
	added   chan time.Time // the time of each waiter, as it starts waiting
}

type waiter struct {
	at time.Time
	c  chan time.Time
}

// NewClock returns a clock at t.
func NewClock(t time.Time) *Clock {
	return &Clock{now: t.UTC(), added: make(chan time.Time, 1<<16)}
}

// Now returns the clock's time.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

// After returns a channel that receives the clock's time once it has
// moved d on (at once for d <= 0).
func (c *Clock) After(d time.Duration) <-chan time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	ch := make(chan time.Time, 1)
	if d <= 0 {
		ch <- c.now
		return ch
	}
	c.waiters = append(c.waiters, waiter{c.now.Add(d), ch})
	select {
	case c.added <- c.now.Add(d):
	default:
	}
	return ch
}

// Set moves the clock to t and wakes the waiters due by then.
func (c *Clock) Set(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = t.UTC()
	c.waiters = slices.DeleteFunc(c.waiters, func(w waiter) bool {
		if w.at.After(c.now) {
			return false
		}
		w.c <- c.now
		return true
	})
}

// Advance moves the clock d on.
func (c *Clock) Advance(d time.Duration) { c.Set(c.Now().Add(d)) }

// NextWaiter returns the earliest time something waits for, if anything
// waits.
func (c *Clock) NextWaiter() (time.Time, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.waiters) == 0 {
		return time.Time{}, false
	}
	return slices.MinFunc(c.waiters, func(a, b waiter) int { return a.at.Compare(b.at) }).at, true
}

// WaitFor waits until something waits on the clock for at, and fails t if
// nothing has within patience (real time: far above what a loaded machine
// needs).
func (c *Clock) WaitFor(t testing.TB, at time.Time, patience time.Duration) {
	t.Helper()
	timeout := time.After(patience)
	for {
		select {
		case w := <-c.added:
			if w.Equal(at) {
				return
			}
		case <-timeout:
			t.Fatalf("nothing waited on the clock for %s", at)
		}
	}
}
