package policy

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	contractualv1 "github.com/contractual/contractual/contracts/gen/contractual/v1"
	"github.com/contractual/contractual/internal/decision"
	"github.com/contractual/contractual/internal/errs"
)

// TestEvaluateJob is the table of a job's calls: each bound inside and
// outside, a tool the job does not call, an input its schema refuses, a
// missing or misplaced run id. Every answer other than allow pauses the
// job (kind decision, with the run and the step) in the transaction of the
// decision, and says so; the job is resumed between cases.
func TestEvaluateJob(t *testing.T) {
	f := newJobFixture(t)
	f.approveJob(f.createJob(jobFile(f.textkit, f.meter, "budgets: {tool_calls_per_run: 9, runs_per_day: 100}\n")).GetRecord().GetDigest())
	count := func(text string, n any, mode string, tags ...string) string {
		in := fmt.Sprintf(`{"text": %q, "n": %v, "tags": [%s]`, text, n, `"`+strings.Join(tags, `", "`)+`"`)
		if len(tags) == 0 {
			in = fmt.Sprintf(`{"text": %q, "n": %v, "tags": []`, text, n)
		}
		if mode != "" {
			in += fmt.Sprintf(`, "mode": %q`, mode)
		}
		return in + "}"
	}
	tests := []struct {
		name, tool, input string
		who, run          string
		verdict           contractualv1.Verdict // 0: refused with kind
		kind              errs.Kind
		pauses            bool
		msgs              []string
	}{
		{name: "inside every bound", tool: "meter.count_vowels", input: count("hello-world", 3, "fast", "a", "b"), verdict: contractualv1.Verdict_VERDICT_ALLOW,
			msgs: []string{"job nightly sha256:", "may call meter.count_vowels within its bounds (run r-inside-every-bound, call 1 of at most 9)"}},
		{name: "bounds at their limits", tool: "meter.count_vowels", input: count("z", 10, "slow", "a", "b"), verdict: contractualv1.Verdict_VERDICT_ALLOW},
		{name: "other tool inside its bound", tool: "textkit.slugify", input: `{"text": "Hello World"}`, verdict: contractualv1.Verdict_VERDICT_ALLOW},
		{name: "pattern outside", tool: "meter.count_vowels", input: count("Hello", 3, "fast"), verdict: contractualv1.Verdict_VERDICT_DENY, pauses: true,
			msgs: []string{`the input of meter.count_vowels is outside job nightly's bounds: /text is "Hello", which does not match "[a-z-]+" as a whole`, "job nightly is paused"}},
		{name: "pattern is anchored", tool: "textkit.slugify", input: `{"text": "Hello, World"}`, verdict: contractualv1.Verdict_VERDICT_DENY, pauses: true,
			msgs: []string{`/text is "Hello, World", which does not match`}},
		{name: "not an allowed value", tool: "meter.count_vowels", input: count("abc", 3, "turbo"), verdict: contractualv1.Verdict_VERDICT_DENY, pauses: true,
			msgs: []string{`/mode is "turbo", not one of "fast", "slow"`}},
		{name: "below the minimum", tool: "meter.count_vowels", input: count("abc", 0.5, "fast"), verdict: contractualv1.Verdict_VERDICT_DENY, pauses: true,
			msgs: []string{"/n is 0.5, below the minimum 1"}},
		{name: "above the maximum", tool: "meter.count_vowels", input: count("abc", 11, "fast"), verdict: contractualv1.Verdict_VERDICT_DENY, pauses: true,
			msgs: []string{"/n is 11, above the maximum 10"}},
		{name: "over max_length", tool: "meter.count_vowels", input: count("abc", 3, "fast", "a", "b", "c"), verdict: contractualv1.Verdict_VERDICT_DENY, pauses: true,
			msgs: []string{"/tags has 3 characters or elements, over the 2 allowed"}},
		{name: "bounded value missing", tool: "meter.count_vowels", input: `{"text": "abc", "n": 3, "tags": []}`, verdict: contractualv1.Verdict_VERDICT_DENY, pauses: true,
			msgs: []string{"/mode is missing"}},
		{name: "tool not in the job", tool: "textkit.word_count", input: `{"text": "a b"}`, verdict: contractualv1.Verdict_VERDICT_DENY, pauses: true,
			msgs: []string{"job nightly does not call textkit.word_count: its steps call textkit.slugify, meter.count_vowels", "job nightly is paused"}},
		{name: "input the schema refuses", tool: "meter.count_vowels", input: `{"text": 7}`, kind: errs.Invalid, pauses: true,
			msgs: []string{"does not meet its schema", "job nightly is paused"}},
		{name: "unknown tool", tool: "weather.forecast", input: `{}`, kind: errs.NotFound, pauses: true,
			msgs: []string{"unknown tool weather.forecast", "job nightly is paused"}},
		{name: "no run id", tool: "meter.count_vowels", input: goodCount, run: "-", kind: errs.Invalid,
			msgs: []string{"run_id is required for a job's call"}},
		{name: "malformed run id", tool: "meter.count_vowels", input: goodCount, run: "a run", kind: errs.Invalid,
			msgs: []string{`run_id "a run" is malformed`}},
		{name: "run id for a device", tool: "meter.count_vowels", input: goodCount, who: "device:phone", run: "r1", kind: errs.Invalid,
			msgs: []string{"run_id is only for a job's calls (principal job:<id>), not for device:phone"}},
		{name: "unknown job", tool: "meter.count_vowels", input: goodCount, who: "job:weekly", kind: errs.FailedPrecondition,
			msgs: []string{"job weekly has no approved version"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			who, run := tc.who, tc.run
			if who == "" {
				who = "job:nightly"
			}
			switch run {
			case "":
				run = "r-" + strings.ReplaceAll(tc.name, " ", "-")
			case "-":
				run = ""
			}
			n := f.audit.len()
			resp, err := f.s.Evaluate(context.Background(), &contractualv1.EvaluateRequest{Tool: tc.tool, Input: []byte(tc.input), Principal: who, RunId: run})
			var text, outcome string
			if tc.verdict != 0 {
				if err != nil {
					t.Fatal(err)
				}
				d := resp.GetDecision()
				if d.GetVerdict() != tc.verdict || d.GetRunId() != run || d.GetPrincipal() != who {
					t.Fatalf("decision %v", d)
				}
				text, outcome = d.GetReason(), verdictOutcome(tc.verdict)
			} else {
				wantErr(t, err, tc.kind)
				text, outcome = err.Error(), tc.kind.String()
			}
			for _, m := range tc.msgs {
				if !strings.Contains(text, m) {
					t.Errorf("%q lacks %q", text, m)
				}
			}
			rec := f.getJob("nightly").GetRecord()
			evs := f.audit.since(n)
			if !tc.pauses {
				if rec.GetState() != jobApproved || len(evs) != 1 || evs[0].GetOutcome() != outcome {
					t.Fatalf("job %v after the call; events %s", rec.GetState(), actions(evs))
				}
				return
			}
			p := rec.GetPause()
			wantStep := map[string]string{"meter.count_vowels": "count", "textkit.slugify": "slug"}[tc.tool]
			if rec.GetState() != jobPaused || p.GetKind() != contractualv1.PauseKind_PAUSE_KIND_DECISION || p.GetRunId() != run ||
				p.GetStep() != wantStep || p.GetPausedBy() != "job:nightly" || !strings.Contains(p.GetReason(), tc.tool) {
				t.Fatalf("job after the call: %v", rec)
			}
			// The decision (or refusal) and the pause are recorded together.
			if len(evs) != 2 || evs[0].GetOutcome() != outcome || evs[1].GetAction() != actionJobPause {
				t.Fatalf("events %s", actions(evs))
			}
			if _, err := f.jobCall("nightly", run, "textkit.slugify", `{"text": "Hello"}`); !errs.Is(err, errs.FailedPrecondition) || !strings.Contains(err.Error(), "is paused (decision") {
				t.Fatalf("a call of the paused job: %v", err)
			}
			f.resumeJob("nightly")
		})
	}
}

