package pairing

import (
	"context"
	"crypto/ed25519"
	"crypto/subtle"
	"database/sql"
	"encoding/base64"
	"errors"
	"time"

	"github.com/contractual/contractual/internal/errs"
)

// Device is a paired device. RevokedAt is zero while the device is active.
type Device struct {
	ID         string
	Name       string
	PublicKey  ed25519.PublicKey
	Scope      string
	PairedAt   time.Time
	ApprovedBy string
	RevokedAt  time.Time
	RevokedBy  string
}

// Principal returns the device's principal, "device:<id>".
func (d Device) Principal() string { return Principal(d.ID) }

// errBadToken is the one error for an unknown, malformed or revoked token,
// so that a caller cannot tell which.
func errBadToken() error {
	return errs.E(errs.Unauthenticated, "pairing: invalid or revoked device token")
}

// Authenticate returns the principal ("device:<id>") of the device holding
// token, if the token is valid and the device unrevoked; errs.Unauthenticated
// otherwise, with the same message whatever the reason. There is no cache:
// a revocation holds at the next call.
//
// A valid token is always accepted, whatever failed before it, from its own
// source (e.g. the remote IP, or the tailnet user behind `tailscale serve`)
// or any other: failures never lock out a good token. Failures are counted
// per source and overall in a sliding minute; once a source has had
// Options.AuthFailuresPerMinute failures, or all sources together
// Options.AuthFailuresPerMinuteTotal, a further failure is answered with
// errs.ResourceExhausted (back off) instead of errs.Unauthenticated.
func (s *Store) Authenticate(ctx context.Context, token, source string) (string, error) {
	p, err := s.lookupToken(ctx, token)
	if !errs.Is(err, errs.Unauthenticated) {
		return p, err
	}
	now := s.now()
	fromSource := s.authFails.add(source, now)
	overall := s.allFails.add("", now)
	switch {
	case fromSource:
		return "", errs.E(errs.ResourceExhausted, "pairing: invalid or revoked device token, and too many failed authentications from this source; try again later")
	case overall:
		return "", errs.E(errs.ResourceExhausted, "pairing: invalid or revoked device token, and too many failed authentications; try again later")
	}
	return "", err
}

// lookupToken finds the unrevoked device whose token hash matches token.
func (s *Store) lookupToken(ctx context.Context, token string) (string, error) {
	raw, err := base64.RawURLEncoding.DecodeString(token)
	if err != nil || len(raw) != TokenSize {
		return "", errBadToken()
	}
	want := hash([]byte(token))
	var id string
	var got []byte
	var revoked sql.NullInt64
	err = s.db.QueryRowContext(ctx, `SELECT id, token_hash, revoked_at FROM devices WHERE token_hash = ?`, want).Scan(&id, &got, &revoked)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return "", errBadToken()
	case err != nil:
		return "", storeErr(err, "reading devices")
	case subtle.ConstantTimeCompare(got, want) != 1 || revoked.Valid:
		return "", errBadToken()
	}
	return Principal(id), nil
}

// Revoke revokes device deviceID on behalf of by, a paired, unrevoked device
// (possibly itself). Its token is refused from the next Authenticate on.
func (s *Store) Revoke(ctx context.Context, deviceID, by string) error {
	if err := checkDeviceID(deviceID); err != nil {
		return err
	}
	return s.refused(ctx, ActionRevoke, by, "revoking "+Principal(deviceID), s.revokeTx(ctx, deviceID, by))
}

func (s *Store) revokeTx(ctx context.Context, deviceID, by string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return storeErr(err, "starting a transaction")
	}
	defer tx.Rollback()
	if err := checkApprover(ctx, tx, by); err != nil {
		return err
	}
	var revoked sql.NullInt64
	err = tx.QueryRowContext(ctx, `SELECT revoked_at FROM devices WHERE id = ?`, deviceID).Scan(&revoked)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return errs.E(errs.NotFound, "pairing: no device %s", deviceID)
	case err != nil:
		return storeErr(err, "reading device %s", deviceID)
	case revoked.Valid:
		return errs.E(errs.FailedPrecondition, "pairing: device %s is already revoked", deviceID)
	}
	_, err = tx.ExecContext(ctx, `UPDATE devices SET revoked_at = ?, revoked_by = ? WHERE id = ?`, nanos(s.now()), by, deviceID)
	if err != nil {
		return storeErr(err, "revoking device %s", deviceID)
	}
	if err := s.record(ctx, event(ActionRevoke, by, "revoked "+Principal(deviceID))); err != nil {
		return err
	}
	return commit(tx, "committing the revocation")
}

// Devices lists the devices, revoked ones included, in pairing order.
func (s *Store) Devices(ctx context.Context) ([]Device, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT id, name, pub, scope, paired_at, approved_by, revoked_at, revoked_by
		FROM devices ORDER BY paired_at, rowid`)
	if err != nil {
		return nil, storeErr(err, "listing devices")
	}
	defer rows.Close()
	var out []Device
	for rows.Next() {
		d, err := scanDevice(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, d)
	}
	if err := rows.Err(); err != nil {
		return nil, storeErr(err, "listing devices")
	}
	return out, nil
}

// scanDevice reads one row of Devices' query.
func scanDevice(row scanner) (Device, error) {
	var (
		d       Device
		pub     []byte
		paired  int64
		revoked sql.NullInt64
	)
	if err := row.Scan(&d.ID, &d.Name, &pub, &d.Scope, &paired, &d.ApprovedBy, &revoked, &d.RevokedBy); err != nil {
		return Device{}, storeErr(err, "reading a device")
	}
	d.PublicKey = ed25519.PublicKey(pub)
	d.PairedAt = fromNanos(paired)
	if revoked.Valid {
		d.RevokedAt = fromNanos(revoked.Int64)
	}
	return d, nil
}
