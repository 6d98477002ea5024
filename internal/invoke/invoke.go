// Package invoke is the ToolService: one call of one tool, by a principal,
// through policy (decide) and the runner (run under the contract). Policy
// and the runner audit; this package only orchestrates.
//
// A call that needs the owner's one-shot approval is refused, naming the
// pending approval, unless the request waits: then Invoke long-polls
// policy (WaitCallApproval) for at most MaxWait, and once the approval is
// decided evaluates the call again, which uses the approval up, and runs
// it. A caller that gives up before then uses nothing up.
package invoke

import (
	"context"
	"encoding/json"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/structpb"

	contractualv1 "github.com/contractual/contractual/contracts/gen/contractual/v1"
	"github.com/contractual/contractual/internal/errs"
	"github.com/contractual/contractual/internal/principal"
)

// Policy decides calls.
type Policy interface {
	Evaluate(context.Context, *contractualv1.EvaluateRequest) (*contractualv1.EvaluateResponse, error)
	WaitCallApproval(context.Context, *contractualv1.WaitCallApprovalRequest) (*contractualv1.WaitCallApprovalResponse, error)
}

// MaxWait caps how long one Invoke waits for a pending one-shot approval.
// It fits in the minute of the gateway's InvokeTimeout that a run does
// not use; a caller that waits longer calls again.
const MaxWait = 20 * time.Second

// ApprovalPath is the Control UI page of call approval id.
func ApprovalPath(id string) string { return "/ui/approvals/" + id }

// Runner runs decided calls.
type Runner interface {
	Execute(context.Context, *contractualv1.ExecuteRequest) (*contractualv1.ExecuteResponse, error)
}

// Service implements contractualv1connect.ToolServiceHandler.
type Service struct {
	policy Policy
	runner Runner
}

// New returns a Service over policy and runner.
func New(policy Policy, runner Runner) *Service { return &Service{policy: policy, runner: runner} }

// Invoke decides and runs one call.
func (s *Service) Invoke(ctx context.Context, req *contractualv1.InvokeRequest) (*contractualv1.InvokeResponse, error) {
	who := principal.From(ctx)
	if who == "" {
		return nil, errs.E(errs.Unauthenticated, "no principal")
	}
	if req.GetTool() == "" {
		return nil, errs.E(errs.Invalid, "tool is required, as <contract name>.<export>")
	}
	if req.GetInput() == nil {
		return nil, errs.E(errs.Invalid, "input is required: the JSON value the tool takes (an object, or a string for tools that take text or bytes)")
	}
	input, err := protojson.Marshal(req.GetInput())
	if err != nil {
		return nil, errs.E(errs.Invalid, "input: %v", err)
	}
	call := &contractualv1.EvaluateRequest{Tool: req.GetTool(), Input: input, Principal: who}
	ev, err := s.policy.Evaluate(ctx, call)
	if err != nil {
		return nil, err
	}
	d := ev.GetDecision()
	if id := d.GetApprovalId(); d.GetVerdict() == contractualv1.Verdict_VERDICT_APPROVAL_REQUIRED && id != "" && req.GetWait() != nil {
		var pending *contractualv1.CallApproval
		if ev, pending, err = s.await(ctx, call, id, min(req.GetWait().AsDuration(), MaxWait)); err != nil {
			return nil, err
		}
		if pending != nil {
			return &contractualv1.InvokeResponse{PendingApproval: pending}, nil
		}
		d = ev.GetDecision()
	}
	switch d.GetVerdict() {
	case contractualv1.Verdict_VERDICT_ALLOW:
	case contractualv1.Verdict_VERDICT_APPROVAL_REQUIRED:
		if id := d.GetApprovalId(); id != "" {
			return nil, errs.E(errs.PermissionDenied, "%s needs the owner's one-shot approval of this exact call: approval %s is pending; "+
				"approve it from another paired device (Control UI %s, or `contractual approvals approve %s`), then call again, or call with wait (`contractual invoke --wait`)",
				req.GetTool(), id, ApprovalPath(id), id)
		}
		return nil, errs.E(errs.PermissionDenied, "%s needs a one-shot approval of this exact call (decision %s): %s", req.GetTool(), d.GetId(), d.GetReason())
	default:
		return nil, errs.E(errs.PermissionDenied, "%s: denied: %s", req.GetTool(), d.GetReason())
	}
	run, err := s.runner.Execute(ctx, &contractualv1.ExecuteRequest{Decision: ev.GetSigned(), Input: ev.GetCanonicalInput()})
	if err != nil {
		return nil, err
	}
	resp := &contractualv1.InvokeResponse{
		DecisionId:     d.GetId(),
		ContractDigest: d.GetContractDigest(),
		Egress:         run.GetEgress(),
		Logs:           run.GetLogs(),
		DurationUs:     run.GetDurationUs(),
	}
	out := run.GetOutput()
	var v structpb.Value
	if json.Valid(out) && protojson.Unmarshal(out, &v) == nil {
		resp.Output = &v
	} else {
		resp.OutputText = string(out)
	}
	return resp, nil
}

// await waits up to wait for the call approval id of call to be decided.
// Approved, it evaluates call again, which uses the approval up, and
// returns that decision; if another identical call used it first, the
// call's new approval is waited for in the time left. Still pending when
// the time is up (wait, or half the time before ctx's deadline, leaving
// the run the other half), it returns the approval. A denied or expired
// approval is an error.
func (s *Service) await(ctx context.Context, call *contractualv1.EvaluateRequest, id string, wait time.Duration) (*contractualv1.EvaluateResponse, *contractualv1.CallApproval, error) {
	deadline := time.Now().Add(wait)
	if dl, ok := ctx.Deadline(); ok && time.Until(dl) < 2*wait {
		deadline = time.Now().Add(time.Until(dl) / 2) // leave half for the run
	}
	for {
		w, err := s.policy.WaitCallApproval(ctx, &contractualv1.WaitCallApprovalRequest{Id: id, MaxWait: durationpb.New(max(time.Until(deadline), 0))})
		if err != nil {
			return nil, nil, err
		}
		a := w.GetApproval()
		switch a.GetState() {
		case contractualv1.CallApprovalState_CALL_APPROVAL_STATE_PENDING:
			return nil, a, nil
		case contractualv1.CallApprovalState_CALL_APPROVAL_STATE_DENIED:
			msg := ""
			if a.GetReason() != "" {
				msg = ": " + a.GetReason()
			}
			return nil, nil, errs.E(errs.PermissionDenied, "%s: %s denied call approval %s%s", call.GetTool(), a.GetDecidedBy(), id, msg)
		case contractualv1.CallApprovalState_CALL_APPROVAL_STATE_EXPIRED:
			return nil, nil, errs.E(errs.FailedPrecondition, "%s: call approval %s expired undecided or unused; call again to ask for a new one", call.GetTool(), id)
		}
		// Approved (or used up by an identical call): decide again.
		ev, err := s.policy.Evaluate(ctx, call)
		if err != nil {
			return nil, nil, err
		}
		d := ev.GetDecision()
		if d.GetVerdict() != contractualv1.Verdict_VERDICT_APPROVAL_REQUIRED || d.GetApprovalId() == "" {
			return ev, nil, nil
		}
		id = d.GetApprovalId()
	}
}
