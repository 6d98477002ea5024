package policy

import (
	"bytes"
	"context"
	"database/sql"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	contractualv1 "github.com/contractual/contractual/contracts/gen/contractual/v1"
	"github.com/contractual/contractual/internal/errs"
	"github.com/contractual/contractual/internal/principal"
)

// TestJobLifecycle walks a job through its life: created pending with its
// card, created again (nothing changes), approved, a changed version
// pending with its diff while the approved one stays current, that one
// approved (superseding the first), a third rejected, listed, deleted.
func TestJobLifecycle(t *testing.T) {
	f := newJobFixture(t)
	file := jobFile(f.textkit, f.meter, "budgets: {tool_calls_per_run: 2, runs_per_day: 1}\n")

	n := f.audit.len()
	created := f.createJob(file)
	v1 := created.GetRecord()
	if v1.GetId() != "nightly" || v1.GetState() != jobPending || v1.GetCreatedBy() != ownerDevice || created.GetExisted() ||
		created.GetPredecessor() != "" || len(created.GetDiff()) != 0 {
		t.Fatalf("created: %v", created)
	}
	for _, want := range []string{"Job nightly", "textkit.slugify (step slug), pinned to contract " + f.textkit, `/mode: one of "fast", "slow"`, "Runs per day"} {
		if !strings.Contains(created.GetCard(), want) {
			t.Errorf("card lacks %q:\n%s", want, created.GetCard())
		}
	}
	onlyEvent(t, f.audit.since(n), actionJobCreate, outcomeOK)
	if again := f.createJob(file); !again.GetExisted() || again.GetRecord().GetDigest() != v1.GetDigest() {
		t.Fatalf("created again: %v", again)
	}

	if rec := f.approveJob(v1.GetDigest()); rec.GetState() != jobApproved || rec.GetDecidedBy() != ownerDevice || !rec.GetDecidedAt().AsTime().Equal(fixed) {
		t.Fatalf("approved: %v", rec)
	}
	// Approving it again is refused: it is not pending.
	_, err := f.s.ApproveJob(asOwner, &contractualv1.ApproveJobRequest{Digest: v1.GetDigest()})
	wantErr(t, err, errs.FailedPrecondition, "is approved", "only a pending version")

	// A changed job: a new pending version, shown against the approved one,
	// which stays the job's current version.
	f.now = fixed.Add(time.Minute)
	v2resp := f.createJob(jobFile(f.textkit, f.meter, "budgets: {tool_calls_per_run: 2, runs_per_day: 5}\n"))
	v2 := v2resp.GetRecord()
	if v2.GetDigest() == v1.GetDigest() || v2.GetState() != jobPending || v2resp.GetPredecessor() != v1.GetDigest() {
		t.Fatalf("v2: %v", v2resp)
	}
	wantDiff(t, v2resp.GetDiff(), "widened budgets.runs_per_day: 1 → 5")
	got := f.getJob("nightly")
	if got.GetRecord().GetDigest() != v1.GetDigest() || got.GetPredecessor() != "" || len(got.GetVersions()) != 1 ||
		got.GetVersions()[0].GetDigest() != v2.GetDigest() || got.GetVersions()[0].GetState() != jobPending {
		t.Fatalf("GetJob(nightly) with a pending change: %v", got)
	}
	got, err = f.s.GetJob(asOwner, &contractualv1.GetJobRequest{Digest: v2.GetDigest()})
	if err != nil || got.GetPredecessor() != v1.GetDigest() || !strings.Contains(got.GetCard(), "Runs per day") {
		t.Fatalf("GetJob(v2) = %v, %v", got, err)
	}
	wantDiff(t, got.GetDiff(), "widened budgets.runs_per_day: 1 → 5")
	list, err := f.s.ListJobs(asOwner, &contractualv1.ListJobsRequest{State: jobPending})
	if err != nil || len(list.GetRecords()) != 1 || list.GetRecords()[0].GetDigest() != v2.GetDigest() {
		t.Fatalf("pending jobs: %v, %v", list, err)
	}

	n = f.audit.len()
	f.approveJob(v2.GetDigest())
	if got := actions(f.audit.since(n)); got != "job.approve ok, job.supersede ok" {
		t.Fatalf("approving v2 recorded %s", got)
	}
	if got, _ := f.s.GetJob(asOwner, &contractualv1.GetJobRequest{Digest: v1.GetDigest()}); got.GetRecord().GetState() != jobSuperseded ||
		!strings.Contains(got.GetRecord().GetReason(), "superseded by "+v2.GetDigest()) {
		t.Fatalf("v1 after v2's approval: %v", got.GetRecord())
	}

	v3 := f.createJob(jobFile(f.textkit, f.meter, "budgets: {tool_calls_per_run: 9}\n")).GetRecord()
	if resp, err := f.s.RejectJob(asOwner, &contractualv1.RejectJobRequest{Digest: v3.GetDigest(), Reason: "too many calls"}); err != nil ||
		resp.GetRecord().GetState() != jobRejected {
		t.Fatalf("reject: %v, %v", resp, err)
	}
	list, err = f.s.ListJobs(asOwner, &contractualv1.ListJobsRequest{})
	if err != nil || len(list.GetRecords()) != 1 || list.GetRecords()[0].GetDigest() != v2.GetDigest() {
		t.Fatalf("jobs: %v, %v", list, err)
	}

	n = f.audit.len()
	if _, err := f.s.DeleteJob(asOwner, &contractualv1.DeleteJobRequest{Id: "nightly"}); err != nil {
		t.Fatal(err)
	}
	onlyEvent(t, f.audit.since(n), actionJobDelete, outcomeOK)
	if list, _ := f.s.ListJobs(asOwner, &contractualv1.ListJobsRequest{}); len(list.GetRecords()) != 0 {
		t.Fatalf("jobs after delete: %v", list)
	}
	_, err = f.s.GetJob(asOwner, &contractualv1.GetJobRequest{Id: "nightly"})
	wantErr(t, err, errs.NotFound, `no job "nightly"`)
	_, err = f.jobCall("nightly", "r1", "textkit.slugify", `{"text": "Hello"}`)
	wantErr(t, err, errs.FailedPrecondition, "job nightly has no approved version")

	// Everything survives a restart, and the store's jobs still hash to
	// their digests.
	f.reopen()
	if got, err := f.s.GetJob(asOwner, &contractualv1.GetJobRequest{Digest: v2.GetDigest()}); err != nil || got.GetRecord().GetState() != jobDeleted {
		t.Fatalf("v2 after restart: %v, %v", got, err)
	}
	// A deleted version created again is pending again: a fresh review.
	if again := f.createJob(jobFile(f.textkit, f.meter, "budgets: {tool_calls_per_run: 2, runs_per_day: 5}\n")); again.GetExisted() ||
		again.GetRecord().GetDigest() != v2.GetDigest() || again.GetRecord().GetState() != jobPending {
		t.Fatalf("created again after deletion: %v", again)
	}

	// A store edited behind policy's back is refused, not trusted.
	if _, err := f.s.db.Exec(`UPDATE jobs SET job = x'0a0378797a' WHERE digest = ?`, v1.GetDigest()); err != nil {
		t.Fatal(err)
	}
	_, err = f.s.GetJob(asOwner, &contractualv1.GetJobRequest{Digest: v1.GetDigest()})
	if err == nil || !strings.Contains(err.Error(), "damaged") {
		t.Fatalf("an edited job: %v", err)
	}
}

