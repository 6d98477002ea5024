package server

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strings"

	"connectrpc.com/connect"

	"github.com/contractual/contractual/contracts/gen/contractual/v1/contractualv1connect"
	"github.com/contractual/contractual/internal/errs"
	"github.com/contractual/contractual/internal/principal"
)

// TokenFile is the owner token's file name in the data directory.
const TokenFile = "owner.token"

// ownerToken reads the owner token from dir, creating it (mode 0600) on
// first start. Until device pairing lands, this token is how the owner
// authenticates. The server keeps only its hash.
func ownerToken(dir string) (hash [32]byte, path string, err error) {
	path = filepath.Join(dir, TokenFile)
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		raw := make([]byte, 32)
		rand.Read(raw)
		b = []byte(base64.RawURLEncoding.EncodeToString(raw))
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if err != nil {
			return hash, path, errs.Wrap(errs.Internal, err, "creating the owner token")
		}
		_, werr := f.Write(append(b, '\n'))
		if cerr := f.Close(); werr == nil {
			werr = cerr
		}
		if werr != nil {
			return hash, path, errs.Wrap(errs.Internal, werr, "writing the owner token")
		}
	} else if err != nil {
		return hash, path, errs.Wrap(errs.Internal, err, "reading the owner token")
	}
	if fi, err := os.Stat(path); err == nil && fi.Mode().Perm()&0o077 != 0 {
		return hash, path, errs.E(errs.FailedPrecondition, "%s is readable by others (mode %v): chmod 600 it", path, fi.Mode().Perm())
	}
	tok := strings.TrimSpace(string(b))
	if len(tok) < 32 {
		return hash, path, errs.E(errs.FailedPrecondition, "%s holds no usable token", path)
	}
	return sha256.Sum256([]byte(tok)), path, nil
}

// ownerProcedures are the procedures the owner may call over the API: the
// authorization table for the one caller identity there is so far. Every
// other procedure (policy's Evaluate, GetModule and GetVerifier, the
// runner's Execute, audit's Append, the broker's handles) is for services
// only.
var ownerProcedures = map[string]bool{
	contractualv1connect.PolicyServicePublishProcedure:       true,
	contractualv1connect.PolicyServiceListContractsProcedure: true,
	contractualv1connect.PolicyServiceGetContractProcedure:   true,
	contractualv1connect.PolicyServiceApproveProcedure:       true,
	contractualv1connect.PolicyServiceRejectProcedure:        true,
	contractualv1connect.PolicyServiceRevokeProcedure:        true,
	contractualv1connect.ToolServiceInvokeProcedure:          true,
	contractualv1connect.AuditServiceTailProcedure:           true,
	contractualv1connect.AuditServiceVerifyProcedure:         true,
	contractualv1connect.BrokerServicePutSecretProcedure:     true,
	contractualv1connect.BrokerServiceListSecretsProcedure:   true,
	contractualv1connect.BrokerServiceDeleteSecretProcedure:  true,
	contractualv1connect.BrokerServiceRotateKeyProcedure:     true,
	// Deciding pairing requests and revoking devices: pairing itself checks
	// that the caller is a paired device (the bootstrap token is not one).
	contractualv1connect.PairingServiceApprovePairingProcedure:      true,
	contractualv1connect.PairingServiceRejectPairingProcedure:       true,
	contractualv1connect.PairingServiceListPairingRequestsProcedure: true,
	contractualv1connect.PairingServiceListDevicesProcedure:         true,
	contractualv1connect.PairingServiceRevokeDeviceProcedure:        true,
}

// openProcedures need no token: they are how a device gets one. Pairing
// rate-limits them and checks every step.
var openProcedures = map[string]bool{
	contractualv1connect.PairingServiceBeginPairingProcedure:         true,
	contractualv1connect.PairingServiceApproveWithSetupCodeProcedure: true,
	contractualv1connect.PairingServiceCompletePairingProcedure:      true,
}

// Authenticator checks a device token; source names where the attempt came
// from, for rate-limiting failures.
type Authenticator interface {
	Authenticate(ctx context.Context, token, source string) (string, error)
}

// authInterceptor authenticates the bearer token (the bootstrap owner token
// or a paired device's token), authorizes the procedure and puts the
// principal in the context. Tokens travel only in the Authorization header,
// never in a URL.
func authInterceptor(tokenHash [32]byte, devices Authenticator) connect.Interceptor {
	return connect.UnaryInterceptorFunc(func(next connect.UnaryFunc) connect.UnaryFunc {
		return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
			proc := req.Spec().Procedure
			if openProcedures[proc] {
				return next(ctx, req)
			}
			tok, ok := strings.CutPrefix(req.Header().Get("Authorization"), "Bearer ")
			tok = strings.TrimSpace(tok)
			if !ok || tok == "" {
				return nil, errs.E(errs.Unauthenticated, "missing bearer token: send Authorization: Bearer <token> (a paired device's, or the bootstrap one in %s)", TokenFile)
			}
			who, err := authenticate(ctx, tok, tokenHash, devices, source(req))
			if err != nil {
				return nil, err
			}
			if !ownerProcedures[proc] {
				return nil, errs.E(errs.PermissionDenied, "%s is for services, not for the owner", proc)
			}
			return next(principal.With(ctx, who), req)
		}
	})
}

// authenticate returns the principal a token stands for.
func authenticate(ctx context.Context, tok string, ownerHash [32]byte, devices Authenticator, src string) (string, error) {
	h := sha256.Sum256([]byte(tok))
	if subtle.ConstantTimeCompare(h[:], ownerHash[:]) == 1 {
		return principal.Owner, nil
	}
	who, err := devices.Authenticate(ctx, tok, src)
	if err != nil {
		if errs.Is(err, errs.Unauthenticated) {
			return "", errs.E(errs.Unauthenticated, "wrong bearer token")
		}
		return "", err
	}
	return who, nil
}

// source is the caller's IP address, for rate limits.
func source(req connect.AnyRequest) string {
	host, _, err := net.SplitHostPort(req.Peer().Addr)
	if err != nil {
		return req.Peer().Addr
	}
	return host
}
