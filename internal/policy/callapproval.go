package policy

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	contractualv1 "github.com/contractual/contractual/contracts/gen/contractual/v1"
	"github.com/contractual/contractual/internal/errs"
	"github.com/contractual/contractual/internal/principal"
	"github.com/contractual/contractual/internal/tailnet"
)

// One-shot call approvals. A call that Evaluate answers with approval
// required (a high-risk tool) becomes a pending call approval, bound to
// the call hash over (principal, tool, contract digest, module digest,
// canonical input hash), keeping the exact canonical input and who asked.
// Another paired device with the approve scope approves or denies it; the
// same call evaluated again after the approval uses it up (ALLOW, once)
// and any other call (one changed byte) is another approval. A denial
// stands: the same call is denied, naming it, until it expires, so that a
// caller cannot nag the owner with it. Pending and approved-but-unused
// approvals, and denials, expire (Config.CallApprovalTTL). A job never
// waits: its calls get no pending approval.

// Defaults of the call approval settings of Config.
const (
	// DefaultCallApprovalTTL is how long a call approval stays pending,
	// and how long an approved one stays usable.
	DefaultCallApprovalTTL = 15 * time.Minute
	// DefaultCallWait is the longest WaitCallApproval waits.
	DefaultCallWait = 30 * time.Second
	// MaxPendingCalls bounds the pending call approvals of one principal,
	// so that a caller cannot bury the owner's list.
	MaxPendingCalls = 100
)

// Audit actions of call approvals.
const (
	actionCallRequest = "call.approval.request"
	actionCallApprove = "call.approval.approve"
	actionCallDeny    = "call.approval.deny"
	actionCallUse     = "call.approval.use"
	actionCallExpire  = "call.approval.expire"
)

// callApprovalSchema is the call approvals' table: each row's approval is
// the deterministic encoding of its CallApproval; the other columns are
// what lookups need. The partial unique index makes "at most one open
// (pending or approved) approval per call hash" a property of the store.
const callApprovalSchema = `
CREATE TABLE IF NOT EXISTS call_approvals (
	seq        INTEGER PRIMARY KEY,
	id         TEXT NOT NULL UNIQUE,
	call_hash  TEXT NOT NULL,
	principal  TEXT NOT NULL,
	state      INTEGER NOT NULL,
	expires_at INTEGER NOT NULL,
	approval   BLOB NOT NULL
) STRICT;
CREATE INDEX IF NOT EXISTS call_approvals_by_state ON call_approvals(state, seq);
CREATE INDEX IF NOT EXISTS call_approvals_by_hash ON call_approvals(call_hash, seq);
CREATE INDEX IF NOT EXISTS call_approvals_by_principal ON call_approvals(principal, state);
CREATE UNIQUE INDEX IF NOT EXISTS call_approvals_one_open ON call_approvals(call_hash) WHERE state IN (1, 2);
`

const (
	callPending  = contractualv1.CallApprovalState_CALL_APPROVAL_STATE_PENDING
	callApproved = contractualv1.CallApprovalState_CALL_APPROVAL_STATE_APPROVED
	callDenied   = contractualv1.CallApprovalState_CALL_APPROVAL_STATE_DENIED
	callUsed     = contractualv1.CallApprovalState_CALL_APPROVAL_STATE_USED
	callExpired  = contractualv1.CallApprovalState_CALL_APPROVAL_STATE_EXPIRED
)

// maxExpireBatch bounds how many expired approvals one sweep records.
const maxExpireBatch = 100

// callHash is the hash a call approval is bound to: sha256 over the
// length-prefixed principal, tool, contract digest, module digest and
// canonical input hash.
func callHash(d *contractualv1.Decision) string {
	h := sha256.New()
	h.Write([]byte("contractual call approval v1\x00"))
	for _, f := range []string{d.GetPrincipal(), d.GetTool(), d.GetContractDigest(), d.GetModuleDigest(), d.GetInputHash()} {
		h.Write(binary.AppendUvarint(nil, uint64(len(f))))
		h.Write([]byte(f))
	}
	return "sha256:" + hex.EncodeToString(h.Sum(nil))
}