// TestCreateJobRefused: a job that is not valid, or does not fit the
// contracts policy knows, is refused with what is wrong, and nothing is
// stored.
func TestCreateJobRefused(t *testing.T) {
	f := newJobFixture(t)
	unknown := "sha256:" + strings.Repeat("ab", 32)
	pendingMeter := f.publish(f.count, meter(f.count, "2.0.0", "low")).GetRecord().GetDigest()
	tests := []struct {
		name string
		file []byte
		kind errs.Kind
		msgs []string
	}{
		{"invalid file", []byte("name: nightly\ntrigger: {}\n"), errs.Invalid, []string{"nightly.yaml:2:10: trigger: set one of cron, once or webhook"}},
		{"unknown pin", jobFile(f.textkit, unknown, ""), errs.Invalid, []string{"steps[1].contract: no contract " + unknown + " is known to policy"}},
		{"pin of another contract", jobFile(f.meter, f.meter, ""), errs.Invalid, []string{"steps[0].contract: " + f.meter + ` is a contract of "meter", not of "textkit"`}},
		{"tool not in the contract", bytes.Replace(jobFile(f.textkit, f.meter, ""), []byte("textkit.slugify"), []byte("textkit.shout"), -1), errs.Invalid,
			[]string{`steps[0].tool: contract textkit ` + f.textkit + ` has no tool "shout"`}},
		{"pointer the schema forbids", bytes.Replace(jobFile(f.textkit, f.meter, ""), []byte("pointer: /mode"), []byte("pointer: /speed"), 1), errs.Invalid,
			[]string{`bounds[1].inputs[2]: pointer "/speed" names "speed", which the tool's input schema does not allow (its properties are mode, n, tags, text)`}},
		{"pattern on a number", bytes.Replace(jobFile(f.textkit, f.meter, ""), []byte("{pointer: /n, minimum: 1, maximum: 10}"), []byte(`{pointer: /n, pattern: "[0-9]"}`), 1), errs.Invalid,
			[]string{`pointer "/n": a pattern bounds a string, and the tool's input schema makes it number`}},
		{"range on a string", bytes.Replace(jobFile(f.textkit, f.meter, ""), []byte("{pointer: /mode, allowed: [fast, slow]}"), []byte(`{pointer: /mode, maximum: 3}`), 1), errs.Invalid,
			[]string{`pointer "/mode": a minimum or maximum bounds a number`}},
		{"max_length on a number", bytes.Replace(jobFile(f.textkit, f.meter, ""), []byte("{pointer: /n, minimum: 1, maximum: 10}"), []byte(`{pointer: /n, max_length: 3}`), 1), errs.Invalid,
			[]string{`pointer "/n": max_length bounds a string or an array`}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			before, n := f.snapshot(), f.audit.len()
			_, err := f.s.CreateJob(asOwner, &contractualv1.CreateJobRequest{Job: tc.file, Filename: "nightly.yaml"})
			wantErr(t, err, tc.kind, tc.msgs...)
			if after := f.snapshot(); after != before {
				t.Fatal("the store changed")
			}
			onlyEvent(t, f.audit.since(n), actionJobCreate, tc.kind.String())
		})
	}
	// A job pinned to a pending contract may be created (the owner reviews
	// both), but not approved: see TestApproveJobStalePins.
	if rec := f.createJob(jobFile(f.textkit, pendingMeter, "")).GetRecord(); rec.GetState() != jobPending {
		t.Fatalf("job on a pending contract: %v", rec)
	}
	// Only the owner's devices create jobs.
	for _, who := range []string{"job:nightly", "session:s", "service:worker"} {
		_, err := f.s.CreateJob(principal.With(context.Background(), who), &contractualv1.CreateJobRequest{Job: jobFile(f.textkit, f.meter, "")})
		if k := errs.KindOf(err); k != errs.PermissionDenied && k != errs.Unauthenticated {
			t.Errorf("created by %s: %v", who, err)
		}
	}
}

