package policy

import (
	"context"
	"database/sql"
	"fmt"
	"slices"
	"strings"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/contractual/contractual/contracts/contract"
	contractualv1 "github.com/contractual/contractual/contracts/gen/contractual/v1"
	"github.com/contractual/contractual/contracts/job"
	"github.com/contractual/contractual/internal/authz"
	"github.com/contractual/contractual/internal/errs"
	"github.com/contractual/contractual/internal/paging"
	"github.com/contractual/contractual/internal/principal"
)

// Jobs are the reusable contracts: policy keeps every version of a job
// definition (contracts/job), the owner approves one per job, and policy
// decides each call a job makes against it (jobeval.go). A version's life:
// pending → approved | rejected; approved ⇄ paused (by the owner, by drift
// of a contract it pins, by a decision other than allow, by a budget);
// approved or paused → superseded (another version approved, or the job
// re-pinned on resume); any → deleted.

// Audit actions of jobs.
const (
	actionJobCreate    = "job.create"
	actionJobApprove   = "job.approve"
	actionJobReject    = "job.reject"
	actionJobSupersede = "job.supersede"
	actionJobPause     = "job.pause"
	actionJobResume    = "job.resume"
	actionJobDelete    = "job.delete"
)

// defaultJobFilename names a job created without a file name.
const defaultJobFilename = "job.yaml"

// jobStateName is a job state as a word: "pending", "approved"...
func jobStateName(st contractualv1.JobState) string {
	return strings.ToLower(strings.TrimPrefix(st.String(), "JOB_STATE_"))
}

// pauseKindName is a pause kind as a word: "owner", "contract_changed"...
func pauseKindName(k contractualv1.PauseKind) string {
	return strings.ToLower(strings.TrimPrefix(k.String(), "PAUSE_KIND_"))
}

// jobEvent is the audit event of a change of the job version rec.
func jobEvent(action, who string, rec *contractualv1.JobRecord, detail string) *contractualv1.AuditEvent {
	return &contractualv1.AuditEvent{
		Service: service, Principal: clip(who, maxShortBytes), Action: action, Outcome: outcomeOK,
		Detail: clip(fmt.Sprintf("job %s %s: %s", rec.GetId(), rec.GetDigest(), detail), maxDetailBytes),
	}
}

// pauseEvent is the audit event of rec's pause.
func pauseEvent(rec *contractualv1.JobRecord) *contractualv1.AuditEvent {
	p := rec.GetPause()
	d := fmt.Sprintf("paused (%s): %s", pauseKindName(p.GetKind()), p.GetReason())
	if p.GetRunId() != "" {
		d += fmt.Sprintf("; run %s", p.GetRunId())
	}
	if p.GetStep() != "" {
		d += fmt.Sprintf(", step %s", p.GetStep())
	}
	ev := jobEvent(actionJobPause, p.GetPausedBy(), rec, d)
	if p.GetContract() != "" && digestRE.MatchString(p.GetPinnedDigest()) {
		ev.ContractDigest = p.GetPinnedDigest()
	}
	return ev
}

// paused returns a copy of rec paused with p.
func paused(rec *contractualv1.JobRecord, p *contractualv1.JobPause) *contractualv1.JobRecord {
	n := proto.CloneOf(rec)
	n.State, n.Pause = jobPaused, p
	return n
}

// reader returns the principal of ctx if it may read jobs: the owner's
// devices and the services (the worker reads the version it runs).
func reader(ctx context.Context) (string, error) {
	who := principal.From(ctx)
	if strings.HasPrefix(who, "service:") {
		return who, nil
	}
	return owner(ctx)
}

// changeJobs runs change in one transaction, under s.mu, on the clock's
// now: the change returns the versions it changed, in order, and their
// audit events, which are recorded before the commit; then the job feed
// hears of the versions. A change with no event changes nothing.
func (s *Service) changeJobs(ctx context.Context, change func(tx *sql.Tx, now *timestamppb.Timestamp) ([]*contractualv1.JobRecord, []*contractualv1.AuditEvent, error)) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	ctx = context.WithoutCancel(ctx)
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return storeErr(err, "starting a transaction")
	}
	defer tx.Rollback()
	recs, evs, err := change(tx, timestamppb.New(s.opts.Now()))
	if err != nil || len(evs) == 0 {
		return err
	}
	if err := s.audit(ctx, evs...); err != nil {
		return err
	}
	if err := s.commit(ctx, tx, evs...); err != nil {
		return err
	}
	s.jobs.publish(recs...)
	return nil
}

