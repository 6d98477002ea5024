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
	"github.com/contractual/contractual/internal/tailnet"
)

// State is a pairing request's state.
type State int

// The states of a request. Only Pending and Approved are live. Replaced
// is a live request its device began again.
const (
	Pending State = iota
	Approved
	Rejected
	Completed
	Replaced
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
	case Replaced:
		return "replaced"
	}
	return "unknown"
}

// NonceSize is the size of a pairing nonce.
const NonceSize = 32

// purgeAfter is how long finished requests and setup codes are kept (for
// distinct replay, rejection and expiry errors) before they are deleted.
const purgeAfter = 24 * time.Hour

// Request is a pairing request. Nonce is set only in Begin's result: the
// store keeps its hash.
type Request struct {
	Code      string
	DeviceID  string
	Name      string
	PublicKey ed25519.PublicKey
	Nonce     []byte
	// Scopes are what the device asks for; approving grants exactly these.
	Scopes    Scopes
	Kind      Kind
	State     State
	CreatedAt time.Time
	ExpiresAt time.Time
	DecidedBy string
	DecidedAt time.Time
	// Tailnet is the tailnet node the request was begun from (nil:
	// outside the tailnet); it must be completed from the same one.
	Tailnet *tailnet.Peer
	// tailnetKey is the key of Tailnet as stored: what the device's token
	// is bound to.
	tailnetKey string
	nonceHash  []byte
}

