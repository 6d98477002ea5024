package worker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	contractualv1 "github.com/contractual/contractual/contracts/gen/contractual/v1"
	"github.com/contractual/contractual/internal/decision"
	"github.com/contractual/contractual/internal/errs"
	"github.com/contractual/contractual/internal/rpc"
)

// agentTool is the tool name an agent step's record and audit events carry:
// the step's calls are the engine's, each audited with its own tool.
const agentTool = "agent"

// agentStep runs agent step i through the engine: the step's data (its
// rendered input, if any), its prompt, its tools with their pins and the
// job's bounds on them. Like a tool step, it is recorded as running, with
// its idempotency key, before anything happens: the engine's calls carry
// keys derived from the run, the step and each call's input, so a step
// retried after a crash sends the same keys for the same calls. Any
// decision other than allow on one of its calls has paused the job in
// policy, and stops the run; so does a budget.
func (a *attempt) agentStep(ctx context.Context, i int, step *contractualv1.JobStep) (outcome, bool) {
	r := a.st.run
	if b := time.Duration(a.job.GetBudgets().GetRunTimeSeconds()) * time.Second; b > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeoutCause(ctx, max(b-time.Duration(a.st.use.runNs), 0), errRunTime)
		defer cancel()
	}
	sr := &contractualv1.StepRun{Id: step.GetId(), Tool: agentTool, State: stepRunning}
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
	if a.s.deps.Engine == nil {
		return fail(outcome{state: failed, msg: fmt.Sprintf("step %s is an agent step, and this worker has no engine to run it: "+
			"start the worker with the engine's address (contractual-worker --engine-url)", step.GetId())})
	}
	var data []byte
	if step.GetInput().GetKind() != nil {
		var err error
		if data, err = a.scope.render(step.GetInput()); err != nil {
			return fail(outcome{state: failed, msg: fmt.Sprintf("step %s: %v", step.GetId(), err)})
		}
	}
	ag := step.GetAgent()
	// The step's key binds what the agent is given: the prompt and the
	// data; each call's own key is the engine's (decision.ActionKey).
	given, _ := json.Marshal(map[string]any{"prompt": ag.GetPrompt(), "data": json.RawMessage(orNull(data))})
	sr.InputHash = decision.Hash(given)
	sr.IdempotencyKey = decision.ActionKey(r.GetId(), step.GetId(), agentTool, sr.GetInputHash())
	if err := stepStart(ctx, a.s.db, a.l, a.s.cfg.Now(), a.s.cfg.Lease, i, sr); err != nil {
		return outcome{abandon: err}, false
	}
	if err := a.s.audit(ctx, a.stepEvent(ActionStepStarted, "ok", sr, nil)); err != nil {
		return outcome{state: failed, msg: err.Error(), retry: true}, false
	}
	var bounds []*contractualv1.ToolBounds
	for _, tb := range a.job.GetBounds() {
		for _, t := range ag.GetTools() {
			if t.GetTool() == tb.GetTool() {
				bounds = append(bounds, tb)
				break
			}
		}
	}
	resp, err := a.s.deps.Engine.RunAgentStep(ctx, &contractualv1.RunAgentStepRequest{
		Principal: principalOf(r.GetJobId()), RunId: r.GetId(), Step: step.GetId(),
		Prompt: ag.GetPrompt(), Data: data, Tools: ag.GetTools(), Bounds: bounds, MaxModelRequests: ag.GetMaxModelRequests(),
	})
	if serr := a.stopped(ctx); serr != nil {
		return outcome{abandon: serr}, false
	}
	now := a.s.cfg.Now()
	a.account(now)
	u := a.st.use
	var (
		o   outcome
		out []byte
	)
	if err != nil {
		err = a.cause(ctx, rpc.FromConnect(err))
		sr.State, sr.Error = stepFailed, clip(err.Error())
		switch {
		case errors.Is(err, errRunTime):
			o = a.budgetOutcome(step.GetId(), "run_time_seconds", fmt.Sprintf("ran for %s", time.Duration(u.runNs).Round(time.Millisecond)))
		case errs.Is(err, errs.FailedPrecondition):
			// Policy answered other than allow (and paused the job), the
			// job's pins are stale, or the engine has no model: nothing
			// a retry changes.
			o = outcome{state: stopped, msg: fmt.Sprintf("step %s: %v", step.GetId(), err)}
		default:
			o = outcome{state: failed, msg: fmt.Sprintf("step %s: %v", step.GetId(), err), retry: transient(err)}
		}
	} else {
		out, _ = json.Marshal(map[string]string{"answer": resp.GetAnswer()})
		sr.State = stepDone
		for _, c := range resp.GetToolCalls() {
			u.b.ToolCallsPerRun++
			sr.Egress = append(sr.Egress, c.GetEgress()...)
			u.b.OutputBytes += uint64(max(c.GetOutputBytes(), 0))
		}
		for _, e := range sr.GetEgress() {
			if e.GetAllowed() {
				u.b.EgressRequests++
			}
			u.b.EgressBytes += uint64(max(e.GetBytes(), 0))
		}
		u.b.OutputBytes += uint64(len(out))
	}
	if err := stepEnd(context.WithoutCancel(ctx), a.s.db, a.l, now, a.s.cfg.Lease, i, sr, out, u); err != nil {
		return outcome{abandon: err}, false
	}
	word := "ok"
	if sr.State != stepDone {
		word = errs.KindOf(err).String()
	}
	ev := a.stepEvent(ActionStepFinished, word, sr, nil)
	ev.Egress = sr.GetEgress()
	if err == nil {
		ev.Detail = clip(fmt.Sprintf("%s: %d tool calls, %d model requests, %d prompt and %d completion tokens",
			ev.GetDetail(), len(resp.GetToolCalls()), resp.GetModelRequests(), resp.GetPromptTokens(), resp.GetCompletionTokens()))
	}
	if aerr := a.s.audit(ctx, ev); aerr != nil && err == nil {
		return outcome{state: failed, msg: aerr.Error(), retry: true}, false
	}
	if err != nil {
		return o, false
	}
	a.outputs = append(a.outputs[:i], out)
	a.scope.outputs[step.GetId()] = output(out)
	return outcome{}, true
}

// orNull is b, or JSON null for none.
func orNull(b []byte) []byte {
	if len(b) == 0 {
		return []byte("null")
	}
	return b
}
