package pairing

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"database/sql"
	"encoding/base64"
	"errors"
	"fmt"
	"time"

	"github.com/contractual/contractual/internal/errs"
	"github.com/contractual/contractual/internal/tailnet"
)

// TokenSize is the size of a device token before encoding.
const TokenSize = 32

// Complete finishes pairing: the device with deviceID proves it holds the
// private key of the request with nonce by signing SignedMessage(deviceID,
// nonce). On success the device is recorded with the approved scopes, and
// its token (32 random bytes, base64url without padding) is returned, this
// once, with its identity; only the token's hash is kept.
//
// The checks, in order, each with its own error: the request exists
// (NotFound); deviceID is the key's id (PermissionDenied "does not match");
// the signature verifies (Unauthenticated "bad signature") — so that only
// the key holder learns the request's state —; the request was not already
// completed (AlreadyExists "already completed": one proof gets one token,
// however often it is sent); it was not replaced by a newer request of the
// device (FailedPrecondition "replaced") or rejected (PermissionDenied); it
// has not expired unapproved (FailedPrecondition "expired"); it is
// approved (FailedPrecondition "awaiting approval"); and the nonce is not
// stale: Complete must come within Config.NonceTTL of the approval
// (FailedPrecondition "stale"); and it comes from the tailnet node the
// request was begun from, or from outside the tailnet if it was begun
// there (PermissionDenied "another tailnet node"). The device's token is
// bound to that node (see Authenticate).
func (s *Store) Complete(ctx context.Context, deviceID string, nonce, sig []byte) (string, Identity, error) {
	if err := checkComplete(deviceID, nonce, sig); err != nil {
		return "", Identity{}, err
	}
	token, id, err := s.completeTx(ctx, deviceID, nonce, sig)
	if errs.Is(err, errs.NotFound) {
		return "", Identity{}, err // no request: nothing to attach a record to
	}
	if err := s.refused(ctx, ActionPair, Principal(deviceID), "completing pairing", err); err != nil {
		return "", Identity{}, err
	}
	return token, id, nil
}

func (s *Store) completeTx(ctx context.Context, deviceID string, nonce, sig []byte) (string, Identity, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return "", Identity{}, storeErr(err, "starting a transaction")
	}
	defer tx.Rollback()
	r, err := requestByNonce(ctx, tx, nonce)
	if err != nil {
		return "", Identity{}, err
	}
	if err := s.checkProof(r, deviceID, nonce, sig, tailnet.From(ctx).Key(), now); err != nil {
		return "", Identity{}, err
	}
	token, id, err := s.pair(ctx, tx, r, now)
	if err != nil {
		return "", Identity{}, err
	}
	detail := fmt.Sprintf("device %q paired, %s, scopes %s (request %s, approved by %s)", r.Name, r.Kind, r.Scopes, r.Code, r.DecidedBy)
	if err := s.record(ctx, event(ActionPair, Principal(r.DeviceID), detail)); err != nil {
		return "", Identity{}, err
	}
	if err := commit(tx, "committing the pairing"); err != nil {
		return "", Identity{}, err
	}
	return token, id, nil
}

// checkComplete refuses malformed Complete arguments.
func checkComplete(deviceID string, nonce, sig []byte) error {
	if err := checkDeviceID(deviceID); err != nil {
		return err
	}
	if len(nonce) != NonceSize {
		return errs.E(errs.Invalid, "pairing: nonce must be %d bytes, got %d", NonceSize, len(nonce))
	}
	if len(sig) != ed25519.SignatureSize {
		return errs.E(errs.Invalid, "pairing: signature must be %d bytes, got %d", ed25519.SignatureSize, len(sig))
	}
	return nil
}

// requestByNonce reads the request with nonce; errs.NotFound if none.
func requestByNonce(ctx context.Context, q querier, nonce []byte) (*Request, error) {
	row := q.QueryRowContext(ctx, `SELECT `+requestColumns+` FROM requests WHERE nonce_hash = ?`, hash(nonce))
	r, err := scanRequest(row)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return nil, errs.E(errs.NotFound, "pairing: no pairing request for this nonce")
	case err != nil:
		return nil, storeErr(err, "reading the pairing request")
	}
	return r, nil
}

