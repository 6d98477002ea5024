package server_test

import (
	"github.com/contractual/contractual/internal/scheduler/schedulertest"

	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"

	contractualv1 "github.com/contractual/contractual/contracts/gen/contractual/v1"
	"github.com/contractual/contractual/contracts/gen/contractual/v1/contractualv1connect"
	"github.com/contractual/contractual/contracts/job"
	"github.com/contractual/contractual/internal/schedule"
	"github.com/contractual/contractual/internal/scheduler"
	"github.com/contractual/contractual/internal/server"
	"github.com/contractual/contractual/runtime/egress"
	"github.com/contractual/contractual/runtime/egress/egresstest"
)

// ntfyToken is the owner's ntfy access token in these tests.
const ntfyToken = "tk_0123456789abcdefghijklmnopqrs"

// ntfyPost is one request the ntfy sink received.
type ntfyPost struct{ Path, Auth, Key, Body string }

// sinks is the internet of the nightly digest on loopback: the four feeds
// (tools/testdata/feeds) and ntfy.sh, which records each POST and answers
// as ntfy does.
type sinks struct {
	mu    sync.Mutex
	feeds int
	posts []ntfyPost
}

func (s *sinks) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Host == "ntfy.sh" {
		body, _ := io.ReadAll(r.Body)
		s.mu.Lock()
		s.posts = append(s.posts, ntfyPost{r.URL.Path, r.Header.Get("Authorization"), r.Header.Get("Idempotency-Key"), string(body)})
		s.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		w.Write([]byte(`{"id":"sPs71M8A2T","time":1764554400,"expires":1764597600,"event":"message","topic":"contractual-digest"}` + "\n"))
		return
	}
	s.mu.Lock()
	s.feeds++
	s.mu.Unlock()
	file, ok := map[string]string{
		"go.dev/blog/feed.atom":                       "go-blog.atom",
		"github.com/tetratelabs/wazero/releases.atom": "wazero-releases.atom",
		"github.com/extism/extism/releases.atom":      "wazero-releases.atom",
		"github.blog/changelog/feed/":                 "github-changelog.rss",
	}[r.Host+r.URL.Path]
	if !ok {
		http.NotFound(w, r)
		return
	}
	b, err := os.ReadFile(filepath.Join(repo, "tools", "testdata", "feeds", file))
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/xml")
	w.Write(b)
}

func (s *sinks) ntfy() []ntfyPost {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.posts)
}

// jobWorld is a real server whose egress reaches the sinks and whose
// scheduler runs on clock, with feeds and notify published and approved
// and NTFY_TOKEN put, as the owner's device.
type jobWorld struct {
	s      *server.Server
	clock  *schedulertest.Clock
	sinks  *sinks
	pol    contractualv1connect.PolicyServiceClient
	jobs   contractualv1connect.JobServiceClient
	runs   contractualv1connect.JobRunServiceClient
	broker contractualv1connect.BrokerServiceClient
}

func newJobWorld(t *testing.T) *jobWorld {
	t.Helper()
	w := &jobWorld{clock: schedulertest.NewClock(time.Now()), sinks: &sinks{}}
	srv := egresstest.NewTLSServer(w.sinks, "go.dev", "github.com", "github.blog", "ntfy.sh")
	t.Cleanup(srv.Close)
	dialer, roots := egresstest.New(map[string]*httptest.Server{"go.dev": srv, "github.com": srv, "github.blog": srv, "ntfy.sh": srv})
	w.s = startWith(t, func(c *server.Config) {
		c.Egress = egress.Config{Dialer: dialer, RootCAs: roots}
		c.Scheduler = scheduler.Config{Clock: w.clock}
	})
	tok, _ := owner(t, w.s)
	opts := connect.WithInterceptors(bearer(tok))
	w.pol = contractualv1connect.NewPolicyServiceClient(http.DefaultClient, w.s.URL, opts)
	w.jobs = contractualv1connect.NewJobServiceClient(http.DefaultClient, w.s.URL, opts)
	w.runs = contractualv1connect.NewJobRunServiceClient(http.DefaultClient, w.s.URL, opts)
	w.broker = contractualv1connect.NewBrokerServiceClient(http.DefaultClient, w.s.URL, opts)
	for _, name := range []string{"feeds", "notify"} {
		src, err := os.ReadFile(tool(name, "contract.yaml"))
		if err != nil {
			t.Fatal(err)
		}
		publishTool(t, w.pol, name, string(src))
	}
	if _, err := w.broker.PutSecret(context.Background(), &contractualv1.PutSecretRequest{Name: "NTFY_TOKEN", Value: []byte(ntfyToken)}); err != nil {
		t.Fatal(err)
	}
	return w
}

