package ui

import (
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/structpb"

	contractualv1 "github.com/contractual/contractual/contracts/gen/contractual/v1"
	"github.com/contractual/contractual/contracts/job"
	"github.com/contractual/contractual/internal/errs"
)

// Jobs' pages: the list, a job (its permissions card, diff, pause, versions,
// decision forms and runs) and a run (its steps). The job services are
// optional (Config.Jobs, Config.Runs): without them the pages answer that
// jobs are not available here.

// Bounds of the jobs' pages.
const (
	shownJobRuns   = 20       // runs shown on a job's page
	maxIDLenJob    = 128      // a job id or run id in a URL
	maxPayload     = 16 << 10 // a run-now payload's JSON
	clipOutput     = 16 << 10 // a step's output shown on the run page
	maxOutputLines = 400      // the same, in lines
	noJobs         = "Jobs are not available here: this gateway runs without the job services."
)

// jobStateName is a job state as a word: "pending", "paused"...
func jobStateName(st contractualv1.JobState) string {
	return strings.ToLower(strings.TrimPrefix(st.String(), "JOB_STATE_"))
}

// pauseKindName is why a job is paused, as words: "owner",
// "contract changed"...; "" if it is not paused.
func pauseKindName(k contractualv1.PauseKind) string {
	if k == contractualv1.PauseKind_PAUSE_KIND_UNSPECIFIED {
		return ""
	}
	return strings.ReplaceAll(strings.ToLower(strings.TrimPrefix(k.String(), "PAUSE_KIND_")), "_", " ")
}

// runStateName and stepStateName are a run's and a step's state as words.
func runStateName(st contractualv1.RunState) string {
	return strings.ToLower(strings.TrimPrefix(st.String(), "RUN_STATE_"))
}

func stepStateName(st contractualv1.StepState) string {
	return strings.ToLower(strings.TrimPrefix(st.String(), "STEP_STATE_"))
}

// idOK reports whether s may be a job or run id in a URL (the services
// check the rest).
func idOK(s string) bool {
	return s != "" && len(s) <= maxIDLenJob && utf8.ValidString(s) && !strings.ContainsAny(s, "/\x00")
}

var badJobID = errs.E(errs.Invalid, "that is not a job id")

// ---- the list

type jobsData struct {
	Jobs   []jobRow
	Pager  pager
	State  string
	States []string
}

// jobRow is a job in the list.
type jobRow struct {
	Rec   *contractualv1.JobRecord
	State string
	When  string
	Pins  []job.CardStep
	Pause string
}

// jobStates are the states the filter offers.
var jobStates = []string{"pending", "approved", "paused", "rejected", "superseded"}

func (u *UI) jobsPage(w http.ResponseWriter, r *http.Request, s *session) {
	u.show(w, r, s, page{name: "jobs", title: "Jobs", nav: "jobs", load: u.loadJobs}, http.StatusOK, "", nil)
}

func (u *UI) loadJobs(ctx context.Context, r *http.Request, _ *session) (any, error) {
	if u.jobs == nil {
		return nil, errs.E(errs.Unimplemented, noJobs)
	}
	pos := listPosOf(r, "/ui/jobs", "state")
	d := jobsData{State: pos.filters.Get("state"), States: jobStates}
	var st contractualv1.JobState
	if d.State != "" {
		v, ok := contractualv1.JobState_value["JOB_STATE_"+strings.ToUpper(d.State)]
		if !ok || v == 0 {
			return nil, errs.E(errs.Invalid, "state must be one of %s", strings.Join(jobStates, ", "))
		}
		st = contractualv1.JobState(v)
	}
	resp, err := u.jobs.ListJobs(ctx, &contractualv1.ListJobsRequest{State: st, PageSize: listPage, PageToken: pos.token})
	if err != nil {
		return nil, err
	}
	d.Pager = pos.pager(resp.GetNextPageToken())
	for _, rec := range resp.GetRecords() {
		card := job.NewCard(rec.GetJob())
		d.Jobs = append(d.Jobs, jobRow{Rec: rec, State: jobStateName(rec.GetState()), When: card.When, Pins: card.Steps,
			Pause: pauseKindName(rec.GetPause().GetKind())})
	}
	return d, nil
}

// ---- a job

type jobData struct {
	Rec         *contractualv1.JobRecord
	ID          string
	State       string
	Card        string
	When        string
	Predecessor string
	Diff        []changeRow
	Widened     int
	Pause       *pauseView
	Versions    []*contractualv1.JobRecord
	Pending     bool
	Approved    bool
	Paused      bool
	Deleted     bool
	// Runs are the job's newest runs; RunsErr says why they are missing.
	Runs     []runRow
	MoreRuns bool
	RunsErr  string
	CanRun   bool
}

