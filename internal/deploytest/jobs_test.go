package deploytest_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/structpb"

	contractualv1 "github.com/contractual/contractual/contracts/gen/contractual/v1"
	"github.com/contractual/contractual/contracts/gen/contractual/v1/contractualv1connect"
	"github.com/contractual/contractual/internal/scheduler"
)

// jobs: jobs run in the deployment, each step as the job's own principal,
// across the containers of the gateway, the worker, policy and the runner,
// each on its own certificate. An owner device creates and approves a job
// over the textkit contract the flow approved, runs it now through the
// gateway (JobRunService, which the worker serves) and reads the run back
// with its step's output, decided by policy for job:<id> and run by the
// runner (its call.run in the audit log). And the scheduler, following
// policy's approved jobs, fires another job's once trigger by itself.
func (d *deployment) jobs(t *testing.T) {
	ctx := t.Context()
	token := d.token(t)
	runs := contractualv1connect.NewJobRunServiceClient(http.DefaultClient, d.url, connect.WithInterceptors(bearer(token)))

	// The scheduled job first, due well after its approval (the scheduler
	// fires nothing that was due before its version was approved).
	at := time.Now().Add(45 * time.Second).UTC().Truncate(time.Second)
	d.approveJob(t, "deploytest-once", fmt.Sprintf("{once: {at: %q}}", at.Format(time.RFC3339)), `{text: "Fired by the scheduler"}`)
	if now := time.Now(); !now.Before(at) {
		t.Fatalf("the once job was approved at %s, after its time %s: the scheduler would rightly skip it", now.UTC().Format(time.RFC3339), at.Format(time.RFC3339))
	}

	// Run now: a job whose own trigger is far away.
	d.approveJob(t, "deploytest-now", `{once: {at: "2099-01-01T00:00:00Z"}}`, `{text: {$ref: trigger.payload.title}}`)
	payload, err := structpb.NewValue(map[string]any{"title": "Hello, Jobs in Compose!"})
	if err != nil {
		t.Fatal(err)
	}
	resp, err := runs.RunJob(ctx, &contractualv1.RunJobRequest{Id: "deploytest-now", Payload: payload})
	if err != nil {
		t.Fatalf("RunJob through the gateway: %v", err)
	}
	run := waitRun(t, runs, resp.GetRun().GetId(), 5*time.Minute)
	step := checkRun(t, run, "manual", "hello-jobs-in-compose")
	d.jobRun = run.GetId()
	// The runner ran the step's call under policy's decision for the job.
	var ran *contractualv1.AuditEvent
	for _, e := range d.auditEvents(t, token) {
		if e.GetAction() == "call.run" && e.GetDecisionId() == step.GetDecisionId() && step.GetDecisionId() != "" {
			ran = e
		}
	}
	if ran == nil || ran.GetOutcome() != "ok" || ran.GetPrincipal() != "job:deploytest-now" || ran.GetTool() != "textkit.slugify" {
		t.Errorf("the audit log's call.run of decision %q: %v; want outcome ok for job:deploytest-now, textkit.slugify", step.GetDecisionId(), ran)
	}

	d.webhook(t, runs)

	// The scheduler fires the once job: one run, of the trigger's time.
	var fired *contractualv1.JobRun
	deadline := time.Now().Add(time.Until(at) + 5*time.Minute)
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for fired == nil {
		list, err := runs.ListRuns(ctx, &contractualv1.ListRunsRequest{JobId: "deploytest-once"})
		if err != nil {
			t.Fatalf("ListRuns: %v", err)
		}
		switch rs := list.GetRuns(); {
		case len(rs) > 1:
			t.Fatalf("the once job has %d runs, want 1: %v", len(rs), rs)
		case len(rs) == 1 && finished(rs[0]):
			fired = rs[0]
		}
		if time.Now().After(deadline) {
			t.Fatalf("no finished run of the once job due at %s by %s: the scheduler did not fire it (runs %v)",
				at.Format(time.RFC3339), deadline.UTC().Format(time.RFC3339), list.GetRuns())
		}
		select {
		case <-tick.C:
		case <-ctx.Done():
			t.Fatal(ctx.Err())
		}
	}
	checkRun(t, fired, "once", "fired-by-the-scheduler")
	t.Logf("the scheduler's run %s of the once job due at %s finished at %s", fired.GetId(),
		at.Format(time.RFC3339), fired.GetFinishedAt().AsTime().Format(time.RFC3339Nano))
	if got := fired.GetScheduledAt().AsTime(); !got.Equal(at) {
		t.Errorf("the once run was scheduled at %s, want %s", got.Format(time.RFC3339), at.Format(time.RFC3339))
	}
}

