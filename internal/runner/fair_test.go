package runner

import (
	"context"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	contractualv1 "github.com/contractual/contractual/contracts/gen/contractual/v1"
	"github.com/contractual/contractual/internal/errs"
	"github.com/contractual/contractual/internal/principal"
)

// as makes a decision's principal p.
func as(p string) func(*contractualv1.Decision) {
	return func(d *contractualv1.Decision) { d.Principal = p }
}

// gate makes every call of policy's method block until release is called;
// inside counts the calls that reached it.
func (f *fixture) gate(method string) (inside *atomic.Int64, release func()) {
	inside = new(atomic.Int64)
	out := make(chan struct{})
	f.policy.mu.Lock()
	f.policy.hook = func(m string) {
		if m == method {
			inside.Add(1)
			<-out
		}
	}
	f.policy.mu.Unlock()
	var once sync.Once
	return inside, func() { once.Do(func() { close(out) }) }
}

// TestFloodCannotStarve: one principal's flood of waiting calls does not
// hold back another principal's call, which gets the next place but one
// (the flood's turn comes first, being the first to wait), where FIFO
// would make it wait for the whole flood.
func TestFloodCannotStarve(t *testing.T) {
	f := newFixture(t, Config{MaxConcurrent: 1, QueueTimeout: time.Hour})
	ct := f.count("count")
	entered, release := f.hold("GetContract")
	defer release()
	var done []<-chan error
	done = append(done, f.async(f.request(f.decision(ct, "count_vowels", `{}`, as("device:flood")), `{}`)))
	<-entered
	for i := range 10 {
		done = append(done, f.async(f.request(f.decision(ct, "count_vowels", `{}`, as("device:flood")), `{}`)))
		waitQueued(f.svc, int64(i+1))
	}
	done = append(done, f.async(f.request(f.decision(ct, "count_vowels", `{}`, as("device:other")), `{}`)))
	waitQueued(f.svc, 11)
	release()
	for _, c := range done {
		if err := <-c; err != nil {
			t.Fatal(err)
		}
	}
	// One place: the calls ran, and were audited, in the order admitted.
	var order []string
	for _, ev := range f.audit.all() {
		order = append(order, ev.GetPrincipal())
	}
	if i := slices.Index(order, "device:other"); i < 0 || i > 2 {
		t.Fatalf("device:other ran as call %d of %d: %v", i, len(order), order)
	}
}

// TestToolCannotHoldEveryPlace: calls of one tool hold at most MaxPerTool
// places and one principal's at most MaxPerPrincipal, even with places
// free; another tool, and another principal, get the rest at once.
func TestToolCannotHoldEveryPlace(t *testing.T) {
	f := newFixture(t, Config{MaxConcurrent: 4, QueueTimeout: time.Hour}) // 2 per tool, 3 per principal
	a, b := f.count("a"), f.count("b")
	inside, release := f.gate("GetContract")
	defer release()
	var done []<-chan error
	for range 4 {
		done = append(done, f.async(f.call(a, "count_vowels", `{}`)))
	}
	for inside.Load()+int64(f.svc.places.Waiting()) != 4 {
		runtime.Gosched()
	}
	if n := inside.Load(); n != 2 {
		t.Fatalf("%d calls of one tool got a place, want 2 of 4", n)
	}
	// The principal's other tool gets its third place.
	done = append(done, f.async(f.call(b, "count_vowels", `{}`)))
	for inside.Load() != 3 {
		runtime.Gosched()
	}
	// The principal is at its cap: another call of it waits, though a place
	// is free; another principal's call takes that place.
	done = append(done, f.async(f.call(b, "count_vowels", `{}`)))
	waitQueued(f.svc, 3)
	done = append(done, f.async(f.request(f.decision(a, "count_vowels", `{}`, as("device:other")), `{}`)))
	for inside.Load() != 4 {
		runtime.Gosched()
	}
	if n := f.svc.places.Waiting(); n != 3 {
		t.Fatalf("%d calls waiting, want 3", n)
	}
	release()
	for _, c := range done {
		if err := <-c; err != nil {
			t.Fatal(err)
		}
	}
	if n := len(f.audit.all()); n != 7 {
		t.Fatalf("%d audit events, want 7", n)
	}
}

// TestUnverifiedWaitsAsItsCaller: a call whose decision does not verify
// waits in its caller's flow, not in that of the principal the decision
// claims: here that principal holds all the places it may, and the forged
// call is still refused (and audited) at once.
func TestUnverifiedWaitsAsItsCaller(t *testing.T) {
	f := newFixture(t, Config{MaxConcurrent: 4, QueueTimeout: time.Hour}) // 2 per tool, 3 per principal
	a, b := f.count("a"), f.count("b")
	inside, release := f.gate("GetContract")
	defer release()
	done := []<-chan error{f.async(f.call(a, "count_vowels", `{}`)), f.async(f.call(a, "count_vowels", `{}`)), f.async(f.call(b, "count_vowels", `{}`))}
	for inside.Load() != 3 {
		runtime.Gosched()
	}
	forged := f.call(a, "count_vowels", `{}`) // device:test's
	forged.Input = []byte(`{"x":1}`)
	_, err := f.svc.Execute(principal.With(context.Background(), "device:mallory"), forged)
	wantKind(t, err, errs.PermissionDenied, "input")
	if ev := f.audit.last(t); ev.GetAction() != ActionRefused || ev.GetPrincipal() != "device:mallory" {
		t.Fatalf("audited %v", ev)
	}
	release()
	for _, c := range done {
		if err := <-c; err != nil {
			t.Fatal(err)
		}
	}
}