// refused records a refused job operation (an attempt that changed
// nothing) and returns err; store and audit failures pass as they are.
func (s *Service) refused(ctx context.Context, action string, err error) error {
	if err == nil || errs.Is(err, errs.Unavailable) || errs.Is(err, errs.Internal) {
		return err
	}
	ev := &contractualv1.AuditEvent{Service: service, Principal: clip(principal.From(ctx), maxShortBytes), Action: action}
	return s.auditRefusal(ctx, ev, err)
}

// CreateJob validates a job file, checks it against policy's contracts and
// stores it as a pending version. Creating a version that is stored
// already changes nothing (existed); one that was deleted is pending again.
func (s *Service) CreateJob(ctx context.Context, req *contractualv1.CreateJobRequest) (*contractualv1.CreateJobResponse, error) {
	resp, err := s.createJob(ctx, req)
	return resp, s.refused(ctx, actionJobCreate, err)
}

func (s *Service) createJob(ctx context.Context, req *contractualv1.CreateJobRequest) (*contractualv1.CreateJobResponse, error) {
	who, err := owner(ctx)
	if err != nil {
		return nil, err
	}
	filename := cleanFilename(req.GetFilename())
	if filename == defaultFilename {
		filename = defaultJobFilename
	}
	// Checked against the contracts before normalizing, so that problems
	// name steps and bounds in the file's order.
	file, err := job.ParseFile(req.GetJob(), filename)
	if err != nil {
		return nil, err
	}
	if err := file.Validate(); err != nil {
		return nil, err
	}
	j := file.Job
	if err := s.checkPins(ctx, s.db, j, filename); err != nil {
		return nil, err
	}
	job.Normalize(j)
	digest, err := job.Digest(j)
	if err != nil {
		return nil, err
	}
	var (
		rec     *contractualv1.JobRecord
		existed bool
	)
	err = s.changeJobs(ctx, func(tx *sql.Tx, now *timestamppb.Timestamp) ([]*contractualv1.JobRecord, []*contractualv1.AuditEvent, error) {
		cur, err := getJob(ctx, tx, digest)
		switch {
		case err == nil && cur.GetState() != jobDeleted:
			rec, existed = cur, true
			return nil, []*contractualv1.AuditEvent{jobEvent(actionJobCreate, who, cur, "was already created ("+jobStateName(cur.GetState())+"); nothing changed")}, nil
		case err == nil:
			rec = proto.CloneOf(cur)
			rec.State, rec.DecidedBy, rec.DecidedAt, rec.Reason, rec.Pause = jobPending, who, now, "created again after its deletion", nil
			if err := updateJob(ctx, tx, rec, jobDeleted); err != nil {
				return nil, nil, err
			}
		case errs.Is(err, errs.NotFound):
			rec = &contractualv1.JobRecord{Id: j.GetName(), Digest: digest, Job: j, State: jobPending, CreatedBy: who, CreatedAt: now}
			if err := insertJob(ctx, tx, rec); err != nil {
				return nil, nil, err
			}
		default:
			return nil, nil, err
		}
		return []*contractualv1.JobRecord{rec}, []*contractualv1.AuditEvent{jobEvent(actionJobCreate, who, rec, "created, pending approval")}, nil
	})
	if err != nil {
		return nil, err
	}
	pred, diff, err := s.jobPredecessor(ctx, rec)
	if err != nil {
		return nil, err
	}
	return &contractualv1.CreateJobResponse{Record: rec, Predecessor: pred, Diff: diff, Existed: existed, Card: s.jobCard(ctx, rec.GetJob())}, nil
}

