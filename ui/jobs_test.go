package ui_test

import (
	"fmt"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"testing"

	contractualv1 "github.com/contractual/contractual/contracts/gen/contractual/v1"
	"github.com/contractual/contractual/internal/pairing"
)

// titlesJob is a job slugifying the payload's title with textkit pinned
// at digest, its text bounded to max characters.
func titlesJob(digest string, max int) []byte {
	return fmt.Appendf(nil, `name: titles
description: "<i>Slugs</i> & titles"
trigger:
  cron: {expression: "0 2 * * *", time_zone: Europe/Berlin}
steps:
  - id: slug
    tool: textkit.slugify
    contract: %s
    input: {text: {$ref: trigger.payload.title}}
bounds:
  - tool: textkit.slugify
    inputs:
      - {pointer: /text, max_length: %d}
`, digest, max)
}

// createJob stores a job file as the owner's CLI would.
func (e *env) createJob(src []byte) *contractualv1.JobRecord {
	e.t.Helper()
	resp, err := e.policy.CreateJob(e.owner(), &contractualv1.CreateJobRequest{Job: src, Filename: "titles.yaml"})
	if err != nil {
		e.t.Fatal(err)
	}
	return resp.GetRecord()
}

// job reads a job's current version.
func (e *env) job(id string) *contractualv1.JobRecord {
	e.t.Helper()
	resp, err := e.policy.GetJob(e.owner(), &contractualv1.GetJobRequest{Id: id})
	if err != nil {
		e.t.Fatal(err)
	}
	return resp.GetRecord()
}

// approveContract approves a pending contract outside the UI.
func (e *env) approveContract(d string) {
	e.t.Helper()
	if _, err := e.policy.Approve(e.owner(), &contractualv1.ApproveRequest{Digest: d}); err != nil {
		e.t.Fatal(err)
	}
}