// callWaiters wakes WaitCallApproval: its channel is closed, and
// replaced, whenever a call approval changes.
type callWaiters struct {
	mu sync.Mutex
	ch chan struct{}
}

// callsChanged returns a channel closed at the next change of a call
// approval.
func (s *Service) callsChanged() <-chan struct{} {
	s.callWait.mu.Lock()
	defer s.callWait.mu.Unlock()
	if s.callWait.ch == nil {
		s.callWait.ch = make(chan struct{})
	}
	return s.callWait.ch
}

// notifyCalls wakes every waiter.
func (s *Service) notifyCalls() {
	s.callWait.mu.Lock()
	defer s.callWait.mu.Unlock()
	if s.callWait.ch != nil {
		close(s.callWait.ch)
		s.callWait.ch = nil
	}
}

// oneShot completes the decision d of a call that needs a one-shot
// approval: if an approved, unused and unexpired approval is bound to the
// exact call, it uses it up and allows the call; if a denial that has not
// expired is, it denies the call; otherwise d stays approval required,
// naming the pending approval, which it creates unless one is pending
// already. A job's call gets no pending approval.
func (s *Service) oneShot(ctx context.Context, c *call, d *contractualv1.Decision) (*contractualv1.Decision, error) {
	d.Verdict = contractualv1.Verdict_VERDICT_APPROVAL_REQUIRED
	d.Reason = fmt.Sprintf("%s is a high-risk tool: each call needs the owner's one-shot approval of that exact call", c.tool)
	if strings.HasPrefix(c.who, "job:") {
		d.Reason += "; a job never waits for one, so no approval was requested"
		return d, nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	ctx = context.WithoutCancel(ctx)
	if err := s.expireCalls(ctx); err != nil {
		return nil, err
	}
	hash := callHash(d)
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return nil, storeErr(err, "starting a transaction")
	}
	defer tx.Rollback()
	now := s.opts.Now()
	a, err := openCallApproval(ctx, tx, hash, now)
	if err != nil {
		return nil, err
	}
	var ev *contractualv1.AuditEvent
	switch {
	case a != nil && a.GetState() == callDenied:
		d.Verdict, d.ApprovalId = contractualv1.Verdict_VERDICT_DENY, a.GetId()
		d.Reason = fmt.Sprintf("%s denied this exact call (call approval %s)", a.GetDecidedBy(), a.GetId())
		if r := a.GetReason(); r != "" {
			d.Reason += ": " + r
		}
		d.Reason += "; it is refused until " + a.GetExpiresAt().AsTime().UTC().Format(time.RFC3339)
		return d, nil
	case a != nil && a.GetState() == callApproved:
		a.State, a.UsedBy, a.UsedAt = callUsed, d.GetId(), timestamppb.New(now)
		d.Verdict, d.ApprovalId = contractualv1.Verdict_VERDICT_ALLOW, a.GetId()
		d.Reason = fmt.Sprintf("one-shot approval %s of this exact call, by %s", a.GetId(), a.GetDecidedBy())
		ev = callEvent(actionCallUse, c.who, a, "used by decision "+d.GetId())
	case a != nil:
		d.ApprovalId = a.GetId()
		d.Reason += fmt.Sprintf("; approval %s is pending until %s", a.GetId(), a.GetExpiresAt().AsTime().UTC().Format(time.RFC3339))
		return d, nil
	default:
		var n int
		if err := tx.QueryRowContext(ctx, `SELECT count(*) FROM call_approvals WHERE principal = ? AND state = ?`, c.who, int32(callPending)).Scan(&n); err != nil {
			return nil, storeErr(err, "counting call approvals")
		}
		if n >= MaxPendingCalls {
			return nil, errs.E(errs.ResourceExhausted, "%s has %d call approvals pending, the most there may be: wait until the owner decides them, or they expire", c.who, n)
		}
		a = &contractualv1.CallApproval{
			Id:             newID(),
			State:          callPending,
			CallHash:       hash,
			Tool:           d.GetTool(),
			Principal:      d.GetPrincipal(),
			ContractDigest: d.GetContractDigest(),
			ModuleDigest:   d.GetModuleDigest(),
			InputHash:      d.GetInputHash(),
			CanonicalInput: c.canonical,
			Tailnet:        tailnet.From(ctx).Proto(),
			RequestedAt:    timestamppb.New(now),
			ExpiresAt:      timestamppb.New(now.Add(s.opts.CallApprovalTTL)),
		}
		d.ApprovalId = a.GetId()
		d.Reason += fmt.Sprintf("; approval %s is pending until %s", a.GetId(), a.GetExpiresAt().AsTime().UTC().Format(time.RFC3339))
		ev = callEvent(actionCallRequest, c.who, a, "requested; pending until "+a.GetExpiresAt().AsTime().UTC().Format(time.RFC3339))
	}
	if err := putCallApproval(ctx, tx, a); err != nil {
		return nil, err
	}
	if err := s.audit(ctx, ev); err != nil {
		return nil, err
	}
	if err := tx.Commit(); err != nil {
		return nil, storeErr(err, "committing call approval %s", a.GetId())
	}
	s.notifyCalls()
	return d, nil
}

