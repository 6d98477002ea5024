package mesh_test

import (
	"context"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"connectrpc.com/connect"

	contractualv1 "github.com/contractual/contractual/contracts/gen/contractual/v1"
	"github.com/contractual/contractual/contracts/gen/contractual/v1/contractualv1connect"
	"github.com/contractual/contractual/internal/authz"
	"github.com/contractual/contractual/internal/errs"
	"github.com/contractual/contractual/internal/mesh"
	"github.com/contractual/contractual/internal/principal"
)

// whoPolicy is a policy service that answers with the principal each call
// was made for (in the reason or the tool field), so a test sees what
// authz decided.
type whoPolicy struct {
	contractualv1connect.UnimplementedPolicyServiceHandler
	contractualv1connect.UnimplementedPolicyInternalServiceHandler
}

func (whoPolicy) GetContract(ctx context.Context, _ *contractualv1.GetContractRequest) (*contractualv1.GetContractResponse, error) {
	return &contractualv1.GetContractResponse{Record: &contractualv1.ContractRecord{Reason: principal.From(ctx)}}, nil
}

func (whoPolicy) Approve(ctx context.Context, _ *contractualv1.ApproveRequest) (*contractualv1.ApproveResponse, error) {
	return &contractualv1.ApproveResponse{Record: &contractualv1.ContractRecord{DecidedBy: principal.From(ctx)}}, nil
}

func (whoPolicy) Evaluate(ctx context.Context, req *contractualv1.EvaluateRequest) (*contractualv1.EvaluateResponse, error) {
	return &contractualv1.EvaluateResponse{Decision: &contractualv1.Decision{Principal: req.GetPrincipal(), Reason: principal.From(ctx)}}, nil
}

func (whoPolicy) GetModule(ctx context.Context, _ *contractualv1.GetModuleRequest) (*contractualv1.GetModuleResponse, error) {
	return &contractualv1.GetModuleResponse{Module: []byte(principal.From(ctx))}, nil
}

// network serves whoPolicy as policy on a fresh in-memory network.
func network(t *testing.T) *mesh.Memory {
	t.Helper()
	n := mesh.NewMemory(nil)
	t.Cleanup(func() { n.Close(context.Background()) })
	h := mesh.Handlers{}
	opts := mesh.HandlerOptions(slog.New(slog.DiscardHandler))
	h.Add(contractualv1connect.NewPolicyServiceHandler(whoPolicy{}, opts))
	h.Add(contractualv1connect.NewPolicyInternalServiceHandler(whoPolicy{}, opts))
	if err := n.Serve(authz.Policy, h.Mux()); err != nil {
		t.Fatal(err)
	}
	return n
}

// TestAuthorization calls policy as each service, for itself and for
// others, and checks what authz allows and which principal the call gets:
// the caller comes from the connection, the principal from the table.
func TestAuthorization(t *testing.T) {
	n := network(t)
	ctx := context.Background()
	device := principal.With(ctx, "device:phone")
	tests := []struct {
		name   string
		caller authz.Service
		ctx    context.Context
		call   func(context.Context, mesh.Policy) (string, error)
		want   string    // the principal the server saw
		kind   errs.Kind // or the refusal
	}{
		{"runner reads a contract for itself", authz.Runner, ctx, getContract, "service:runner", 0},
		{"the runner's device context is not passed on", authz.Runner, device, getContract, "", errs.PermissionDenied},
		{"gateway reads a contract for its device", authz.Gateway, device, getContract, "device:phone", 0},
		{"gateway approves for its device", authz.Gateway, device, approve, "device:phone", 0},
		{"gateway must name a device to approve", authz.Gateway, ctx, approve, "", errs.PermissionDenied},
		{"gateway may not act for a job", authz.Gateway, principal.With(ctx, "job:nightly"), approve, "", errs.PermissionDenied},
		{"a service principal is never passed on", authz.Gateway, principal.With(ctx, "service:runner"), approve, "", errs.PermissionDenied},
		{"runner may not approve", authz.Runner, ctx, approve, "", errs.PermissionDenied},
		{"broker may not approve for a device", authz.Broker, device, approve, "", errs.PermissionDenied},
		{"runner fetches a module", authz.Runner, ctx, getModule, "service:runner", 0},
		{"gateway may not fetch a module", authz.Gateway, device, getModule, "", errs.PermissionDenied},
		{"audit calls no one", authz.Audit, ctx, getContract, "", errs.PermissionDenied},
		{"gateway evaluates for its device", authz.Gateway, ctx, evaluate("device:phone"), "service:gateway device:phone", 0},
		{"gateway may not evaluate for a job", authz.Gateway, ctx, evaluate("job:nightly"), "", errs.PermissionDenied},
		{"gateway may not evaluate for a malformed principal", authz.Gateway, ctx, evaluate("device:"), "", errs.Invalid},
		{"runner may not evaluate", authz.Runner, ctx, evaluate("device:phone"), "", errs.PermissionDenied},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := mesh.NewClients(n, tt.caller).Policy
			got, err := tt.call(tt.ctx, c)
			switch {
			case tt.kind != 0 && !errs.Is(err, tt.kind):
				t.Fatalf("got %q, %v; want a %v error", got, err, tt.kind)
			case tt.kind == 0 && err != nil:
				t.Fatal(err)
			case got != tt.want:
				t.Fatalf("the server saw %q, want %q", got, tt.want)
			}
		})
	}
}