// TestJobPages: the jobs list and a job's page show the job (state,
// trigger in words, pinned contracts, the permissions card, escaped), and
// its forms approve, pause, resume, reject and delete it; a pause by drift
// shows the contract's diff, and resuming re-pins the job.
func TestJobPages(t *testing.T) {
	e := newEnv(t, envOptions{jobs: true})
	a := e.pairFirst("laptop")
	v1 := e.publish("textkit", nil)
	e.approveContract(v1)
	rec := e.createJob(titlesJob(v1, 80))

	list := a.get("/ui/jobs")
	if list.StatusCode != http.StatusOK || !strings.Contains(list.body, `data-id="titles" data-state="pending" data-digest="`+rec.GetDigest()+`"`) ||
		!strings.Contains(list.body, "Europe/Berlin") || !strings.Contains(list.body, `href="/ui/contracts/`+url.PathEscape(v1)+`"`) ||
		!strings.Contains(list.body, "&lt;i&gt;Slugs&lt;/i&gt; &amp; titles") || strings.Contains(list.body, "<i>Slugs") {
		t.Fatalf("jobs list: %d\n%s", list.StatusCode, list.body)
	}
	page := a.get("/ui/jobs/titles")
	card := regexp.MustCompile(`(?s)<pre id="permissions-card" class="card-text">(.*?)</pre>`).FindStringSubmatch(page.body)
	if page.StatusCode != http.StatusOK || card == nil || !strings.Contains(card[1], "/text: at most 80 characters or elements") ||
		!strings.Contains(card[1], "&lt;i&gt;Slugs") || !strings.Contains(page.body, `id="job-decide-form"`) ||
		!strings.Contains(page.body, `name="digest" value="`+rec.GetDigest()+`"`) || strings.Contains(page.body, `id="pause-form"`) {
		t.Fatalf("job page: %d\n%s", page.StatusCode, page.body)
	}

	// Approving needs the version the page showed.
	if r := a.postForm("/ui/jobs/titles/approve", a.form()); r.StatusCode != http.StatusBadRequest || e.job("titles").GetState() != contractualv1.JobState_JOB_STATE_PENDING {
		t.Fatalf("approve without a digest: %d %q", r.StatusCode, errorText(r.body))
	}
	r := a.postForm("/ui/jobs/titles/approve", a.form("digest", rec.GetDigest(), "reason", "fine"))
	if r.StatusCode != http.StatusSeeOther || r.Header.Get("Location") != "/ui/jobs/titles?done=job-approved" || e.job("titles").GetState() != contractualv1.JobState_JOB_STATE_APPROVED {
		t.Fatalf("approve: %d %q", r.StatusCode, errorText(r.body))
	}
	page = a.get("/ui/jobs/titles?done=job-approved")
	if !strings.Contains(page.body, `id="pause-form"`) || !strings.Contains(page.body, `id="delete-form"`) || strings.Contains(page.body, `id="job-decide-form"`) ||
		!strings.Contains(page.body, `id="runs-unavailable"`) || strings.Contains(page.body, `id="run-form"`) || !strings.Contains(flashText(page.body), "Job approved") {
		t.Fatalf("approved job page:\n%s", page.body)
	}

	// The owner pauses and resumes it.
	if r := a.postForm("/ui/jobs/titles/pause", a.form("reason", "travelling <b>")); r.StatusCode != http.StatusSeeOther {
		t.Fatalf("pause: %d %q", r.StatusCode, errorText(r.body))
	}
	page = a.get("/ui/jobs/titles")
	if !strings.Contains(page.body, `id="pause" class="card widens" data-kind="owner"`) || !strings.Contains(page.body, "travelling &lt;b&gt;") ||
		!strings.Contains(page.body, `id="resume-form"`) || !strings.Contains(page.body, "Resuming is a fresh approval") || strings.Contains(page.body, `id="pause-form"`) {
		t.Fatalf("paused job page:\n%s", page.body)
	}
	if list := a.get("/ui/jobs").body; !strings.Contains(list, `class="badge bad pause-kind" data-kind="owner"`) {
		t.Fatalf("the list does not show the pause:\n%s", list)
	}
	if r := a.postForm("/ui/jobs/titles/resume", a.form()); r.StatusCode != http.StatusSeeOther || e.job("titles").GetState() != contractualv1.JobState_JOB_STATE_APPROVED {
		t.Fatalf("resume: %d %q", r.StatusCode, errorText(r.body))
	}

	// A new approved version of the contract it pins pauses it, with the
	// contract's diff, its widened lines marked; resuming re-pins it.
	v2 := e.publish("textkit", func(s string) string { return strings.Replace(s, "timeout_ms: 2000", "timeout_ms: 4000", 1) })
	e.approveContract(v2)
	page = a.get("/ui/jobs/titles")
	if e.job("titles").GetState() != contractualv1.JobState_JOB_STATE_PAUSED || !strings.Contains(page.body, `data-kind="contract changed"`) ||
		!strings.Contains(page.body, `id="pause-diff" class="widens"`) || !regexp.MustCompile(`<tr class="change widened" data-kind="widened">`).MatchString(page.body) ||
		!strings.Contains(page.body, "re-pinned to the\n    contract version approved now") || !strings.Contains(page.body, url.PathEscape(v2)) {
		t.Fatalf("drift pause page:\n%s", page.body)
	}
	if r := a.postForm("/ui/jobs/titles/resume", a.form("reason", "ok")); r.StatusCode != http.StatusSeeOther {
		t.Fatalf("resume after drift: %d %q", r.StatusCode, errorText(r.body))
	}
	cur := e.job("titles")
	if cur.GetState() != contractualv1.JobState_JOB_STATE_APPROVED || cur.GetJob().GetSteps()[0].GetContract() != v2 {
		t.Fatalf("after resuming: %v", cur)
	}

	// A wider version is pending with its diff; rejecting needs a reason.
	wide := e.createJob(titlesJob(v2, 200))
	page = a.get("/ui/jobs/titles?version=" + wide.GetDigest())
	if !strings.Contains(page.body, `id="diff" class="card widens"`) || !strings.Contains(page.body, `<tr class="change widened" data-kind="widened">`) ||
		!strings.Contains(page.body, `name="digest" value="`+wide.GetDigest()+`"`) || !strings.Contains(page.body, `id="versions"`) {
		t.Fatalf("pending version page:\n%s", page.body)
	}
	if r := a.postForm("/ui/jobs/titles/reject", a.form("digest", wide.GetDigest())); r.StatusCode != http.StatusBadRequest || !strings.Contains(errorText(r.body), "reason") {
		t.Fatalf("reject without a reason: %d %q", r.StatusCode, errorText(r.body))
	}
	if r := a.postForm("/ui/jobs/titles/reject", a.form("digest", wide.GetDigest(), "reason", "too wide")); r.StatusCode != http.StatusSeeOther {
		t.Fatalf("reject: %d %q", r.StatusCode, errorText(r.body))
	}
	if r := a.get("/ui/jobs/other?version=" + wide.GetDigest()); r.StatusCode != http.StatusNotFound {
		t.Fatalf("a version under another job's id: %d", r.StatusCode)
	}

	// Deleting needs the id typed again.
	if r := a.postForm("/ui/jobs/titles/delete", a.form("confirm", "title")); r.StatusCode != http.StatusBadRequest || e.job("titles").GetState() == contractualv1.JobState_JOB_STATE_DELETED {
		t.Fatalf("delete unconfirmed: %d %q", r.StatusCode, errorText(r.body))
	}
	r = a.postForm("/ui/jobs/titles/delete", a.form("confirm", "titles"))
	if r.StatusCode != http.StatusSeeOther || r.Header.Get("Location") != "/ui/jobs?done=job-deleted" {
		t.Fatalf("delete: %d %q", r.StatusCode, errorText(r.body))
	}
	if list := a.get("/ui/jobs").body; strings.Contains(list, `data-id="titles" data-state="approved"`) {
		t.Fatalf("the deleted job is still listed as approved:\n%s", list)
	}
}