// webhook: a delivery signed with the key the owner put in the broker,
// POSTed to the gateway's /hooks/<job>, crosses the gateway, the scheduler
// (the broker checks its signature) and the worker and runs the job once
// with the body as its payload; the same delivery again is a replay and
// is refused, and so is one signed with another key.
func (d *deployment) webhook(t *testing.T, runs contractualv1connect.JobRunServiceClient) {
	const key = "whsec-deploytest-0123456789"
	d.contractual(t, key+"\n", "secrets", "put", "DEPLOYTEST_HOOK_KEY")
	d.approveJob(t, "deploytest-hook", `{webhook: {secret: DEPLOYTEST_HOOK_KEY, replay_window_seconds: 300}}`, `{text: {$ref: trigger.payload.title}}`)

	post := func(ts, id, sig string, body []byte) (int, string) {
		t.Helper()
		req, err := http.NewRequestWithContext(t.Context(), http.MethodPost, d.url+"/hooks/deploytest-hook", bytes.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set(scheduler.HeaderTimestamp, ts)
		req.Header.Set(scheduler.HeaderDelivery, id)
		req.Header.Set(scheduler.HeaderSignature, sig)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatalf("POST /hooks/deploytest-hook: %v", err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	ts := strconv.FormatInt(time.Now().Unix(), 10)
	body := []byte(`{"title": "Delivered to Compose"}`)
	sig := scheduler.Sign([]byte(key), ts, "deploytest-1", body)

	// The scheduler learns of the approved job from policy's watch; until
	// then the job is unknown to it, which a sender sees as the same 401 as
	// a bad signature, and nothing is recorded, so the delivery is resent.
	var code int
	var reply string
	deadline := time.Now().Add(2 * time.Minute)
	for {
		if code, reply = post(ts, "deploytest-1", sig, body); code != http.StatusUnauthorized || time.Now().After(deadline) {
			break
		}
		select {
		case <-time.After(time.Second):
		case <-t.Context().Done():
			t.Fatal(t.Context().Err())
		}
	}
	var accepted struct {
		RunID string `json:"run_id"`
	}
	if err := json.Unmarshal([]byte(reply), &accepted); code != http.StatusAccepted || err != nil || accepted.RunID == "" {
		t.Fatalf("a signed delivery: %d %s; want 202 with the run's id", code, reply)
	}
	run := waitRun(t, runs, accepted.RunID, 5*time.Minute)
	checkRun(t, run, "webhook", "delivered-to-compose")

	if code, reply := post(ts, "deploytest-1", sig, body); code != http.StatusForbidden || !strings.Contains(reply, "already received") {
		t.Errorf("the same delivery again: %d %s; want 403, already received", code, reply)
	}
	other := scheduler.Sign([]byte("not the key"), ts, "deploytest-2", body)
	if code, reply := post(ts, "deploytest-2", other, body); code != http.StatusUnauthorized {
		t.Errorf("a delivery signed with another key: %d %s; want 401", code, reply)
	}
	list, err := runs.ListRuns(t.Context(), &contractualv1.ListRunsRequest{JobId: "deploytest-hook"})
	if err != nil {
		t.Fatalf("ListRuns: %v", err)
	}
	if n := len(list.GetRuns()); n != 1 {
		t.Errorf("the webhook job has %d runs after a delivery, its replay and a forgery; want 1: %v", n, list.GetRuns())
	}
}

// approveJob creates the job name with trigger and one textkit.slugify step
// with input, through the CLI, and approves it.
func (d *deployment) approveJob(t *testing.T, name, trigger, input string) {
	t.Helper()
	if d.textkit == "" {
		t.Fatal("the flow did not approve textkit")
	}
	src := fmt.Sprintf(`name: %s
description: The compose test's job.
trigger: %s
steps:
  - id: slug
    tool: textkit.slugify
    contract: %s
    input: %s
bounds:
  - tool: textkit.slugify
    inputs:
      - {pointer: /text, max_length: 80}
`, name, trigger, d.textkit, input)
	path := filepath.Join(d.dir, name+".yaml")
	if err := os.WriteFile(path, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	out := d.contractual(t, "", "jobs", "create", path)
	d.contractual(t, "", "jobs", "approve", digestIn(t, out), "--reason", "deploytest")
}

// waitRun reads the run until it has finished, or fails t after timeout.
func waitRun(t *testing.T, runs contractualv1connect.JobRunServiceClient, id string, timeout time.Duration) *contractualv1.JobRun {
	t.Helper()
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(500 * time.Millisecond)
	defer tick.Stop()
	for {
		resp, err := runs.GetRun(t.Context(), &contractualv1.GetRunRequest{Id: id})
		if err != nil {
			t.Fatalf("GetRun %s: %v", id, err)
		}
		if r := resp.GetRun(); finished(r) {
			return r
		} else if time.Now().After(deadline) {
			t.Fatalf("run %s has not finished after %s: %v", id, timeout, r)
		}
		select {
		case <-tick.C:
		case <-t.Context().Done():
			t.Fatal(t.Context().Err())
		}
	}
}

func finished(r *contractualv1.JobRun) bool {
	return slices.Contains([]contractualv1.RunState{contractualv1.RunState_RUN_STATE_SUCCEEDED,
		contractualv1.RunState_RUN_STATE_FAILED, contractualv1.RunState_RUN_STATE_STOPPED}, r.GetState())
}

// checkRun checks that run, started by trigger, succeeded with its one
// step, slug, done with the output {"slug": slug}, and returns the step.
func checkRun(t *testing.T, run *contractualv1.JobRun, trigger, slug string) *contractualv1.StepRun {
	t.Helper()
	if run.GetState() != contractualv1.RunState_RUN_STATE_SUCCEEDED || run.GetTrigger() != trigger || len(run.GetSteps()) != 1 {
		t.Fatalf("run %s: %s by %q, %d steps (error %q); want succeeded by %q, one step",
			run.GetId(), run.GetState(), run.GetTrigger(), len(run.GetSteps()), run.GetError(), trigger)
	}
	step := run.GetSteps()[0]
	got := step.GetOutput().GetStructValue().GetFields()["slug"].GetStringValue()
	if step.GetId() != "slug" || step.GetState() != contractualv1.StepState_STEP_STATE_DONE || got != slug || step.GetDecisionId() == "" {
		t.Errorf("run %s's step: %v; want slug done with the output {\"slug\": %q} under a decision", run.GetId(), step, slug)
	}
	return step
}
