package pairing

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/contractual/contractual/internal/errs"
)

// State is a pairing request's state.
type State int

// The states of a request. Only Pending and Approved are live.
const (
	Pending State = iota
	Approved
	Rejected
	Completed
)

func (st State) String() string {
	switch st {
	case Pending:
		return "pending"
	case Approved:
		return "approved"
	case Rejected:
		return "rejected"
	case Completed:
		return "completed"
	}
	return "unknown"
}

// NonceSize is the size of a pairing nonce.
const NonceSize = 32

// purgeAfter is how long finished requests are kept (for distinct replay
// and rejection errors) before they are deleted.
const purgeAfter = 24 * time.Hour

// Request is a pairing request. Nonce is set only in Begin's result: the
// store keeps its hash.
type Request struct {
	Code      string
	DeviceID  string
	Name      string
	PublicKey ed25519.PublicKey
	Nonce     []byte
	State     State
	CreatedAt time.Time
	ExpiresAt time.Time
	DecidedBy string
	DecidedAt time.Time
	nonceHash []byte
}

// Begin records a pairing request for the device with key pub and returns
// it with a short code to show the user and a random nonce to sign after
// approval. It is refused (errs.ResourceExhausted) beyond Options.MaxPending
// live requests, Options.BeginsPerMinute calls per minute overall or
// Options.BeginsPerSourcePerMinute from the caller's source (WithSource),
// and (errs.AlreadyExists) for a device already paired or with a live
// request. The request is audited.
func (s *Store) Begin(ctx context.Context, pub ed25519.PublicKey, name string) (*Request, error) {
	if err := checkPub(pub); err != nil {
		return nil, err
	}
	if err := checkName(name); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	src := SourceFrom(ctx) // "" in process: only the overall limit applies
	if src != "" && s.beginsFrom.full(src, now) {
		return nil, errs.E(errs.ResourceExhausted, "pairing: too many pairing requests from this address in the last minute; try again later")
	}
	if s.begins.full("", now) {
		return nil, errs.E(errs.ResourceExhausted, "pairing: too many pairing requests in the last minute; try again later")
	}
	s.begins.add("", now)
	if src != "" {
		s.beginsFrom.add(src, now)
	}
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return nil, storeErr(err, "starting a transaction")
	}
	defer tx.Rollback()
	if _, err := tx.ExecContext(ctx, `DELETE FROM requests WHERE created_at < ?`, nanos(now.Add(-purgeAfter))); err != nil {
		return nil, storeErr(err, "purging old requests")
	}
	id := DeviceID(pub)
	if err := s.checkCanBegin(ctx, tx, id, now); err != nil {
		return nil, err
	}
	r, err := s.insertRequest(ctx, tx, pub, id, name, now)
	if err != nil {
		return nil, err
	}
	if err := s.record(ctx, event(ActionRequest, Principal(id), fmt.Sprintf("request %s, device name %q, from %q", r.Code, name, src))); err != nil {
		return nil, err
	}
	if err := tx.Commit(); err != nil {
		return nil, storeErr(err, "committing the pairing request")
	}
	return r, nil
}

// liveClause selects the live requests at (?1 = now, ?2 = now - NonceTTL).
const liveClause = `((state = 0 AND expires_at > ?) OR (state = 1 AND decided_at > ?))`

// checkCanBegin refuses a request for a paired device, a second live request
// for one device, and one beyond the pending limit.
func (s *Store) checkCanBegin(ctx context.Context, tx *sql.Tx, id string, now time.Time) error {
	var n int
	err := tx.QueryRowContext(ctx, `SELECT count(*) FROM devices WHERE id = ? AND revoked_at IS NULL`, id).Scan(&n)
	if err != nil {
		return storeErr(err, "reading device %s", id)
	}
	if n > 0 {
		return errs.E(errs.AlreadyExists, "pairing: device %s is already paired", id)
	}
	live := []any{nanos(now), nanos(now.Add(-s.opts.NonceTTL))}
	err = tx.QueryRowContext(ctx, `SELECT count(*) FROM requests WHERE device_id = ? AND `+liveClause, append([]any{id}, live...)...).Scan(&n)
	if err != nil {
		return storeErr(err, "reading requests")
	}
	if n > 0 {
		return errs.E(errs.AlreadyExists, "pairing: device %s already has a live pairing request", id)
	}
	if err := tx.QueryRowContext(ctx, `SELECT count(*) FROM requests WHERE `+liveClause, live...).Scan(&n); err != nil {
		return storeErr(err, "counting requests")
	}
	if n >= s.opts.MaxPending {
		return errs.E(errs.ResourceExhausted, "pairing: %d pairing requests are already pending; try again later", n)
	}
	return nil
}

