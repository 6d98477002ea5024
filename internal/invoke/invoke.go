// Package invoke is the ToolService: one call of one tool, by a principal,
// through policy (decide) and the runner (run under the contract). Policy
// and the runner audit; this package only orchestrates.
package invoke

import (
	"context"
	"encoding/json"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/structpb"

	contractualv1 "github.com/contractual/contractual/contracts/gen/contractual/v1"
	"github.com/contractual/contractual/internal/errs"
	"github.com/contractual/contractual/internal/principal"
)

// Policy decides calls.
type Policy interface {
	Evaluate(context.Context, *contractualv1.EvaluateRequest) (*contractualv1.EvaluateResponse, error)
}

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
	ev, err := s.policy.Evaluate(ctx, &contractualv1.EvaluateRequest{Tool: req.GetTool(), Input: input, Principal: who})
	if err != nil {
		return nil, err
	}
	d := ev.GetDecision()
	switch d.GetVerdict() {
	case contractualv1.Verdict_VERDICT_ALLOW:
	case contractualv1.Verdict_VERDICT_APPROVAL_REQUIRED:
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