func getContract(ctx context.Context, c mesh.Policy) (string, error) {
	r, err := c.GetContract(ctx, &contractualv1.GetContractRequest{})
	return r.GetRecord().GetReason(), err
}

func approve(ctx context.Context, c mesh.Policy) (string, error) {
	r, err := c.Approve(ctx, &contractualv1.ApproveRequest{})
	return r.GetRecord().GetDecidedBy(), err
}

func getModule(ctx context.Context, c mesh.Policy) (string, error) {
	r, err := c.GetModule(ctx, &contractualv1.GetModuleRequest{})
	return string(r.GetModule()), err
}

func evaluate(who string) func(context.Context, mesh.Policy) (string, error) {
	return func(ctx context.Context, c mesh.Policy) (string, error) {
		r, err := c.Evaluate(ctx, &contractualv1.EvaluateRequest{Principal: who})
		if err != nil {
			return "", err
		}
		return r.GetDecision().GetReason() + " " + r.GetDecision().GetPrincipal(), nil
	}
}

// TestForgedHeaders: what a caller sends cannot make it someone else — not
// a header naming a principal on its own call, not a device token.
func TestForgedHeaders(t *testing.T) {
	n := network(t)
	hc, url := n.Client(authz.Runner, authz.Policy)
	for name, h := range map[string]http.Header{
		"on-behalf-of on an own call": {authz.HeaderOnBehalfOf: {"device:phone"}},
		"a device token":              {"Authorization": {"Bearer some-device-token"}},
	} {
		t.Run(name, func(t *testing.T) {
			// A raw client: no mesh interceptors to tidy the headers up.
			c := contractualv1connect.NewPolicyServiceClient(hc, url)
			ctx, call := connect.NewClientContext(context.Background())
			for k, v := range h {
				call.RequestHeader()[k] = v
			}
			_, err := c.GetContract(ctx, &contractualv1.GetContractRequest{})
			if connect.CodeOf(err) != connect.CodePermissionDenied {
				t.Fatalf("got %v, want permission_denied", err)
			}
		})
	}
}

// TestNoPeerNoCall: a handler reached without the transport's identity
// (mounted outside the mesh) refuses every call.
func TestNoPeerNoCall(t *testing.T) {
	h := mesh.Handlers{}
	h.Add(contractualv1connect.NewPolicyServiceHandler(whoPolicy{}, mesh.HandlerOptions(slog.New(slog.DiscardHandler))))
	srv := newServer(t, h.Mux())
	c := contractualv1connect.NewPolicyServiceClient(srv.Client(), srv.URL)
	_, err := c.GetContract(context.Background(), &contractualv1.GetContractRequest{})
	if connect.CodeOf(err) != connect.CodeUnauthenticated || !strings.Contains(err.Error(), "no verified caller") {
		t.Fatalf("got %v, want unauthenticated", err)
	}
}

// TestNotServed: a service that does not serve on the network is
// unavailable, and a closed network serves no one.
func TestNotServed(t *testing.T) {
	n := network(t)
	if _, err := mesh.NewClients(n, authz.Gateway).Runner.Execute(context.Background(), &contractualv1.ExecuteRequest{}); !errs.Is(err, errs.Unavailable) {
		t.Fatalf("calling a service that is not there: %v", err)
	}
	if err := n.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if _, err := getContract(context.Background(), mesh.NewClients(n, authz.Runner).Policy); !errs.Is(err, errs.Unavailable) {
		t.Fatalf("calling over a closed network: %v", err)
	}
	if err := n.Serve(authz.Runner, http.NotFoundHandler()); !errs.Is(err, errs.Unavailable) {
		t.Fatalf("serving on a closed network: %v", err)
	}
}

func newServer(t *testing.T, h http.Handler) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return srv
}

type callerKey struct{}

// blockingPolicy's GetContract reports whether the caller's context value
// crossed, then waits for its context to end.
type blockingPolicy struct {
	whoPolicy
	saw     chan any
	stopped chan error
}

func (p blockingPolicy) GetContract(ctx context.Context, _ *contractualv1.GetContractRequest) (*contractualv1.GetContractResponse, error) {
	p.saw <- ctx.Value(callerKey{})
	<-ctx.Done()
	p.stopped <- ctx.Err()
	return nil, ctx.Err()
}

// TestMemoryContext: a handler on the in-memory network runs in a context
// of its own — no value of the caller's crosses — that ends when the
// caller's does.
func TestMemoryContext(t *testing.T) {
	n := mesh.NewMemory(nil)
	t.Cleanup(func() { n.Close(context.Background()) })
	p := blockingPolicy{saw: make(chan any, 1), stopped: make(chan error, 1)}
	h := mesh.Handlers{}
	h.Add(contractualv1connect.NewPolicyServiceHandler(p, mesh.HandlerOptions(slog.New(slog.DiscardHandler))))
	if err := n.Serve(authz.Policy, h.Mux()); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.WithValue(context.Background(), callerKey{}, "the caller's secret"))
	done := make(chan error, 1)
	go func() {
		_, err := getContract(ctx, mesh.NewClients(n, authz.Runner).Policy)
		done <- err
	}()
	if v := <-p.saw; v != nil {
		t.Fatalf("the handler saw the caller's context value %v", v)
	}
	cancel()
	if err := <-p.stopped; err == nil {
		t.Fatal("the handler's context did not end with the caller's")
	}
	if err := <-done; !errs.Is(err, errs.Unavailable) {
		t.Fatalf("the canceled call: %v", err)
	}
}
