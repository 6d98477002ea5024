package pairing

import (
	"context"
	"crypto/ed25519"
	"crypto/subtle"
	"database/sql"
	"encoding/base64"
	"errors"
	"fmt"
	"time"

	"github.com/contractual/contractual/internal/errs"
	"github.com/contractual/contractual/internal/tailnet"
)

// Device is a paired device. RevokedAt is zero while the device is not
// revoked; it is active while also not past ExpiresAt.
type Device struct {
	ID         string
	Name       string
	PublicKey  ed25519.PublicKey
	Scopes     Scopes
	Kind       Kind
	PairedAt   time.Time
	ApprovedBy string
	RevokedAt  time.Time
	RevokedBy  string
	// LastUsedAt is when the token was last used, to within renewEvery.
	LastUsedAt time.Time
	// ExpiresAt is when the token expires unless used before.
	ExpiresAt time.Time
	// Tailnet is the tailnet node the device paired from, which its
	// token is bound to; nil if it paired from outside the tailnet.
	Tailnet *tailnet.Peer
}

// Principal returns the device's principal, "device:<id>".
func (d Device) Principal() string { return Principal(d.ID) }

// activeClause selects the active devices (?1 = now): not revoked, not
// expired.
const activeClause = `(revoked_at IS NULL AND expires_at > ?)`

// errBadToken is the one error for an unknown, malformed or revoked token,
// so that a caller cannot tell which.
func errBadToken() error {
	return errs.E(errs.Unauthenticated, "pairing: invalid or revoked device token")
}

// errOtherNode refuses a token presented from another tailnet node than
// the one its device paired from. It does not say which: the owner's audit
// log does.
func errOtherNode() error {
	return errs.E(errs.PermissionDenied, "pairing: %w; pair the device where it runs", ErrOtherNode)
}

// ErrOtherNode is in the chain of Authenticate's error for a valid token
// presented from another tailnet node than the one its device paired from
// (or from outside the tailnet, or from a node for a device paired from
// outside it) (errors.Is).
var ErrOtherNode = errors.New("this device token is bound to the tailnet node its device paired from, and this request comes from elsewhere")

// ErrTokenExpired is in the chain of Authenticate's error for a token that
// was valid but expired (errors.Is), so that the Control UI can say so.
var ErrTokenExpired = errors.New("device token expired")

// errExpired says why a token of kind k paired at paired expired at exp,
// and what to do.
func (s *Store) errExpired(k Kind, paired, exp time.Time) error {
	l := s.lifetime(k)
	why := fmt.Sprintf("unused for %s", days(l.Idle))
	if l.Max > 0 && exp.Equal(paired.Add(l.Max)) {
		why = fmt.Sprintf("%s after pairing, the most a %s's token lasts", days(l.Max), k)
	}
	return errs.E(errs.Unauthenticated, "pairing: %w at %s (%s); pair this device again", ErrTokenExpired, exp.UTC().Format("2006-01-02 15:04 UTC"), why)
}

// days renders d in days when it is a whole number of them.
func days(d time.Duration) string {
	if d >= 24*time.Hour && d%(24*time.Hour) == 0 {
		return fmt.Sprintf("%d days", d/(24*time.Hour))
	}
	return d.String()
}

// Authenticate returns the identity (principal "device:<id>", scopes,
// kind, expiry) of the device holding token, if the token is valid, the
// device unrevoked and the token unexpired; errs.Unauthenticated
// otherwise, with the same message whatever the reason but expiry (see
// ErrTokenExpired). A token is accepted only from the tailnet node its
// device paired from (tailnet.From(ctx).Key() must be its binding; a
// device paired from outside the tailnet is accepted only from outside
// it): from anywhere else it is refused with errs.PermissionDenied (see
// ErrOtherNode), which counts as a failure and is audited. A use renews the token: it then expires its kind's
// Lifetime.Idle after now (no later than Lifetime.Max after pairing); the
// renewal is written at most every renewEvery. There is no cache: a
// revocation holds at the next call.
//
// A valid token is always accepted, whatever failed before it, from its own
// source (e.g. the remote IP, or the tailnet user behind `tailscale serve`)
// or any other: failures never lock out a good token. Failures are counted
// per source and overall in a sliding minute; once a source has had
// Config.AuthFailuresPerMinute failures, or all sources together
// Config.AuthFailuresPerMinuteTotal, a further failure is answered with
// errs.ResourceExhausted (back off) instead of errs.Unauthenticated. An
// expired token is not a failure: its device was paired, and it is told so.
func (s *Store) Authenticate(ctx context.Context, token, source string) (Identity, error) {
	now := s.now()
	node := tailnet.From(ctx)
	id, err := s.lookupToken(ctx, token, node.Key(), now)
	other := errors.Is(err, ErrOtherNode)
	if !other && (!errs.Is(err, errs.Unauthenticated) || errors.Is(err, ErrTokenExpired)) {
		return id, err
	}
	fromSource := s.authFails.add(source, now)
	overall := s.allFails.add("", now)
	switch {
	case fromSource:
		return Identity{}, errs.E(errs.ResourceExhausted, "pairing: device token refused, and too many failed authentications from this source; try again later")
	case overall:
		return Identity{}, errs.E(errs.ResourceExhausted, "pairing: device token refused, and too many failed authentications; try again later")
	case other:
		// A stolen token, or a device that moved: the owner should know.
		return Identity{}, s.refused(ctx, ActionAuthenticate, id.Principal, "authenticating from "+node.String(), err)
	}
	return Identity{}, err
}

