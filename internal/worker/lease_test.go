package worker

import (
	"context"
	"fmt"
	"testing"
	"time"

	contractualv1 "github.com/contractual/contractual/contracts/gen/contractual/v1"
	"github.com/contractual/contractual/internal/errs"
)

// TestLostLeaseCannotRecord: a worker whose run was taken over (its lease
// expired under the injected clock and another worker claimed the run)
// records nothing more: not the step it was running, not the run's end.
// The new holder runs that step again, with the same idempotency key, and
// the sink applies it once.
func TestLostLeaseCannotRecord(t *testing.T) {
	dir := t.TempDir()
	sk := newSink(t)
	sk.chained()
	release := make(chan struct{})
	sk.hold["one"] = release
	st := newStack(t, dir, sk.egress())
	rec := st.approveJob(t, chainJob(t, "chain", "budgets: {tool_calls_per_run: 4}\n")) // a step runs again after a lost lease
	clk := newClock(t0)
	cfg := Config{Now: clk.now, Lease: time.Minute, Renew: time.Hour}
	a := openWorker(t, dir, st, cfg)
	b := openWorker(t, dir, st, cfg)
	id := enqueue(t, a, rec, t0, `{"repo": "one"}`).GetRun().GetId()

	la, err := claim(context.Background(), a.db, "a", clk.now(), time.Minute)
	if err != nil || la == nil {
		t.Fatalf("a claims: %v, %v", la, err)
	}
	done := make(chan error, 1)
	go func() { done <- a.execute(context.Background(), la) }()
	sk.wait(t, "one") // a's step one reached the sink, which holds it

	if lb, _ := claim(context.Background(), b.db, "b", clk.now(), time.Minute); lb != nil {
		t.Fatalf("b claimed a run whose lease is live: %v", lb)
	}
	clk.advance(time.Minute)
	lb, err := claim(context.Background(), b.db, "b", clk.now(), time.Minute)
	if err != nil || lb == nil || lb.run != id || lb.gen != la.gen+1 {
		t.Fatalf("b claims the expired run: %v, %v", lb, err)
	}
	close(release)
	if err := <-done; !errs.Is(err, errs.FailedPrecondition) {
		t.Fatalf("a, after losing its lease: %v, want FailedPrecondition", err)
	}
	r := run(t, a, id)
	if r.GetState() != running || stepSummary(r) != "one:running:1" || r.GetSteps()[0].GetOutput() != nil {
		t.Fatalf("a recorded after losing its lease: %v %s", r.GetState(), stepSummary(r))
	}
	// Nor can a write anything else under its old lease.
	for name, write := range map[string]func() error{
		"renew":  func() error { return renew(context.Background(), a.db, la, clk.now(), time.Minute) },
		"finish": func() error { return finishRun(context.Background(), a.db, la, clk.now(), succeeded, "", r2u(r)) },
		"requeue": func() error {
			return requeue(context.Background(), a.db, la, clk.now(), clk.now(), "", r2u(r))
		},
	} {
		if err := write(); !errs.Is(err, errs.FailedPrecondition) {
			t.Errorf("%s under a lost lease: %v", name, err)
		}
	}

	if err := b.execute(context.Background(), lb); err != nil {
		t.Fatal(err)
	}
	r = run(t, b, id)
	if r.GetState() != succeeded || stepSummary(r) != "one:done:2 two:done:1 three:done:1" {
		t.Fatalf("b's run: %v %s %s", r.GetState(), stepSummary(r), r.GetError())
	}
	if key, seen, applied := sk.counts("one"); seen != 2 || applied != 1 || key != r.GetSteps()[0].GetIdempotencyKey()+".1" {
		t.Errorf("one: key %s seen %d applied %d", key, seen, applied)
	}
}

func r2u(*contractualv1.JobRun) *usage { return &usage{b: &contractualv1.JobBudgets{}} }

// TestWorkersNeverRunAStepTwice: two worker processes' worth of workers
// (two services on one store, four workers each) run many runs at once;
// every step of every run reaches the sink exactly once.
func TestWorkersNeverRunAStepTwice(t *testing.T) {
	const runs = 24
	dir := t.TempDir()
	sk := newSink(t)
	sk.chained()
	st := newStack(t, dir, sk.egress())
	rec := st.approveJob(t, chainJob(t, "chain", "budgets: {runs_per_day: 100}\n"))
	finished := make(chan string, runs*4)
	var services []*Service
	for i := range 2 {
		s := openWorker(t, dir, st, Config{ID: fmt.Sprintf("p%d", i), Workers: 4, Lease: 10 * time.Minute, Poll: time.Minute})
		s.testHookFinished = func(run string) { finished <- run }
		services = append(services, s)
	}
	ids := map[string]bool{}
	for i := range runs {
		ids[enqueue(t, services[i%2], rec, t0.Add(time.Duration(i)*time.Hour), `{"repo": "one"}`).GetRun().GetId()] = true
	}
	for _, s := range services {
		s.start()
	}
	timeout := time.After(2 * time.Minute)
	for range runs {
		select {
		case id := <-finished:
			if !ids[id] {
				t.Fatalf("run %s finished twice or is unknown", id)
			}
			delete(ids, id)
		case <-timeout:
			t.Fatalf("%d runs did not finish", len(ids))
		}
	}
	for _, s := range services {
		s.Close(context.Background())
	}
	sk.mu.Lock()
	defer sk.mu.Unlock()
	if len(sk.seen) != runs*3 {
		t.Errorf("the sink saw %d keys, want %d", len(sk.seen), runs*3)
	}
	for key, n := range sk.seen {
		if n != 1 {
			t.Errorf("key %s was sent %d times", key, n)
		}
	}
}

// TestCloseReleasesRun: a worker closed mid-step releases its run: another
// worker takes it over at once, without waiting for the lease to expire,
// and runs the interrupted step again with the same key.
func TestCloseReleasesRun(t *testing.T) {
	dir := t.TempDir()
	sk := newSink(t)
	sk.chained()
	sk.hold["one"] = make(chan struct{}) // never released: the close cuts it
	st := newStack(t, dir, sk.egress())
	rec := st.approveJob(t, chainJob(t, "chain", "budgets: {tool_calls_per_run: 4}\n"))
	clk := newClock(t0)
	a := openWorker(t, dir, st, Config{ID: "a", Now: clk.now, Lease: time.Hour})
	id := enqueue(t, a, rec, t0, `{"repo": "one"}`).GetRun().GetId()
	a.start()
	sk.wait(t, "one")
	if err := a.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	b := openWorker(t, dir, st, Config{ID: "b", Now: clk.now, Lease: time.Hour})
	drain(t, b, "b")
	r := run(t, b, id)
	if r.GetState() != succeeded || stepSummary(r) != "one:done:2 two:done:1 three:done:1" {
		t.Fatalf("run %v: %s: %s", r.GetState(), stepSummary(r), r.GetError())
	}
	if _, seen, applied := sk.counts("one"); seen != 2 || applied != 1 {
		t.Errorf("one sent %d times, applied %d", seen, applied)
	}
}
