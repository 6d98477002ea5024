// Package mesh carries the calls between Contractual's services: Connect
// requests handed to the handler in memory in the all-in-one server
// (Memory), or over mutual TLS between containers (TLS). Either way the
// server learns the caller from the transport — the client it was given in
// memory, the verified certificate over TLS — and puts it in the request's
// context for package authz, which every service's handlers run behind
// (HandlerOptions). So the all-in-one server exercises the same
// authorization as the split deployment.
package mesh

import (
	"log/slog"
	"net/http"

	"connectrpc.com/connect"

	"github.com/contractual/contractual/contracts/gen/contractual/v1/contractualv1connect"
	"github.com/contractual/contractual/internal/authz"
	"github.com/contractual/contractual/internal/rpc"
)

// Network connects the services.
type Network interface {
	// Client returns the HTTP client with which service from calls service
	// to, and to's base URL.
	Client(from, to authz.Service) (*http.Client, string)
}

// Handlers are one service's Connect handlers, by path.
type Handlers map[string]http.Handler

// Add adds the handler a generated New…Handler returns.
func (h Handlers) Add(path string, handler http.Handler) { h[path] = handler }

// Mux returns a mux serving hs.
func (h Handlers) Mux() *http.ServeMux {
	mux := http.NewServeMux()
	for p, hh := range h {
		mux.Handle(p, hh)
	}
	return mux
}

// MaxRequestBytes bounds a request between services: a module travels
// in GetModule's answer, never in a request.
const MaxRequestBytes = 4 << 20

// MaxResponseBytes bounds an answer between services (GetModule's
// module, up to the sandbox's 64 MiB).
const MaxResponseBytes = 80 << 20

// HandlerOptions are the options of every service's handlers. Outermost
// first: extra (metrics, say, which so see every answer), errors mapped to
// Connect codes in one place, then authz (the caller, its row of the
// table, the principal), before the handler.
func HandlerOptions(log *slog.Logger, extra ...connect.Interceptor) connect.HandlerOption {
	return connect.WithHandlerOptions(append(rpc.Codecs(),
		connect.WithInterceptors(append(extra, rpc.ErrorInterceptor(log), authz.Interceptor())...),
		connect.WithReadMaxBytes(MaxRequestBytes),
	)...)
}

// ClientOptions are the options of every client between services: the
// principal a call is made for goes in HeaderOnBehalfOf (authz), and a
// remote error comes back as the errs error of its kind, so that a remote
// service fails like a local one.
func ClientOptions(extra ...connect.Interceptor) connect.ClientOption {
	return connect.WithClientOptions(
		connect.WithInterceptors(append([]connect.Interceptor{errorsFromConnect{}, authz.Interceptor()}, extra...)...),
		connect.WithReadMaxBytes(MaxResponseBytes),
		// Nothing between services is compressed: in memory it is pure
		// cost, and on the compose network (one host) nearly so.
		connect.WithAcceptCompression("gzip", nil, nil),
	)
}

// Policy is a client of policy's services: contracts and decisions, and
// jobs (the device-facing JobService, which the gateway passes on and the
// worker reads, and JobInternalService, which the scheduler follows).
type Policy struct {
	contractualv1connect.PolicyServiceClient
	contractualv1connect.PolicyInternalServiceClient
	contractualv1connect.JobServiceClient
	contractualv1connect.JobInternalServiceClient
}

// Broker is a client of both of the broker's services.
type Broker struct {
	contractualv1connect.BrokerServiceClient
	contractualv1connect.BrokerInternalServiceClient
}

// Audit is a client of both of the audit service's services.
type Audit struct {
	contractualv1connect.AuditServiceClient
	contractualv1connect.AuditInternalServiceClient
}

// Worker is a client of both of the worker's services.
type Worker struct {
	contractualv1connect.JobRunServiceClient
	contractualv1connect.WorkerInternalServiceClient
}

// Clients are the clients one service has of the others, over a Network.
type Clients struct {
	Policy Policy
	Broker Broker
	Audit  Audit
	Runner contractualv1connect.RunnerServiceClient
	Worker Worker
	// Scheduler takes the gateway's webhook deliveries.
	Scheduler contractualv1connect.SchedulerInternalServiceClient
	// Engine holds the chat sessions the gateway passes on.
	Engine contractualv1connect.SessionServiceClient
	// EngineInternal runs the agent steps of the worker's runs.
	EngineInternal contractualv1connect.EngineInternalServiceClient
}

// NewClients returns the clients with which service from calls the
// others over n. Only the calls its row of the table allows succeed.
func NewClients(n Network, from authz.Service, extra ...connect.Interceptor) Clients {
	opts := ClientOptions(extra...)
	pc, pu := n.Client(from, authz.Policy)
	bc, bu := n.Client(from, authz.Broker)
	ac, au := n.Client(from, authz.Audit)
	rc, ru := n.Client(from, authz.Runner)
	wc, wu := n.Client(from, authz.Worker)
	sc, su := n.Client(from, authz.Scheduler)
	ec, eu := n.Client(from, authz.Engine)
	return Clients{
		Policy: Policy{
			contractualv1connect.NewPolicyServiceClient(pc, pu, opts),
			contractualv1connect.NewPolicyInternalServiceClient(pc, pu, opts),
			contractualv1connect.NewJobServiceClient(pc, pu, opts),
			contractualv1connect.NewJobInternalServiceClient(pc, pu, opts),
		},
		Broker: Broker{
			contractualv1connect.NewBrokerServiceClient(bc, bu, opts),
			contractualv1connect.NewBrokerInternalServiceClient(bc, bu, opts),
		},
		Audit: Audit{
			contractualv1connect.NewAuditServiceClient(ac, au, opts),
			contractualv1connect.NewAuditInternalServiceClient(ac, au, opts),
		},
		Runner: contractualv1connect.NewRunnerServiceClient(rc, ru, opts),
		Worker: Worker{
			contractualv1connect.NewJobRunServiceClient(wc, wu, opts),
			contractualv1connect.NewWorkerInternalServiceClient(wc, wu, opts),
		},
		Scheduler:      contractualv1connect.NewSchedulerInternalServiceClient(sc, su, opts),
		Engine:         contractualv1connect.NewSessionServiceClient(ec, eu, opts),
		EngineInternal: contractualv1connect.NewEngineInternalServiceClient(ec, eu, opts),
	}
}
