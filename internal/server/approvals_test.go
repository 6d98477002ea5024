package server_test

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/structpb"

	contractualv1 "github.com/contractual/contractual/contracts/gen/contractual/v1"
	"github.com/contractual/contractual/contracts/gen/contractual/v1/contractualv1connect"
	toolservice "github.com/contractual/contractual/internal/invoke"
	"github.com/contractual/contractual/internal/server"
)

// highRiskGreeter is tools/greeter's contract with its one tool marked
// high-risk: each call needs a one-shot approval.
func highRiskGreeter(t *testing.T) string {
	t.Helper()
	src := readTool(t, "greeter", "contract.yaml")
	if !strings.Contains(src, "risk: low") {
		t.Fatal("greeter's contract no longer says risk: low")
	}
	return strings.Replace(src, "risk: low", "risk: high", 1)
}

// pairAgent pairs a device with scope invoke only, approved by the owner
// device with token tok, and returns its token.
func pairAgent(t *testing.T, s *server.Server, tok, name string) string {
	t.Helper()
	d := beginScopes(t, s.URL, name, "invoke")
	pc := contractualv1connect.NewPairingServiceClient(http.DefaultClient, s.URL, connect.WithInterceptors(bearer(tok)))
	if _, err := pc.ApprovePairing(context.Background(), &contractualv1.ApprovePairingRequest{Code: d.begin.GetCode()}); err != nil {
		t.Fatal(err)
	}
	return d.complete(t)
}

// greet is an Invoke of greeter.greet for name; wait, if set, waits.
func greet(name string, wait *durationpb.Duration) *contractualv1.InvokeRequest {
	in, _ := structpb.NewValue(map[string]any{"name": name})
	return &contractualv1.InvokeRequest{Tool: "greeter.greet", Input: in, Wait: wait}
}

// waitGreet calls like `contractual invoke --wait`: Invoke with the longest
// wait, again for as long as the approval is pending. It returns the
// output's message, or the error.
func waitGreet(tools contractualv1connect.ToolServiceClient, name string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	for {
		resp, err := tools.Invoke(ctx, greet(name, durationpb.New(toolservice.MaxWait)))
		if err != nil {
			return "", err
		}
		if resp.GetPendingApproval() == nil {
			return resp.GetOutput().GetStructValue().GetFields()["message"].GetStringValue(), nil
		}
	}
}

