package server_test

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/chromedp/chromedp"

	contractualv1 "github.com/contractual/contractual/contracts/gen/contractual/v1"
	"github.com/contractual/contractual/contracts/gen/contractual/v1/contractualv1connect"
	"github.com/contractual/contractual/internal/browsertest"
)

// finished reports whether a run is over.
func finished(st contractualv1.RunState) bool {
	return st == contractualv1.RunState_RUN_STATE_SUCCEEDED || st == contractualv1.RunState_RUN_STATE_FAILED || st == contractualv1.RunState_RUN_STATE_STOPPED
}

// waitRun reads run id until it is over (the worker runs it in the
// background), for at most two minutes.
func waitRun(t *testing.T, runs contractualv1connect.JobRunServiceClient, id string) *contractualv1.JobRun {
	t.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	for {
		resp, err := runs.GetRun(context.Background(), &contractualv1.GetRunRequest{Id: id})
		if err != nil {
			t.Fatalf("reading run %s: %v", id, err)
		}
		if finished(resp.GetRun().GetState()) {
			return resp.GetRun()
		}
		if time.Now().After(deadline) {
			t.Fatalf("run %s is still %v", id, resp.GetRun().GetState())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestJobRunsCLI: `contractual jobs run` queues a run with a payload, `jobs
// runs` lists it, and `jobs run-show` shows its step with the decision,
// input hash, idempotency key and output.
func TestJobRunsCLI(t *testing.T) {
	s, dir := start(t)
	tok, _ := owner(t, s)
	v1 := digestIn(t, mustRun(t, s, dir, "publish", tool("textkit", "textkit.wasm"), "--contract", tool("textkit", "contract.yaml")))
	mustRun(t, s, dir, "contracts", "approve", v1)
	file := filepath.Join(t.TempDir(), "titles.yaml")
	if err := os.WriteFile(file, slugJob(v1), 0o600); err != nil {
		t.Fatal(err)
	}
	out := mustRun(t, s, dir, "jobs", "create", file)
	jd := out[strings.Index(out, "(sha256:")+1 : strings.Index(out, "(sha256:")+72]
	mustRun(t, s, dir, "jobs", "approve", jd)

	if code, _, errOut := contractual(t, s, dir, "jobs", "run", "titles", "--payload", "{not json"); code == 0 || !strings.Contains(errOut, "--payload") {
		t.Fatalf("a bad payload: %d %s", code, errOut)
	}
	out = mustRun(t, s, dir, "jobs", "run", "titles", "--payload", `{"title": "Run From The CLI"}`)
	m := regexp.MustCompile(`^run (\S+) of job titles: (queued|running|succeeded)\nsee it with: contractual jobs run-show (\S+)\n$`).FindStringSubmatch(out)
	if m == nil || m[1] != m[3] {
		t.Fatalf("jobs run: %q", out)
	}
	id := m[1]
	run := waitRun(t, contractualv1connect.NewJobRunServiceClient(http.DefaultClient, s.URL, connect.WithInterceptors(bearer(tok))), id)
	if run.GetState() != contractualv1.RunState_RUN_STATE_SUCCEEDED {
		t.Fatalf("the run: %v", run)
	}
	step := run.GetSteps()[0]

	out = mustRun(t, s, dir, "jobs", "runs", "titles")
	if !regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(id) + `\s+succeeded\s+manual\s`).MatchString(out) {
		t.Fatalf("jobs runs:\n%s", out)
	}
	out = mustRun(t, s, dir, "jobs", "run-show", id)
	for _, want := range []string{
		"run " + id + " of job titles: succeeded", "version    " + jd, "trigger    manual by device:",
		"step slug: textkit.slugify: done (1 attempts)", "decision         " + step.GetDecisionId(),
		"input hash       " + step.GetInputHash(), "idempotency key  " + step.GetIdempotencyKey(), `"slug": "run-from-the-cli"`,
		"used       1 tool calls",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("jobs run-show lacks %q:\n%s", want, out)
		}
	}
	if step.GetDecisionId() == "" || step.GetIdempotencyKey() == "" {
		t.Errorf("the step has no decision or idempotency key: %v", step)
	}
	if code, _, errOut := contractual(t, s, dir, "jobs", "run-show", "nope"); code != 1 || !strings.Contains(errOut, "not_found") && !strings.Contains(errOut, "not found") {
		t.Errorf("run-show of no run: %d %s", code, errOut)
	}
}

// TestJobsControlUI walks a job through the Control UI in real headless
// Chromium, against the all-in-one server: a device creates a job over
// textkit through the API; the browser reads its permissions card and
// approves it, pauses and resumes it, runs it now with a payload and sees
// the run's step (decision, idempotency key, output); a second run whose
// input breaks the job's bounds stops, and the job page shows the pause
// policy made and why.
func TestJobsControlUI(t *testing.T) {
	b := browsertest.New(t)
	s, _ := start(t)
	css := func(sel string) chromedp.CSS { return chromedp.CSS(sel) }

	b.Run(chromedp.Navigate(s.URL + "/ui/pair"))
	b.Run(
		chromedp.SetValue(css("#pair-name"), "jobs browser"),
		chromedp.Click(css("#pair-start")),
		chromedp.WaitVisible(css("#pair-code")),
	)
	b.Run(chromedp.SendKeys(css("#setup-code"), s.SetupCode), chromedp.Click(css("#setup-submit")))
	waitPath(t, b, "/ui/")
	dev := beginPairing(t, s.URL, "ci laptop")
	b.Run(chromedp.Navigate(s.URL + "/ui/devices"))
	b.Run(chromedp.Click(css(fmt.Sprintf(`.request-row[data-code=%q] button.approve`, dev.begin.GetCode()))))
	waitFlash(t, b)
	auth := connect.WithInterceptors(bearer(dev.complete(t)))
	ctx := context.Background()
	pol := contractualv1connect.NewPolicyServiceClient(http.DefaultClient, s.URL, auth)
	jobs := contractualv1connect.NewJobServiceClient(http.DefaultClient, s.URL, auth)
	runs := contractualv1connect.NewJobRunServiceClient(http.DefaultClient, s.URL, auth)
	digest := publish(t, pol, "textkit.wasm", readTool(t, "textkit", "contract.yaml"))
	if _, err := pol.Approve(ctx, &contractualv1.ApproveRequest{Digest: digest}); err != nil {
		t.Fatal(err)
	}
	created, err := jobs.CreateJob(ctx, &contractualv1.CreateJobRequest{Job: slugJob(digest), Filename: "titles.yaml"})
	if err != nil {
		t.Fatal(err)
	}
	state := func() contractualv1.JobState {
		t.Helper()
		got, err := jobs.GetJob(ctx, &contractualv1.GetJobRequest{Id: "titles"})
		if err != nil {
			t.Fatal(err)
		}
		return got.GetRecord().GetState()
	}

	// The browser sees it pending, reads the card and approves it.
	b.Run(chromedp.Navigate(s.URL + "/ui/jobs"))
	b.Run(chromedp.WaitVisible(css(fmt.Sprintf(`.job-row[data-id="titles"][data-state="pending"][data-digest=%q]`, created.GetRecord().GetDigest()))))
	b.Screenshot("jobs-01-list")
	b.Run(chromedp.Click(css(`.job-row[data-id="titles"] a`)))
	waitPath(t, b, "/ui/jobs/titles")
	card := b.Text("#permissions-card")
	for _, want := range []string{"textkit.slugify", "/text: at most 80 characters or elements", "Europe/Berlin", digest} {
		if !strings.Contains(card, want) {
			t.Errorf("the permissions card lacks %q:\n%s", want, card)
		}
	}
	b.Screenshot("jobs-02-pending")
	b.Run(chromedp.SetValue(css("#reason"), "read the card"), chromedp.Click(css("#job-approve")))
	waitDone(t, b, "job-approved")
	if st := state(); st != contractualv1.JobState_JOB_STATE_APPROVED {
		t.Fatalf("after approving in the browser: %v", st)
	}

	// Pause, then resume: a fresh approval.
	b.Run(chromedp.SetValue(css("#pause-reason-field"), "holiday"), chromedp.Click(css("#job-pause")))
	waitDone(t, b, "job-paused")
	if st := state(); st != contractualv1.JobState_JOB_STATE_PAUSED || attr(t, b, "#pause", "data-kind") != "owner" || !strings.Contains(b.Text("#pause-reason"), "holiday") {
		t.Fatalf("after pausing: %v, %s", st, b.Text("#pause"))
	}
	if note := b.Text("#resume-note"); !strings.Contains(note, "Resuming is a fresh approval") {
		t.Errorf("resume note: %q", note)
	}
	b.Screenshot("jobs-03-paused")
	b.Run(chromedp.Click(css("#job-resume")))
	waitDone(t, b, "job-resumed")
	if st := state(); st != contractualv1.JobState_JOB_STATE_APPROVED {
		t.Fatalf("after resuming: %v", st)
	}

	// Run it now; the run page shows the step as the worker ran it.
	runPage := func(payload string) *contractualv1.JobRun {
		t.Helper()
		b.Run(chromedp.Navigate(s.URL+"/ui/jobs/titles"), chromedp.SetValue(css("#payload"), payload), chromedp.Click(css("#job-run")))
		waitJS(t, b, `document.readyState === "complete" && location.pathname.startsWith("/ui/jobs/titles/runs/")`)
		id := attrText(t, b, "#run-id")
		run := waitRun(t, runs, id)
		b.Run(chromedp.Reload())
		waitJS(t, b, fmt.Sprintf(`document.querySelector("#run-state") && document.querySelector("#run-state").dataset.state === %q`, strings.ToLower(strings.TrimPrefix(run.GetState().String(), "RUN_STATE_"))))
		return run
	}
	run := runPage(`{"title": "Seen <b>In</b> The Browser"}`)
	if run.GetState() != contractualv1.RunState_RUN_STATE_SUCCEEDED {
		t.Fatalf("the run: %v", run)
	}
	step := run.GetSteps()[0]
	if got := attr(t, b, `.step-row[data-id="slug"]`, "data-state"); got != "done" {
		t.Errorf("step state %q", got)
	}
	for sel, want := range map[string]string{
		".step-output": `"slug": "seen-b-in-b-the-browser"`, ".decision-id": step.GetDecisionId(),
		".idempotency-key": step.GetIdempotencyKey(), ".input-hash": step.GetInputHash(), ".step-tool": "textkit.slugify",
		"#run-trigger": "manual by device:",
	} {
		if got := b.Text(sel); want == "" || !strings.Contains(got, want) {
			t.Errorf("%s shows %q, want %q", sel, got, want)
		}
	}
	b.Screenshot("jobs-04-run")
	b.Run(chromedp.Navigate(s.URL + "/ui/jobs/titles"))
	b.Run(chromedp.WaitVisible(css(fmt.Sprintf(`.job-run-row[data-id=%q][data-state="succeeded"]`, run.GetId()))))

	// A title over the job's bound: policy refuses the call, the run stops
	// and the job is paused; both pages say so.
	run = runPage(fmt.Sprintf(`{"title": %q}`, strings.Repeat("x", 81)))
	if run.GetState() != contractualv1.RunState_RUN_STATE_STOPPED && run.GetState() != contractualv1.RunState_RUN_STATE_FAILED {
		t.Fatalf("the run over the bound: %v", run)
	}
	if got := attr(t, b, `.step-row[data-id="slug"]`, "data-state"); got == "done" {
		t.Errorf("the refused step is %q", got)
	}
	b.Screenshot("jobs-05-run-refused")
	b.Run(chromedp.Navigate(s.URL + "/ui/jobs/titles"))
	if st := state(); st != contractualv1.JobState_JOB_STATE_PAUSED || attr(t, b, "#pause", "data-kind") != "decision" || !strings.Contains(b.Text("#pause-by"), run.GetId()) {
		t.Errorf("after the refused call: %v, %s", st, b.Text("#pause"))
	}
	b.Screenshot("jobs-06-paused-by-policy")
}

// attrText is the trimmed text of the first element matching sel.
func attrText(t *testing.T, b *browsertest.Browser, sel string) string {
	t.Helper()
	return strings.TrimSpace(b.Text(sel))
}

// waitDone waits for the page a form post redirected to with ?done=key
// (the page before may show another flash), failing on an error page.
func waitDone(t *testing.T, b *browsertest.Browser, key string) {
	t.Helper()
	waitJS(t, b, fmt.Sprintf(`document.readyState === "complete" && (location.search.endsWith("done=%s") || !!document.querySelector("#error"))`, key))
	waitFlash(t, b)
}