// TestApproveJobStalePins: a job is approved only under the contracts that
// run now; the refusal says which pin is stale and what runs instead.
func TestApproveJobStalePins(t *testing.T) {
	f := newJobFixture(t)
	pendingMeter := f.publish(f.count, meter(f.count, "2.0.0", "low")).GetRecord().GetDigest()
	onPending := f.createJob(jobFile(f.textkit, pendingMeter, "")).GetRecord()
	_, err := f.s.ApproveJob(asOwner, &contractualv1.ApproveJobRequest{Digest: onPending.GetDigest()})
	wantErr(t, err, errs.FailedPrecondition, "step count pins contract meter "+pendingMeter+", but the approved meter is "+f.meter)

	onOld := f.createJob(jobFile(f.textkit, f.meter, "")).GetRecord()
	f.approve(pendingMeter) // supersedes f.meter
	_, err = f.s.ApproveJob(asOwner, &contractualv1.ApproveJobRequest{Digest: onOld.GetDigest()})
	wantErr(t, err, errs.FailedPrecondition, "step count pins contract meter "+f.meter+", but the approved meter is "+pendingMeter)

	if _, err := f.s.Revoke(asOwner, &contractualv1.RevokeRequest{Digest: pendingMeter}); err != nil {
		t.Fatal(err)
	}
	_, err = f.s.ApproveJob(asOwner, &contractualv1.ApproveJobRequest{Digest: onPending.GetDigest()})
	wantErr(t, err, errs.FailedPrecondition, "no contract meter is approved")
	for _, d := range []string{onPending.GetDigest(), onOld.GetDigest()} {
		if got, _ := f.s.GetJob(asOwner, &contractualv1.GetJobRequest{Digest: d}); got.GetRecord().GetState() != jobPending {
			t.Fatalf("%s after refused approvals: %v", d, got.GetRecord())
		}
	}
}

