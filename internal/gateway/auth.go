package gateway

import (
	"context"
	"net/http"
	"strings"

	"connectrpc.com/connect"

	"github.com/contractual/contractual/contracts/gen/contractual/v1/contractualv1connect"
	"github.com/contractual/contractual/internal/errs"
	"github.com/contractual/contractual/internal/pairing"
	"github.com/contractual/contractual/internal/principal"
	"github.com/contractual/contractual/internal/tailnet"
)

// openProcedures need no token: they are how a device gets one. Pairing
// rate-limits them per source and checks every step.
var openProcedures = map[string]bool{
	contractualv1connect.PairingServiceBeginPairingProcedure:         true,
	contractualv1connect.PairingServiceApproveWithSetupCodeProcedure: true,
	contractualv1connect.PairingServiceCompletePairingProcedure:      true,
}

// publicProcedures are the procedures the gateway routes: open ones and
// the ones pairing's authorization table lets devices call.
func publicProcedures() []string {
	out := pairing.DeviceProcedures()
	for p := range openProcedures {
		out = append(out, p)
	}
	return out
}

// Authenticator checks a device token; source names where the attempt came
// from, for rate-limiting failures.
type Authenticator interface {
	Authenticate(ctx context.Context, token, source string) (pairing.Identity, error)
}

// authInterceptor authenticates the bearer token of a paired device,
// authorizes the procedure for the device's scopes (pairing.Authorize, the
// one table the Control UI uses too) and puts the principal and the
// identity in the context. Tokens travel only in the Authorization header,
// never in a URL. The gate has already refused requests without a valid
// token, before their bodies were read; this is the second layer.
func authInterceptor(devices Authenticator) connect.Interceptor {
	return authInterceptorOf{devices}
}

// authInterceptorOf authorizes unary and streaming calls alike: a stream
// (SessionService's Send and WatchSession) is no way around the scopes.
type authInterceptorOf struct{ devices Authenticator }

func (a authInterceptorOf) WrapUnary(next connect.UnaryFunc) connect.UnaryFunc {
	return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
		ctx, err := a.authorize(ctx, req.Spec().Procedure, req.Header())
		if err != nil {
			return nil, err
		}
		return next(ctx, req)
	}
}

func (authInterceptorOf) WrapStreamingClient(next connect.StreamingClientFunc) connect.StreamingClientFunc {
	return next
}

func (a authInterceptorOf) WrapStreamingHandler(next connect.StreamingHandlerFunc) connect.StreamingHandlerFunc {
	return func(ctx context.Context, conn connect.StreamingHandlerConn) error {
		ctx, err := a.authorize(ctx, conn.Spec().Procedure, conn.RequestHeader())
		if err != nil {
			return err
		}
		return next(ctx, conn)
	}
}

// authorize authenticates and authorizes one call of proc and returns ctx
// with the device's principal and identity.
func (a authInterceptorOf) authorize(ctx context.Context, proc string, h http.Header) (context.Context, error) {
	src := pairing.SourceFrom(ctx) // set by the gate
	if openProcedures[proc] {
		return ctx, nil
	}
	// The gate authenticated the request's token before its body was
	// read, and passed on the identity; without the gate (a handler
	// mounted elsewhere), authenticate here.
	id, ok := pairing.IdentityFrom(ctx)
	if !ok {
		tok, found := strings.CutPrefix(h.Get("Authorization"), "Bearer ")
		tok = strings.TrimSpace(tok)
		if !found || tok == "" {
			return nil, errs.E(errs.Unauthenticated, "missing bearer token: send Authorization: Bearer <token> of a paired device (`contractual pair`)")
		}
		var err error
		if id, err = a.devices.Authenticate(ctx, tok, src); err != nil {
			return nil, err
		}
	}
	if err := pairing.Authorize(id, proc); err != nil {
		return nil, err
	}
	return principal.With(pairing.WithIdentity(ctx, id), id.Principal), nil
}

// tailnetAuth is the one Authenticator of the gate, the API's interceptor
// and the Control UI: pairing checks the token (and that it comes from the
// tailnet node it was paired from), then the app capability capName that
// the tailnet policy grants the request's node, if any, caps the device's
// scopes to those its grants name (tailnet.CapScopes). A grant that is not
// understood refuses the request.
type tailnetAuth struct {
	devices Authenticator
	capName string
}

func (a tailnetAuth) Authenticate(ctx context.Context, token, source string) (pairing.Identity, error) {
	id, err := a.devices.Authenticate(ctx, token, source)
	if err != nil {
		return pairing.Identity{}, err
	}
	names, granted, err := tailnet.CapScopes(tailnet.From(ctx), a.capName)
	switch {
	case err != nil:
		return pairing.Identity{}, err
	case !granted:
		return id, nil
	}
	var grant pairing.Scopes
	if len(names) > 0 {
		if grant, err = pairing.ParseScopes(names...); err != nil {
			return pairing.Identity{}, errs.Wrap(errs.PermissionDenied, err, "tailnet policy: capability %s", a.capName)
		}
	}
	id.Scopes = id.Scopes.Cap(grant)
	return id, nil
}
