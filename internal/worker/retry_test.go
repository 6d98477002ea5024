package worker

import (
	"strings"
	"testing"
	"time"

	contractualv1 "github.com/contractual/contractual/contracts/gen/contractual/v1"
)

// TestRetryBackoff: a step whose tool fails is retried after the job's
// backoff, doubled each time, under the injected clock; done steps are not
// run again; the retried step keeps its idempotency key; after the last
// retry the run fails.
func TestRetryBackoff(t *testing.T) {
	dir := t.TempDir()
	sk := newSink(t)
	sk.chained()
	sk.fail["two"] = 2 // two's first two requests fail
	st := newStack(t, dir, sk.egress())
	rec := st.approveJob(t, chainJob(t, "chain", "retry: {attempts: 2, backoff_seconds: 10}\nbudgets: {tool_calls_per_run: 5}\n"))
	clk := newClock(t0)
	s := openWorker(t, dir, st, Config{Now: clk.now})
	id := enqueue(t, s, rec, t0, `{"repo": "one"}`).GetRun().GetId()

	drain(t, s, "w") // attempt 1: one done, two fails
	r := run(t, s, id)
	if r.GetState() != queued || r.GetAttempt() != 1 || stepSummary(r) != "one:done:1 two:failed:1" || !strings.Contains(r.GetError(), "HTTP status 500") {
		t.Fatalf("after attempt 1: %v attempt %d: %s: %s", r.GetState(), r.GetAttempt(), stepSummary(r), r.GetError())
	}
	clk.advance(10*time.Second - time.Nanosecond)
	drain(t, s, "w") // not due yet
	if r := run(t, s, id); r.GetAttempt() != 1 {
		t.Fatalf("retried before the backoff: attempt %d", r.GetAttempt())
	}
	clk.advance(time.Nanosecond)
	drain(t, s, "w") // attempt 2: two fails again; the next wait is doubled
	if r := run(t, s, id); r.GetState() != queued || r.GetAttempt() != 2 || stepSummary(r) != "one:done:1 two:failed:2" {
		t.Fatalf("after attempt 2: %v attempt %d: %s", r.GetState(), r.GetAttempt(), stepSummary(r))
	}
	clk.advance(20*time.Second - time.Nanosecond)
	drain(t, s, "w")
	if r := run(t, s, id); r.GetAttempt() != 2 {
		t.Fatalf("retried before the doubled backoff: attempt %d", r.GetAttempt())
	}
	clk.advance(time.Nanosecond)
	drain(t, s, "w") // attempt 3 succeeds
	r = run(t, s, id)
	if r.GetState() != succeeded || r.GetAttempt() != 3 || stepSummary(r) != "one:done:1 two:done:3 three:done:1" {
		t.Fatalf("after attempt 3: %v attempt %d: %s: %s", r.GetState(), r.GetAttempt(), stepSummary(r), r.GetError())
	}
	key, seen, applied := sk.counts("two")
	if seen != 3 || applied != 1 || key != r.GetSteps()[1].GetIdempotencyKey()+".1" {
		t.Errorf("two: key %s seen %d applied %d", key, seen, applied)
	}
	if _, seen, _ := sk.counts("one"); seen != 1 {
		t.Errorf("one was sent %d times", seen)
	}

	// Out of retries: the run fails.
	sk.mu.Lock()
	sk.fail["one"] = 10
	sk.mu.Unlock()
	id = enqueue(t, s, rec, t0.Add(24*time.Hour), `{"repo": "one"}`).GetRun().GetId()
	for range 3 {
		drain(t, s, "w")
		clk.advance(time.Hour)
	}
	r = run(t, s, id)
	if r.GetState() != failed || r.GetAttempt() != 3 || stepSummary(r) != "one:failed:3" {
		t.Fatalf("out of retries: %v attempt %d: %s", r.GetState(), r.GetAttempt(), stepSummary(r))
	}
}

// TestBackoffCapped: the wait doubles up to MaxBackoff.
func TestBackoffCapped(t *testing.T) {
	a := &attempt{s: &Service{cfg: Config{MaxBackoff: time.Minute}}, job: &contractualv1.Job{Retry: &contractualv1.Retry{Attempts: 10, BackoffSeconds: 10}}}
	var got []time.Duration
	for n := uint32(1); n <= 5; n++ {
		got = append(got, a.backoff(n))
	}
	want := []time.Duration{10 * time.Second, 20 * time.Second, 40 * time.Second, time.Minute, time.Minute}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("backoffs %v, want %v", got, want)
		}
	}
}