// jobPredecessor returns the live version of rec's job and rec's diff
// against it, or nothing if rec is that version or there is none.
func (s *Service) jobPredecessor(ctx context.Context, rec *contractualv1.JobRecord) (string, []*contractualv1.ContractChange, error) {
	live, err := liveJob(ctx, s.db, rec.GetId())
	if err != nil || live == nil || live.GetDigest() == rec.GetDigest() {
		return "", nil, err
	}
	return live.GetDigest(), changes(job.Diff(live.GetJob(), rec.GetJob())), nil
}

// jobCard is the permissions card of j, in words, with a note on each
// high-risk tool it calls: such a call needs a one-shot approval, and a
// job never waits for one, so it pauses the job.
func (s *Service) jobCard(ctx context.Context, j *contractualv1.Job) string {
	var b strings.Builder
	_ = job.NewCard(j).WriteText(&b)
	for _, c := range job.Calls(j) {
		if t := s.pinnedTool(ctx, c); t.GetRisk() == contractualv1.Risk_RISK_HIGH {
			fmt.Fprintf(&b, "Note: %s (step %s) is a high-risk tool: each call needs the owner's one-shot approval, which a job never waits for: such a call pauses the job\n", c.Tool, c.Step)
		}
	}
	return b.String()
}

// pinnedTool returns the tool a step calls in the contract it pins, or
// nil if policy does not know them.
func (s *Service) pinnedTool(ctx context.Context, c job.Call) *contractualv1.Tool {
	rec, err := getRecord(ctx, s.db, c.Contract)
	if err != nil {
		return nil
	}
	_, export, _ := strings.Cut(c.Tool, ".")
	return findTool(rec.GetContract(), export)
}

// findTool returns c's tool of export, or nil.
func findTool(c *contractualv1.Contract, export string) *contractualv1.Tool {
	for _, t := range c.GetTools() {
		if t.GetExport() == export {
			return t
		}
	}
	return nil
}

// checkPins checks a job against the contracts policy knows: each step's
// pinned digest is a contract of the step's tool's name that has the
// tool, and each bound makes sense against the tool's input schema, as far
// as the schema tells.
func (s *Service) checkPins(ctx context.Context, q querier, j *contractualv1.Job, filename string) error {
	var ps []contract.Problem
	add := func(path, format string, args ...any) {
		ps = append(ps, contract.Problem{Path: path, Msg: fmt.Sprintf(format, args...)})
	}
	tools := map[string]*contractualv1.Tool{}
	for _, c := range job.Calls(j) {
		name, export, _ := strings.Cut(c.Tool, ".")
		rec, err := getRecord(ctx, q, c.Contract)
		switch {
		case errs.Is(err, errs.NotFound):
			add(c.Path+".contract", "no contract %s is known to policy: publish the tool's contract first", c.Contract)
			continue
		case err != nil:
			return err
		case rec.GetContract().GetName() != name:
			add(c.Path+".contract", "%s is a contract of %q, not of %q", c.Contract, rec.GetContract().GetName(), name)
			continue
		}
		t := findTool(rec.GetContract(), export)
		if t == nil {
			add(c.Path+".tool", "contract %s %s has no tool %q", name, c.Contract, export)
			continue
		}
		tools[c.Tool] = t
	}
	for i, tb := range j.GetBounds() {
		t := tools[tb.GetTool()]
		if t == nil {
			continue
		}
		for k, in := range tb.GetInputs() {
			if msg := boundAgainstSchema(t.GetInputSchema().AsMap(), in); msg != "" {
				add(fmt.Sprintf("bounds[%d].inputs[%d]", i, k), "%s", msg)
			}
		}
	}
	return contract.Invalid("job", filename, ps)
}

// ListJobs lists jobs, one record per job, newest first, a page at a
// time: without a state each job's current version (its approved or
// paused one, else its newest), with a state each job's newest version in
// that state (state pending lists the versions awaiting approval).
func (s *Service) ListJobs(ctx context.Context, req *contractualv1.ListJobsRequest) (*contractualv1.ListJobsResponse, error) {
	if _, err := reader(ctx); err != nil {
		return nil, err
	}
	st := req.GetState()
	if _, known := contractualv1.JobState_name[int32(st)]; !known {
		return nil, errs.E(errs.Invalid, "state %d is not a job state", int32(st))
	}
	n, err := paging.Size(req.GetPageSize())
	if err != nil {
		return nil, err
	}
	key := fmt.Sprintf("state=%d", st)
	var after int64
	if _, err := paging.Decode(req.GetPageToken(), "jobs", key, &after); err != nil {
		return nil, err
	}
	recs, last, more, err := pageJobs(ctx, s.db, st, after, n)
	if err != nil {
		return nil, err
	}
	resp := &contractualv1.ListJobsResponse{Records: recs}
	if more {
		resp.NextPageToken = paging.Encode("jobs", key, last)
	}
	return resp, nil
}

