package runner

import (
	"context"
	"runtime"
	"sync"
	"testing"
	"time"

	contractualv1 "github.com/contractual/contractual/contracts/gen/contractual/v1"
	"github.com/contractual/contractual/internal/errs"
)

// hold makes the first call of policy's method block until release is
// called; entered is closed when that call has arrived.
func (f *fixture) hold(method string) (entered <-chan struct{}, release func()) {
	in, out := make(chan struct{}), make(chan struct{})
	var once sync.Once
	f.policy.mu.Lock()
	f.policy.hook = func(m string) {
		if m != method {
			return
		}
		first := false
		once.Do(func() { first = true })
		if first {
			close(in)
			<-out
		}
	}
	f.policy.mu.Unlock()
	var rel sync.Once
	return in, func() { rel.Do(func() { close(out) }) }
}

// async runs Execute in a goroutine; the channel gets its error.
func (f *fixture) async(req *contractualv1.ExecuteRequest) <-chan error {
	done := make(chan error, 1)
	go func() {
		_, err := f.svc.Execute(context.Background(), req)
		done <- err
	}()
	return done
}

// waitQueued yields until n calls wait for a place in the runner.
func waitQueued(s *Service, n int64) {
	for int64(s.places.Waiting()) != n {
		runtime.Gosched()
	}
}

// TestSameDecisionConcurrently: of many concurrent executions of one
// decision, exactly one runs.
func TestSameDecisionConcurrently(t *testing.T) {
	f := newFixture(t, Config{})
	ct := f.count("count")
	req := f.call(ct, "count_vowels", `{"x":"hello"}`)
	const n = 16
	results := make(chan error, n)
	var wg sync.WaitGroup
	for range n {
		wg.Go(func() {
			_, err := f.svc.Execute(context.Background(), req)
			results <- err
		})
	}
	wg.Wait()
	close(results)
	ok := 0
	for err := range results {
		switch {
		case err == nil:
			ok++
		case errs.Is(err, errs.PermissionDenied):
			wantKind(t, err, errs.PermissionDenied, "was already used")
		default:
			t.Errorf("unexpected error %v", err)
		}
	}
	if ok != 1 {
		t.Fatalf("%d executions succeeded, want 1", ok)
	}
	runs := 0
	for _, ev := range f.audit.all() {
		if ev.GetAction() == ActionRun {
			runs++
		}
	}
	if runs != 1 {
		t.Fatalf("%d call.run events, want 1", runs)
	}
}

// TestManyCallsConcurrently: distinct decisions of two tools, more calls
// than places, all run and are audited; the first load of each module is
// shared by the calls that wait for it.
func TestManyCallsConcurrently(t *testing.T) {
	f := newFixture(t, Config{MaxConcurrent: 8, QueueTimeout: time.Minute})
	tools := []*contractualv1.Contract{f.count("a"), f.count("b")}
	const n = 48
	reqs := make([]*contractualv1.ExecuteRequest, n)
	for i := range reqs {
		reqs[i] = f.call(tools[i%2], "count_vowels", `{"x":"aeiou"}`)
	}
	var wg sync.WaitGroup
	for _, req := range reqs {
		wg.Go(func() {
			resp, err := f.svc.Execute(context.Background(), req)
			if err != nil || string(resp.GetOutput()) != `{"count": 5}` {
				t.Errorf("%v %v", resp, err)
			}
		})
	}
	wg.Wait()
	if got := len(f.audit.all()); got != n {
		t.Fatalf("%d audit events, want %d", got, n)
	}
	// Both contracts run count.wasm: one fetch per contract, never more.
	if got := f.policy.count("GetModule"); got != 2 {
		t.Fatalf("GetModule called %d times, want 2", got)
	}
}

// TestBusy: with every place taken, a call is refused at once when it may
// not wait, and after QueueTimeout when it may. Nothing is audited for
// it (nothing was looked at) and its decision stays usable.
func TestBusy(t *testing.T) {
	for _, tc := range []struct {
		name    string
		timeout time.Duration
	}{
		{"no wait", -1},
		{"queue timeout", time.Millisecond},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, Config{MaxConcurrent: 1, QueueTimeout: tc.timeout})
			ct := f.count("count")
			entered, release := f.hold("GetContract")
			defer release()
			held := f.async(f.call(ct, "count_vowels", `{}`))
			<-entered

			req := f.call(ct, "count_vowels", `{}`)
			resp, err := f.svc.Execute(context.Background(), req)
			wantKind(t, err, errs.ResourceExhausted, "runner busy")
			if resp != nil {
				t.Fatal("a response from a busy runner")
			}
			release()
			if err := <-held; err != nil {
				t.Fatal(err)
			}
			if n := len(f.audit.all()); n != 1 {
				t.Fatalf("%d audit events, want 1", n)
			}
			if _, err := f.svc.Execute(context.Background(), req); err != nil {
				t.Fatalf("the refused decision is spent: %v", err)
			}
		})
	}
}

// TestQueue: a call waits for a place and runs when one frees; beyond
// MaxQueue waiting calls, a call is refused at once; a waiting call ends
// with its context.
func TestQueue(t *testing.T) {
	f := newFixture(t, Config{MaxConcurrent: 1, MaxQueue: 1, QueueTimeout: time.Hour})
	ct := f.count("count")
	entered, release := f.hold("GetContract")
	defer release()
	held := f.async(f.call(ct, "count_vowels", `{}`))
	<-entered
	queued := f.async(f.call(ct, "count_vowels", `{}`))
	waitQueued(f.svc, 1)

	_, err := f.svc.Execute(context.Background(), f.call(ct, "count_vowels", `{}`))
	wantKind(t, err, errs.ResourceExhausted, "runner busy")

	release()
	for _, c := range []<-chan error{held, queued} {
		if err := <-c; err != nil {
			t.Fatal(err)
		}
	}

	entered, release = f.hold("GetContract")
	defer release()
	held = f.async(f.call(ct, "count_vowels", `{}`))
	<-entered
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		_, err := f.svc.Execute(ctx, f.call(ct, "count_vowels", `{}`))
		done <- err
	}()
	waitQueued(f.svc, 1)
	cancel()
	wantKind(t, <-done, errs.Unavailable, "canceled while waiting for a runner slot")
	release()
	if err := <-held; err != nil {
		t.Fatal(err)
	}
}
