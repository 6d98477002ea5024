// Package authz decides which of Contractual's services may call which
// procedure of another, from one table, and for whom.
//
// A server learns who called from the transport, never from the request:
// in the compose deployment from the verified chain of the caller's mTLS
// certificate (its SPIFFE ID, spiffe://contractual.internal/<service>),
// in the all-in-one process from the in-memory connection the caller was
// given (package mesh puts the caller in the context with WithPeer). The
// Interceptor then checks the caller against the table and sets the call's
// principal: the calling service itself, or, for the procedures devices
// use through the gateway, the device the gateway names in the
// Contractual-On-Behalf-Of header, which only a service allowed to act
// for that kind of principal may name (MayActFor).
package authz

import (
	"context"
	"slices"
	"strings"

	"connectrpc.com/connect"

	"github.com/contractual/contractual/contracts/gen/contractual/v1/contractualv1connect"
	"github.com/contractual/contractual/internal/errs"
	"github.com/contractual/contractual/internal/principal"
	"github.com/contractual/contractual/internal/tailnet"
)

// TrustDomain is the SPIFFE trust domain of every service identity.
const TrustDomain = "contractual.internal"

// Service names one of Contractual's services, the identity a certificate
// (or an in-memory connection) carries.
type Service string

// The services.
const (
	Gateway   Service = "gateway"
	Engine    Service = "engine"
	Policy    Service = "policy"
	Runner    Service = "runner"
	Broker    Service = "broker"
	Scheduler Service = "scheduler"
	Audit     Service = "audit"
	Worker    Service = "worker"
)

// Services lists every service, in the design's order.
var Services = []Service{Gateway, Engine, Policy, Runner, Broker, Scheduler, Audit, Worker}

// ID returns s's SPIFFE ID, spiffe://contractual.internal/<s>.
func (s Service) ID() string { return "spiffe://" + TrustDomain + "/" + string(s) }

// Principal returns the principal a call made by s on its own behalf has,
// "service:<s>".
func (s Service) Principal() string { return principal.Service(string(s)) }

// ParseService returns the service a SPIFFE ID names, if it is one of
// Services in TrustDomain.
func ParseService(id string) (Service, bool) {
	name, ok := strings.CutPrefix(id, "spiffe://"+TrustDomain+"/")
	s := Service(name)
	return s, ok && slices.Contains(Services, s)
}

// HeaderOnBehalfOf names the principal a service calls for: the device
// whose request the gateway passes on.
const HeaderOnBehalfOf = "Contractual-On-Behalf-Of"

// devicesReach are the services whose procedures devices call through the
// gateway: each call names its device (HeaderOnBehalfOf). The others
// (PolicyInternalService, JobInternalService, BrokerInternalService,
// AuditInternalService, RunnerService, WorkerInternalService) are for
// services only and name no one.
var devicesReach = []string{
	contractualv1connect.PolicyServiceName,
	contractualv1connect.JobServiceName,
	contractualv1connect.BrokerServiceName,
	contractualv1connect.AuditServiceName,
	contractualv1connect.JobRunServiceName,
	contractualv1connect.SessionServiceName,
}

// forDevices reports whether procedure belongs to a service devices reach.
func forDevices(procedure string) bool {
	svc, _, _ := strings.Cut(strings.TrimPrefix(procedure, "/"), "/")
	return slices.Contains(devicesReach, svc)
}

// actsFor says which kinds of principal a service may act for: the gateway
// for devices, the engine for chat sessions and for the jobs whose agent
// steps it runs (the worker asks it to, for the job), the scheduler and
// the worker for jobs.
var actsFor = map[Service][]string{
	Gateway:   {"device:"},
	Engine:    {"session:", "job:"},
	Scheduler: {"job:"},
	Worker:    {"job:"},
}

// MayActFor reports whether the calling service (the peer in ctx) may make
// a call for principal p, as the gateway does for a device: errs.
// PermissionDenied if not, errs.Unauthenticated without a peer.
func MayActFor(ctx context.Context, p string) error {
	peer, ok := PeerFrom(ctx)
	if !ok {
		return errs.E(errs.Unauthenticated, "no caller identity")
	}
	if !principal.Valid(p) {
		return errs.E(errs.Invalid, "%q is not a principal (device:<id>, session:<id> or job:<id>)", clip(p))
	}
	for _, kind := range actsFor[peer] {
		if strings.HasPrefix(p, kind) {
			return nil
		}
	}
	return errs.E(errs.PermissionDenied, "%s may not act for %s", peer, clip(p))
}

type peerKey struct{}

// WithPeer returns ctx carrying the calling service. Only transports call
// it: the mTLS server with the verified certificate's identity, the
// in-memory network with the identity its caller was wired with.
func WithPeer(ctx context.Context, s Service) context.Context {
	return context.WithValue(ctx, peerKey{}, s)
}