// TestEvaluateJobDecision: an allowed job call's decision carries its run
// id, signed, so that the runner derives idempotency keys from it.
func TestEvaluateJobDecision(t *testing.T) {
	f := newJobFixture(t)
	f.approveJob(f.createJob(jobFile(f.textkit, f.meter, "")).GetRecord().GetDigest())
	resp, err := f.jobCall("nightly", "run-42", "meter.count_vowels", goodCount)
	if err != nil {
		t.Fatal(err)
	}
	v, err := decision.NewVerifier(f.s.public)
	if err != nil {
		t.Fatal(err)
	}
	d, err := v.Verify(resp.GetSigned(), resp.GetCanonicalInput(), fixed)
	if err != nil || d.GetRunId() != "run-42" || d.GetPrincipal() != "job:nightly" || d.GetContractDigest() != f.meter {
		t.Fatalf("verified decision %v, %v", d, err)
	}
}

// TestEvaluateJobStep: the step a job's call names is signed into its
// decision (it is part of the call's idempotency key); a step that does
// not call the tool is refused, and pauses the job at that step.
func TestEvaluateJobStep(t *testing.T) {
	f := newJobFixture(t)
	f.approveJob(f.createJob(jobFile(f.textkit, f.meter, "")).GetRecord().GetDigest())
	v, err := decision.NewVerifier(f.s.public)
	if err != nil {
		t.Fatal(err)
	}
	call := func(step string) (*contractualv1.EvaluateResponse, error) {
		return f.s.Evaluate(context.Background(), &contractualv1.EvaluateRequest{
			Tool: "meter.count_vowels", Input: []byte(goodCount), Principal: "job:nightly", RunId: "run-7", Step: step,
		})
	}
	resp, err := call("count")
	if err != nil {
		t.Fatal(err)
	}
	d, err := v.Verify(resp.GetSigned(), resp.GetCanonicalInput(), fixed)
	if err != nil || d.GetStep() != "count" || d.GetRunId() != "run-7" {
		t.Fatalf("verified decision %v, %v", d, err)
	}
	if _, err := f.s.Evaluate(context.Background(), &contractualv1.EvaluateRequest{
		Tool: "meter.count_vowels", Input: []byte(goodCount), Principal: "device:phone", Step: "count",
	}); !errs.Is(err, errs.Invalid) {
		t.Errorf("a step for a device's call: %v", err)
	}
	if _, err := call("slug"); !errs.Is(err, errs.Invalid) || !strings.Contains(err.Error(), `no step "slug" calling meter.count_vowels`) {
		t.Fatalf("a step that does not call the tool: %v", err)
	}
	got, err := f.s.GetJob(asOwner, &contractualv1.GetJobRequest{Id: "nightly"})
	if p := got.GetRecord().GetPause(); err != nil || p.GetKind() != contractualv1.PauseKind_PAUSE_KIND_DECISION || p.GetStep() != "slug" || p.GetRunId() != "run-7" {
		t.Fatalf("pause %v, %v", p, err)
	}
}

