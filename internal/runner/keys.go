package runner

import (
	"context"
	"log/slog"
	"sync/atomic"
	"time"

	"google.golang.org/protobuf/proto"

	contractualv1 "github.com/contractual/contractual/contracts/gen/contractual/v1"
	"github.com/contractual/contractual/internal/decision"
	"github.com/contractual/contractual/internal/errs"
	"github.com/contractual/contractual/internal/rpc"
)

// keys holds the verifier of policy's decisions: fetched from policy on
// first use, kept, and fetched again when a decision fails only its
// signature check (policy may have rotated its key), at most once per
// period.
type keys struct {
	policy Policy
	period time.Duration
	now    func() time.Time
	log    *slog.Logger

	v atomic.Pointer[decision.Verifier]
	// sem is held while fetching; fetched is guarded by it.
	sem     chan struct{}
	fetched time.Time
}

// verify verifies sd for the canonical input at now (see
// decision.Verifier.Verify) and returns the decision.
func (k *keys) verify(ctx context.Context, sd *contractualv1.SignedDecision, input []byte, now time.Time) (*contractualv1.Decision, error) {
	v, err := k.current(ctx)
	if err != nil {
		return nil, err
	}
	d, err := v.Verify(sd, input, now)
	if err == nil || !onlySignatureFails(sd, input, now) {
		return d, err
	}
	fresh, ok := k.refetch(ctx, v)
	if !ok {
		return nil, err
	}
	return fresh.Verify(sd, input, now)
}

// current returns the verifier, fetching it on first use.
func (k *keys) current(ctx context.Context) (*decision.Verifier, error) {
	if v := k.v.Load(); v != nil {
		return v, nil
	}
	if err := k.lock(ctx); err != nil {
		return nil, err
	}
	defer k.unlock()
	if v := k.v.Load(); v != nil {
		return v, nil
	}
	return k.fetch(ctx)
}

// refetch fetches the keys again unless another call already replaced
// stale (then it returns that verifier) or the last fetch is more recent
// than the period. It reports whether there is a verifier worth retrying.
func (k *keys) refetch(ctx context.Context, stale *decision.Verifier) (*decision.Verifier, bool) {
	if k.lock(ctx) != nil {
		return nil, false
	}
	defer k.unlock()
	if v := k.v.Load(); v != stale {
		return v, true
	}
	if k.now().Sub(k.fetched) < k.period {
		return nil, false
	}
	v, err := k.fetch(ctx)
	if err != nil {
		k.log.Warn("refetching the decision keys failed", "err", err)
		return nil, false
	}
	k.log.Info("decision keys refetched after a signature failure")
	return v, true
}

// fetch gets the public keyset from policy; the caller holds sem. A failed
// fetch counts against the period too, so that a flood of bad decisions
// cannot turn into a flood of fetches.
func (k *keys) fetch(ctx context.Context) (*decision.Verifier, error) {
	k.fetched = k.now()
	resp, err := k.policy.GetVerifier(ctx, &contractualv1.GetVerifierRequest{})
	if err != nil {
		return nil, errs.Wrap(errs.Unavailable, rpc.FromConnect(err), "fetching the decision verification keys from policy")
	}
	v, err := decision.NewVerifier(resp.GetPublicKeyset())
	if err != nil {
		return nil, errs.Wrap(errs.Unavailable, err, "policy's decision verification keyset is unusable")
	}
	k.v.Store(v)
	return v, nil
}

func (k *keys) lock(ctx context.Context) error {
	select {
	case k.sem <- struct{}{}:
		return nil
	case <-ctx.Done():
		return errs.Wrap(errs.Unavailable, ctx.Err(), "call canceled while fetching the decision keys")
	}
}

func (k *keys) unlock() { <-k.sem }

// onlySignatureFails reports whether sd, read without checking its
// signature, would pass every other check of Verify: an allow for exactly
// this input, unexpired. Only then can new keys change the answer; any
// other refusal stands without asking policy.
func onlySignatureFails(sd *contractualv1.SignedDecision, input []byte, now time.Time) bool {
	d := new(contractualv1.Decision)
	if len(sd.GetDecision()) == 0 || proto.Unmarshal(sd.GetDecision(), d) != nil {
		return false
	}
	exp := d.GetExpiresAt()
	return d.GetVerdict() == contractualv1.Verdict_VERDICT_ALLOW &&
		exp != nil && now.Before(exp.AsTime()) &&
		d.GetInputHash() == decision.Hash(input)
}
