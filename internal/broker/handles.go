package broker

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"time"

	"github.com/tink-crypto/tink-go/v2/keyset"
	"github.com/tink-crypto/tink-go/v2/signature"
	"github.com/tink-crypto/tink-go/v2/tink"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	contractualv1 "github.com/contractual/contractual/contracts/gen/contractual/v1"
	"github.com/contractual/contractual/internal/errs"
	"github.com/contractual/contractual/internal/principal"
	"github.com/contractual/contractual/internal/rpc"
)

// handleBytes is the number of random bytes in a handle.
const handleBytes = 32

// handle is what an issued handle stands for. It lives in memory only.
type handle struct {
	decision *contractualv1.Decision
	secret   string
	audience string
	caller   string
	expires  time.Time
}

// IssueHandle issues a single-use handle for one secret, for the call one
// signed decision allows, for one audience, to the calling runner. The
// decision must verify, allow, and not have expired; its contract must be
// approved and have an HTTP rule for exactly this audience that injects
// this secret; and the secret must exist.
func (s *Service) IssueHandle(ctx context.Context, req *contractualv1.IssueHandleRequest) (*contractualv1.IssueHandleResponse, error) {
	caller := principal.From(ctx)
	if caller != principal.Runner {
		return nil, s.auditRefusal(ctx, event(actionRefused, caller, ""),
			errs.E(errs.PermissionDenied, "%s may not ask for secret handles: only %s may", clip(orNone(caller), 100), principal.Runner))
	}
	now := s.opts.Now()
	d, err := s.verify(ctx, req.GetDecision(), now)
	if err != nil {
		return nil, s.auditRefusal(ctx, event(actionRefused, caller, ""), err)
	}
	ev := decisionEvent(d)
	if err := s.checkGrant(ctx, d, req.GetSecret(), req.GetAudience()); err != nil {
		return nil, s.auditRefusal(ctx, ev, err)
	}
	if err := s.exists(ctx, req.GetSecret()); err != nil {
		return nil, s.auditRefusal(ctx, ev, err)
	}
	h := &handle{
		decision: d,
		secret:   req.GetSecret(),
		audience: req.GetAudience(),
		caller:   caller,
		expires:  minTime(d.GetExpiresAt().AsTime(), now.Add(s.opts.HandleTTL)),
	}
	token, err := s.store(h, now)
	if err != nil {
		return nil, err
	}
	return &contractualv1.IssueHandleResponse{Handle: token, ExpiresAt: timestamppb.New(h.expires)}, nil
}

