package worker

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	contractualv1 "github.com/contractual/contractual/contracts/gen/contractual/v1"
	"github.com/contractual/contractual/internal/decision"
	"github.com/contractual/contractual/internal/errs"
	"github.com/contractual/contractual/internal/rpc"
)

// Audit actions of the worker.
const (
	ActionRunStarted   = "run.started"
	ActionRunRetry     = "run.retry"
	ActionRunFinished  = "run.finished"
	ActionStepStarted  = "step.started"
	ActionStepFinished = "step.finished"
)

// maxDetailBytes caps an audit event's detail and a recorded error.
const maxDetailBytes = 4 << 10

// errRunTime is the cause of a run's context ending at its run-time
// budget.
var errRunTime = errors.New("run time budget exhausted")

// work claims one due run for worker id and runs it; it returns the run's
// id, or "" if none was due.
func (s *Service) work(ctx context.Context, id string) (run string, err error) {
	l, err := claim(ctx, s.db, id, s.cfg.Now(), s.cfg.Lease)
	if err != nil || l == nil {
		return "", err
	}
	return l.run, s.execute(ctx, l)
}

// attempt is one attempt at a run, by the worker holding its lease.
type attempt struct {
	s       *Service
	l       *lease
	st      *stored
	job     *contractualv1.Job
	scope   *scope
	outputs [][]byte
	// mark is when the run time was last accounted.
	mark time.Time
}

// outcome is how an attempt ends.
type outcome struct {
	state contractualv1.RunState
	msg   string
	// retry: the failure may pass (a tool error, a service unavailable);
	// the run is retried if the job's retries allow.
	retry bool
	// pause is the job's pause for an exceeded budget.
	pause *contractualv1.PauseJobRequest
	// abandon, if set, ends the attempt without another write: the lease
	// was lost, the worker is closing, or the store failed. The run stays
	// claimed until its lease expires, and is taken up again then.
	abandon error
}

// execute runs the steps of l's run that are not done, and records how
// the attempt ended. A lost lease ends it without another write.
func (s *Service) execute(ctx context.Context, l *lease) error {
	st, outputs, err := getRun(ctx, s.db, l.run)
	if err != nil {
		return err
	}
	a := &attempt{s: s, l: l, st: st, outputs: outputs, mark: s.cfg.Now()}
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	renewed := s.renewing(ctx, l, cancel)
	defer renewed()
	r := st.run
	if err := s.audit(ctx, a.event(ActionRunStarted, "ok", fmt.Sprintf("run %s attempt %d (%s)", r.GetId(), r.GetAttempt(), r.GetTrigger()))); err != nil {
		return err // taken up again when the lease expires
	}
	return a.end(ctx, a.run(ctx))
}

// renewing renews l's lease every Config.Renew until the returned func is
// called; if the lease is lost it cancels the run's context.
func (s *Service) renewing(ctx context.Context, l *lease, cancel context.CancelCauseFunc) func() {
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(s.cfg.Renew)
		defer t.Stop()
		for {
			select {
			case <-stop:
				return
			case <-ctx.Done():
				return
			case <-t.C:
				if err := renew(ctx, s.db, l, s.cfg.Now(), s.cfg.Lease); errs.Is(err, errs.FailedPrecondition) {
					cancel(err)
					return
				}
			}
		}
	}()
	return func() { close(stop); <-done }
}