// ListCallApprovals lists call approvals, newest first: the pending ones
// unless the request names another state.
func (s *Service) ListCallApprovals(ctx context.Context, req *contractualv1.ListCallApprovalsRequest) (*contractualv1.ListCallApprovalsResponse, error) {
	if _, err := owner(ctx); err != nil {
		return nil, err
	}
	st := req.GetState()
	if st == contractualv1.CallApprovalState_CALL_APPROVAL_STATE_UNSPECIFIED {
		st = callPending
	}
	if _, ok := contractualv1.CallApprovalState_name[int32(st)]; !ok {
		return nil, errs.E(errs.Invalid, "unknown call approval state %d", st)
	}
	n := int(req.GetPageSize())
	switch {
	case n < 0:
		return nil, errs.E(errs.Invalid, "page_size %d is negative", n)
	case n == 0:
		n = 50
	case n > 500:
		n = 500
	}
	var after int64
	if t := req.GetPageToken(); t != "" {
		v, err := strconv.ParseInt(t, 10, 64)
		if err != nil || v <= 0 {
			return nil, errs.E(errs.Invalid, "page_token %q is not one ListCallApprovals gave", clip(t, 100))
		}
		after = v
	}
	if err := s.sweep(ctx); err != nil {
		return nil, err
	}
	rows, err := s.db.QueryContext(ctx, `SELECT seq, approval FROM call_approvals
		WHERE state = ? AND (? = 0 OR seq < ?) ORDER BY seq DESC LIMIT ?`, int32(st), after, after, n+1)
	if err != nil {
		return nil, storeErr(err, "listing call approvals")
	}
	defer rows.Close()
	resp := &contractualv1.ListCallApprovalsResponse{}
	var last int64
	for rows.Next() {
		var seq int64
		var enc []byte
		if err := rows.Scan(&seq, &enc); err != nil {
			return nil, storeErr(err, "listing call approvals")
		}
		if len(resp.Approvals) == n {
			resp.NextPageToken = strconv.FormatInt(last, 10)
			break
		}
		a, err := decodeCallApproval(enc)
		if err != nil {
			return nil, err
		}
		resp.Approvals, last = append(resp.Approvals, a), seq
	}
	if err := rows.Err(); err != nil {
		return nil, storeErr(err, "listing call approvals")
	}
	return resp, nil
}

// GetCallApproval returns one call approval.
func (s *Service) GetCallApproval(ctx context.Context, req *contractualv1.GetCallApprovalRequest) (*contractualv1.GetCallApprovalResponse, error) {
	if _, err := owner(ctx); err != nil {
		return nil, err
	}
	a, err := s.currentCall(ctx, req.GetId())
	if err != nil {
		return nil, err
	}
	return &contractualv1.GetCallApprovalResponse{Approval: a}, nil
}