// pauseView is why a job is paused, with the contract's diff.
type pauseView struct {
	*contractualv1.JobPause
	Kind    string
	Changed bool
	Diff    []changeRow
	Widened int
}

// changeRows turns a diff as a service sent it into the page's rows.
func changeRows(diff []*contractualv1.ContractChange) (rows []changeRow, widened int) {
	for _, ch := range diff {
		row := changeRow{Kind: ch.GetKind(), Path: ch.GetPath(), Old: ch.GetOld(), New: ch.GetNew(), Widened: ch.GetKind() == "widened"}
		if row.Widened {
			widened++
		}
		rows = append(rows, row)
	}
	return rows, widened
}

func (u *UI) jobPageSpec() page {
	return page{name: "job", title: "Job", nav: "jobs", load: u.loadJob}
}

func (u *UI) jobPage(w http.ResponseWriter, r *http.Request, s *session) {
	u.show(w, r, s, u.jobPageSpec(), http.StatusOK, "", nil)
}

// loadJob loads the job's current version, or the version ?version=
// names.
func (u *UI) loadJob(ctx context.Context, r *http.Request, s *session) (any, error) {
	if u.jobs == nil {
		return nil, errs.E(errs.Unimplemented, noJobs)
	}
	id := r.PathValue("id")
	if !idOK(id) {
		return nil, badJobID
	}
	req := &contractualv1.GetJobRequest{Id: id}
	if v := r.URL.Query().Get("version"); v != "" {
		if !digestOK(v) {
			return nil, errs.E(errs.Invalid, `a job version is "sha256:" followed by 64 lowercase hex digits`)
		}
		req = &contractualv1.GetJobRequest{Digest: v}
	}
	resp, err := u.jobs.GetJob(ctx, req)
	if err != nil {
		return nil, err
	}
	rec := resp.GetRecord()
	if rec.GetId() != id {
		return nil, errs.E(errs.NotFound, "job %s has no version %s", id, req.GetDigest())
	}
	d := jobData{
		Rec: rec, ID: id, State: jobStateName(rec.GetState()), Card: resp.GetCard(), When: job.NewCard(rec.GetJob()).When,
		Predecessor: resp.GetPredecessor(), Versions: resp.GetVersions(),
		Pending:  rec.GetState() == contractualv1.JobState_JOB_STATE_PENDING,
		Approved: rec.GetState() == contractualv1.JobState_JOB_STATE_APPROVED,
		Paused:   rec.GetState() == contractualv1.JobState_JOB_STATE_PAUSED,
		Deleted:  rec.GetState() == contractualv1.JobState_JOB_STATE_DELETED,
	}
	d.Diff, d.Widened = changeRows(resp.GetDiff())
	if p := rec.GetPause(); p != nil && p.GetKind() != contractualv1.PauseKind_PAUSE_KIND_UNSPECIFIED {
		pv := &pauseView{JobPause: p, Kind: pauseKindName(p.GetKind()), Changed: p.GetKind() == contractualv1.PauseKind_PAUSE_KIND_CONTRACT_CHANGED}
		pv.Diff, pv.Widened = changeRows(p.GetDiff())
		d.Pause = pv
	}
	d.CanRun = u.runs != nil && s.Can("approve") && d.Approved
	switch {
	case u.runs == nil:
		d.RunsErr = "Runs are not available here: this gateway runs without the worker."
	case !s.Can("read"):
		d.RunsErr = "Reading runs needs scope read."
	default:
		runs, err := u.runs.ListRuns(ctx, &contractualv1.ListRunsRequest{JobId: id, PageSize: shownJobRuns})
		if err != nil {
			_, msg := u.publicError(r, err)
			d.RunsErr = "The runs could not be read: " + msg
			break
		}
		d.MoreRuns = runs.GetNextPageToken() != ""
		budgets := map[string]*contractualv1.JobBudgets{rec.GetDigest(): rec.GetJob().GetBudgets()}
		for _, run := range runs.GetRuns() {
			d.Runs = append(d.Runs, newRunRow(run, u.budgetsOf(ctx, budgets, run.GetJobDigest())))
		}
	}
	return d, nil
}

// budgetsOf returns the budgets of the job version digest, reading it once
// per page (nil if it cannot be read).
func (u *UI) budgetsOf(ctx context.Context, seen map[string]*contractualv1.JobBudgets, digest string) *contractualv1.JobBudgets {
	if b, ok := seen[digest]; ok {
		return b
	}
	var b *contractualv1.JobBudgets
	if resp, err := u.jobs.GetJob(ctx, &contractualv1.GetJobRequest{Digest: digest}); err == nil {
		b = resp.GetRecord().GetJob().GetBudgets()
	}
	seen[digest] = b
	return b
}