// run executes the job version's steps in order.
func (a *attempt) run(ctx context.Context) outcome {
	r := a.st.run
	resp, err := a.s.deps.Jobs.GetJob(ctx, &contractualv1.GetJobRequest{Digest: r.GetJobDigest()})
	if err != nil {
		err = rpc.FromConnect(err)
		return outcome{state: failed, msg: fmt.Sprintf("fetching job %s %s: %v", r.GetJobId(), r.GetJobDigest(), err), retry: transient(err)}
	}
	rec := resp.GetRecord()
	switch {
	case rec.GetId() != r.GetJobId() || rec.GetDigest() != r.GetJobDigest():
		return outcome{state: failed, msg: fmt.Sprintf("policy returned job %s %s for %s %s", rec.GetId(), rec.GetDigest(), r.GetJobId(), r.GetJobDigest())}
	case rec.GetState() != contractualv1.JobState_JOB_STATE_APPROVED:
		return outcome{state: stopped, msg: fmt.Sprintf("job %s version %s is %s, not approved", r.GetJobId(), r.GetJobDigest(), jobStateName(rec.GetState()))}
	}
	a.job = rec.GetJob()
	payload, err := decodeJSON(a.st.payload)
	if err != nil {
		return outcome{state: failed, msg: fmt.Sprintf("the run's payload is not JSON: %v", err)}
	}
	a.scope = &scope{payload: payload, outputs: map[string]any{}}
	for i, step := range a.job.GetSteps() {
		if i < len(r.GetSteps()) && r.GetSteps()[i].GetState() == stepDone {
			a.scope.outputs[step.GetId()] = output(a.outputs[i])
			continue
		}
		if o, over := a.overBudget(step.GetId()); over {
			return o
		}
		if o, ok := a.step(ctx, i, step); !ok {
			return o
		}
		if o, over := a.overBudget(step.GetId()); over {
			return o
		}
	}
	return outcome{state: succeeded}
}

// step runs step i: it renders the input, asks policy, records the step
// as running with its idempotency key, calls the runner and records the
// step as done with its output. ok is false if the run stops here. What
// is left of the run-time budget is the step's deadline.
func (a *attempt) step(ctx context.Context, i int, step *contractualv1.JobStep) (outcome, bool) {
	if step.GetAgent() != nil {
		return a.agentStep(ctx, i, step) // agent.go
	}
	r := a.st.run
	if b := time.Duration(a.job.GetBudgets().GetRunTimeSeconds()) * time.Second; b > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeoutCause(ctx, max(b-time.Duration(a.st.use.runNs), 0), errRunTime)
		defer cancel()
	}
	sr := &contractualv1.StepRun{Id: step.GetId(), Tool: step.GetTool(), State: stepRunning}
	fail := func(o outcome) (outcome, bool) {
		if err := a.stopped(ctx); err != nil {
			return outcome{abandon: err}, false
		}
		sr.State, sr.Error = stepFailed, clip(o.msg)
		if err := stepStart(context.WithoutCancel(ctx), a.s.db, a.l, a.s.cfg.Now(), a.s.cfg.Lease, i, sr); err != nil {
			return outcome{abandon: err}, false
		}
		return o, false
	}
	input, err := a.scope.render(step.GetInput())
	if err != nil {
		return fail(outcome{state: failed, msg: fmt.Sprintf("step %s: %v", step.GetId(), err)})
	}
	ev, err := a.s.deps.Policy.Evaluate(ctx, &contractualv1.EvaluateRequest{
		Tool: step.GetTool(), Input: input, Principal: principalOf(r.GetJobId()), RunId: r.GetId(), Step: step.GetId(),
	})
	if err != nil {
		err = a.cause(ctx, rpc.FromConnect(err))
		if errors.Is(err, errRunTime) {
			return fail(a.budgetOutcome(step.GetId(), "run_time_seconds", "ran out of time waiting for policy"))
		}
		return fail(outcome{state: failed, msg: fmt.Sprintf("step %s: policy: %v", step.GetId(), err), retry: transient(err)})
	}
	d := ev.GetDecision()
	sr.DecisionId, sr.InputHash = d.GetId(), d.GetInputHash()
	if d.GetVerdict() != contractualv1.Verdict_VERDICT_ALLOW {
		return fail(outcome{state: stopped, msg: fmt.Sprintf("step %s: policy answered %s: %s", step.GetId(), verdictName(d.GetVerdict()), d.GetReason())})
	}
	sr.IdempotencyKey = decision.ActionKey(r.GetId(), d.GetStep(), d.GetTool(), d.GetInputHash())
	// The outbox: the step is recorded as running, with its key, before
	// the side effect; the audit log has it too.
	if err := stepStart(ctx, a.s.db, a.l, a.s.cfg.Now(), a.s.cfg.Lease, i, sr); err != nil {
		return outcome{abandon: err}, false
	}
	if err := a.s.audit(ctx, a.stepEvent(ActionStepStarted, "ok", sr, d)); err != nil {
		return outcome{state: failed, msg: err.Error(), retry: true}, false
	}
	out, err := a.s.deps.Runner.Execute(ctx, &contractualv1.ExecuteRequest{Decision: ev.GetSigned(), Input: ev.GetCanonicalInput()})
	if serr := a.stopped(ctx); serr != nil {
		return outcome{abandon: serr}, false
	}
	now := a.s.cfg.Now()
	a.account(now)
	u := a.st.use
	u.b.ToolCallsPerRun++
	var o outcome
	if err != nil {
		err = a.cause(ctx, rpc.FromConnect(err))
		sr.State, sr.Error = stepFailed, clip(err.Error())
		o = outcome{state: failed, msg: fmt.Sprintf("step %s: %v", step.GetId(), err), retry: transient(err)}
		if errors.Is(err, errRunTime) {
			o = a.budgetOutcome(step.GetId(), "run_time_seconds", fmt.Sprintf("ran for %s", time.Duration(u.runNs).Round(time.Millisecond)))
		}
	} else {
		sr.State, sr.Egress = stepDone, out.GetEgress()
		for _, e := range out.GetEgress() {
			if e.GetAllowed() {
				u.b.EgressRequests++
			}
			u.b.EgressBytes += uint64(max(e.GetBytes(), 0))
		}
		u.b.OutputBytes += uint64(len(out.GetOutput()))
	}
	if err := stepEnd(context.WithoutCancel(ctx), a.s.db, a.l, now, a.s.cfg.Lease, i, sr, out.GetOutput(), u); err != nil {
		return outcome{abandon: err}, false
	}
	outcomeWord := "ok"
	if sr.State != stepDone {
		outcomeWord = errs.KindOf(err).String()
	}
	ev2 := a.stepEvent(ActionStepFinished, outcomeWord, sr, d)
	ev2.Egress = sr.GetEgress()
	if aerr := a.s.audit(ctx, ev2); aerr != nil && err == nil {
		return outcome{state: failed, msg: aerr.Error(), retry: true}, false
	}
	if err != nil {
		return o, false
	}
	a.outputs = append(a.outputs[:i], out.GetOutput())
	a.scope.outputs[step.GetId()] = output(out.GetOutput())
	return outcome{}, true
}