// PeerFrom returns the calling service ctx carries.
func PeerFrom(ctx context.Context) (Service, bool) {
	s, ok := ctx.Value(peerKey{}).(Service)
	return s, ok
}

// Interceptor authorizes every call a service's server receives: the
// caller (WithPeer, from the transport) must have procedure in its row of
// the table; a call carries no device token (those are for the gateway);
// and a device-facing procedure is called for a principal the caller may
// act for (MayActFor), which becomes the call's principal. Any other call
// is the caller's own: its principal is "service:<caller>". A request
// that names a principal in a field (EvaluateRequest.principal) must name
// one the caller may act for, too.
//
// On a client it passes the context's principal, if it is a device, a
// session or a job, on in HeaderOnBehalfOf to device-facing procedures,
// and the context's tailnet peer, if any, in tailnet.Header to every
// procedure; a server puts the peer it receives in the call's context.
func Interceptor() connect.Interceptor { return interceptor{} }

type interceptor struct{}

func (interceptor) WrapUnary(next connect.UnaryFunc) connect.UnaryFunc {
	return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
		proc := req.Spec().Procedure
		if req.Spec().IsClient {
			// Only a principal the service acts for is passed on, never
			// a service's: the runner's calls while it serves the
			// gateway are its own.
			if p := principal.From(ctx); forDevices(proc) && principal.Valid(p) {
				req.Header().Set(HeaderOnBehalfOf, p)
			}
			// The tailnet node of the device request this call serves
			// travels on every call, for the audit events it causes.
			if peer := tailnet.From(ctx); peer != nil {
				req.Header().Set(tailnet.Header, tailnet.Encode(peer))
			}
			return next(ctx, req)
		}
		ctx, err := authorize(ctx, proc, req.Header())
		if err != nil {
			return nil, err
		}
		// A request that names its principal (Evaluate's) is a call for
		// that principal, whatever the header says.
		if m, ok := req.Any().(interface{ GetPrincipal() string }); ok && m.GetPrincipal() != "" {
			if err := MayActFor(ctx, m.GetPrincipal()); err != nil {
				return nil, err
			}
		}
		return next(ctx, req)
	}
}

func (interceptor) WrapStreamingClient(next connect.StreamingClientFunc) connect.StreamingClientFunc {
	return func(ctx context.Context, spec connect.Spec) connect.StreamingClientConn {
		conn := next(ctx, spec)
		if p := principal.From(ctx); forDevices(spec.Procedure) && principal.Valid(p) {
			conn.RequestHeader().Set(HeaderOnBehalfOf, p)
		}
		if peer := tailnet.From(ctx); peer != nil {
			conn.RequestHeader().Set(tailnet.Header, tailnet.Encode(peer))
		}
		return conn
	}
}

func (interceptor) WrapStreamingHandler(next connect.StreamingHandlerFunc) connect.StreamingHandlerFunc {
	return func(ctx context.Context, conn connect.StreamingHandlerConn) error {
		ctx, err := authorize(ctx, conn.Spec().Procedure, conn.RequestHeader())
		if err != nil {
			return err
		}
		return next(ctx, conn)
	}
}

// header is what authorize reads of a request's headers.
type header interface{ Get(string) string }

// authorize checks one call against the table and returns ctx with the
// call's principal.
func authorize(ctx context.Context, proc string, h header) (context.Context, error) {
	peer, ok := PeerFrom(ctx)
	if !ok {
		return nil, errs.E(errs.Unauthenticated, "%s: no verified caller: services are called over mutual TLS with a service certificate", proc)
	}
	if h.Get("Authorization") != "" {
		return nil, errs.E(errs.PermissionDenied, "%s: device tokens are not accepted on a service port; devices call the gateway", proc)
	}
	if v := h.Get(tailnet.Header); v != "" {
		tp, err := tailnet.Decode(v)
		if err != nil {
			return nil, errs.Wrap(errs.Invalid, err, "%s", proc)
		}
		ctx = tailnet.With(ctx, tp)
	}
	on := h.Get(HeaderOnBehalfOf)
	switch how := table[peer][proc]; {
	case how == 0:
		return nil, errs.E(errs.PermissionDenied, "%s may not call %s", peer, proc)
	case on == "" && how&own != 0:
		return principal.With(ctx, peer.Principal()), nil
	case on == "":
		return nil, errs.E(errs.PermissionDenied, "%s calls %s for a device, and %s names none", peer, proc, HeaderOnBehalfOf)
	case how&forOthers == 0:
		return nil, errs.E(errs.PermissionDenied, "%s calls %s for itself: %s must not be set", peer, proc, HeaderOnBehalfOf)
	}
	if err := MayActFor(ctx, on); err != nil {
		return nil, err
	}
	return principal.With(ctx, on), nil
}

// clip shortens an untrusted string for an error message.
func clip(s string) string {
	if len(s) > 80 {
		return strings.ToValidUTF8(s[:80], "") + "…"
	}
	return s
}