// GetJob returns a job's current version (by id) or a version (by
// digest), its permissions card, its diff against the job's live version
// and the job's other versions.
func (s *Service) GetJob(ctx context.Context, req *contractualv1.GetJobRequest) (*contractualv1.GetJobResponse, error) {
	if _, err := reader(ctx); err != nil {
		return nil, err
	}
	var (
		rec *contractualv1.JobRecord
		err error
	)
	switch {
	case (req.GetId() == "") == (req.GetDigest() == ""):
		return nil, errs.E(errs.Invalid, "name a job by id or a version by digest, exactly one")
	case req.GetDigest() != "":
		if err := checkDigest("job", req.GetDigest()); err != nil {
			return nil, err
		}
		rec, err = getJob(ctx, s.db, req.GetDigest())
	default:
		rec, err = currentJob(ctx, s.db, req.GetId())
	}
	if err != nil {
		return nil, err
	}
	pred, diff, err := s.jobPredecessor(ctx, rec)
	if err != nil {
		return nil, err
	}
	all, err := jobVersions(ctx, s.db, rec.GetId())
	if err != nil {
		return nil, err
	}
	resp := &contractualv1.GetJobResponse{Record: rec, Card: s.jobCard(ctx, rec.GetJob()), Predecessor: pred, Diff: diff}
	for _, v := range all {
		if v.GetDigest() != rec.GetDigest() {
			resp.Versions = append(resp.Versions, &contractualv1.JobRecord{Id: v.GetId(), Digest: v.GetDigest(), State: v.GetState(), CreatedAt: v.GetCreatedAt()})
		}
	}
	return resp, nil
}

// staleSteps returns, for each step of j whose pinned contract is not the
// approved contract of its name right now, why: the owner approves a job
// only under the contracts that run.
func (s *Service) staleSteps(j *contractualv1.Job) []string {
	a := s.approved.Load()
	var out []string
	for _, c := range job.Calls(j) {
		name := contractName(c.Tool)
		switch e := a.byName[name]; {
		case e == nil:
			out = append(out, fmt.Sprintf("step %s pins contract %s %s, and no contract %s is approved", c.Step, name, c.Contract, name))
		case e.rec.GetDigest() != c.Contract:
			out = append(out, fmt.Sprintf("step %s pins contract %s %s, but the approved %s is %s", c.Step, name, c.Contract, name, e.rec.GetDigest()))
		}
	}
	return out
}

// ApproveJob approves a pending job version: the reusable contract. The
// job's live version, if any, is superseded in the same step. It is
// refused while a contract it pins is not the approved one of its name.
func (s *Service) ApproveJob(ctx context.Context, req *contractualv1.ApproveJobRequest) (*contractualv1.ApproveJobResponse, error) {
	rec, err := s.approveJob(ctx, req)
	if err != nil {
		return nil, s.refused(ctx, actionJobApprove, err)
	}
	return &contractualv1.ApproveJobResponse{Record: rec}, nil
}