// stopped returns why ctx ended, if it ended for another reason than the
// run-time budget: the lease was lost or the worker is closing.
func (a *attempt) stopped(ctx context.Context) error {
	if ctx.Err() == nil {
		return nil
	}
	if c := context.Cause(ctx); !errors.Is(c, errRunTime) {
		return c
	}
	return nil
}

// cause returns err, or the run-time budget's error if that is why ctx
// ended.
func (a *attempt) cause(ctx context.Context, err error) error {
	if c := context.Cause(ctx); errors.Is(c, errRunTime) {
		return errs.Wrap(errs.DeadlineExceeded, errRunTime, "%v", err)
	}
	return err
}

// account adds the time since the last mark to the run time used.
func (a *attempt) account(now time.Time) {
	if d := now.Sub(a.mark); d > 0 {
		a.st.use.runNs += int64(d)
	}
	a.mark = now
}

// overBudget checks the run's budgets before step runs and after it ran:
// an exceeded one stops the run and pauses the job.
func (a *attempt) overBudget(step string) (outcome, bool) {
	a.account(a.s.cfg.Now())
	b, u := a.job.GetBudgets(), a.st.use
	switch {
	case b.GetRunTimeSeconds() > 0 && time.Duration(u.runNs) >= time.Duration(b.GetRunTimeSeconds())*time.Second:
		return a.budgetOutcome(step, "run_time_seconds", fmt.Sprintf("ran for %s", time.Duration(u.runNs).Round(time.Millisecond))), true
	case b.GetEgressRequests() > 0 && u.b.GetEgressRequests() > b.GetEgressRequests():
		return a.budgetOutcome(step, "egress_requests", fmt.Sprintf("made %d requests", u.b.GetEgressRequests())), true
	case b.GetEgressBytes() > 0 && u.b.GetEgressBytes() > b.GetEgressBytes():
		return a.budgetOutcome(step, "egress_bytes", fmt.Sprintf("received %d bytes", u.b.GetEgressBytes())), true
	case b.GetOutputBytes() > 0 && u.b.GetOutputBytes() > b.GetOutputBytes():
		return a.budgetOutcome(step, "output_bytes", fmt.Sprintf("output %d bytes", u.b.GetOutputBytes())), true
	}
	return outcome{}, false
}