// ---- runs

// runRow is a run as the pages show it.
type runRow struct {
	*contractualv1.JobRun
	State    string
	OK       bool
	Duration string
	Budgets  []budgetRow
}

// budgetRow is one budget: what a run used of what it had.
type budgetRow struct {
	Name       string
	Used, Max  string
	Over, Some bool
}

func newRunRow(run *contractualv1.JobRun, b *contractualv1.JobBudgets) runRow {
	row := runRow{JobRun: run, State: runStateName(run.GetState()), OK: run.GetState() == contractualv1.RunState_RUN_STATE_SUCCEEDED}
	if s, f := run.GetStartedAt(), run.GetFinishedAt(); s != nil && f != nil {
		row.Duration = f.AsTime().Sub(s.AsTime()).Round(time.Millisecond).String()
	}
	used := run.GetUsed()
	add := func(name string, u, m uint64) {
		br := budgetRow{Name: name, Used: strconv.FormatUint(u, 10), Max: "—"}
		if b != nil {
			br.Max, br.Over = strconv.FormatUint(m, 10), m > 0 && u > m
			if m == 0 {
				br.Max = "no limit"
			}
		}
		row.Budgets = append(row.Budgets, br)
	}
	add("tool calls", uint64(used.GetToolCallsPerRun()), uint64(b.GetToolCallsPerRun()))
	add("run time (s)", uint64(used.GetRunTimeSeconds()), uint64(b.GetRunTimeSeconds()))
	add("egress requests", uint64(used.GetEgressRequests()), uint64(b.GetEgressRequests()))
	add("egress bytes", used.GetEgressBytes(), b.GetEgressBytes())
	add("output bytes", used.GetOutputBytes(), b.GetOutputBytes())
	return row
}

type runData struct {
	JobID string
	Run   runRow
	Steps []stepRow
}

// stepRow is a step of a run with its output rendered.
type stepRow struct {
	*contractualv1.StepRun
	State   string
	OK      bool
	Output  string
	Clipped bool
}

func (u *UI) runPage(w http.ResponseWriter, r *http.Request, s *session) {
	u.show(w, r, s, page{name: "run", title: "Run", nav: "jobs", load: u.loadRun}, http.StatusOK, "", nil)
}

func (u *UI) loadRun(ctx context.Context, r *http.Request, _ *session) (any, error) {
	if u.jobs == nil || u.runs == nil {
		return nil, errs.E(errs.Unimplemented, noJobs)
	}
	id, runID := r.PathValue("id"), r.PathValue("run")
	if !idOK(id) || !idOK(runID) {
		return nil, errs.E(errs.Invalid, "that is not a job id and run id")
	}
	resp, err := u.runs.GetRun(ctx, &contractualv1.GetRunRequest{Id: runID})
	if err != nil {
		return nil, err
	}
	run := resp.GetRun()
	if run.GetJobId() != id {
		return nil, errs.E(errs.NotFound, "job %s has no run %s", id, runID)
	}
	d := runData{JobID: id, Run: newRunRow(run, u.budgetsOf(ctx, map[string]*contractualv1.JobBudgets{}, run.GetJobDigest()))}
	for _, st := range run.GetSteps() {
		row := stepRow{StepRun: st, State: stepStateName(st.GetState()), OK: st.GetState() == contractualv1.StepState_STEP_STATE_DONE}
		row.Output, row.Clipped = outputText(st)
		d.Steps = append(d.Steps, row)
	}
	return d, nil
}

// outputText is a step's output, indented JSON (or its text), clipped to
// clipOutput bytes and maxOutputLines lines. The template escapes it.
func outputText(st *contractualv1.StepRun) (string, bool) {
	text := st.GetOutputText()
	if st.GetOutput() != nil {
		var b strings.Builder
		enc := json.NewEncoder(&b)
		enc.SetEscapeHTML(false)
		enc.SetIndent("", "  ")
		if err := enc.Encode(st.GetOutput().AsInterface()); err == nil {
			text = strings.TrimSuffix(b.String(), "\n")
		}
	}
	clipped := false
	if len(text) > clipOutput {
		text, clipped = strings.ToValidUTF8(text[:clipOutput], ""), true
	}
	if lines := strings.SplitAfterN(text, "\n", maxOutputLines+1); len(lines) > maxOutputLines {
		text, clipped = strings.Join(lines[:maxOutputLines], ""), true
	}
	return text, clipped
}

// ---- actions

// jobAction is one action on a job, posted by its page.
type jobAction struct {
	verb, done string
	// digest: the form names the version it decides (approve, reject),
	// so that the owner approves what the page showed.
	digest bool
	call   func(ctx context.Context, u *UI, id, digest, reason string, r *http.Request) (string, error)
}

