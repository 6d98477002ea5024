package worker

import (
	"context"
	"strings"
	"testing"
	"time"

	contractualv1 "github.com/contractual/contractual/contracts/gen/contractual/v1"
	"github.com/contractual/contractual/internal/errs"
)

// TestRunJobListGet: RunJob enqueues a manual run of an approved job for
// the device (a new run each time), refuses a paused job or a caller that
// is not a device; ListRuns pages newest first; GetRun has the steps.
func TestRunJobListGet(t *testing.T) {
	dir := t.TempDir()
	sk := newSink(t)
	sk.chained()
	st := newStack(t, dir, sk.egress())
	rec := st.approveJob(t, chainJob(t, "chain", ""))
	clk := newClock(t0)
	s := openWorker(t, dir, st, Config{Now: clk.now})

	var ids []string
	for range 3 {
		resp, err := s.RunJob(owner, &contractualv1.RunJobRequest{Id: "chain", Payload: jsonValue(t, `{"repo": "one"}`)})
		if err != nil {
			t.Fatal(err)
		}
		r := resp.GetRun()
		if r.GetTrigger() != TriggerManual || r.GetRequestedBy() != "device:owner" || r.GetJobDigest() != rec.GetDigest() || r.GetState() != queued {
			t.Fatalf("manual run: %v", r)
		}
		ids = append(ids, r.GetId())
		clk.advance(time.Second)
	}
	if ids[0] == ids[1] || ids[1] == ids[2] {
		t.Fatalf("RunJob reused a run: %v", ids)
	}
	drain(t, s, "w")

	var listed []string
	token := ""
	for {
		page, err := s.ListRuns(context.Background(), &contractualv1.ListRunsRequest{JobId: "chain", PageSize: 2, PageToken: token})
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range page.GetRuns() {
			listed = append(listed, r.GetId())
			if r.GetState() != succeeded || len(r.GetSteps()) != 3 {
				t.Errorf("listed run %s: %v with %d steps", r.GetId(), r.GetState(), len(r.GetSteps()))
			}
		}
		if token = page.GetNextPageToken(); token == "" {
			break
		}
	}
	if strings.Join(listed, " ") != strings.Join([]string{ids[2], ids[1], ids[0]}, " ") {
		t.Errorf("listed %v, want newest first of %v", listed, ids)
	}
	if _, err := s.ListRuns(context.Background(), &contractualv1.ListRunsRequest{JobId: "other", PageToken: token + "x"}); !errs.Is(err, errs.Invalid) {
		t.Errorf("a bad page token: %v", err)
	}
	if r := run(t, s, ids[0]); stepSummary(r) != "one:done:1 two:done:1 three:done:1" {
		t.Errorf("GetRun: %s", stepSummary(r))
	}
	if _, err := s.GetRun(context.Background(), &contractualv1.GetRunRequest{Id: "nope"}); !errs.Is(err, errs.NotFound) {
		t.Errorf("GetRun of no run: %v", err)
	}

	if _, err := s.RunJob(context.Background(), &contractualv1.RunJobRequest{Id: "chain"}); !errs.Is(err, errs.PermissionDenied) {
		t.Errorf("RunJob without a device: %v", err)
	}
	if _, err := st.policy.PauseJob(owner, &contractualv1.PauseJobRequest{Id: "chain", Reason: "owner says so"}); err != nil {
		t.Fatal(err)
	}
	_, err := s.RunJob(owner, &contractualv1.RunJobRequest{Id: "chain"})
	if !errs.Is(err, errs.FailedPrecondition) || !strings.Contains(err.Error(), "paused") || !strings.Contains(err.Error(), "owner says so") {
		t.Errorf("RunJob of a paused job: %v", err)
	}
}

// TestDecisionOtherThanAllowStops: when policy does not allow a step's
// call (here: step two's input is outside the job's bounds), the run stops
// there with policy's reason, the step is not run, nothing is retried, and
// the job is paused by policy (kind DECISION), not by the worker.
func TestDecisionOtherThanAllowStops(t *testing.T) {
	dir := t.TempDir()
	sk := newSink(t)
	sk.chained()
	st := newStack(t, dir, sk.egress())
	rec := st.approveJob(t, chainJob(t, "chain", `retry: {attempts: 3}
bounds:
  - tool: ghstars.repo_stars
    inputs: [{pointer: /repo, allowed: [one]}]
`))
	s := openWorker(t, dir, st, Config{Now: newClock(t0).now})
	id := enqueue(t, s, rec, t0, `{"repo": "one"}`).GetRun().GetId()
	drain(t, s, "w")
	r := run(t, s, id)
	if r.GetState() != stopped || r.GetAttempt() != 1 || stepSummary(r) != "one:done:1 two:failed:1" ||
		!strings.Contains(r.GetError(), "policy answered deny") || !strings.Contains(r.GetError(), "paused") {
		t.Fatalf("run %v attempt %d: %s: %s", r.GetState(), r.GetAttempt(), stepSummary(r), r.GetError())
	}
	if r.GetSteps()[1].GetDecisionId() == "" || sk.total.Load() != 1 {
		t.Errorf("step %v; the sink saw %d requests", r.GetSteps()[1], sk.total.Load())
	}
	if p := st.pause(t, "chain"); p.GetKind() != contractualv1.PauseKind_PAUSE_KIND_DECISION || p.GetRunId() != id || p.GetPausedBy() == "service:worker" {
		t.Errorf("pause %v, want policy's, kind DECISION", p)
	}
}

// TestNotApprovedJobStops: a run of a job version that is no longer
// approved (paused, superseded) stops before any step.
func TestNotApprovedJobStops(t *testing.T) {
	dir := t.TempDir()
	sk := newSink(t)
	st := newStack(t, dir, sk.egress())
	rec := st.approveJob(t, chainJob(t, "chain", ""))
	s := openWorker(t, dir, st, Config{Now: newClock(t0).now})
	id := enqueue(t, s, rec, t0, `{"repo": "one"}`).GetRun().GetId()
	if _, err := st.policy.PauseJob(owner, &contractualv1.PauseJobRequest{Id: "chain"}); err != nil {
		t.Fatal(err)
	}
	drain(t, s, "w")
	if r := run(t, s, id); r.GetState() != stopped || len(r.GetSteps()) != 0 || !strings.Contains(r.GetError(), "is paused, not approved") {
		t.Fatalf("run %v: %s: %s", r.GetState(), stepSummary(r), r.GetError())
	}
}