func (s *Service) approveJob(ctx context.Context, req *contractualv1.ApproveJobRequest) (*contractualv1.JobRecord, error) {
	who, err := jobDecider(ctx, req.GetDigest(), req.GetReason())
	if err != nil {
		return nil, err
	}
	var rec *contractualv1.JobRecord
	err = s.changeJobs(ctx, func(tx *sql.Tx, now *timestamppb.Timestamp) ([]*contractualv1.JobRecord, []*contractualv1.AuditEvent, error) {
		cur, err := getJob(ctx, tx, req.GetDigest())
		if err != nil {
			return nil, nil, err
		}
		if cur.GetState() != jobPending {
			return nil, nil, wrongJobState("approve", cur, "a pending version")
		}
		if stale := s.staleSteps(cur.GetJob()); len(stale) > 0 {
			return nil, nil, errs.E(errs.FailedPrecondition, "cannot approve job %s %s: %s: create a version pinned to the approved contracts",
				cur.GetId(), cur.GetDigest(), strings.Join(stale, "; "))
		}
		var recs []*contractualv1.JobRecord
		var evs []*contractualv1.AuditEvent
		detail := "approved"
		old, err := liveJob(ctx, tx, cur.GetId())
		if err != nil {
			return nil, nil, err
		}
		if old != nil {
			old.State, old.DecidedBy, old.DecidedAt, old.Reason = jobSuperseded, who, now, "superseded by "+cur.GetDigest()
			if err := updateJob(ctx, tx, old, jobApproved, jobPaused); err != nil {
				return nil, nil, err
			}
			recs, evs = append(recs, old), append(evs, jobEvent(actionJobSupersede, who, old, old.GetReason()))
			detail += "; supersedes " + old.GetDigest()
		}
		rec = proto.CloneOf(cur)
		rec.State, rec.DecidedBy, rec.DecidedAt, rec.Reason = jobApproved, who, now, req.GetReason()
		if err := updateJob(ctx, tx, rec, jobPending); err != nil {
			return nil, nil, err
		}
		if rec.GetReason() != "" {
			detail += "; reason: " + rec.GetReason()
		}
		return append(recs, rec), append([]*contractualv1.AuditEvent{jobEvent(actionJobApprove, who, rec, detail)}, evs...), nil
	})
	return rec, err
}

// jobDecider returns the owner deciding the job version digest, with
// reason, once the three are valid.
func jobDecider(ctx context.Context, digest, reason string) (string, error) {
	who, err := owner(ctx)
	if err == nil {
		err = checkDigest("job", digest)
	}
	if err == nil {
		err = checkReason(reason)
	}
	return who, err
}

// RejectJob rejects a pending job version.
func (s *Service) RejectJob(ctx context.Context, req *contractualv1.RejectJobRequest) (*contractualv1.RejectJobResponse, error) {
	rec, err := s.rejectJob(ctx, req)
	if err != nil {
		return nil, s.refused(ctx, actionJobReject, err)
	}
	return &contractualv1.RejectJobResponse{Record: rec}, nil
}

func (s *Service) rejectJob(ctx context.Context, req *contractualv1.RejectJobRequest) (*contractualv1.JobRecord, error) {
	who, err := jobDecider(ctx, req.GetDigest(), req.GetReason())
	if err != nil {
		return nil, err
	}
	var rec *contractualv1.JobRecord
	err = s.changeJobs(ctx, func(tx *sql.Tx, now *timestamppb.Timestamp) ([]*contractualv1.JobRecord, []*contractualv1.AuditEvent, error) {
		cur, err := getJob(ctx, tx, req.GetDigest())
		if err != nil {
			return nil, nil, err
		}
		if cur.GetState() != jobPending {
			return nil, nil, wrongJobState("reject", cur, "a pending version")
		}
		rec = proto.CloneOf(cur)
		rec.State, rec.DecidedBy, rec.DecidedAt, rec.Reason = jobRejected, who, now, req.GetReason()
		if err := updateJob(ctx, tx, rec, jobPending); err != nil {
			return nil, nil, err
		}
		return []*contractualv1.JobRecord{rec}, []*contractualv1.AuditEvent{jobEvent(actionJobReject, who, rec, "rejected; reason: "+rec.GetReason())}, nil
	})
	return rec, err
}

// wrongJobState explains why an operation does not apply to rec.
func wrongJobState(verb string, rec *contractualv1.JobRecord, want string) error {
	what := fmt.Sprintf("job %s %s is %s", rec.GetId(), rec.GetDigest(), jobStateName(rec.GetState()))
	if rec.GetDecidedBy() != "" {
		what += " (by " + rec.GetDecidedBy()
		if rec.GetReason() != "" {
			what += ": " + rec.GetReason()
		}
		what += ")"
	}
	return errs.E(errs.FailedPrecondition, "cannot %s: %s; only %s can be", verb, what, want)
}