// TestPauseJob: a device pauses as the owner, the worker for a budget,
// nobody else; a paused job's calls are refused; pausing again changes
// nothing; resuming lets calls through again.
func TestPauseJob(t *testing.T) {
	f := newJobFixture(t)
	f.approveJob(f.createJob(jobFile(f.textkit, f.meter, "")).GetRecord().GetDigest())

	_, err := f.s.PauseJob(asOwner, &contractualv1.PauseJobRequest{Id: "nightly", Kind: contractualv1.PauseKind_PAUSE_KIND_BUDGET})
	wantErr(t, err, errs.Invalid, "kind budget is for services")
	_, err = f.s.PauseJob(asWorker, &contractualv1.PauseJobRequest{Id: "nightly", Reason: "too slow"})
	wantErr(t, err, errs.Invalid, "the worker pauses a job for a budget")
	_, err = f.s.PauseJob(principal.With(context.Background(), "job:nightly"), &contractualv1.PauseJobRequest{Id: "nightly"})
	wantErr(t, err, errs.PermissionDenied)

	n := f.audit.len()
	resp, err := f.s.PauseJob(asWorker, &contractualv1.PauseJobRequest{
		Id: "nightly", Reason: "run time over 300 s", Kind: contractualv1.PauseKind_PAUSE_KIND_BUDGET, RunId: "r7", Step: "count",
	})
	if err != nil {
		t.Fatal(err)
	}
	p := resp.GetRecord().GetPause()
	if resp.GetRecord().GetState() != jobPaused || p.GetKind() != contractualv1.PauseKind_PAUSE_KIND_BUDGET || p.GetPausedBy() != "service:worker" ||
		p.GetRunId() != "r7" || p.GetStep() != "count" || p.GetReason() != "run time over 300 s" {
		t.Fatalf("paused by the worker: %v", resp.GetRecord())
	}
	ev := onlyEvent(t, f.audit.since(n), actionJobPause, outcomeOK)
	if !strings.Contains(ev.GetDetail(), "paused (budget): run time over 300 s; run r7, step count") {
		t.Fatalf("pause event: %v", ev)
	}
	_, err = f.jobCall("nightly", "r8", "meter.count_vowels", goodCount)
	wantErr(t, err, errs.FailedPrecondition, "job nightly is paused (budget, by service:worker): run time over 300 s")

	n = f.audit.len()
	again, err := f.s.PauseJob(asOwner, &contractualv1.PauseJobRequest{Id: "nightly"})
	if err != nil || again.GetRecord().GetPause().GetKind() != contractualv1.PauseKind_PAUSE_KIND_BUDGET || f.audit.len() != n {
		t.Fatalf("pausing a paused job: %v, %v, %d events", again, err, f.audit.len()-n)
	}

	res := f.resumeJob("nightly")
	if res.GetRecord().GetState() != jobApproved || res.GetRecord().GetPause() != nil || res.GetRecord().GetDecidedBy() != ownerDevice || len(res.GetDiff()) != 0 {
		t.Fatalf("resumed: %v", res)
	}
	if _, err := f.jobCall("nightly", "r8", "meter.count_vowels", goodCount); err != nil {
		t.Fatal(err)
	}
	_, err = f.s.ResumeJob(asOwner, &contractualv1.ResumeJobRequest{Id: "nightly"})
	wantErr(t, err, errs.FailedPrecondition, "job nightly is not paused")

	resp, err = f.s.PauseJob(asOwner, &contractualv1.PauseJobRequest{Id: "nightly", Reason: "on holiday"})
	if err != nil || resp.GetRecord().GetPause().GetKind() != contractualv1.PauseKind_PAUSE_KIND_OWNER || resp.GetRecord().GetPause().GetPausedBy() != ownerDevice {
		t.Fatalf("paused by the owner: %v, %v", resp, err)
	}
}

