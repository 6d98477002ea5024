package pairing

import (
	"context"
	"database/sql"
	"errors"
	"time"

	"github.com/contractual/contractual/internal/errs"
)

// SetupCode creates the one-time setup code that pairs the first device
// (the server prints it on its console). It works only while no unrevoked
// device is paired (else errs.FailedPrecondition); a new code replaces any
// earlier unused one. Only the code's hash is stored; it is valid for
// Options.SetupCodeTTL and can be used once.
func (s *Store) SetupCode(ctx context.Context) (string, time.Time, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return "", time.Time{}, storeErr(err, "starting a transaction")
	}
	defer tx.Rollback()
	if n, err := pairedCount(ctx, tx); err != nil {
		return "", time.Time{}, err
	} else if n > 0 {
		return "", time.Time{}, errs.E(errs.FailedPrecondition, "pairing: a device is already paired; pair more devices by approval")
	}
	if _, err := tx.ExecContext(ctx, `DELETE FROM setup_codes WHERE used_at IS NULL`); err != nil {
		return "", time.Time{}, storeErr(err, "dropping old setup codes")
	}
	code := newCode(setupCodeLen)
	exp := now.Add(s.opts.SetupCodeTTL)
	if _, err := tx.ExecContext(ctx, `INSERT INTO setup_codes (hash, created_at, expires_at) VALUES (?, ?, ?)`,
		hash([]byte(code)), nanos(now), nanos(exp)); err != nil {
		return "", time.Time{}, storeErr(err, "storing the setup code")
	}
	if err := tx.Commit(); err != nil {
		return "", time.Time{}, storeErr(err, "committing the setup code")
	}
	return code, exp, nil
}

// pairedCount counts the unrevoked devices.
func pairedCount(ctx context.Context, q querier) (int, error) {
	var n int
	if err := q.QueryRowContext(ctx, `SELECT count(*) FROM devices WHERE revoked_at IS NULL`).Scan(&n); err != nil {
		return 0, storeErr(err, "counting devices")
	}
	return n, nil
}

// consumeSetupCode checks code (normalized) against the stored setup codes
// and marks it used, inside tx. Wrong, used and expired codes get distinct
// errors.
func (s *Store) consumeSetupCode(ctx context.Context, tx *sql.Tx, code string, now time.Time) error {
	var exp int64
	var used sql.NullInt64
	h := hash([]byte(code))
	err := tx.QueryRowContext(ctx, `SELECT expires_at, used_at FROM setup_codes WHERE hash = ?`, h).Scan(&exp, &used)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		s.setupFails.add("", now)
		return errs.E(errs.PermissionDenied, "pairing: wrong setup code")
	case err != nil:
		return storeErr(err, "reading the setup code")
	case used.Valid:
		return errs.E(errs.FailedPrecondition, "pairing: setup code already used")
	case !now.Before(fromNanos(exp)):
		return errs.E(errs.FailedPrecondition, "pairing: setup code expired")
	}
	if _, err := tx.ExecContext(ctx, `UPDATE setup_codes SET used_at = ? WHERE hash = ?`, nanos(now), h); err != nil {
		return storeErr(err, "consuming the setup code")
	}
	return nil
}

// querier is a *sql.DB or a *sql.Tx.
type querier interface {
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
}