// approveJob creates the job file's version and approves it.
func (w *jobWorld) approveJob(t *testing.T, file []byte) *contractualv1.JobRecord {
	t.Helper()
	c, err := w.jobs.CreateJob(context.Background(), &contractualv1.CreateJobRequest{Job: file, Filename: "job.yaml"})
	if err != nil {
		t.Fatal(err)
	}
	a, err := w.jobs.ApproveJob(context.Background(), &contractualv1.ApproveJobRequest{Digest: c.GetRecord().GetDigest()})
	if err != nil {
		t.Fatal(err)
	}
	return a.GetRecord()
}

// job reads a job's live record.
func (w *jobWorld) job(t *testing.T, id string) *contractualv1.JobRecord {
	t.Helper()
	resp, err := w.jobs.GetJob(context.Background(), &contractualv1.GetJobRequest{Id: id})
	if err != nil {
		t.Fatal(err)
	}
	return resp.GetRecord()
}

// finished polls the run until it is no longer queued or running.
func (w *jobWorld) finished(t *testing.T, id string) *contractualv1.JobRun {
	t.Helper()
	deadline := time.Now().Add(patience)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		resp, err := w.runs.GetRun(context.Background(), &contractualv1.GetRunRequest{Id: id})
		if err != nil {
			t.Fatal(err)
		}
		switch r := resp.GetRun(); r.GetState() {
		case contractualv1.RunState_RUN_STATE_QUEUED, contractualv1.RunState_RUN_STATE_RUNNING:
		default:
			return r
		}
		if time.Now().After(deadline) {
			t.Fatalf("run %s never finished", id)
		}
		<-tick.C
	}
}

// listRuns lists the job's runs, newest first.
func (w *jobWorld) listRuns(t *testing.T, id string) []*contractualv1.JobRun {
	t.Helper()
	resp, err := w.runs.ListRuns(context.Background(), &contractualv1.ListRunsRequest{JobId: id})
	if err != nil {
		t.Fatal(err)
	}
	return resp.GetRuns()
}

// firstRun waits for the job's first run and returns its id.
func (w *jobWorld) firstRun(t *testing.T, id string) string {
	t.Helper()
	deadline := time.Now().Add(patience)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		if runs := w.listRuns(t, id); len(runs) > 0 {
			return runs[len(runs)-1].GetId()
		}
		if time.Now().After(deadline) {
			t.Fatalf("job %s never ran", id)
		}
		<-tick.C
	}
}

// nextBerlin2 is the first 02:00 Europe/Berlin after t.
func nextBerlin2(t *testing.T, after time.Time) time.Time {
	t.Helper()
	c, err := schedule.Parse("0 2 * * *", "Europe/Berlin")
	if err != nil {
		t.Fatal(err)
	}
	return c.Next(after)
}