// PauseJob pauses a job's approved version. The owner's devices pause
// (kind owner); the worker pauses a job whose run exceeded a budget (kind
// budget, with the run and the step). Pausing a paused job changes
// nothing.
func (s *Service) PauseJob(ctx context.Context, req *contractualv1.PauseJobRequest) (*contractualv1.PauseJobResponse, error) {
	rec, err := s.pauseJob(ctx, req)
	if err != nil {
		return nil, s.refused(ctx, actionJobPause, err)
	}
	return &contractualv1.PauseJobResponse{Record: rec}, nil
}

func (s *Service) pauseJob(ctx context.Context, req *contractualv1.PauseJobRequest) (*contractualv1.JobRecord, error) {
	who := principal.From(ctx)
	kind := req.GetKind()
	switch {
	case who == authz.Worker.Principal():
		if kind != contractualv1.PauseKind_PAUSE_KIND_BUDGET || req.GetRunId() == "" {
			return nil, errs.E(errs.Invalid, "the worker pauses a job for a budget: kind budget, with the run_id")
		}
	case strings.HasPrefix(who, "device:"):
		if kind != contractualv1.PauseKind_PAUSE_KIND_UNSPECIFIED && kind != contractualv1.PauseKind_PAUSE_KIND_OWNER {
			return nil, errs.E(errs.Invalid, "a device pauses a job as its owner: kind %s is for services", pauseKindName(kind))
		}
		kind = contractualv1.PauseKind_PAUSE_KIND_OWNER
	default:
		if _, err := owner(ctx); err != nil {
			return nil, err
		}
	}
	if err := checkReason(req.GetReason()); err != nil {
		return nil, err
	}
	for _, f := range []struct{ name, v string }{{"run_id", req.GetRunId()}, {"step", req.GetStep()}} {
		if len(f.v) > maxShortBytes || strings.ContainsFunc(f.v, func(r rune) bool { return r <= ' ' || r == 0x7f }) {
			return nil, errs.E(errs.Invalid, "%s is malformed", f.name)
		}
	}
	if req.GetId() == "" {
		return nil, errs.E(errs.Invalid, "id is required: the job to pause")
	}
	var rec *contractualv1.JobRecord
	err := s.changeJobs(ctx, func(tx *sql.Tx, now *timestamppb.Timestamp) ([]*contractualv1.JobRecord, []*contractualv1.AuditEvent, error) {
		live, err := liveJob(ctx, tx, req.GetId())
		switch {
		case err != nil:
			return nil, nil, err
		case live == nil:
			return nil, nil, errs.E(errs.FailedPrecondition, "job %q has no approved version to pause", clip(req.GetId(), 100))
		case live.GetState() == jobPaused:
			rec = live
			return nil, nil, nil
		}
		reason := req.GetReason()
		if reason == "" {
			reason = "paused by " + who
		}
		rec = paused(live, &contractualv1.JobPause{Kind: kind, Reason: reason, PausedBy: who, PausedAt: now, RunId: req.GetRunId(), Step: req.GetStep()})
		if err := updateJob(ctx, tx, rec, jobApproved); err != nil {
			return nil, nil, err
		}
		return []*contractualv1.JobRecord{rec}, []*contractualv1.AuditEvent{pauseEvent(rec)}, nil
	})
	return rec, err
}

// ResumeJob resumes a paused job: a fresh approval by the caller. If a
// contract it pins is no longer the approved one of its name, the job is
// re-pinned to that one: a new version, approved, superseding the paused
// one, and the response lists each contract's diff. It is refused if a
// contract it pins has no approved version, or the approved one lacks the
// tool or does not fit its bounds.
func (s *Service) ResumeJob(ctx context.Context, req *contractualv1.ResumeJobRequest) (*contractualv1.ResumeJobResponse, error) {
	resp, err := s.resumeJob(ctx, req)
	if err != nil {
		return nil, s.refused(ctx, actionJobResume, err)
	}
	return resp, nil
}

