package pairing

import (
	"context"
	"database/sql"
	"errors"
	"time"

	"github.com/contractual/contractual/internal/errs"
)

// SetupCode creates the one-time setup code that pairs an owner device: the
// first device, or a new one when no owner device is active any more (all
// revoked or expired). The server prints it on its console. It works only
// while no owner device is active (else errs.FailedPrecondition); a new
// code ends any earlier unused one, which is kept as expired so that it is
// told apart from a mistyped code. Only the code's hash is stored; it is
// valid for Config.SetupCodeTTL and can be used once.
func (s *Store) SetupCode(ctx context.Context) (string, time.Time, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return "", time.Time{}, storeErr(err, "starting a transaction")
	}
	defer tx.Rollback()
	if n, err := ownerCount(ctx, tx, now); err != nil {
		return "", time.Time{}, err
	} else if n > 0 {
		return "", time.Time{}, errs.E(errs.FailedPrecondition, "pairing: an owner device is already paired; pair more devices by approval")
	}
	if _, err := tx.ExecContext(ctx, `DELETE FROM setup_codes WHERE created_at < ?`, nanos(now.Add(-purgeAfter))); err != nil {
		return "", time.Time{}, storeErr(err, "purging old setup codes")
	}
	if _, err := tx.ExecContext(ctx, `UPDATE setup_codes SET expires_at = ? WHERE used_at IS NULL AND expires_at > ?`, nanos(now), nanos(now)); err != nil {
		return "", time.Time{}, storeErr(err, "ending old setup codes")
	}
	s.setupWrong = 0
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

// SetupCodeDue reports whether a fresh setup code is needed: no owner
// device is active (none paired yet, or all revoked or expired), so that
// only a setup code can pair one; no setup code is valid (unused and
// unexpired); and no request approved with one is still waiting for its
// device to complete. `serve` then makes one and prints it.
func (s *Store) SetupCodeDue(ctx context.Context) (bool, error) {
	now := s.now()
	if n, err := ownerCount(ctx, s.db, now); err != nil || n > 0 {
		return false, err
	}
	var n int
	err := s.db.QueryRowContext(ctx, `SELECT (SELECT count(*) FROM setup_codes WHERE used_at IS NULL AND expires_at > ?1)
		+ (SELECT count(*) FROM requests WHERE state = ?2 AND decided_by = ?3 AND decided_at > ?4)`,
		nanos(now), int(Approved), approvedBySetupCode, nanos(now.Add(-s.opts.NonceTTL))).Scan(&n)
	if err != nil {
		return false, storeErr(err, "reading setup codes")
	}
	return n == 0, nil
}

// ownerCount counts the active devices with scope owner.
func ownerCount(ctx context.Context, q querier, now time.Time) (int, error) {
	rows, err := q.QueryContext(ctx, `SELECT scope FROM devices WHERE `+activeClause, nanos(now))
	if err != nil {
		return 0, storeErr(err, "counting devices")
	}
	defer rows.Close()
	n := 0
	for rows.Next() {
		var scope string
		if err := rows.Scan(&scope); err != nil {
			return 0, storeErr(err, "counting devices")
		}
		if parseStored(scope).Has(ScopeOwner) {
			n++
		}
	}
	if err := rows.Err(); err != nil {
		return 0, storeErr(err, "counting devices")
	}
	return n, nil
}

// whereSetupCodes tells the owner where to find a valid setup code.
const whereSetupCodes = "the server prints a new one on its console (in the output of `contractual serve`, the latest line with \"setup code\") while no owner device is paired"

// consumeSetupCode checks code (normalized) against the stored setup codes
// and marks it used, inside tx. Wrong, used and expired (or replaced) codes
// get distinct errors.
func (s *Store) consumeSetupCode(ctx context.Context, tx *sql.Tx, code string, now time.Time) error {
	var exp int64
	var used sql.NullInt64
	h := hash([]byte(code))
	err := tx.QueryRowContext(ctx, `SELECT expires_at, used_at FROM setup_codes WHERE hash = ?`, h).Scan(&exp, &used)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return errWrongSetupCode
	case err != nil:
		return storeErr(err, "reading the setup code")
	case used.Valid:
		return errs.E(errs.FailedPrecondition, "pairing: setup code already used; %s", whereSetupCodes)
	case !now.Before(fromNanos(exp)):
		return errs.E(errs.FailedPrecondition, "pairing: setup code expired at %s (a code lasts %s; a newer one, or too many wrong codes, end it sooner); %s",
			fromNanos(exp).UTC().Format("15:04:05 UTC"), s.opts.SetupCodeTTL, whereSetupCodes)
	}
	if _, err := tx.ExecContext(ctx, `UPDATE setup_codes SET used_at = ? WHERE hash = ?`, nanos(now), h); err != nil {
		return storeErr(err, "consuming the setup code")
	}
	return nil
}

// errWrongSetupCode is consumeSetupCode's error for a code that is no
// setup code at all; wrongSetupCode answers it.
var errWrongSetupCode = errors.New("wrong setup code")

// wrongSetupCode counts a wrong setup code and, at the
// Config.SetupCodeGuesses-th since the current code was made, retires
// every valid code: guessing is bounded by that many tries per code, and a
// wrong code never stops the right one from working while it lives. The
// caller holds s.mu.
func (s *Store) wrongSetupCode(ctx context.Context, now time.Time) error {
	const wrong = "pairing: wrong setup code; use the latest one the server printed on its console (in the output of `contractual serve`)"
	if s.setupWrong++; s.setupWrong < s.opts.SetupCodeGuesses {
		return errs.E(errs.PermissionDenied, wrong)
	}
	s.setupWrong = 0
	if _, err := s.db.ExecContext(ctx, `UPDATE setup_codes SET expires_at = ? WHERE used_at IS NULL AND expires_at > ?`, nanos(now), nanos(now)); err != nil {
		return storeErr(err, "retiring the setup code")
	}
	return errs.E(errs.PermissionDenied, "%s; after %d wrong setup codes the current one is retired, and %s", wrong, s.opts.SetupCodeGuesses, whereSetupCodes)
}

// querier is a *sql.DB or a *sql.Tx.
type querier interface {
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
}