// budgetOutcome stops the run and pauses the job for the budget named.
func (a *attempt) budgetOutcome(step, budget, used string) outcome {
	r := a.st.run
	b := a.job.GetBudgets()
	limit := map[string]string{
		"run_time_seconds": fmt.Sprintf("%ds", b.GetRunTimeSeconds()),
		"egress_requests":  fmt.Sprint(b.GetEgressRequests()),
		"egress_bytes":     fmt.Sprint(b.GetEgressBytes()),
		"output_bytes":     fmt.Sprint(b.GetOutputBytes()),
	}[budget]
	msg := fmt.Sprintf("run %s exceeded its %s budget at step %s: it %s, the budget is %s", r.GetId(), budget, step, used, limit)
	return outcome{state: stopped, msg: msg, pause: &contractualv1.PauseJobRequest{
		Id: r.GetJobId(), Reason: msg, Kind: contractualv1.PauseKind_PAUSE_KIND_BUDGET, RunId: r.GetId(), Step: step,
	}}
}

// end records how the attempt ended: the job paused first if a budget
// was exceeded (if that fails, the run stays claimed and is taken up again
// when its lease expires, and pauses the job then), then the run retried
// with backoff or finished. A lost lease records nothing; a worker that is
// closing releases the run, for the next claim to take over at once.
func (a *attempt) end(ctx context.Context, o outcome) error {
	err := o.abandon
	if err == nil {
		err = a.stopped(ctx)
	}
	if err != nil {
		if errors.Is(err, context.Canceled) { // the worker is closing
			rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), a.s.cfg.AuditTimeout)
			defer cancel()
			if rerr := release(rctx, a.s.db, a.l, a.s.cfg.Now()); rerr != nil {
				a.s.log.Error("worker: releasing a run", "run", a.l.run, "err", rerr)
			}
		}
		return err
	}
	wctx := context.WithoutCancel(ctx)
	now := a.s.cfg.Now()
	a.account(now)
	r := a.st.run
	if o.pause != nil {
		if _, err := a.s.deps.Jobs.PauseJob(wctx, o.pause); err != nil {
			return errs.Wrap(errs.Unavailable, rpc.FromConnect(err), "pausing job %s for run %s", r.GetJobId(), r.GetId())
		}
	}
	if o.retry && a.retries(r.GetAttempt()) {
		next := now.Add(a.backoff(r.GetAttempt()))
		if err := requeue(wctx, a.s.db, a.l, now, next, clip(o.msg), a.st.use); err != nil {
			return err
		}
		a.s.auditBest(wctx, a.event(ActionRunRetry, "retry", fmt.Sprintf("run %s attempt %d failed, retrying at %s: %s",
			r.GetId(), r.GetAttempt(), next.UTC().Format(time.RFC3339), o.msg)))
		return nil
	}
	if err := finishRun(wctx, a.s.db, a.l, now, o.state, clip(o.msg), a.st.use); err != nil {
		return err
	}
	detail := fmt.Sprintf("run %s %s after %d attempt(s)", r.GetId(), runStateName(o.state), r.GetAttempt())
	if o.msg != "" {
		detail += ": " + o.msg
	}
	a.s.auditBest(wctx, a.event(ActionRunFinished, runStateName(o.state), detail))
	return nil
}