func (s *Service) resumeJob(ctx context.Context, req *contractualv1.ResumeJobRequest) (*contractualv1.ResumeJobResponse, error) {
	who, err := owner(ctx)
	if err == nil {
		err = checkReason(req.GetReason())
	}
	if err == nil && req.GetId() == "" {
		err = errs.E(errs.Invalid, "id is required: the job to resume")
	}
	if err != nil {
		return nil, err
	}
	resp := &contractualv1.ResumeJobResponse{}
	err = s.changeJobs(ctx, func(tx *sql.Tx, now *timestamppb.Timestamp) ([]*contractualv1.JobRecord, []*contractualv1.AuditEvent, error) {
		live, err := liveJob(ctx, tx, req.GetId())
		switch {
		case err != nil:
			return nil, nil, err
		case live == nil:
			return nil, nil, errs.E(errs.FailedPrecondition, "job %q has no approved version to resume", clip(req.GetId(), 100))
		case live.GetState() != jobPaused:
			return nil, nil, errs.E(errs.FailedPrecondition, "job %s is not paused", live.GetId())
		}
		j, diff, err := s.repin(ctx, tx, live.GetJob())
		if err != nil {
			return nil, nil, err
		}
		resp.Diff = diff
		reason := req.GetReason()
		if j == nil {
			rec := proto.CloneOf(live)
			rec.State, rec.Pause, rec.DecidedBy, rec.DecidedAt, rec.Reason = jobApproved, nil, who, now, reason
			if err := updateJob(ctx, tx, rec, jobPaused); err != nil {
				return nil, nil, err
			}
			resp.Record = rec
			return []*contractualv1.JobRecord{rec}, []*contractualv1.AuditEvent{jobEvent(actionJobResume, who, rec, "resumed; reason: "+reason)}, nil
		}
		digest, err := job.Digest(j)
		if err != nil {
			return nil, nil, err
		}
		old := proto.CloneOf(live)
		old.State, old.DecidedBy, old.DecidedAt, old.Reason = jobSuperseded, who, now, "superseded by "+digest+", re-pinned on resume"
		if err := updateJob(ctx, tx, old, jobPaused); err != nil {
			return nil, nil, err
		}
		rec, err := getJob(ctx, tx, digest)
		switch {
		case err == nil:
			rec.State, rec.Pause, rec.DecidedBy, rec.DecidedAt, rec.Reason = jobApproved, nil, who, now, reason
			err = updateJob(ctx, tx, rec, jobPending, jobRejected, jobSuperseded, jobDeleted)
		case errs.Is(err, errs.NotFound):
			rec = &contractualv1.JobRecord{Id: live.GetId(), Digest: digest, Job: j, State: jobApproved, CreatedBy: who, CreatedAt: now, DecidedBy: who, DecidedAt: now, Reason: reason}
			err = insertJob(ctx, tx, rec)
		}
		if err != nil {
			return nil, nil, err
		}
		resp.Record = rec
		var pins []string
		was := job.Calls(live.GetJob())
		for i, c := range job.Calls(j) {
			if p := was[i].Contract; p != c.Contract {
				pins = append(pins, fmt.Sprintf("step %s %s %s → %s", c.Step, c.Tool, p, c.Contract))
			}
		}
		return []*contractualv1.JobRecord{old, rec}, []*contractualv1.AuditEvent{
			jobEvent(actionJobResume, who, rec, fmt.Sprintf("resumed, re-pinned (%s), superseding %s; reason: %s", strings.Join(pins, ", "), live.GetDigest(), reason)),
			jobEvent(actionJobSupersede, who, old, old.GetReason()),
		}, nil
	})
	if err != nil {
		return nil, err
	}
	return resp, nil
}

