package sandbox

import (
	"context"
	"net/http"
	"net/http/httptest"
	"runtime"
	"testing"
	"time"

	"github.com/contractual/contractual/internal/errs"
	"github.com/contractual/contractual/runtime/egress"
	"github.com/contractual/contractual/runtime/egress/egresstest"
	"github.com/contractual/contractual/runtime/fairq"
)

// oneFlow puts calls in one flow: its calls never yield to each other.
var oneFlow = WithFlow("device:a", "tool.run")

// waitHeld yields until n of e's CPU slots are held.
func waitHeld(e *Engine, n int) {
	for e.cpu.Held() != n {
		runtime.Gosched()
	}
}

func oneSlot(t *testing.T, opts Options) *Engine {
	t.Helper()
	opts.MaxConcurrent = 1
	e, err := NewEngine(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Close(context.Background()) })
	return e
}

// spinGrants lets hostspin.wasm run until it is stopped.
var spinGrants = Grants{Config: map[string]string{"k": "v"}, Limits: Limits{Timeout: 10 * time.Minute, HostCalls: 1 << 40}}

// hog runs m's export in a goroutine until stop is called; the channel gets
// its error.
func hog(m *Module, export string, opts ...CallOption) (done <-chan error, stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	ch := make(chan error, 1)
	go func() {
		_, err := m.Call(ctx, export, nil, opts...)
		ch <- err
	}()
	return ch, cancel
}

// TestWaitCountsAgainstTimeout: a call that cannot get a CPU slot within
// its timeout fails with deadline_exceeded when the timeout ends, without
// running; the wait used to come on top of the timeout.
func TestWaitCountsAgainstTimeout(t *testing.T) {
	e := oneSlot(t, Options{QueueTimeout: time.Hour})
	loop := load(t, e, fixture(t, "hostile/loop.wasm"), Grants{Limits: Limits{Timeout: 10 * time.Minute}})
	short := load(t, e, fixture(t, "hostile/loop.wasm"), Grants{Limits: Limits{Timeout: 50 * time.Millisecond}})
	done, stop := hog(loop, "run", oneFlow)
	waitHeld(e, 1)

	res, err := short.Call(context.Background(), "ok", nil, oneFlow)
	wantErr(t, err, errs.DeadlineExceeded, "exceeded its 50ms timeout waiting to start")
	if res == nil || res.Output != nil || res.PeakMemory != 0 || res.Duration != 0 {
		t.Fatalf("the call ran: %+v", res)
	}
	stop()
	wantErr(t, <-done, errs.Unavailable, "canceled")
}

// TestQueueTimeout: a call that cannot get a CPU slot within QueueTimeout
// is refused as busy, before its own (longer) timeout.
func TestQueueTimeout(t *testing.T) {
	e := oneSlot(t, Options{QueueTimeout: 10 * time.Millisecond})
	loop := load(t, e, fixture(t, "hostile/loop.wasm"), Grants{Limits: Limits{Timeout: 10 * time.Minute}})
	done, stop := hog(loop, "run", oneFlow)
	waitHeld(e, 1)
	_, err := loop.Call(context.Background(), "ok", nil, oneFlow)
	wantErr(t, err, errs.ResourceExhausted, "sandbox busy: no slot was free within 10ms")
	stop()
	wantErr(t, <-done, errs.Unavailable, "canceled")
}

// TestYieldLetsOthersIn: with one CPU slot held by a guest that never
// ends, calls of other flows run to completion, one after another, while
// the guest still runs: it gives the slot up at its interruption points.
func TestYieldLetsOthersIn(t *testing.T) {
	e := oneSlot(t, Options{QueueTimeout: time.Minute})
	spin := load(t, e, fixture(t, "hostile/hostspin.wasm"), spinGrants)
	count := load(t, e, fixture(t, "hostile/count.wasm"), Grants{Limits: Limits{Timeout: time.Minute}})
	done, stop := hog(spin, "run", WithFlow("device:flood", "spin.run"))
	waitHeld(e, 1)
	for i := range 20 {
		res, err := count.Call(context.Background(), "count_vowels", []byte("aeiou"), WithFlow("device:small", "count.count_vowels"))
		if err != nil || string(res.Output) != `{"count": 5}` {
			t.Fatalf("call %d: %v %v", i, res, err)
		}
	}
	stop()
	// Canceled, not timed out nor out of host calls: it ran all along.
	wantErr(t, <-done, errs.Unavailable, "canceled")
}