// byTokenQuery reads a device by its token's hash, for lookupToken, which
// runs on every call and so uses it prepared (Store.byToken).
const byTokenQuery = `SELECT id, name, token_hash, revoked_at, scope, kind, paired_at, last_used_at, expires_at, tailnet_key
	FROM devices WHERE token_hash = ?`

// lookupToken finds the active device whose token hash matches token and
// is bound to node (a tailnet.Peer.Key), and renews its token. A token
// bound to another node is refused with errOtherNode, and the device's
// principal.
func (s *Store) lookupToken(ctx context.Context, token, node string, now time.Time) (Identity, error) {
	raw, err := base64.RawURLEncoding.DecodeString(token)
	if err != nil || len(raw) != TokenSize {
		return Identity{}, errBadToken()
	}
	want := hash([]byte(token))
	var (
		id, name, scope, kind string
		bound                 string
		got                   []byte
		revoked               sql.NullInt64
		paired, used, expires int64
	)
	err = s.byToken.QueryRowContext(ctx, want).Scan(&id, &name, &got, &revoked, &scope, &kind, &paired, &used, &expires, &bound)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return Identity{}, errBadToken()
	case err != nil:
		return Identity{}, storeErr(err, "reading devices")
	case subtle.ConstantTimeCompare(got, want) != 1 || revoked.Valid:
		return Identity{}, errBadToken()
	}
	if subtle.ConstantTimeCompare([]byte(bound), []byte(node)) != 1 {
		return Identity{Principal: Principal(id)}, errOtherNode()
	}
	k := parseKind(kind)
	if !now.Before(fromNanos(expires)) {
		return Identity{}, s.errExpired(k, fromNanos(paired), fromNanos(expires))
	}
	ident := Identity{Principal: Principal(id), Name: name, Scopes: parseStored(scope), Kind: k, ExpiresAt: fromNanos(expires)}
	if now.Sub(fromNanos(used)) >= renewEvery {
		exp := s.lifetime(k).expiry(fromNanos(paired), now)
		_, err := s.db.ExecContext(ctx, `UPDATE devices SET last_used_at = ?, expires_at = ? WHERE id = ? AND revoked_at IS NULL AND last_used_at < ?`,
			nanos(now), nanos(exp), id, nanos(now))
		if err != nil {
			return Identity{}, storeErr(err, "renewing the token of device %s", id)
		}
		ident.ExpiresAt = exp
	}
	return ident, nil
}

// Revoke revokes device deviceID on behalf of by: an active device with
// scope owner, or the device itself (see Unpair). Its token is refused from
// the next Authenticate on.
func (s *Store) Revoke(ctx context.Context, deviceID, by string) error {
	if err := checkDeviceID(deviceID); err != nil {
		return err
	}
	return s.refused(ctx, ActionRevoke, by, "revoking "+Principal(deviceID), s.revokeTx(ctx, deviceID, by))
}

func (s *Store) revokeTx(ctx context.Context, deviceID, by string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return storeErr(err, "starting a transaction")
	}
	defer tx.Rollback()
	need := ScopeOwner
	if by == Principal(deviceID) {
		need = 0 // signing out needs no scope
	}
	if _, err := activeDevice(ctx, tx, by, need, now); err != nil {
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
	_, err = tx.ExecContext(ctx, `UPDATE devices SET revoked_at = ?, revoked_by = ? WHERE id = ?`, nanos(now), by, deviceID)
	if err != nil {
		return storeErr(err, "revoking device %s", deviceID)
	}
	if err := s.record(ctx, event(ActionRevoke, by, "revoked "+Principal(deviceID))); err != nil {
		return err
	}
	return commit(tx, "committing the revocation")
}

// scanDevice reads one row of DevicePage's query (after its rowid).
func scanDevice(row scanner) (Device, error) {
	var (
		d                     Device
		pub                   []byte
		scope, kind           string
		paired, used, expires int64
		revoked               sql.NullInt64
		peer                  string
	)
	if err := row.Scan(&d.ID, &d.Name, &pub, &scope, &kind, &paired, &d.ApprovedBy, &revoked, &d.RevokedBy, &used, &expires, &peer); err != nil {
		return Device{}, storeErr(err, "reading a device")
	}
	d.PublicKey, d.Tailnet = ed25519.PublicKey(pub), decodePeer(peer)
	d.Scopes, d.Kind = parseStored(scope), parseKind(kind)
	d.PairedAt, d.LastUsedAt, d.ExpiresAt = fromNanos(paired), fromNanos(used), fromNanos(expires)
	if revoked.Valid {
		d.RevokedAt = fromNanos(revoked.Int64)
	}
	return d, nil
}