// TestBudgetExceeded: a run that exceeds a budget stops (STOPPED, the
// steps after not run) and pauses its job (kind BUDGET, with run and
// step): egress requests, output bytes, and run time measured by the
// injected clock.
func TestBudgetExceeded(t *testing.T) {
	dir := t.TempDir()
	sk := newSink(t)
	sk.chained()
	st := newStack(t, dir, sk.egress())
	clk := newClock(t0)
	sk.onHit = func(repo string) {
		if repo == "two" {
			clk.advance(2 * time.Minute) // step two runs for two minutes
		}
	}
	tests := []struct {
		name, budget, wantStep, wantBudget, steps string
	}{
		{"egress", "budgets: {egress_requests: 1}\n", "two", "egress_requests", "one:done:1 two:done:1"},
		{"output", "budgets: {output_bytes: 50}\n", "two", "output_bytes", "one:done:1 two:done:1"},
		{"time", "budgets: {run_time_seconds: 60}\n", "two", "run_time_seconds", "one:done:1 two:done:1"},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := st.approveJob(t, chainJob(t, "budget-"+tt.name, tt.budget))
			s := openWorker(t, t.TempDir(), st, Config{Now: clk.now})
			id := enqueue(t, s, rec, t0.Add(time.Duration(i)*time.Hour), `{"repo": "one"}`).GetRun().GetId()
			drain(t, s, "w")
			r := run(t, s, id)
			if r.GetState() != stopped || stepSummary(r) != tt.steps || !strings.Contains(r.GetError(), "exceeded its "+tt.wantBudget+" budget") {
				t.Fatalf("run %v: %s: %s", r.GetState(), stepSummary(r), r.GetError())
			}
			// Policy accepted the worker's pause: kind BUDGET, by the worker,
			// with the run and the step.
			p := st.pause(t, rec.GetId())
			if p.GetKind() != contractualv1.PauseKind_PAUSE_KIND_BUDGET || p.GetRunId() != id || p.GetPausedBy() != "service:worker" ||
				p.GetStep() != tt.wantStep || !strings.Contains(p.GetReason(), tt.wantBudget) {
				t.Fatalf("pause %v", p)
			}
			if u := r.GetUsed(); u.GetEgressRequests() != 2 || u.GetToolCallsPerRun() != 2 {
				t.Errorf("used %v", u)
			}
			// The job is paused: a run now is refused.
			_, err := s.RunJob(owner, &contractualv1.RunJobRequest{Id: rec.GetId()})
			if err == nil || !strings.Contains(err.Error(), "paused") {
				t.Errorf("RunJob of the paused job: %v", err)
			}
		})
	}
}

// TestRunTimeDeadline: the run-time budget is also a deadline on the
// run's calls: a step still running when the budget (less what the run
// used before, by the injected clock) is spent is cut, the run stops and
// the job is paused.
func TestRunTimeDeadline(t *testing.T) {
	dir := t.TempDir()
	sk := newSink(t)
	sk.chained()
	sk.hold["two"] = make(chan struct{}) // never answered
	st := newStack(t, dir, sk.egress())
	clk := newClock(t0)
	sk.onHit = func(repo string) {
		if repo == "one" {
			clk.advance(60*time.Second - 50*time.Millisecond) // step one leaves 50ms of the minute
		}
	}
	rec := st.approveJob(t, chainJob(t, "chain", "budgets: {run_time_seconds: 60}\n"))
	s := openWorker(t, dir, st, Config{Now: clk.now})
	id := enqueue(t, s, rec, t0, `{"repo": "one"}`).GetRun().GetId()
	drain(t, s, "w")
	r := run(t, s, id)
	if r.GetState() != stopped || stepSummary(r) != "one:done:1 two:failed:1" || !strings.Contains(r.GetError(), "exceeded its run_time_seconds budget at step two") {
		t.Fatalf("run %v: %s: %s", r.GetState(), stepSummary(r), r.GetError())
	}
	if p := st.pause(t, rec.GetId()); p.GetKind() != contractualv1.PauseKind_PAUSE_KIND_BUDGET || p.GetStep() != "two" || p.GetRunId() != id {
		t.Fatalf("pause %v", p)
	}
}