// TestJobScopes: a read-only browser reads the jobs' pages with no form
// and each action refused for want of scope approve; every form needs
// the CSRF token and this origin.
func TestJobScopes(t *testing.T) {
	e := newEnv(t, envOptions{jobs: true, pairing: pairing.Config{BeginsPerSourcePerMinute: 100}})
	a := e.pairFirst("laptop")
	v1 := e.publish("textkit", nil)
	e.approveContract(v1)
	rec := e.createJob(titlesJob(v1, 80))
	ro := e.pairBy(a, "wall display", "read")

	for _, p := range []string{"/ui/jobs", "/ui/jobs/titles"} {
		r := ro.get(p)
		if r.StatusCode != http.StatusOK || strings.Contains(r.body, `id="job-decide-form"`) || strings.Contains(r.body, `id="delete-form"`) {
			t.Errorf("read-only GET %s: %d %q", p, r.StatusCode, errorText(r.body))
		}
	}
	if !strings.Contains(ro.get("/ui/jobs/titles").body, `id="decide-not-allowed"`) {
		t.Error("the job page does not say why there is no form")
	}
	for _, verb := range []string{"approve", "reject", "pause", "resume", "delete"} {
		r := ro.postForm("/ui/jobs/titles/"+verb, ro.form("digest", rec.GetDigest(), "reason", "x", "confirm", "titles"))
		if msg := errorText(r.body); r.StatusCode != http.StatusForbidden || !strings.Contains(msg, "needs scope approve") {
			t.Errorf("read-only POST %s: %d %q", verb, r.StatusCode, msg)
		}
	}
	if st := e.job("titles").GetState(); st != contractualv1.JobState_JOB_STATE_PENDING {
		t.Fatalf("after refused actions the job is %v", st)
	}

	form := url.Values{"digest": {rec.GetDigest()}}
	if r := a.postForm("/ui/jobs/titles/approve", form); r.StatusCode != http.StatusForbidden {
		t.Errorf("approve without a CSRF token: %d", r.StatusCode)
	}
	form.Set("csrf", a.csrf())
	if r := a.postForm("/ui/jobs/titles/approve", form, "Origin", "https://evil.example", "Sec-Fetch-Site", "cross-site"); r.StatusCode != http.StatusForbidden {
		t.Errorf("approve from another site: %d", r.StatusCode)
	}
	if st := e.job("titles").GetState(); st != contractualv1.JobState_JOB_STATE_PENDING {
		t.Fatalf("after refused posts the job is %v", st)
	}

	// Without the job services the pages say so.
	plain := newEnv(t)
	b := plain.pairFirst("laptop")
	if r := b.get("/ui/jobs"); r.StatusCode != http.StatusNotImplemented || !strings.Contains(errorText(r.body), "Jobs are not available here") {
		t.Errorf("jobs without the job service: %d %q", r.StatusCode, errorText(r.body))
	}
}

// TestAgentJobPage: a job with an agent step lists, on its page and in the
// jobs list, every tool the agent may propose with its pinned contract, and
// its card says what the model is told and may call.
func TestAgentJobPage(t *testing.T) {
	e := newEnv(t, envOptions{jobs: true})
	a := e.pairFirst("laptop")
	v1 := e.publish("textkit", nil)
	e.approveContract(v1)
	e.createJob(fmt.Appendf(nil, `name: tidy
trigger:
  cron: {expression: "0 2 * * *", time_zone: Europe/Berlin}
steps:
  - id: tidy
    input: {title: {$ref: trigger.payload.title}}
    agent:
      prompt: Make a <b>slug</b> of the title.
      tools:
        - {tool: textkit.slugify, contract: %s}
      max_model_requests: 3
bounds:
  - tool: textkit.slugify
    inputs:
      - {pointer: /text, max_length: 40}
`, v1))
	page := a.get("/ui/jobs/tidy")
	pin := `<li class="pin-row" data-step="tidy" data-contract="` + v1 + `">agent step <code>tidy</code> may propose <code>textkit.slugify</code> of <a href="/ui/contracts/` + url.PathEscape(v1) + `">`
	card := regexp.MustCompile(`(?s)<pre id="permissions-card" class="card-text">(.*?)</pre>`).FindStringSubmatch(page.body)
	if page.StatusCode != http.StatusOK || !strings.Contains(page.body, pin) || card == nil ||
		!strings.Contains(card[1], "an agent step (step tidy)") || !strings.Contains(card[1], "&lt;b&gt;slug&lt;/b&gt;") ||
		!strings.Contains(card[1], "textkit.slugify, pinned to contract "+v1) || !strings.Contains(card[1], "/text: at most 40") {
		t.Fatalf("agent job page: %d\n%s", page.StatusCode, page.body)
	}
	if list := a.get("/ui/jobs").body; !strings.Contains(list, `<code>textkit.slugify</code> (agent) → <a href="/ui/contracts/`+url.PathEscape(v1)+`">`) {
		t.Fatalf("jobs list:\n%s", list)
	}
}