// digestFile is jobs/nightly-digest.yaml, edited by edit (old → new pairs).
func digestFile(t *testing.T, edits ...string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(repo, "jobs", "nightly-digest.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	s := string(b)
	for i := 0; i+1 < len(edits); i += 2 {
		if !strings.Contains(s, edits[i]) {
			t.Fatalf("nightly-digest.yaml has no %q", edits[i])
		}
		s = strings.Replace(s, edits[i], edits[i+1], 1)
	}
	if _, err := job.Load([]byte(s), "nightly-digest.yaml"); err != nil {
		t.Fatal(err)
	}
	return []byte(s)
}

// TestNightlyDigest is the README's example end to end through a real
// server: the owner publishes and approves feeds and notify, puts
// NTFY_TOKEN and approves jobs/nightly-digest.yaml; at 02:00 Berlin time
// by the scheduler's clock the job runs: the digest step reads the four
// feeds, the post step sends the digest's text to ntfy once, with the
// owner's token (injected by the host) and an Idempotency-Key; the run
// records both steps, their outputs and the budgets used.
func TestNightlyDigest(t *testing.T) {
	w := newJobWorld(t)
	rec := w.approveJob(t, digestFile(t))
	due := nextBerlin2(t, rec.GetDecidedAt().AsTime())
	w.clock.WaitFor(t, due, patience)
	w.clock.Set(due)
	id := w.firstRun(t, "nightly-digest")
	r := w.finished(t, id)
	if r.GetState() != contractualv1.RunState_RUN_STATE_SUCCEEDED || r.GetTrigger() != "cron" || !r.GetScheduledAt().AsTime().Equal(due) {
		t.Fatalf("run %v (%s) scheduled %v: %s", r.GetState(), r.GetTrigger(), r.GetScheduledAt().AsTime(), r.GetError())
	}
	steps := r.GetSteps()
	if len(steps) != 2 || steps[0].GetId() != "digest" || steps[1].GetId() != "post" ||
		steps[0].GetState() != contractualv1.StepState_STEP_STATE_DONE || steps[1].GetState() != contractualv1.StepState_STEP_STATE_DONE {
		t.Fatalf("steps %v", steps)
	}
	text := steps[0].GetOutput().GetStructValue().GetFields()["text"].GetStringValue()
	if text == "" || steps[1].GetOutput().GetStructValue().GetFields()["id"].GetStringValue() != "sPs71M8A2T" {
		t.Fatalf("outputs %v, %v", steps[0].GetOutput(), steps[1].GetOutput())
	}
	posts := w.sinks.ntfy()
	if len(posts) != 1 {
		t.Fatalf("ntfy got %d posts", len(posts))
	}
	p := posts[0]
	if p.Path != "/contractual-digest" || p.Body != text || p.Auth != "Bearer "+ntfyToken || p.Key != steps[1].GetIdempotencyKey()+".1" || !strings.HasPrefix(p.Key, id+".") {
		t.Errorf("ntfy post %+v; want the digest text, the token and the key %s.1", p, steps[1].GetIdempotencyKey())
	}
	u := r.GetUsed()
	if u.GetToolCallsPerRun() != 2 || u.GetEgressRequests() != 5 || u.GetEgressBytes() == 0 || u.GetOutputBytes() == 0 || w.sinks.feeds != 4 {
		t.Errorf("used %v; the feeds got %d requests", u, w.sinks.feeds)
	}
}

// TestJobDrift: approving a changed feeds contract pauses the nightly
// digest that pins the old one (CONTRACT_CHANGED, with the diff); a run
// now is refused, and the scheduler no longer waits for its 02:00;
// resuming re-pins the job to the approved contract and a run completes.
func TestJobDrift(t *testing.T) {
	w := newJobWorld(t)
	due := nextBerlin2(t, w.approveJob(t, digestFile(t)).GetDecidedAt().AsTime())
	w.clock.WaitFor(t, due, patience)
	src, err := os.ReadFile(tool("feeds", "contract.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	changed := strings.Replace(string(src), "version: 1.0.0", "version: 1.0.1", 1)
	newFeeds := publishTool(t, w.pol, "feeds", changed)

	rec := w.job(t, "nightly-digest")
	p := rec.GetPause()
	if rec.GetState() != contractualv1.JobState_JOB_STATE_PAUSED || p.GetKind() != contractualv1.PauseKind_PAUSE_KIND_CONTRACT_CHANGED ||
		p.GetContract() != "feeds" || p.GetApprovedDigest() != newFeeds || len(p.GetDiff()) == 0 {
		t.Fatalf("job %v, pause %v", rec.GetState(), p)
	}
	if _, err := w.runs.RunJob(context.Background(), &contractualv1.RunJobRequest{Id: "nightly-digest"}); connect.CodeOf(err) != connect.CodeFailedPrecondition || !strings.Contains(err.Error(), "paused") {
		t.Fatalf("RunJob of the paused job: %v", err)
	}
	// The scheduler stops firing it: it waits for the fire times of its
	// jobs in order, so that once it waits for a job approved after the
	// pause and due an hour after the paused job's 02:00, it no longer
	// holds the 02:00; and when the clock passes both, only the later job
	// runs.
	later := due.Add(time.Hour)
	w.approveJob(t, digestFile(t, "name: nightly-digest", "name: later",
		`cron: {expression: "0 2 * * *", time_zone: Europe/Berlin}`, `once: {at: "`+later.Format(time.RFC3339)+`"}`,
		rec.GetPause().GetPinnedDigest(), newFeeds))
	w.clock.WaitFor(t, later, patience)
	w.clock.Set(later)
	if r := w.finished(t, w.firstRun(t, "later")); r.GetState() != contractualv1.RunState_RUN_STATE_SUCCEEDED || !r.GetScheduledAt().AsTime().Equal(later) {
		t.Fatalf("the later job's run: %v: %s", r.GetState(), r.GetError())
	}
	if runs := w.listRuns(t, "nightly-digest"); len(runs) != 0 {
		t.Fatalf("the paused job ran: %v", runs)
	}

	resumed, err := w.jobs.ResumeJob(context.Background(), &contractualv1.ResumeJobRequest{Id: "nightly-digest"})
	if err != nil {
		t.Fatal(err)
	}
	if r := resumed.GetRecord(); r.GetState() != contractualv1.JobState_JOB_STATE_APPROVED || !strings.Contains(string(mustMarshalSteps(t, r)), newFeeds) || len(resumed.GetDiff()) == 0 {
		t.Fatalf("resumed %v, diff %v", r, resumed.GetDiff())
	}
	run, err := w.runs.RunJob(context.Background(), &contractualv1.RunJobRequest{Id: "nightly-digest"})
	if err != nil {
		t.Fatal(err)
	}
	// (The scheduler may also catch up the resumed job's 02:00, which its
	// clock passed after the resume by policy's: a run of its own.)
	r := w.finished(t, run.GetRun().GetId())
	posted := slices.ContainsFunc(w.sinks.ntfy(), func(p ntfyPost) bool { return strings.HasPrefix(p.Key, r.GetId()+".") })
	if r.GetState() != contractualv1.RunState_RUN_STATE_SUCCEEDED || !posted || r.GetJobDigest() != resumed.GetRecord().GetDigest() {
		t.Fatalf("run after resuming: %v: %s; posted %v", r.GetState(), r.GetError(), posted)
	}
}

// mustMarshalSteps is the contracts the job's steps pin, joined.
func mustMarshalSteps(t *testing.T, r *contractualv1.JobRecord) []byte {
	t.Helper()
	var pins []string
	for _, s := range r.GetJob().GetSteps() {
		pins = append(pins, s.GetContract())
	}
	return []byte(strings.Join(pins, " "))
}

// TestJobBudgetPauses: a run that exceeds a budget (the digest's output is
// over output_bytes) stops before the post, and the job is paused for it
// (BUDGET, with the run and the step); nothing is posted.
func TestJobBudgetPauses(t *testing.T) {
	w := newJobWorld(t)
	w.approveJob(t, digestFile(t, "output_bytes: 73728", "output_bytes: 64"))
	run, err := w.runs.RunJob(context.Background(), &contractualv1.RunJobRequest{Id: "nightly-digest"})
	if err != nil {
		t.Fatal(err)
	}
	r := w.finished(t, run.GetRun().GetId())
	if r.GetState() != contractualv1.RunState_RUN_STATE_STOPPED || !strings.Contains(r.GetError(), "output_bytes") || len(r.GetSteps()) != 1 {
		t.Fatalf("run %v: %s, %d steps", r.GetState(), r.GetError(), len(r.GetSteps()))
	}
	rec := w.job(t, "nightly-digest")
	if p := rec.GetPause(); rec.GetState() != contractualv1.JobState_JOB_STATE_PAUSED || p.GetKind() != contractualv1.PauseKind_PAUSE_KIND_BUDGET ||
		p.GetRunId() != r.GetId() || p.GetStep() != "digest" || p.GetPausedBy() != "service:worker" {
		t.Fatalf("job %v, pause %v", rec.GetState(), p)
	}
	if n := len(w.sinks.ntfy()); n != 0 {
		t.Errorf("ntfy got %d posts", n)
	}
}

// TestJobDecisionPauses: a call of a job that policy does not allow (the
// digest's text is over the post step's bound) pauses the job (DECISION)
// and stops the run there; nothing is posted.
func TestJobDecisionPauses(t *testing.T) {
	w := newJobWorld(t)
	w.approveJob(t, digestFile(t, "{pointer: /text, max_length: 4096}", "{pointer: /text, max_length: 8}"))
	run, err := w.runs.RunJob(context.Background(), &contractualv1.RunJobRequest{Id: "nightly-digest"})
	if err != nil {
		t.Fatal(err)
	}
	r := w.finished(t, run.GetRun().GetId())
	if r.GetState() != contractualv1.RunState_RUN_STATE_STOPPED || !strings.Contains(r.GetError(), "step post") || !strings.Contains(r.GetError(), "paused") {
		t.Fatalf("run %v: %s", r.GetState(), r.GetError())
	}
	rec := w.job(t, "nightly-digest")
	if p := rec.GetPause(); rec.GetState() != contractualv1.JobState_JOB_STATE_PAUSED || p.GetKind() != contractualv1.PauseKind_PAUSE_KIND_DECISION ||
		p.GetRunId() != r.GetId() || p.GetStep() != "post" {
		t.Fatalf("job %v, pause %v", rec.GetState(), p)
	}
	if n := len(w.sinks.ntfy()); n != 0 {
		t.Errorf("ntfy got %d posts", n)
	}
}