// RedeemHandle releases the value a handle stands for, once. The handle is
// consumed on first sight, even if a later check fails. The caller must be
// the identity the handle was issued to, the audience the one it was
// issued for, and the handle unexpired. The release is audited before the
// value leaves; if the audit log cannot record it, nothing is released.
func (s *Service) RedeemHandle(ctx context.Context, req *contractualv1.RedeemHandleRequest) (*contractualv1.RedeemHandleResponse, error) {
	caller := principal.From(ctx)
	h := s.take(req.GetHandle())
	if h == nil {
		return nil, s.auditRefusal(ctx, event(actionRelease, caller, ""),
			errs.E(errs.PermissionDenied, "unknown handle: forged, already redeemed, or lost in a broker restart"))
	}
	ev := decisionEvent(h.decision)
	if err := s.checkRedeem(h, caller, req.GetAudience()); err != nil {
		return nil, s.auditRefusal(ctx, ev, err)
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	version, ct, err := latest(ctx, s.db, h.secret)
	if err != nil {
		return nil, s.auditRefusal(ctx, ev, err)
	}
	value, err := s.data.open(h.secret, version, ct)
	if err != nil {
		return nil, s.auditRefusal(ctx, ev, err)
	}
	ev.Detail = fmt.Sprintf("secret %s version %d released to %s for audience %s", h.secret, version, h.caller, h.audience)
	if err := s.audit(ctx, ev); err != nil {
		clear(value)
		return nil, err
	}
	// The release is recorded; a failure to note the last use must not
	// undo it.
	_, _ = s.db.ExecContext(ctx, `INSERT INTO usage (name, last_used_at) VALUES (?, ?)
		ON CONFLICT(name) DO UPDATE SET last_used_at = excluded.last_used_at`, h.secret, s.opts.Now().UnixNano())
	return &contractualv1.RedeemHandleResponse{Value: value, Version: version}, nil
}

// checkRedeem checks a taken handle against its redeemer.
func (s *Service) checkRedeem(h *handle, caller, audience string) error {
	switch {
	case caller != h.caller:
		return errs.E(errs.PermissionDenied, "the handle for secret %s was issued to %s, not %s", h.secret, h.caller, clip(orNone(caller), 100))
	case audience != h.audience:
		return errs.E(errs.PermissionDenied, "the handle for secret %s is for audience %s, not %s", h.secret, h.audience, clip(audience, 200))
	case !s.opts.Now().Before(h.expires):
		return errs.E(errs.PermissionDenied, "the handle for secret %s expired at %s", h.secret, h.expires.UTC().Format(time.RFC3339Nano))
	}
	return nil
}

// verify checks a signed decision's signature with policy's public keyset,
// its verdict and its expiry. The broker is not given the call's input, so
// it does not recompute the input hash: it binds the handle to the hash
// the signed decision holds instead.
func (s *Service) verify(ctx context.Context, sd *contractualv1.SignedDecision, now time.Time) (*contractualv1.Decision, error) {
	if sd == nil || len(sd.GetDecision()) == 0 {
		return nil, errs.E(errs.PermissionDenied, "no decision")
	}
	v, err := s.decisionVerifier(ctx)
	if err != nil {
		return nil, err
	}
	if err := v.Verify(sd.GetSignature(), sd.GetDecision()); err != nil {
		return nil, errs.E(errs.PermissionDenied, "the decision's signature does not verify with policy's key")
	}
	d := new(contractualv1.Decision)
	if err := proto.Unmarshal(sd.GetDecision(), d); err != nil {
		return nil, errs.E(errs.PermissionDenied, "the signed decision does not decode: %v", err)
	}
	switch {
	case d.GetVerdict() != contractualv1.Verdict_VERDICT_ALLOW:
		return nil, errs.E(errs.PermissionDenied, "decision %s is %s, not allow", d.GetId(), d.GetVerdict())
	case d.GetExpiresAt() == nil || !now.Before(d.GetExpiresAt().AsTime()):
		return nil, errs.E(errs.PermissionDenied, "decision %s has expired", d.GetId())
	case d.GetId() == "" || d.GetInputHash() == "" || d.GetContractDigest() == "":
		return nil, errs.E(errs.PermissionDenied, "decision %q lacks an id, input hash or contract digest", d.GetId())
	}
	return d, nil
}

// decisionVerifier returns policy's decision verifier, fetching it on
// first use. Policy's signing key does not rotate yet, so it is cached for
// the broker's life.
func (s *Service) decisionVerifier(ctx context.Context) (tink.Verifier, error) {
	s.verifierMu.Lock()
	defer s.verifierMu.Unlock()
	if s.verifier != nil {
		return s.verifier, nil
	}
	resp, err := s.policy.GetVerifier(ctx, &contractualv1.GetVerifierRequest{})
	if err != nil {
		return nil, errs.Wrap(errs.Unavailable, err, "broker: cannot fetch policy's decision verifier")
	}
	h, err := keyset.ReadWithNoSecrets(keyset.NewBinaryReader(bytes.NewReader(resp.GetPublicKeyset())))
	if err != nil {
		return nil, errs.Wrap(errs.Internal, err, "broker: policy's public keyset does not decode")
	}
	v, err := signature.NewVerifier(h)
	if err != nil {
		return nil, errs.Wrap(errs.Internal, err, "broker: policy's public keyset is not a verifier")
	}
	s.verifier = v
	return v, nil
}

// checkGrant checks that the decision's contract is approved and has an
// HTTP rule whose scheme://host is audience and which injects secret. It
// is what makes a secret unreachable, whatever the input, to a tool whose
// contract does not name it.
func (s *Service) checkGrant(ctx context.Context, d *contractualv1.Decision, secret, audience string) error {
	if err := checkName(secret); err != nil {
		return err
	}
	resp, err := s.policy.GetContract(ctx, &contractualv1.GetContractRequest{Digest: d.GetContractDigest()})
	err = rpc.FromConnect(err) // a remote policy fails like a local one
	switch {
	case errs.Is(err, errs.NotFound):
		return errs.E(errs.PermissionDenied, "decision %s names contract %s, which policy does not have", d.GetId(), d.GetContractDigest())
	case err != nil:
		return errs.Wrap(errs.Unavailable, err, "broker: cannot fetch contract %s", d.GetContractDigest())
	}
	rec := resp.GetRecord()
	switch {
	case rec.GetDigest() != d.GetContractDigest():
		return errs.E(errs.Internal, "broker: asked policy for contract %s, got %s", d.GetContractDigest(), rec.GetDigest())
	case rec.GetState() != contractualv1.ContractState_CONTRACT_STATE_APPROVED:
		return errs.E(errs.PermissionDenied, "contract %s is %s, not approved", rec.GetDigest(), rec.GetState())
	case d.GetModuleDigest() != "" && rec.GetContract().GetModule() != d.GetModuleDigest():
		return errs.E(errs.PermissionDenied, "decision %s is for module %s, but contract %s is for %s", d.GetId(), d.GetModuleDigest(), rec.GetDigest(), rec.GetContract().GetModule())
	}
	if !grants(rec.GetContract(), secret, audience) {
		return errs.E(errs.PermissionDenied, "the contract does not grant secret %s to audience %s", secret, clip(audience, 200))
	}
	return nil
}

// grants reports whether one of c's HTTP rules has scheme://host equal to
// audience and injects secret.
func grants(c *contractualv1.Contract, secret, audience string) bool {
	for _, r := range c.GetCapabilities().GetHttp() {
		if r.GetScheme()+"://"+r.GetHost() != audience {
			continue
		}
		for _, inj := range r.GetSecrets() {
			if inj.GetName() == secret {
				return true
			}
		}
	}
	return false
}

// exists checks that secret has a version.
func (s *Service) exists(ctx context.Context, secret string) error {
	var n int
	if err := s.db.QueryRowContext(ctx, `SELECT COUNT(*) FROM secrets WHERE name = ?`, secret).Scan(&n); err != nil {
		return storeErr(err, "reading secret %s", secret)
	}
	if n == 0 {
		return errs.E(errs.NotFound, "no secret %s", secret)
	}
	return nil
}

// store keeps h under a new random handle and returns the handle. It drops
// expired handles first, and refuses when too many are outstanding.
func (s *Service) store(h *handle, now time.Time) (string, error) {
	var raw [handleBytes]byte
	if _, err := rand.Read(raw[:]); err != nil {
		return "", errs.Wrap(errs.Internal, err, "broker: generating a handle")
	}
	token := base64.RawURLEncoding.EncodeToString(raw[:])
	s.handlesMu.Lock()
	defer s.handlesMu.Unlock()
	for k, old := range s.handles {
		if !now.Before(old.expires) {
			delete(s.handles, k)
		}
	}
	if len(s.handles) >= s.opts.MaxHandles {
		return "", errs.E(errs.ResourceExhausted, "broker: %d handles are outstanding, the limit", len(s.handles))
	}
	s.handles[handleKey(token)] = h
	return token, nil
}

// take removes and returns the handle token stands for, or nil.
func (s *Service) take(token string) *handle {
	if len(token) != base64.RawURLEncoding.EncodedLen(handleBytes) {
		return nil
	}
	k := handleKey(token)
	s.handlesMu.Lock()
	defer s.handlesMu.Unlock()
	h := s.handles[k]
	delete(s.handles, k)
	return h
}

// handleKey is the map key of a handle: its sha256, so the map does not
// hold the bearer value itself.
func handleKey(token string) string {
	sum := sha256.Sum256([]byte(token))
	return string(sum[:])
}

// decisionEvent is an event about the call d decided.
func decisionEvent(d *contractualv1.Decision) *contractualv1.AuditEvent {
	ev := event(actionRelease, d.GetPrincipal(), "")
	ev.DecisionId = clip(d.GetId(), maxShortBytes)
	ev.Tool = clip(d.GetTool(), maxShortBytes)
	ev.ContractDigest = d.GetContractDigest()
	ev.ModuleDigest = d.GetModuleDigest()
	ev.InputHash = d.GetInputHash()
	return ev
}

// minTime returns the earlier of a and b.
func minTime(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}

// orNone is p, or "no principal" if p is empty.
func orNone(p string) string {
	if p == "" {
		return "no principal"
	}
	return p
}