// TestCallApproval is the one-shot approval flow over real HTTP, with a
// Connect and a gRPC client: an agent device (scope invoke) calls a
// high-risk tool and is refused, naming the approval and its Control UI
// page; waiting, it gets the result once the owner approves from another
// device; the approval is used up, so the same call needs a new one; a
// denial reaches the waiting caller as PermissionDenied; the agent can
// neither see nor approve approvals, and the owner cannot approve its own
// call.
func TestCallApproval(t *testing.T) {
	h2c := &http.Client{Transport: &http.Transport{Protocols: func() *http.Protocols {
		p := new(http.Protocols)
		p.SetUnencryptedHTTP2(true)
		return p
	}()}}
	for _, tt := range []struct {
		name   string
		client *http.Client
		opts   []connect.ClientOption
	}{
		{"connect", http.DefaultClient, nil},
		{"grpc", h2c, []connect.ClientOption{connect.WithGRPC()}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			s, _ := start(t)
			tok, _ := owner(t, s)
			asOwner := connect.WithInterceptors(bearer(tok))
			pol := contractualv1connect.NewPolicyServiceClient(tt.client, s.URL, append(tt.opts, asOwner)...)
			publishTool(t, pol, "greeter", highRiskGreeter(t))
			agentTok := pairAgent(t, s, tok, "agent")
			tools := contractualv1connect.NewToolServiceClient(tt.client, s.URL, append(tt.opts, connect.WithInterceptors(bearer(agentTok)))...)
			ctx := context.Background()

			// Without wait: refused, naming the pending approval.
			_, err := tools.Invoke(ctx, greet("approvals", nil))
			if connect.CodeOf(err) != connect.CodePermissionDenied {
				t.Fatalf("a high-risk call without approval: %v", err)
			}
			list, lerr := pol.ListCallApprovals(ctx, &contractualv1.ListCallApprovalsRequest{})
			if lerr != nil || len(list.GetApprovals()) != 1 {
				t.Fatalf("pending approvals: %v, %v", list, lerr)
			}
			a := list.GetApprovals()[0]
			if !strings.Contains(err.Error(), toolservice.ApprovalPath(a.GetId())) {
				t.Errorf("the refusal does not say where to approve %s: %v", a.GetId(), err)
			}
			if a.GetTool() != "greeter.greet" || string(a.GetCanonicalInput()) != `{"name":"approvals"}` || !strings.HasPrefix(a.GetPrincipal(), "device:") {
				t.Errorf("pending approval %v", a)
			}
			// A zero wait answers at once with the same pending approval.
			resp, err := tools.Invoke(ctx, greet("approvals", durationpb.New(0)))
			if err != nil || resp.GetPendingApproval().GetId() != a.GetId() || resp.GetOutput() != nil {
				t.Fatalf("zero wait: %v, %v", resp, err)
			}

			// The agent may not see or decide approvals.
			asAgent := contractualv1connect.NewPolicyServiceClient(tt.client, s.URL, append(tt.opts, connect.WithInterceptors(bearer(agentTok)))...)
			if _, err := asAgent.ListCallApprovals(ctx, &contractualv1.ListCallApprovalsRequest{}); connect.CodeOf(err) != connect.CodePermissionDenied {
				t.Errorf("the agent lists approvals: %v", err)
			}
			if _, err := asAgent.ApproveCall(ctx, &contractualv1.ApproveCallRequest{Id: a.GetId()}); connect.CodeOf(err) != connect.CodePermissionDenied {
				t.Errorf("the agent approves its own call: %v", err)
			}

			// The waiting caller gets the result once the owner approves.
			type result struct {
				msg string
				err error
			}
			done := make(chan result, 1)
			go func() {
				msg, err := waitGreet(tools, "approvals")
				done <- result{msg, err}
			}()
			if _, err := pol.ApproveCall(ctx, &contractualv1.ApproveCallRequest{Id: a.GetId(), Reason: "go ahead"}); err != nil {
				t.Fatal(err)
			}
			if r := <-done; r.err != nil || r.msg != "Hello, approvals!" {
				t.Fatalf("the waiting caller got %q, %v", r.msg, r.err)
			}
			got, err := pol.GetCallApproval(ctx, &contractualv1.GetCallApprovalRequest{Id: a.GetId()})
			if err != nil || got.GetApproval().GetState() != contractualv1.CallApprovalState_CALL_APPROVAL_STATE_USED {
				t.Fatalf("after the call: %v, %v", got, err)
			}

			// Used up: the same call again needs a new approval; denied,
			// the waiting caller is refused.
			resp, err = tools.Invoke(ctx, greet("approvals", durationpb.New(0)))
			next := resp.GetPendingApproval().GetId()
			if err != nil || next == "" || next == a.GetId() {
				t.Fatalf("the same call after use: %v, %v", resp, err)
			}
			go func() {
				msg, err := waitGreet(tools, "approvals")
				done <- result{msg, err}
			}()
			if _, err := pol.DenyCall(ctx, &contractualv1.DenyCallRequest{Id: next, Reason: "once was enough"}); err != nil {
				t.Fatal(err)
			}
			if r := <-done; connect.CodeOf(r.err) != connect.CodePermissionDenied || !strings.Contains(r.err.Error(), "once was enough") {
				t.Fatalf("the caller of a denied call got %q, %v", r.msg, r.err)
			}

			// The owner's own call is not the owner's to approve.
			ownTools := contractualv1connect.NewToolServiceClient(tt.client, s.URL, append(tt.opts, asOwner)...)
			resp, err = ownTools.Invoke(ctx, greet("me", durationpb.New(0)))
			if err != nil || resp.GetPendingApproval() == nil {
				t.Fatalf("the owner's call: %v, %v", resp, err)
			}
			_, err = pol.ApproveCall(ctx, &contractualv1.ApproveCallRequest{Id: resp.GetPendingApproval().GetId()})
			if connect.CodeOf(err) != connect.CodePermissionDenied || !strings.Contains(err.Error(), "own channel") {
				t.Fatalf("self-approval: %v", err)
			}
		})
	}
}

// TestCallApprovalGiveUp checks that a caller that gives up waiting uses
// nothing up: the approval granted after it left is still there for the
// same call.
func TestCallApprovalGiveUp(t *testing.T) {
	s, _ := start(t)
	tok, _ := owner(t, s)
	pol := contractualv1connect.NewPolicyServiceClient(http.DefaultClient, s.URL, connect.WithInterceptors(bearer(tok)))
	publishTool(t, pol, "greeter", highRiskGreeter(t))
	tools := contractualv1connect.NewToolServiceClient(http.DefaultClient, s.URL, connect.WithInterceptors(bearer(pairAgent(t, s, tok, "agent"))))
	resp, err := tools.Invoke(context.Background(), greet("later", durationpb.New(0)))
	id := resp.GetPendingApproval().GetId()
	if err != nil || id == "" {
		t.Fatalf("asking: %v, %v", resp, err)
	}
	// It waits, and gives up before anyone approves.
	ctx, cancel := context.WithCancel(context.Background())
	waiting := make(chan error, 1)
	go func() {
		_, err := tools.Invoke(ctx, greet("later", durationpb.New(toolservice.MaxWait)))
		waiting <- err
	}()
	cancel()
	if err := <-waiting; connect.CodeOf(err) != connect.CodeCanceled {
		t.Fatalf("the caller that gave up: %v", err)
	}
	if _, err := pol.ApproveCall(context.Background(), &contractualv1.ApproveCallRequest{Id: id}); err != nil {
		t.Fatal(err)
	}
	got, err := pol.GetCallApproval(context.Background(), &contractualv1.GetCallApprovalRequest{Id: id})
	if err != nil || got.GetApproval().GetState() != contractualv1.CallApprovalState_CALL_APPROVAL_STATE_APPROVED {
		t.Fatalf("after the caller gave up: %v, %v", got, err)
	}
	resp, err = tools.Invoke(context.Background(), greet("later", nil))
	if err != nil || resp.GetOutput().GetStructValue().GetFields()["message"].GetStringValue() != "Hello, later!" {
		t.Fatalf("the same call after approval: %v, %v", resp, err)
	}
}