// WaitCallApproval returns the call approval once it is no longer
// pending, or after max_wait (at most Config.CallWait, and half the time
// left before the caller's deadline) with it pending.
func (s *Service) WaitCallApproval(ctx context.Context, req *contractualv1.WaitCallApprovalRequest) (*contractualv1.WaitCallApprovalResponse, error) {
	wait := min(req.GetMaxWait().AsDuration(), s.opts.CallWait)
	if dl, ok := ctx.Deadline(); ok {
		wait = min(wait, time.Until(dl)/2) // answer while the caller still listens
	}
	timer := time.NewTimer(max(wait, 0))
	defer timer.Stop()
	for {
		changed := s.callsChanged()
		a, err := s.currentCall(ctx, req.GetId())
		if err != nil {
			return nil, err
		}
		if a.GetState() != callPending {
			return &contractualv1.WaitCallApprovalResponse{Approval: a}, nil
		}
		// Wake at the expiry too, which changes nothing in the store
		// until a sweep records it.
		expiry := time.NewTimer(max(a.GetExpiresAt().AsTime().Sub(s.opts.Now()), 0))
		select {
		case <-changed:
		case <-expiry.C:
		case <-timer.C:
			expiry.Stop()
			return &contractualv1.WaitCallApprovalResponse{Approval: a}, nil
		case <-ctx.Done():
			expiry.Stop()
			return nil, errs.Wrap(errs.DeadlineExceeded, ctx.Err(), "waiting for call approval %s", a.GetId())
		}
		expiry.Stop()
	}
}

// ApproveCall approves a pending call approval.
func (s *Service) ApproveCall(ctx context.Context, req *contractualv1.ApproveCallRequest) (*contractualv1.ApproveCallResponse, error) {
	a, err := s.decideCall(ctx, actionCallApprove, req.GetId(), req.GetReason())
	if err != nil {
		return nil, err
	}
	return &contractualv1.ApproveCallResponse{Approval: a}, nil
}

// DenyCall denies a pending call approval.
func (s *Service) DenyCall(ctx context.Context, req *contractualv1.DenyCallRequest) (*contractualv1.DenyCallResponse, error) {
	a, err := s.decideCall(ctx, actionCallDeny, req.GetId(), req.GetReason())
	if err != nil {
		return nil, err
	}
	return &contractualv1.DenyCallResponse{Approval: a}, nil
}

// decideCall approves or denies (action) the pending call approval id for
// the principal of ctx. Every attempt is audited; a refused one changes
// nothing. An approval never comes from the principal that asked.
func (s *Service) decideCall(ctx context.Context, action, id, reason string) (*contractualv1.CallApproval, error) {
	ev := &contractualv1.AuditEvent{Service: service, Principal: clip(principal.From(ctx), maxShortBytes), Action: action}
	who, err := owner(ctx)
	if err == nil {
		err = checkReason(reason)
	}
	if err != nil {
		return nil, s.auditRefusal(ctx, ev, err)
	}
	a, err := s.applyCall(ctx, action, id, who, reason)
	if err != nil && !errs.Is(err, errs.Unavailable) && !errs.Is(err, errs.Internal) {
		if a != nil {
			ev = callEvent(action, who, a, "")
		}
		return nil, s.auditRefusal(ctx, ev, err)
	}
	return a, err
}

