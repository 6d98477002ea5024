package policy

import (
	"context"
	"database/sql"
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	contractualv1 "github.com/contractual/contractual/contracts/gen/contractual/v1"
	"github.com/contractual/contractual/internal/errs"
	"github.com/contractual/contractual/internal/principal"
)

// maxReasonBytes caps the reason given with a decision on a contract.
const maxReasonBytes = 1024

const (
	pending  = contractualv1.ContractState_CONTRACT_STATE_PENDING
	approved = contractualv1.ContractState_CONTRACT_STATE_APPROVED
	rejected = contractualv1.ContractState_CONTRACT_STATE_REJECTED
	revoked  = contractualv1.ContractState_CONTRACT_STATE_REVOKED
)

// transition is one edge of a contract's state machine.
type transition struct {
	action string
	verb   string // "approve", for messages
	done   string // "approved"
	from   contractualv1.ContractState
	to     contractualv1.ContractState
}

// The state machine: pending → approved | rejected; approved → revoked.
// Nothing leaves rejected or revoked: to run such a contract again,
// publish it with a change (a new version), which makes a new digest.
var (
	approve = transition{actionApprove, "approve", "approved", pending, approved}
	reject  = transition{actionReject, "reject", "rejected", pending, rejected}
	revoke  = transition{actionRevoke, "revoke", "revoked", approved, revoked}
)

// Approve approves a pending contract. It becomes the contract that runs
// for its name; the approved contract it replaces, if any, is revoked in
// the same step ("superseded by" the new digest).
func (s *Service) Approve(ctx context.Context, req *contractualv1.ApproveRequest) (*contractualv1.ApproveResponse, error) {
	rec, err := s.decide(ctx, approve, req.GetDigest(), req.GetReason())
	if err != nil {
		return nil, err
	}
	return &contractualv1.ApproveResponse{Record: rec}, nil
}

// Reject rejects a pending contract.
func (s *Service) Reject(ctx context.Context, req *contractualv1.RejectRequest) (*contractualv1.RejectResponse, error) {
	rec, err := s.decide(ctx, reject, req.GetDigest(), req.GetReason())
	if err != nil {
		return nil, err
	}
	return &contractualv1.RejectResponse{Record: rec}, nil
}

// Revoke revokes an approved contract: calls of its tools are denied from
// now on, and the runner refuses decisions issued for it before.
func (s *Service) Revoke(ctx context.Context, req *contractualv1.RevokeRequest) (*contractualv1.RevokeResponse, error) {
	rec, err := s.decide(ctx, revoke, req.GetDigest(), req.GetReason())
	if err != nil {
		return nil, err
	}
	return &contractualv1.RevokeResponse{Record: rec}, nil
}

// decide applies t to the contract digest for the principal of ctx, with a
// reason. Every attempt is audited; a refused one changes nothing.
func (s *Service) decide(ctx context.Context, t transition, digest, reason string) (*contractualv1.ContractRecord, error) {
	ev := event(t.action, principal.From(ctx), nil)
	if digestRE.MatchString(digest) {
		ev.ContractDigest = digest
	}
	who, err := owner(ctx)
	if err == nil {
		err = checkDigest("contract", digest)
	}
	if err == nil {
		err = checkReason(reason)
	}
	if err != nil {
		return nil, s.auditRefusal(ctx, ev, err)
	}
	rec, err := s.apply(ctx, t, digest, who, reason)
	if err != nil && !errs.Is(err, errs.Unavailable) && !errs.Is(err, errs.Internal) {
		return nil, s.auditRefusal(ctx, ev, err)
	}
	return rec, err
}

// checkReason refuses a reason that is too long, not UTF-8 or holds
// control characters other than newlines and tabs.
func checkReason(r string) error {
	switch {
	case len(r) > maxReasonBytes:
		return errs.E(errs.Invalid, "reason is %d bytes, over the %d byte limit", len(r), maxReasonBytes)
	case !utf8.ValidString(r):
		return errs.E(errs.Invalid, "reason is not valid UTF-8")
	case strings.ContainsFunc(r, func(c rune) bool { return unicode.IsControl(c) && c != '\n' && c != '\t' }):
		return errs.E(errs.Invalid, "reason contains control characters")
	}
	return nil
}