// insertRequest stores a new pending request with a fresh code (unique among
// stored requests) and nonce.
func (s *Store) insertRequest(ctx context.Context, tx *sql.Tx, pub ed25519.PublicKey, id, name string, now time.Time) (*Request, error) {
	code, err := freshCode(ctx, tx)
	if err != nil {
		return nil, err
	}
	nonce := make([]byte, NonceSize)
	rand.Read(nonce)
	r := &Request{
		Code: code, DeviceID: id, Name: name, PublicKey: pub, Nonce: nonce,
		State: Pending, CreatedAt: now, ExpiresAt: now.Add(s.opts.RequestTTL),
	}
	_, err = tx.ExecContext(ctx, `INSERT INTO requests (nonce_hash, code, device_id, name, pub, created_at, expires_at, state)
		VALUES (?, ?, ?, ?, ?, ?, ?, 0)`, hash(nonce), code, id, name, []byte(pub), nanos(now), nanos(r.ExpiresAt))
	if err != nil {
		return nil, storeErr(err, "storing the pairing request")
	}
	return r, nil
}

// freshCode draws request codes until one is not used by a stored request.
func freshCode(ctx context.Context, tx *sql.Tx) (string, error) {
	for range 8 {
		code := newCode(requestCodeLen)
		var n int
		if err := tx.QueryRowContext(ctx, `SELECT count(*) FROM requests WHERE code = ?`, code).Scan(&n); err != nil {
			return "", storeErr(err, "reading requests")
		}
		if n == 0 {
			return code, nil
		}
	}
	return "", errs.E(errs.Internal, "pairing: could not draw an unused request code")
}

// Approve approves the pending request with code on behalf of by, which must
// be the principal of a paired, unrevoked device.
func (s *Store) Approve(ctx context.Context, code, by string) error {
	return s.decide(ctx, code, by, Approved)
}

// Reject rejects the pending request with code on behalf of by, which must
// be the principal of a paired, unrevoked device.
func (s *Store) Reject(ctx context.Context, code, by string) error {
	return s.decide(ctx, code, by, Rejected)
}

// decide approves or rejects a request by a paired device, and audits the
// decision or its refusal.
func (s *Store) decide(ctx context.Context, code, by string, to State) error {
	c, err := normalizeCode(code, requestCodeLen, "request code")
	if err != nil {
		return err
	}
	action := map[State]string{Approved: ActionApprove, Rejected: ActionReject}[to]
	err = s.decideTx(ctx, c, by, to, action)
	return s.refused(ctx, action, by, "request "+c, err)
}

func (s *Store) decideTx(ctx context.Context, code, by string, to State, action string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return storeErr(err, "starting a transaction")
	}
	defer tx.Rollback()
	if err := checkApprover(ctx, tx, by); err != nil {
		return err
	}
	r, err := s.setState(ctx, tx, code, by, to, now)
	if err != nil {
		return err
	}
	if err := s.record(ctx, event(action, by, fmt.Sprintf("request %s for %s (%q)", code, Principal(r.DeviceID), r.Name))); err != nil {
		return err
	}
	return commit(tx, "committing the decision")
}

// ApproveWithSetupCode approves the request with requestCode for the very
// first device, with the one-time setup code, which it consumes. It is
// refused once a device is paired.
func (s *Store) ApproveWithSetupCode(ctx context.Context, requestCode, setupCode string) error {
	rc, err := normalizeCode(requestCode, requestCodeLen, "request code")
	if err != nil {
		return err
	}
	sc, err := normalizeCode(setupCode, setupCodeLen, "setup code")
	if err != nil {
		return err
	}
	err = s.approveWithSetupCodeTx(ctx, rc, sc)
	return s.refused(ctx, ActionApprove, approvedBySetupCode, "request "+rc+" with the setup code", err)
}

func (s *Store) approveWithSetupCodeTx(ctx context.Context, rc, sc string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	if s.setupFails.full("", now) {
		return errs.E(errs.ResourceExhausted, "pairing: too many wrong setup codes in the last minute; try again later")
	}
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return storeErr(err, "starting a transaction")
	}
	defer tx.Rollback()
	if n, err := pairedCount(ctx, tx); err != nil {
		return err
	} else if n > 0 {
		return errs.E(errs.FailedPrecondition, "pairing: a device is already paired; the setup code is only for the first device")
	}
	if err := s.consumeSetupCode(ctx, tx, sc, now); err != nil {
		return err
	}
	r, err := s.setState(ctx, tx, rc, approvedBySetupCode, Approved, now)
	if err != nil {
		return err
	}
	if err := s.record(ctx, event(ActionApprove, approvedBySetupCode, fmt.Sprintf("request %s for %s (%q), the first device", rc, Principal(r.DeviceID), r.Name))); err != nil {
		return err
	}
	return commit(tx, "committing the approval")
}