// repin returns j re-pinned to the approved contracts, and the diffs of
// the contracts that changed (each path prefixed with the contract's
// name), or nil if every pin is approved. It refuses (errs.
// FailedPrecondition) when a pinned contract has no approved version, or
// the approved one has no such tool or does not fit the job's bounds.
func (s *Service) repin(ctx context.Context, q querier, j *contractualv1.Job) (*contractualv1.Job, []*contractualv1.ContractChange, error) {
	a := s.approved.Load()
	n := proto.CloneOf(j)
	var (
		problems []string
		diff     []*contractualv1.ContractChange
		done     = map[string]bool{}
		tools    = map[string]*contractualv1.Tool{}
	)
	for _, jc := range job.Calls(n) {
		name, export, _ := strings.Cut(jc.Tool, ".")
		e := a.byName[name]
		if e == nil {
			problems = append(problems, fmt.Sprintf("step %s pins contract %s %s, and no contract %s is approved: approve one, or delete the job", jc.Step, name, jc.Contract, name))
			continue
		}
		t := findTool(e.rec.GetContract(), export)
		if t == nil {
			problems = append(problems, fmt.Sprintf("step %s calls %s, and the approved contract %s %s has no tool %q", jc.Step, jc.Tool, name, e.rec.GetDigest(), export))
			continue
		}
		tools[jc.Tool] = t
		if jc.Contract == e.rec.GetDigest() || done[jc.Contract] {
			continue
		}
		done[jc.Contract] = true
		old, err := getRecord(ctx, q, jc.Contract)
		if err != nil {
			return nil, nil, err
		}
		for _, c := range changes(contract.Diff(old.GetContract(), e.rec.GetContract())) {
			c.Path = name + ": " + c.Path
			diff = append(diff, c)
		}
	}
	// Every pin now names the approved contract of its tool's name (a
	// problem above refuses the resume otherwise).
	job.Repin(n, func(tool, digest string) string {
		if e := a.byName[contractName(tool)]; e != nil {
			return e.rec.GetDigest()
		}
		return digest
	})
	for _, tb := range n.GetBounds() {
		for _, in := range tb.GetInputs() {
			if t := tools[tb.GetTool()]; t != nil {
				if msg := boundAgainstSchema(t.GetInputSchema().AsMap(), in); msg != "" {
					problems = append(problems, fmt.Sprintf("bounds of %s: %s", tb.GetTool(), msg))
				}
			}
		}
	}
	if len(problems) > 0 {
		return nil, nil, errs.E(errs.FailedPrecondition, "cannot resume job %s: %s", j.GetName(), strings.Join(problems, "; "))
	}
	if proto.Equal(n, j) {
		return nil, nil, nil
	}
	return n, diff, nil
}

// DeleteJob deletes every version of a job: none of it runs or is listed
// again. Its records stay, for the audit trail and GetJob by digest.
func (s *Service) DeleteJob(ctx context.Context, req *contractualv1.DeleteJobRequest) (*contractualv1.DeleteJobResponse, error) {
	if err := s.deleteJob(ctx, req); err != nil {
		return nil, s.refused(ctx, actionJobDelete, err)
	}
	return &contractualv1.DeleteJobResponse{}, nil
}

func (s *Service) deleteJob(ctx context.Context, req *contractualv1.DeleteJobRequest) error {
	who, err := owner(ctx)
	if err != nil {
		return err
	}
	if req.GetId() == "" {
		return errs.E(errs.Invalid, "id is required: the job to delete")
	}
	return s.changeJobs(ctx, func(tx *sql.Tx, now *timestamppb.Timestamp) ([]*contractualv1.JobRecord, []*contractualv1.AuditEvent, error) {
		all, err := jobVersions(ctx, tx, req.GetId())
		if err != nil {
			return nil, nil, err
		}
		all = slices.DeleteFunc(all, func(r *contractualv1.JobRecord) bool { return r.GetState() == jobDeleted })
		if len(all) == 0 {
			return nil, nil, errs.E(errs.NotFound, "no job %q", clip(req.GetId(), 100))
		}
		var (
			digests []string
			live    []*contractualv1.JobRecord // for the feed
		)
		for _, rec := range all {
			from := rec.GetState()
			rec.State, rec.DecidedBy, rec.DecidedAt, rec.Reason = jobDeleted, who, now, "deleted by "+who
			if err := updateJob(ctx, tx, rec, from); err != nil {
				return nil, nil, err
			}
			if from == jobApproved || from == jobPaused {
				live = append(live, rec)
			}
			digests = append(digests, rec.GetDigest()+" ("+jobStateName(from)+")")
		}
		return live, []*contractualv1.AuditEvent{jobEvent(actionJobDelete, who, all[0], "deleted, every version: "+strings.Join(digests, ", "))}, nil
	})
}