// checkProof runs Complete's checks on request r (see Complete).
func (s *Store) checkProof(r *Request, deviceID string, nonce, sig []byte, node string, now time.Time) error {
	switch {
	case DeviceID(r.PublicKey) != deviceID:
		return errs.E(errs.PermissionDenied, "pairing: device id %s does not match the key of the request", deviceID)
	case !ed25519.Verify(r.PublicKey, SignedMessage(deviceID, nonce), sig):
		return errs.E(errs.Unauthenticated, "pairing: bad signature of the nonce")
	case r.tailnetKey != node:
		return errs.E(errs.PermissionDenied, "pairing: request %s was begun from another tailnet node (or from outside the tailnet): complete it from the device that began it, where it began", r.Code)
	case r.State == Completed:
		return errs.E(errs.AlreadyExists, "pairing: request %s was already completed: device %s is paired, and its token went to the first completion only; if this device did not get it, begin again", r.Code, deviceID)
	case r.State == Replaced:
		return errs.E(errs.FailedPrecondition, "pairing: request %s was replaced: this device began again, so only its newest request counts", r.Code)
	case r.State == Rejected:
		return errs.E(errs.PermissionDenied, "pairing: request %s was rejected", r.Code)
	case r.State == Pending && !now.Before(r.ExpiresAt):
		return errs.E(errs.FailedPrecondition, "pairing: request %s expired before approval", r.Code)
	case r.State == Pending:
		return errs.E(errs.FailedPrecondition, "pairing: request %s is awaiting approval", r.Code)
	case !now.Before(r.DecidedAt.Add(s.opts.NonceTTL)):
		return errs.E(errs.FailedPrecondition, "pairing: nonce is stale (not completed within %s of approval); begin again", s.opts.NonceTTL)
	}
	return nil
}

// pair marks r completed and records its device with r's scopes and a new
// token, which it returns with the device's identity. A revoked or expired
// record of the same device is replaced.
func (s *Store) pair(ctx context.Context, tx *sql.Tx, r *Request, now time.Time) (string, Identity, error) {
	if _, err := tx.ExecContext(ctx, `UPDATE requests SET state = ? WHERE nonce_hash = ?`, int(Completed), r.nonceHash); err != nil {
		return "", Identity{}, storeErr(err, "completing request %s", r.Code)
	}
	if _, err := tx.ExecContext(ctx, `DELETE FROM devices WHERE id = ? AND NOT `+activeClause, r.DeviceID, nanos(now)); err != nil {
		return "", Identity{}, storeErr(err, "replacing revoked device %s", r.DeviceID)
	}
	raw := make([]byte, TokenSize)
	rand.Read(raw)
	token := base64.RawURLEncoding.EncodeToString(raw)
	id := Identity{Principal: Principal(r.DeviceID), Name: r.Name, Scopes: r.Scopes, Kind: r.Kind, ExpiresAt: s.lifetime(r.Kind).expiry(now, now)}
	_, err := tx.ExecContext(ctx, `INSERT INTO devices (id, name, pub, scope, token_hash, paired_at, approved_by, kind, last_used_at, expires_at, tailnet_key, tailnet_peer)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT(id) DO NOTHING`,
		r.DeviceID, r.Name, []byte(r.PublicKey), r.Scopes.String(), hash([]byte(token)), nanos(now), r.DecidedBy,
		r.Kind.String(), nanos(now), nanos(id.ExpiresAt), r.tailnetKey, encodePeer(r.Tailnet))
	if err != nil {
		return "", Identity{}, storeErr(err, "storing device %s", r.DeviceID)
	}
	return token, id, s.checkInserted(ctx, tx, r.DeviceID, token)
}

// checkInserted refuses when device id was already paired (the insert did
// nothing).
func (s *Store) checkInserted(ctx context.Context, tx *sql.Tx, id, token string) error {
	var n int
	if err := tx.QueryRowContext(ctx, `SELECT count(*) FROM devices WHERE id = ? AND token_hash = ?`, id, hash([]byte(token))).Scan(&n); err != nil {
		return storeErr(err, "reading device %s", id)
	}
	if n == 0 {
		return errs.E(errs.AlreadyExists, "pairing: device %s is already paired", id)
	}
	return nil
}