// checkApprover refuses by unless it is a paired, unrevoked device.
func checkApprover(ctx context.Context, q querier, by string) error {
	id, ok := strings.CutPrefix(by, "device:")
	if !ok || checkDeviceID(id) != nil {
		return errs.E(errs.PermissionDenied, "pairing: %q is not a device principal", by)
	}
	var n int
	if err := q.QueryRowContext(ctx, `SELECT count(*) FROM devices WHERE id = ? AND revoked_at IS NULL`, id).Scan(&n); err != nil {
		return storeErr(err, "reading device %s", id)
	}
	if n == 0 {
		return errs.E(errs.PermissionDenied, "pairing: %s is not a paired device", by)
	}
	return nil
}

// setState moves the pending request with code to state to and returns it.
func (s *Store) setState(ctx context.Context, tx *sql.Tx, code, by string, to State, now time.Time) (*Request, error) {
	r, err := requestByCode(ctx, tx, code)
	if err != nil {
		return nil, err
	}
	switch {
	case r.State != Pending:
		return nil, errs.E(errs.FailedPrecondition, "pairing: request %s is already %s", code, r.State)
	case !now.Before(r.ExpiresAt):
		return nil, errs.E(errs.FailedPrecondition, "pairing: request %s expired", code)
	}
	_, err = tx.ExecContext(ctx, `UPDATE requests SET state = ?, decided_by = ?, decided_at = ? WHERE nonce_hash = ?`,
		int(to), by, nanos(now), r.nonceHash)
	if err != nil {
		return nil, storeErr(err, "updating request %s", code)
	}
	return r, nil
}

// requestColumns are the columns scanRequest reads, in order.
const requestColumns = `nonce_hash, code, device_id, name, pub, state, created_at, expires_at, decided_by, decided_at`

// scanner is a *sql.Row or *sql.Rows.
type scanner interface{ Scan(dest ...any) error }

// scanRequest reads one row of requestColumns.
func scanRequest(row scanner) (*Request, error) {
	var (
		r                Request
		pub              []byte
		created, expires int64
		decided          sql.NullInt64
	)
	err := row.Scan(&r.nonceHash, &r.Code, &r.DeviceID, &r.Name, &pub, &r.State, &created, &expires, &r.DecidedBy, &decided)
	if err != nil {
		return nil, err
	}
	r.PublicKey = ed25519.PublicKey(pub)
	r.CreatedAt, r.ExpiresAt = fromNanos(created), fromNanos(expires)
	if decided.Valid {
		r.DecidedAt = fromNanos(decided.Int64)
	}
	return &r, nil
}

// requestByCode reads the newest request with code; errs.NotFound if none.
func requestByCode(ctx context.Context, q querier, code string) (*Request, error) {
	row := q.QueryRowContext(ctx, `SELECT `+requestColumns+` FROM requests WHERE code = ? ORDER BY created_at DESC LIMIT 1`, code)
	r, err := scanRequest(row)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return nil, errs.E(errs.NotFound, "pairing: no pairing request with code %s", code)
	case err != nil:
		return nil, storeErr(err, "reading request %s", code)
	}
	return r, nil
}

// Pending lists the live requests (pending, or approved and not yet
// completed within NonceTTL), oldest first, without nonces.
func (s *Store) Pending(ctx context.Context) ([]Request, error) {
	now := s.now()
	rows, err := s.db.QueryContext(ctx, `SELECT `+requestColumns+` FROM requests WHERE `+liveClause+` ORDER BY created_at`,
		nanos(now), nanos(now.Add(-s.opts.NonceTTL)))
	if err != nil {
		return nil, storeErr(err, "listing requests")
	}
	defer rows.Close()
	var out []Request
	for rows.Next() {
		r, err := scanRequest(rows)
		if err != nil {
			return nil, storeErr(err, "reading a request")
		}
		r.nonceHash = nil
		out = append(out, *r)
	}
	if err := rows.Err(); err != nil {
		return nil, storeErr(err, "listing requests")
	}
	return out, nil
}

// commit commits tx; what says what for the error.
func commit(tx *sql.Tx, what string) error {
	if err := tx.Commit(); err != nil {
		return storeErr(err, "%s", what)
	}
	return nil
}