// Begin records a pairing request for the device with key pub, named name,
// of kind kind, asking for scopes, and returns it with a short code to show
// the user and a random nonce to sign after approval. A live request of the
// same device is replaced (its code and nonce stop working), so that a
// device that failed a step (a mistyped setup code, a lost code) may begin
// again at once. It is refused (errs.ResourceExhausted) beyond
// Config.MaxPending live requests, Config.BeginsPerMinute calls per
// minute overall or Config.BeginsPerSourcePerMinute from the caller's
// source (WithSource), and (errs.AlreadyExists) for a device that is
// paired and active. The request records the tailnet node it came from
// (tailnet.From), which its completion must come from too. The request is
// audited.
func (s *Store) Begin(ctx context.Context, pub ed25519.PublicKey, name string, scopes Scopes, kind Kind) (*Request, error) {
	if err := checkPub(pub); err != nil {
		return nil, err
	}
	if err := checkName(name); err != nil {
		return nil, err
	}
	if scopes == 0 || scopes&^allScopes != 0 {
		return nil, errs.E(errs.Invalid, "pairing: a request must ask for at least one of the scopes %s", strings.Join(scopeNames, ", "))
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
	replaced, err := s.checkCanBegin(ctx, tx, id, now)
	if err != nil {
		return nil, err
	}
	r, err := s.insertRequest(ctx, tx, &Request{DeviceID: id, Name: name, PublicKey: pub, Scopes: scopes, Kind: kind, Tailnet: tailnet.From(ctx)}, now)
	if err != nil {
		return nil, err
	}
	detail := fmt.Sprintf("request %s, device name %q, %s, scopes %s, from %q", r.Code, name, kind, scopes, src)
	if len(replaced) > 0 {
		detail += ", replacing request " + strings.Join(replaced, ", ")
	}
	if err := s.record(ctx, event(ActionRequest, Principal(id), detail)); err != nil {
		return nil, err
	}
	if err := tx.Commit(); err != nil {
		return nil, storeErr(err, "committing the pairing request")
	}
	return r, nil
}

// liveClause selects the live requests at (?1 = now, ?2 = now - NonceTTL).
const liveClause = `((state = 0 AND expires_at > ?) OR (state = 1 AND decided_at > ?))`

// checkCanBegin refuses a request for an active device and one beyond the
// pending limit, and marks the live requests of device id replaced,
// returning their codes.
func (s *Store) checkCanBegin(ctx context.Context, tx *sql.Tx, id string, now time.Time) ([]string, error) {
	var n int
	err := tx.QueryRowContext(ctx, `SELECT count(*) FROM devices WHERE id = ? AND `+activeClause, id, nanos(now)).Scan(&n)
	if err != nil {
		return nil, storeErr(err, "reading device %s", id)
	}
	if n > 0 {
		return nil, errs.E(errs.AlreadyExists, "pairing: device %s is already paired", id)
	}
	live := []any{nanos(now), nanos(now.Add(-s.opts.NonceTTL))}
	rows, err := tx.QueryContext(ctx, `UPDATE requests SET state = ?, decided_at = ? WHERE device_id = ? AND `+liveClause+` RETURNING code`,
		append([]any{int(Replaced), nanos(now), id}, live...)...)
	if err != nil {
		return nil, storeErr(err, "replacing the requests of device %s", id)
	}
	var replaced []string
	for rows.Next() {
		var code string
		if err := rows.Scan(&code); err != nil {
			rows.Close()
			return nil, storeErr(err, "replacing the requests of device %s", id)
		}
		replaced = append(replaced, code)
	}
	if err := errors.Join(rows.Err(), rows.Close()); err != nil {
		return nil, storeErr(err, "replacing the requests of device %s", id)
	}
	if err := tx.QueryRowContext(ctx, `SELECT count(*) FROM requests WHERE `+liveClause, live...).Scan(&n); err != nil {
		return nil, storeErr(err, "counting requests")
	}
	if n >= s.opts.MaxPending {
		return nil, errs.E(errs.ResourceExhausted, "pairing: %d pairing requests are already pending; try again later", n)
	}
	return replaced, nil
}

// insertRequest stores r as a new pending request with a fresh code
// (unique among stored requests) and nonce, and returns it complete.
func (s *Store) insertRequest(ctx context.Context, tx *sql.Tx, r *Request, now time.Time) (*Request, error) {
	code, err := freshCode(ctx, tx)
	if err != nil {
		return nil, err
	}
	nonce := make([]byte, NonceSize)
	rand.Read(nonce)
	r.Code, r.Nonce, r.State, r.CreatedAt, r.ExpiresAt = code, nonce, Pending, now, now.Add(s.opts.RequestTTL)
	r.tailnetKey = r.Tailnet.Key()
	_, err = tx.ExecContext(ctx, `INSERT INTO requests (nonce_hash, code, device_id, name, pub, created_at, expires_at, state, scopes, kind, tailnet_key, tailnet_peer)
		VALUES (?, ?, ?, ?, ?, ?, ?, 0, ?, ?, ?, ?)`, hash(nonce), code, r.DeviceID, r.Name, []byte(r.PublicKey), nanos(now), nanos(r.ExpiresAt),
		r.Scopes.String(), r.Kind.String(), r.Tailnet.Key(), encodePeer(r.Tailnet))
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

// Approve approves the pending request with code, and exactly the scopes it
// asks for, on behalf of by, which must be the principal of an active
// device with scope approve and every scope the request asks for.
func (s *Store) Approve(ctx context.Context, code, by string) error {
	return s.decide(ctx, code, by, Approved)
}

// Reject rejects the pending request with code on behalf of by, which must
// be the principal of an active device with scope approve.
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
	held, err := activeDevice(ctx, tx, by, ScopeApprove, now)
	if err != nil {
		return err
	}
	// The approver may grant only what it may do now: its scopes as the
	// tailnet's app capability caps them for this request.
	if id, ok := IdentityFrom(ctx); ok && id.Principal == by {
		held = held.Cap(id.Scopes)
	}
	r, err := requestByCode(ctx, tx, code)
	if err != nil {
		return err
	}
	if to == Approved && !held.Has(r.Scopes) {
		return errs.E(errs.PermissionDenied, "pairing: %s has scopes %s and may grant only those; request %s asks for %s: approve it on a device that holds them",
			by, held, code, r.Scopes)
	}
	if err := s.setState(ctx, tx, r, by, to, now); err != nil {
		return err
	}
	if err := s.record(ctx, event(action, by, fmt.Sprintf("request %s for %s (%q), %s, scopes %s", code, Principal(r.DeviceID), r.Name, r.Kind, r.Scopes))); err != nil {
		return err
	}
	return commit(tx, "committing the decision")
}

// ApproveWithSetupCode approves the request with requestCode with the
// one-time setup code, which it consumes, and grants it scope owner
// whatever it asked for: it pairs the first device, or a new owner device
// when none is active (all revoked or expired). It is refused while an
// owner device is active.
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
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return storeErr(err, "starting a transaction")
	}
	defer tx.Rollback()
	if n, err := ownerCount(ctx, tx, now); err != nil {
		return err
	} else if n > 0 {
		return errs.E(errs.FailedPrecondition, "pairing: an owner device is already paired; the setup code is only for when none is: approve request %s on a paired device", rc)
	}
	if err := s.consumeSetupCode(ctx, tx, sc, now); errors.Is(err, errWrongSetupCode) {
		tx.Rollback()
		return s.wrongSetupCode(ctx, now)
	} else if err != nil {
		return err
	}
	r, err := requestByCode(ctx, tx, rc)
	if err != nil {
		return err
	}
	asked := r.Scopes
	r.Scopes = ScopeOwner
	if err := s.setState(ctx, tx, r, approvedBySetupCode, Approved, now); err != nil {
		return err
	}
	detail := fmt.Sprintf("request %s for %s (%q), %s, with the setup code: scope owner", rc, Principal(r.DeviceID), r.Name, r.Kind)
	if asked != ScopeOwner {
		detail += " (it asked for " + asked.String() + ")"
	}
	if err := s.record(ctx, event(ActionApprove, approvedBySetupCode, detail)); err != nil {
		return err
	}
	return commit(tx, "committing the approval")
}