// applyCall moves the call approval id from pending to approved or
// denied in one transaction, committed after the audit log recorded it.
// On a refusal it returns the approval too, for the audit event.
func (s *Service) applyCall(ctx context.Context, action, id, who, reason string) (*contractualv1.CallApproval, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	ctx = context.WithoutCancel(ctx)
	if err := s.expireCalls(ctx); err != nil {
		return nil, err
	}
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return nil, storeErr(err, "starting a transaction")
	}
	defer tx.Rollback()
	a, err := getCallApproval(ctx, tx, id)
	if err != nil {
		return nil, err
	}
	verb := "approve"
	if action == actionCallDeny {
		verb = "deny"
	}
	switch {
	case a.GetState() != callPending:
		return a, errs.E(errs.FailedPrecondition, "cannot %s call approval %s: it is %s; only a pending one can be decided",
			verb, id, callStateName(a.GetState()))
	case action == actionCallApprove && a.GetPrincipal() == who:
		return a, errs.E(errs.PermissionDenied, "cannot approve call approval %s: %s asked for this call, and an approval never comes from the caller's own channel: approve it from another paired device with scope approve",
			id, who)
	}
	now := s.opts.Now()
	a.DecidedBy, a.DecidedAt, a.Reason = who, timestamppb.New(now), reason
	detail := ""
	if action == actionCallApprove {
		a.State, a.ExpiresAt = callApproved, timestamppb.New(now.Add(s.opts.CallApprovalTTL))
		detail = "approved; usable once until " + a.GetExpiresAt().AsTime().UTC().Format(time.RFC3339)
	} else {
		a.State, a.ExpiresAt = callDenied, timestamppb.New(now.Add(s.opts.CallApprovalTTL))
		detail = "denied; the same call is refused until " + a.GetExpiresAt().AsTime().UTC().Format(time.RFC3339)
	}
	if reason != "" {
		detail += "; reason: " + reason
	}
	if err := putCallApproval(ctx, tx, a); err != nil {
		return nil, err
	}
	if err := s.audit(ctx, callEvent(action, who, a, detail)); err != nil {
		return nil, err
	}
	if err := tx.Commit(); err != nil {
		return nil, storeErr(err, "committing call approval %s", id)
	}
	s.notifyCalls()
	return a, nil
}

// currentCall reads a call approval after recording the expiries due.
func (s *Service) currentCall(ctx context.Context, id string) (*contractualv1.CallApproval, error) {
	if id == "" {
		return nil, errs.E(errs.Invalid, "call approval id is required")
	}
	if err := s.sweep(ctx); err != nil {
		return nil, err
	}
	return getCallApproval(ctx, s.db, id)
}

// sweep records the expiries due, if there are any.
func (s *Service) sweep(ctx context.Context) error {
	var n int
	err := s.db.QueryRowContext(ctx, `SELECT count(*) FROM call_approvals WHERE state IN (?, ?) AND expires_at <= ?`,
		int32(callPending), int32(callApproved), s.opts.Now().UnixNano()).Scan(&n)
	if err != nil {
		return storeErr(err, "reading call approvals")
	}
	if n == 0 {
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.expireCalls(context.WithoutCancel(ctx))
}

// expireCalls moves pending and approved call approvals past their expiry
// to expired, recording each; called with s.mu held.
func (s *Service) expireCalls(ctx context.Context) error {
	for {
		n, err := s.expireBatch(ctx)
		if err != nil || n < maxExpireBatch {
			return err
		}
	}
}

// expireBatch expires up to maxExpireBatch call approvals in one
// transaction and returns how many.
func (s *Service) expireBatch(ctx context.Context) (int, error) {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return 0, storeErr(err, "starting a transaction")
	}
	defer tx.Rollback()
	due, err := queryCallApprovals(ctx, tx, `SELECT approval FROM call_approvals WHERE state IN (?, ?) AND expires_at <= ? LIMIT ?`,
		int32(callPending), int32(callApproved), s.opts.Now().UnixNano(), maxExpireBatch)
	if err != nil || len(due) == 0 {
		return 0, err
	}
	evs := make([]*contractualv1.AuditEvent, len(due))
	for i, a := range due {
		evs[i] = callEvent(actionCallExpire, a.GetPrincipal(), a, "expired while "+callStateName(a.GetState()))
		a.State = callExpired
		if err := putCallApproval(ctx, tx, a); err != nil {
			return 0, err
		}
	}
	if err := s.audit(ctx, evs...); err != nil {
		return 0, err
	}
	if err := tx.Commit(); err != nil {
		return 0, storeErr(err, "committing call approval expiries")
	}
	s.notifyCalls()
	return len(due), nil
}