// jobActions are the forms of the job page.
var jobActions = []jobAction{
	{verb: "approve", done: "job-approved", digest: true, call: func(ctx context.Context, u *UI, _, d, reason string, _ *http.Request) (string, error) {
		_, err := u.jobs.ApproveJob(ctx, &contractualv1.ApproveJobRequest{Digest: d, Reason: reason})
		return "", err
	}},
	{verb: "reject", done: "job-rejected", digest: true, call: func(ctx context.Context, u *UI, _, d, reason string, _ *http.Request) (string, error) {
		if reason == "" {
			return "", errs.E(errs.Invalid, "a reason is required to reject a job")
		}
		_, err := u.jobs.RejectJob(ctx, &contractualv1.RejectJobRequest{Digest: d, Reason: reason})
		return "", err
	}},
	{verb: "pause", done: "job-paused", call: func(ctx context.Context, u *UI, id, _, reason string, _ *http.Request) (string, error) {
		_, err := u.jobs.PauseJob(ctx, &contractualv1.PauseJobRequest{Id: id, Reason: reason, Kind: contractualv1.PauseKind_PAUSE_KIND_OWNER})
		return "", err
	}},
	{verb: "resume", done: "job-resumed", call: func(ctx context.Context, u *UI, id, _, reason string, _ *http.Request) (string, error) {
		_, err := u.jobs.ResumeJob(ctx, &contractualv1.ResumeJobRequest{Id: id, Reason: reason})
		return "", err
	}},
	{verb: "delete", done: "job-deleted", call: func(ctx context.Context, u *UI, id, _, _ string, r *http.Request) (string, error) {
		if r.PostForm.Get("confirm") != id {
			return "", errs.E(errs.Invalid, "to delete the job, type its id %q in the confirmation field", id)
		}
		_, err := u.jobs.DeleteJob(ctx, &contractualv1.DeleteJobRequest{Id: id})
		return "", err
	}},
	{verb: "run", done: "job-run", call: func(ctx context.Context, u *UI, id, _, _ string, r *http.Request) (string, error) {
		if u.runs == nil {
			return "", errs.E(errs.Unimplemented, "runs are not available here: this gateway runs without the worker")
		}
		req := &contractualv1.RunJobRequest{Id: id}
		if p := strings.TrimSpace(r.PostForm.Get("payload")); p != "" {
			if len(p) > maxPayload {
				return "", errs.E(errs.Invalid, "the payload is longer than %d bytes", maxPayload)
			}
			var v structpb.Value
			if err := protojson.Unmarshal([]byte(p), &v); err != nil {
				return "", errs.E(errs.Invalid, "the payload is not JSON")
			}
			req.Payload = &v
		}
		resp, err := u.runs.RunJob(ctx, req)
		return resp.GetRun().GetId(), err
	}},
}

// jobAction handles POST /ui/jobs/{id}/{verb}: on success a redirect (to
// the job, or to the run a run-now queued, or to the list after a delete);
// on failure the job page again with the error.
func (u *UI) jobAction(a jobAction) sessionHandler {
	return func(w http.ResponseWriter, r *http.Request, s *session) {
		id := r.PathValue("id")
		if u.jobs == nil {
			u.fail(w, r, s, http.StatusNotImplemented, noJobs)
			return
		}
		if !idOK(id) {
			u.failErr(w, r, s, badJobID)
			return
		}
		reason, fe := reasonField(r, "reason", false)
		keep := map[string]string{}
		if fe == nil {
			keep["reason"] = reason
		}
		var digest string
		if fe == nil && a.digest {
			if digest = r.PostForm.Get("digest"); !digestOK(digest) {
				fe = &formError{http.StatusBadRequest, "The form does not name the job version it decides."}
			}
		}
		if fe == nil && len(r.PostForm.Get("payload")) <= maxPayload {
			keep["payload"] = r.PostForm.Get("payload")
		}
		if fe != nil {
			u.show(w, r, s, u.jobPageSpec(), fe.status, fe.msg, keep)
			return
		}
		runID, err := a.call(s.ctx, u, id, digest, reason, r)
		if err != nil {
			status, msg := u.publicError(r, err)
			u.show(w, r, s, u.jobPageSpec(), status, msg, keep)
			return
		}
		switch {
		case a.verb == "delete":
			http.Redirect(w, r, "/ui/jobs?done="+a.done, http.StatusSeeOther)
		case runID != "":
			http.Redirect(w, r, "/ui/jobs/"+url.PathEscape(id)+"/runs/"+url.PathEscape(runID)+"?done="+a.done, http.StatusSeeOther)
		default:
			http.Redirect(w, r, "/ui/jobs/"+url.PathEscape(id)+"?done="+a.done, http.StatusSeeOther)
		}
	}
}