// activeDevice refuses by unless it is an active device holding need, and
// returns its scopes.
func activeDevice(ctx context.Context, q querier, by string, need Scopes, now time.Time) (Scopes, error) {
	id, ok := strings.CutPrefix(by, "device:")
	if !ok || checkDeviceID(id) != nil {
		return 0, errs.E(errs.PermissionDenied, "pairing: %q is not a device principal", by)
	}
	var scope string
	err := q.QueryRowContext(ctx, `SELECT scope FROM devices WHERE id = ? AND `+activeClause, id, nanos(now)).Scan(&scope)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return 0, errs.E(errs.PermissionDenied, "pairing: %s is not a paired device", by)
	case err != nil:
		return 0, storeErr(err, "reading device %s", id)
	}
	held := parseStored(scope)
	if !held.Has(need) {
		return 0, errs.E(errs.PermissionDenied, "pairing: %s has scopes %s; this needs scope %s", by, orNone(held), need)
	}
	return held, nil
}

// setState moves the pending request r to state to, with r.Scopes (which
// the setup code may have raised to owner).
func (s *Store) setState(ctx context.Context, tx *sql.Tx, r *Request, by string, to State, now time.Time) error {
	switch {
	case r.State == Replaced:
		return errs.E(errs.FailedPrecondition, "pairing: request %s was replaced: its device began again; look for its new code", r.Code)
	case r.State != Pending:
		return errs.E(errs.FailedPrecondition, "pairing: request %s is already %s", r.Code, r.State)
	case !now.Before(r.ExpiresAt):
		return errs.E(errs.FailedPrecondition, "pairing: request %s expired", r.Code)
	}
	_, err := tx.ExecContext(ctx, `UPDATE requests SET state = ?, decided_by = ?, decided_at = ?, scopes = ? WHERE nonce_hash = ?`,
		int(to), by, nanos(now), r.Scopes.String(), r.nonceHash)
	if err != nil {
		return storeErr(err, "updating request %s", r.Code)
	}
	return nil
}

// requestColumns are the columns scanRequest reads, in order.
const requestColumns = `nonce_hash, code, device_id, name, pub, state, created_at, expires_at, decided_by, decided_at, scopes, kind, tailnet_key, tailnet_peer`

// scanner is a *sql.Row or *sql.Rows.
type scanner interface{ Scan(dest ...any) error }

// scanRequest reads one row of requestColumns.
func scanRequest(row scanner) (*Request, error) {
	var (
		r                Request
		pub              []byte
		created, expires int64
		decided          sql.NullInt64
		scopes, kind     string
		key, peer        string
	)
	err := row.Scan(&r.nonceHash, &r.Code, &r.DeviceID, &r.Name, &pub, &r.State, &created, &expires, &r.DecidedBy, &decided, &scopes, &kind, &key, &peer)
	if err != nil {
		return nil, err
	}
	r.tailnetKey, r.Tailnet = key, decodePeer(peer)
	r.Scopes, r.Kind = parseStored(scopes), parseKind(kind)
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

// commit commits tx; what says what for the error.
func commit(tx *sql.Tx, what string) error {
	if err := tx.Commit(); err != nil {
		return storeErr(err, "%s", what)
	}
	return nil
}