// TestJobBudgets: a run's calls beyond tool_calls_per_run, and runs beyond
// runs_per_day (UTC days, on the injected clock), are denied and pause
// the job; the next day's runs are allowed.
func TestJobBudgets(t *testing.T) {
	f := newJobFixture(t)
	f.now = time.Date(2030, 1, 2, 23, 0, 0, 0, time.UTC)
	f.approveJob(f.createJob(jobFile(f.textkit, f.meter, "budgets: {tool_calls_per_run: 3, runs_per_day: 2}\n")).GetRecord().GetDigest())
	allow := func(run string) {
		t.Helper()
		resp, err := f.jobCall("nightly", run, "meter.count_vowels", goodCount)
		if err != nil || resp.GetDecision().GetVerdict() != contractualv1.Verdict_VERDICT_ALLOW {
			t.Fatalf("call in %s: %v, %v", run, resp.GetDecision(), err)
		}
	}
	deny := func(run string, msg string) {
		t.Helper()
		resp, err := f.jobCall("nightly", run, "meter.count_vowels", goodCount)
		if err != nil || resp.GetDecision().GetVerdict() != contractualv1.Verdict_VERDICT_DENY || !strings.Contains(resp.GetDecision().GetReason(), msg) {
			t.Fatalf("call in %s: %v, %v", run, resp.GetDecision(), err)
		}
		if p := f.getJob("nightly").GetRecord().GetPause(); p.GetKind() != contractualv1.PauseKind_PAUSE_KIND_DECISION || p.GetRunId() != run {
			t.Fatalf("pause %v", p)
		}
		f.resumeJob("nightly")
	}
	for range 3 {
		allow("r1")
	}
	deny("r1", "run r1 of job nightly made its call 4: its budget is 3 tool calls per run")
	allow("r2")
	deny("r3", "run r3 would be job nightly's run 3 on 2030-01-02 (UTC): its budget is 2 runs per day")
	// A run started today keeps going after midnight; a new run counts
	// against the new day.
	f.now = time.Date(2030, 1, 3, 0, 30, 0, 0, time.UTC)
	allow("r2")
	allow("r4")
	allow("r5")
	deny("r6", "run r6 would be job nightly's run 3 on 2030-01-03")
}