// queryCallApprovals runs a query selecting the approval column.
func queryCallApprovals(ctx context.Context, q querier, query string, args ...any) ([]*contractualv1.CallApproval, error) {
	rows, err := q.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, storeErr(err, "reading call approvals")
	}
	defer rows.Close()
	var out []*contractualv1.CallApproval
	for rows.Next() {
		var enc []byte
		if err := rows.Scan(&enc); err != nil {
			return nil, storeErr(err, "reading call approvals")
		}
		a, err := decodeCallApproval(enc)
		if err != nil {
			return nil, err
		}
		out = append(out, a)
	}
	if err := rows.Err(); err != nil {
		return nil, storeErr(err, "reading call approvals")
	}
	return out, nil
}

// callEvent is the audit event of a step of call approval a, by who.
func callEvent(action, who string, a *contractualv1.CallApproval, detail string) *contractualv1.AuditEvent {
	d := fmt.Sprintf("call approval %s of %s asked by %s", a.GetId(), a.GetTool(), a.GetPrincipal())
	if detail != "" {
		d += ": " + detail
	}
	return &contractualv1.AuditEvent{
		Service:        service,
		Principal:      clip(who, maxShortBytes),
		Action:         action,
		Outcome:        outcomeOK,
		ContractDigest: a.GetContractDigest(),
		ModuleDigest:   a.GetModuleDigest(),
		Tool:           a.GetTool(),
		InputHash:      a.GetInputHash(),
		DecisionId:     a.GetUsedBy(),
		Detail:         clip(d, maxDetailBytes),
	}
}

// callStateName is a call approval state as a word: "pending"...
func callStateName(st contractualv1.CallApprovalState) string {
	return strings.ToLower(strings.TrimPrefix(st.String(), "CALL_APPROVAL_STATE_"))
}

// openCallApproval returns the approval that stands for a call hash at
// now: a pending or approved one, or a denial that has not expired; nil if
// there is none.
func openCallApproval(ctx context.Context, q querier, hash string, now time.Time) (*contractualv1.CallApproval, error) {
	as, err := queryCallApprovals(ctx, q, `SELECT approval FROM call_approvals
		WHERE call_hash = ? AND (state IN (?, ?) OR (state = ? AND expires_at > ?)) ORDER BY seq DESC LIMIT 1`,
		hash, int32(callPending), int32(callApproved), int32(callDenied), now.UnixNano())
	if err != nil || len(as) == 0 {
		return nil, err
	}
	return as[0], nil
}

// getCallApproval reads one call approval; errs.NotFound if there is none.
func getCallApproval(ctx context.Context, q querier, id string) (*contractualv1.CallApproval, error) {
	var enc []byte
	err := q.QueryRowContext(ctx, `SELECT approval FROM call_approvals WHERE id = ?`, id).Scan(&enc)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return nil, errs.E(errs.NotFound, "no call approval %q", clip(id, 100))
	case err != nil:
		return nil, storeErr(err, "reading call approval %s", clip(id, 100))
	}
	return decodeCallApproval(enc)
}

// putCallApproval inserts a call approval or updates its row.
func putCallApproval(ctx context.Context, tx *sql.Tx, a *contractualv1.CallApproval) error {
	enc, err := proto.MarshalOptions{Deterministic: true}.Marshal(a)
	if err != nil {
		return errs.Wrap(errs.Internal, err, "policy: encoding call approval %s", a.GetId())
	}
	_, err = tx.ExecContext(ctx, `INSERT INTO call_approvals (id, call_hash, principal, state, expires_at, approval) VALUES (?, ?, ?, ?, ?, ?)
		ON CONFLICT (id) DO UPDATE SET state = excluded.state, expires_at = excluded.expires_at, approval = excluded.approval`,
		a.GetId(), a.GetCallHash(), a.GetPrincipal(), int32(a.GetState()), a.GetExpiresAt().AsTime().UnixNano(), enc)
	return storeErr(err, "storing call approval %s", a.GetId())
}

// decodeCallApproval decodes a stored call approval.
func decodeCallApproval(enc []byte) (*contractualv1.CallApproval, error) {
	a := new(contractualv1.CallApproval)
	if err := proto.Unmarshal(enc, a); err != nil {
		return nil, errs.Wrap(errs.Internal, err, "policy: a call approval is damaged in the store")
	}
	return a, nil
}