// apply runs the transition in one transaction, committed only after the
// audit log recorded it, then updates the approved cache.
func (s *Service) apply(ctx context.Context, t transition, digest, who, reason string) (*contractualv1.ContractRecord, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	ctx = context.WithoutCancel(ctx)
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return nil, storeErr(err, "starting a transaction")
	}
	defer tx.Rollback()
	cur, err := getRecord(ctx, tx, digest)
	if err != nil {
		return nil, err
	}
	if cur.GetState() != t.from {
		return nil, wrongState(t, cur)
	}
	now := timestamppb.New(s.opts.Now())
	var superseded *contractualv1.ContractRecord
	if t.to == approved {
		if superseded, err = s.supersede(ctx, tx, cur, who, now); err != nil {
			return nil, err
		}
	}
	rec := proto.CloneOf(cur)
	rec.State, rec.DecidedBy, rec.DecidedAt, rec.Reason = t.to, who, now, reason
	if err := updateState(ctx, tx, rec, t.from); err != nil {
		return nil, err
	}
	drifted, jobEvs, err := s.drift(ctx, tx, t, rec, superseded)
	if err != nil {
		return nil, err
	}
	evs := append(s.transitionEvents(t, rec, superseded), jobEvs...)
	if err := s.audit(ctx, evs...); err != nil {
		return nil, err
	}
	if err := s.commit(ctx, tx, evs...); err != nil {
		return nil, err
	}
	s.updateApproved(t, rec)
	s.jobs.publish(drifted...)
	return proto.CloneOf(rec), nil
}

// supersede revokes the approved contract of rec's name, if any, for the
// approval of rec, and returns it.
func (s *Service) supersede(ctx context.Context, tx *sql.Tx, rec *contractualv1.ContractRecord, who string, now *timestamppb.Timestamp) (*contractualv1.ContractRecord, error) {
	old, err := approvedRecord(ctx, tx, rec.GetContract().GetName())
	if err != nil || old == nil {
		return nil, err
	}
	old.State, old.DecidedBy, old.DecidedAt = revoked, who, now
	old.Reason = "superseded by " + rec.GetDigest()
	if err := updateState(ctx, tx, old, approved); err != nil {
		return nil, err
	}
	return old, nil
}

// transitionEvents are the audit events of a transition: one for rec, and
// a revocation of the contract it superseded, if any.
func (s *Service) transitionEvents(t transition, rec, superseded *contractualv1.ContractRecord) []*contractualv1.AuditEvent {
	ev := event(t.action, rec.GetDecidedBy(), rec)
	ev.Outcome = outcomeOK
	ev.Detail = fmt.Sprintf("%s %s %s → %s", t.verb, rec.GetContract().GetName(), stateName(t.from), stateName(t.to))
	if superseded != nil {
		ev.Detail += "; supersedes " + superseded.GetDigest()
	}
	if rec.GetReason() != "" {
		ev.Detail += "; reason: " + rec.GetReason()
	}
	ev.Detail = clip(ev.Detail, maxDetailBytes)
	evs := []*contractualv1.AuditEvent{ev}
	if superseded != nil {
		old := event(actionRevoke, rec.GetDecidedBy(), superseded)
		old.Outcome = outcomeOK
		old.Detail = fmt.Sprintf("revoke %s approved → revoked; %s", superseded.GetContract().GetName(), superseded.GetReason())
		evs = append(evs, old)
	}
	return evs
}

// updateApproved brings the approved cache in line with a committed
// transition of rec, and tells WatchContracts: the contract that stopped
// being approved (rec revoked, or the one rec supersedes), then rec if it
// is approved. Copying the maps makes an approval O(n) in the number of
// approved contracts; the lookups of calls stay O(1). Called with s.mu
// held.
func (s *Service) updateApproved(t transition, rec *contractualv1.ContractRecord) {
	if t.to != approved && t.from != approved {
		if t.from == pending && t.to == rejected {
			s.setApproved(s.approved.Load(), approvalChange(rec, rejected))
		}
		return
	}
	name := rec.GetContract().GetName()
	a := s.approved.Load()
	var changes []*contractualv1.ApprovalChange
	if old := a.byName[name]; old != nil {
		changes = append(changes, approvalChange(old.rec, revoked))
	}
	if t.to == approved {
		s.setApproved(a.with(name, newEntry(rec)), append(changes, approvalChange(rec, approved))...)
		return
	}
	s.setApproved(a.with(name, nil), changes...)
}

// wrongState explains why t does not apply to rec.
func wrongState(t transition, rec *contractualv1.ContractRecord) error {
	what := fmt.Sprintf("contract %s (%s) is %s", rec.GetDigest(), rec.GetContract().GetName(), stateName(rec.GetState()))
	if rec.GetDecidedBy() != "" {
		what += fmt.Sprintf(" (by %s", rec.GetDecidedBy())
		if rec.GetReason() != "" {
			what += ": " + rec.GetReason()
		}
		what += ")"
	}
	hint := ""
	switch {
	case t.to == revoked && rec.GetState() == pending:
		hint = "; to refuse a pending contract, reject it"
	case rec.GetState() == rejected || rec.GetState() == revoked:
		hint = fmt.Sprintf("; %s is final: publish a new version to have it reviewed again", stateName(rec.GetState()))
	}
	return errs.E(errs.FailedPrecondition, "cannot %s: %s; only a %s contract can be %s%s",
		t.verb, what, stateName(t.from), t.done, hint)
}