// TestEvaluateJobHighRisk: a high-risk tool's call in a job needs a
// one-shot approval, which a job never waits for: approval required, and
// the job is paused. Its card says so beforehand.
func TestEvaluateJobHighRisk(t *testing.T) {
	f := newJobFixture(t)
	high := f.approve(f.publish(f.count, meter(f.count, "2.0.0", "high")).GetRecord().GetDigest()).GetDigest()
	created := f.createJob(jobFile(f.textkit, high, ""))
	if !strings.Contains(created.GetCard(), "Note: meter.count_vowels (step count) is a high-risk tool") {
		t.Fatalf("card:\n%s", created.GetCard())
	}
	f.approveJob(created.GetRecord().GetDigest())
	resp, err := f.jobCall("nightly", "r1", "meter.count_vowels", goodCount)
	if err != nil {
		t.Fatal(err)
	}
	d := resp.GetDecision()
	if d.GetVerdict() != contractualv1.Verdict_VERDICT_APPROVAL_REQUIRED || !strings.Contains(d.GetReason(), "a job never waits for one; job nightly is paused") {
		t.Fatalf("decision %v", d)
	}
	if rec := f.getJob("nightly").GetRecord(); rec.GetState() != jobPaused || !strings.Contains(rec.GetPause().GetReason(), "approval_required") {
		t.Fatalf("job %v", rec)
	}
	// Jobs never wait: the call asked the owner for nothing.
	if d.GetApprovalId() != "" {
		t.Fatalf("job decision names approval %s", d.GetApprovalId())
	}
	list, err := f.s.ListCallApprovals(asOwner, &contractualv1.ListCallApprovalsRequest{})
	if err != nil || len(list.GetApprovals()) != 0 {
		t.Fatalf("call approvals after a job's call: %v, %v", list, err)
	}
}

// TestEvaluateJobStalePin: should a job pinning a replaced contract ever
// be approved (a store edited behind policy's back), its calls are still
// denied: Evaluate checks the pin itself, not only drift.
func TestEvaluateJobStalePin(t *testing.T) {
	f := newJobFixture(t)
	f.approveJob(f.createJob(jobFile(f.textkit, f.meter, "")).GetRecord().GetDigest())
	m2 := f.approve(f.publish(f.count, meter(f.count, "2.0.0", "low")).GetRecord().GetDigest()).GetDigest()
	if _, err := f.s.db.Exec(`UPDATE jobs SET state = 2, pause = NULL WHERE state = 3`); err != nil {
		t.Fatal(err)
	}
	resp, err := f.jobCall("nightly", "r1", "meter.count_vowels", goodCount)
	if err != nil {
		t.Fatal(err)
	}
	if d := resp.GetDecision(); d.GetVerdict() != contractualv1.Verdict_VERDICT_DENY ||
		!strings.Contains(d.GetReason(), "job nightly pins contract meter "+f.meter+", but the approved meter is "+m2) {
		t.Fatalf("decision %v", d)
	}
	if st := f.getJob("nightly").GetRecord().GetState(); st != jobPaused {
		t.Fatalf("job %v", st)
	}
}

// BenchmarkEvaluateJob is one allowed call of a job: the call of
// BenchmarkEvaluate, plus the job's checks and a committed count of the
// run's calls (a write transaction, synced), each call in a new run.
func BenchmarkEvaluateJob(b *testing.B) {
	s, digest := benchService(b)
	file := fmt.Appendf(nil, `name: bench
trigger: {cron: {expression: "@hourly", time_zone: UTC}}
steps:
  - {id: slug, tool: textkit.slugify, contract: %s, input: {text: x}}
bounds:
  - tool: textkit.slugify
    inputs: [{pointer: /text, max_length: 100}]
budgets: {runs_per_day: 1440}
`, digest)
	created, err := s.CreateJob(asOwner, &contractualv1.CreateJobRequest{Job: file})
	if err != nil {
		b.Fatal(err)
	}
	if _, err := s.ApproveJob(asOwner, &contractualv1.ApproveJobRequest{Digest: created.GetRecord().GetDigest()}); err != nil {
		b.Fatal(err)
	}
	day := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	n := 0
	s.opts.Now = func() time.Time { return day.Add(time.Duration(n/1000) * 24 * time.Hour) }
	req := &contractualv1.EvaluateRequest{Tool: "textkit.slugify", Input: benchReq.GetInput(), Principal: "job:bench"}
	b.ReportAllocs()
	for b.Loop() {
		n++
		req.RunId = fmt.Sprintf("run-%d", n)
		resp, err := s.Evaluate(context.Background(), req)
		if err != nil || resp.GetDecision().GetVerdict() != contractualv1.Verdict_VERDICT_ALLOW {
			b.Fatal(resp.GetDecision(), err)
		}
	}
}