// retries reports whether a run that failed its attempt-th attempt may be
// tried again.
func (a *attempt) retries(attempt uint32) bool {
	return a.job != nil && attempt <= a.job.GetRetry().GetAttempts()
}

// backoff is the wait before the retry after the attempt-th attempt: the
// job's backoff, doubled for each attempt before, at most MaxBackoff.
func (a *attempt) backoff(attempt uint32) time.Duration {
	d := time.Duration(a.job.GetRetry().GetBackoffSeconds()) * time.Second
	for range attempt - 1 {
		if d >= a.s.cfg.MaxBackoff {
			break
		}
		d *= 2
	}
	return min(d, a.s.cfg.MaxBackoff)
}

// transient reports whether an error may pass on a retry.
func transient(err error) bool {
	switch errs.KindOf(err) {
	case errs.Unavailable, errs.DeadlineExceeded, errs.ResourceExhausted, errs.ToolFailed:
		return true
	}
	return false
}

// principalOf is a job's principal.
func principalOf(job string) string { return "job:" + job }

// event is an audit event of the run.
func (a *attempt) event(action, outcome, detail string) *contractualv1.AuditEvent {
	return &contractualv1.AuditEvent{
		Service: "worker", Principal: principalOf(a.st.run.GetJobId()),
		Action: action, Outcome: outcome, Detail: clip(detail),
	}
}

// stepEvent is an audit event of a step: its tool, decision, input hash
// and idempotency key, never its input.
func (a *attempt) stepEvent(action, outcome string, sr *contractualv1.StepRun, d *contractualv1.Decision) *contractualv1.AuditEvent {
	detail := fmt.Sprintf("run %s step %s idempotency key %s", a.st.run.GetId(), sr.GetId(), sr.GetIdempotencyKey())
	if sr.GetError() != "" {
		detail += ": " + sr.GetError()
	}
	ev := a.event(action, outcome, detail)
	ev.Tool, ev.InputHash, ev.DecisionId = sr.GetTool(), sr.GetInputHash(), sr.GetDecisionId()
	ev.ContractDigest, ev.ModuleDigest = d.GetContractDigest(), d.GetModuleDigest()
	return ev
}

// audit appends ev; the caller does not go on without it.
func (s *Service) audit(ctx context.Context, ev *contractualv1.AuditEvent) error {
	actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.cfg.AuditTimeout)
	defer cancel()
	if _, err := s.deps.Audit.Append(actx, &contractualv1.AppendRequest{Events: []*contractualv1.AuditEvent{ev}}); err != nil {
		return errs.Wrap(errs.Unavailable, rpc.FromConnect(err), "worker: the audit log could not record %s", ev.GetAction())
	}
	return nil
}

// auditBest appends ev after the fact it records: a failure is logged.
func (s *Service) auditBest(ctx context.Context, ev *contractualv1.AuditEvent) {
	if err := s.audit(ctx, ev); err != nil {
		s.log.Error("worker: audit append failed", "action", ev.GetAction(), "detail", ev.GetDetail(), "err", err)
	}
}

func runStateName(st contractualv1.RunState) string {
	return strings.ToLower(strings.TrimPrefix(st.String(), "RUN_STATE_"))
}

func jobStateName(st contractualv1.JobState) string {
	return strings.ToLower(strings.TrimPrefix(st.String(), "JOB_STATE_"))
}

func verdictName(v contractualv1.Verdict) string {
	return strings.ToLower(strings.TrimPrefix(v.String(), "VERDICT_"))
}

// clip cuts s to maxDetailBytes on a rune boundary.
func clip(s string) string {
	if len(s) <= maxDetailBytes {
		return s
	}
	n := maxDetailBytes - len("…")
	for n > 0 && s[n]&0xC0 == 0x80 {
		n--
	}
	return s[:n] + "…"
}