// TestHTTPHoldsNoSlot: a call blocked in an HTTP request holds no CPU
// slot; other calls run meanwhile, and it gets a slot back to finish.
func TestHTTPHoldsNoSlot(t *testing.T) {
	entered, release := make(chan struct{}), make(chan struct{})
	srv := egresstest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			close(entered)
			<-release
		}
		w.Write([]byte("done"))
	}), "api.example.com")
	defer srv.Close()
	dialer, roots := egresstest.New(map[string]*httptest.Server{"api.example.com": srv})
	e := oneSlot(t, Options{Egress: egress.Config{Dialer: dialer, RootCAs: roots}, QueueTimeout: time.Minute})
	m := load(t, e, fixture(t, "hostile/exfil.wasm"), Grants{
		HTTP:   []egress.Rule{{Scheme: "https", Host: "api.example.com", PathPrefix: "/", Methods: []string{"GET", "POST"}}},
		Limits: Limits{Timeout: time.Minute},
	})
	count := load(t, e, fixture(t, "hostile/count.wasm"), Grants{Limits: Limits{Timeout: time.Minute}})
	slow := make(chan error, 1)
	go func() {
		_, err := m.Call(context.Background(), "run", []byte(`{"url": "https://api.example.com/slow"}`), oneFlow)
		slow <- err
	}()
	<-entered
	waitHeld(e, 0)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	res, err := count.Call(ctx, "count_vowels", []byte("aeiou"), oneFlow)
	if err != nil || string(res.Output) != `{"count": 5}` {
		t.Fatalf("%v %v", res, err)
	}
	close(release)
	if err := <-slow; err != nil {
		t.Fatal(err)
	}
}

// TestSleepHoldsNoSlotAndEnds: a guest sleeping in WASI's poll_oneoff gives
// its CPU slot up, as one blocked in HTTP does, and its sleep ends with its
// call (a timeout, or the caller's cancellation), not after 10 minutes.
func TestSleepHoldsNoSlotAndEnds(t *testing.T) {
	e := oneSlot(t, Options{QueueTimeout: time.Minute})
	clock := &WASI{Clock: true}
	sleeper := load(t, e, fixture(t, "hostile/sleep.wasm"), Grants{WASI: clock, Limits: Limits{Timeout: 100 * time.Millisecond}})
	_, err := sleeper.Call(context.Background(), "run", nil)
	wantErr(t, err, errs.DeadlineExceeded, "timeout")

	sleeper = load(t, e, fixture(t, "hostile/sleep.wasm"), Grants{WASI: clock, Limits: Limits{Timeout: 10 * time.Minute}})
	count := load(t, e, fixture(t, "hostile/count.wasm"), Grants{Limits: Limits{Timeout: time.Minute}})
	// Hold the only slot, so that the sleeper queues, then let it in: once
	// nothing waits and nothing holds the slot, the sleeper gave it up.
	held, err := e.cpu.Acquire(context.Background(), fairq.Key{Tool: "test"})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	slept := make(chan error, 1)
	go func() {
		_, err := sleeper.Call(ctx, "run", nil)
		slept <- err
	}()
	for e.cpu.Waiting() != 1 {
		runtime.Gosched()
	}
	held.Release()
	deadline := time.Now().Add(time.Minute)
	for e.cpu.Waiting() != 0 || e.cpu.Held() != 0 {
		if time.Now().After(deadline) {
			t.Fatal("the sleeping guest kept its CPU slot")
		}
		runtime.Gosched()
	}
	res, err := count.Call(context.Background(), "count_vowels", []byte("aeiou"))
	if err != nil || string(res.Output) != `{"count": 5}` {
		t.Fatalf("a call beside the sleeper: %v %v", res, err)
	}
	cancel()
	wantErr(t, <-slept, errs.Unavailable, "canceled")
}
