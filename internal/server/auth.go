package server

import (
	"context"
	"strings"

	"connectrpc.com/connect"

	"github.com/contractual/contractual/contracts/gen/contractual/v1/contractualv1connect"
	"github.com/contractual/contractual/internal/errs"
	"github.com/contractual/contractual/internal/pairing"
	"github.com/contractual/contractual/internal/principal"
)

// deviceProcedures are the procedures a paired device may call: the
// gateway's authorization table for device principals. Every other
// procedure (policy's Evaluate, GetModule and GetVerifier, the runner's
// Execute, audit's Append, the broker's handles) is for services only and
// is not even routed by the gateway.
var deviceProcedures = map[string]bool{
	contractualv1connect.PolicyServicePublishProcedure:              true,
	contractualv1connect.PolicyServiceListContractsProcedure:        true,
	contractualv1connect.PolicyServiceGetContractProcedure:          true,
	contractualv1connect.PolicyServiceApproveProcedure:              true,
	contractualv1connect.PolicyServiceRejectProcedure:               true,
	contractualv1connect.PolicyServiceRevokeProcedure:               true,
	contractualv1connect.ToolServiceInvokeProcedure:                 true,
	contractualv1connect.AuditServiceTailProcedure:                  true,
	contractualv1connect.AuditServiceVerifyProcedure:                true,
	contractualv1connect.AuditServiceLatestCheckpointProcedure:      true,
	contractualv1connect.AuditServiceEntriesProcedure:               true,
	contractualv1connect.AuditServiceCheckConsistencyProcedure:      true,
	contractualv1connect.BrokerServicePutSecretProcedure:            true,
	contractualv1connect.BrokerServiceListSecretsProcedure:          true,
	contractualv1connect.BrokerServiceDeleteSecretProcedure:         true,
	contractualv1connect.BrokerServiceRotateKeyProcedure:            true,
	contractualv1connect.PairingServiceApprovePairingProcedure:      true,
	contractualv1connect.PairingServiceRejectPairingProcedure:       true,
	contractualv1connect.PairingServiceListPairingRequestsProcedure: true,
	contractualv1connect.PairingServiceListDevicesProcedure:         true,
	contractualv1connect.PairingServiceRevokeDeviceProcedure:        true,
}

// openProcedures need no token: they are how a device gets one. Pairing
// rate-limits them per source and checks every step.
var openProcedures = map[string]bool{
	contractualv1connect.PairingServiceBeginPairingProcedure:         true,
	contractualv1connect.PairingServiceApproveWithSetupCodeProcedure: true,
	contractualv1connect.PairingServiceCompletePairingProcedure:      true,
}

// publicProcedures are the procedures the gateway routes: open ones and
// device ones.
func publicProcedures() []string {
	var out []string
	for _, m := range []map[string]bool{deviceProcedures, openProcedures} {
		for p := range m {
			out = append(out, p)
		}
	}
	return out
}

// Authenticator checks a device token; source names where the attempt came
// from, for rate-limiting failures.
type Authenticator interface {
	Authenticate(ctx context.Context, token, source string) (string, error)
}

// authInterceptor authenticates the bearer token of a paired device,
// authorizes the procedure and puts the principal in the context. Tokens
// travel only in the Authorization header, never in a URL. The gate has
// already refused requests without a valid token, before their bodies were
// read; this is the second layer.
func authInterceptor(devices Authenticator) connect.Interceptor {
	return connect.UnaryInterceptorFunc(func(next connect.UnaryFunc) connect.UnaryFunc {
		return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
			proc := req.Spec().Procedure
			src := pairing.SourceFrom(ctx) // set by the gate
			if openProcedures[proc] {
				return next(ctx, req)
			}
			tok, ok := strings.CutPrefix(req.Header().Get("Authorization"), "Bearer ")
			tok = strings.TrimSpace(tok)
			if !ok || tok == "" {
				return nil, errs.E(errs.Unauthenticated, "missing bearer token: send Authorization: Bearer <token> of a paired device (`contractual pair`)")
			}
			who, err := devices.Authenticate(ctx, tok, src)
			if err != nil {
				return nil, err
			}
			if !deviceProcedures[proc] {
				return nil, errs.E(errs.PermissionDenied, "%s is for services, not for devices", proc)
			}
			return next(principal.With(ctx, who), req)
		}
	})
}