// TestListJobsPages: one record per job, newest first, in pages.
func TestListJobsPages(t *testing.T) {
	f := newJobFixture(t)
	var want []string
	for _, name := range []string{"a", "b", "c", "d", "e"} {
		file := bytes.Replace(jobFile(f.textkit, f.meter, ""), []byte("name: nightly"), []byte("name: "+name), 1)
		want = append([]string{name}, want...)
		f.createJob(file)
	}
	var got []string
	tok := ""
	for pages := 0; ; pages++ {
		resp, err := f.s.ListJobs(asOwner, &contractualv1.ListJobsRequest{PageSize: 2, PageToken: tok})
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range resp.GetRecords() {
			got = append(got, r.GetId())
		}
		if tok = resp.GetNextPageToken(); tok == "" {
			if pages != 2 {
				t.Errorf("%d pages", pages+1)
			}
			break
		}
	}
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Fatalf("listed %v, want %v", got, want)
	}
	_, err := f.s.ListJobs(asOwner, &contractualv1.ListJobsRequest{State: jobApproved, PageToken: tok + "x"})
	wantErr(t, err, errs.Invalid)
}

// TestJobSchemaMigration: a store of schema version 1 (before jobs) opens,
// keeps its contracts and gains the jobs' tables.
func TestJobSchemaMigration(t *testing.T) {
	f := newFixture(t)
	wasm, ct := textkit(t)
	digest := f.approve(f.publish(wasm, ct).GetRecord().GetDigest()).GetDigest()
	if err := f.s.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	db, err := sql.Open("sqlite", filepath.Join(f.dir, DBFile))
	if err == nil {
		_, err = db.Exec(`DROP TABLE job_runs; DROP TABLE job_pins; DROP TABLE jobs; PRAGMA user_version = 1`)
		db.Close()
	}
	if err != nil {
		t.Fatal(err)
	}
	f.open()
	if st := f.state(digest); st != approved {
		t.Fatalf("contract after the migration: %v", st)
	}
	rec := f.createJob(fmt.Appendf(nil, "name: after\ntrigger: {once: {at: \"2030-06-01T00:00:00Z\"}}\nsteps:\n  - {id: s, tool: textkit.slugify, contract: %s, input: {text: x}}\n", digest)).GetRecord()
	if rec.GetState() != jobPending {
		t.Fatalf("job after the migration: %v", rec)
	}
}
