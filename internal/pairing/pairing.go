// Package pairing is the core of device pairing (design flow 5): the
// one-time setup code that pairs the first device, pairing requests that an
// already-paired device approves or rejects, the proof of possession of the
// device key, and the device tokens that authenticate later calls.
//
// A device holds an Ed25519 key pair; its id is the fingerprint of the
// public key (DeviceID) and its principal is "device:<id>". The flow:
//
//  1. the device calls Begin with its public key, a name, the scopes it
//     asks for and its kind, and gets a short code (shown to the user) and
//     a 32-byte nonce; beginning again replaces its live request;
//  2. the owner approves the code (Approve, from a paired device holding
//     every scope asked for, or ApproveWithSetupCode while no owner device
//     is active, which grants scope owner) or rejects it;
//  3. the device signs SignedMessage(id, nonce) and calls Complete, which
//     returns the device token once.
//
// A token carries the scopes that were approved (see Scopes and the one
// authorization table, Authorize) and expires after its kind's Lifetime:
// some time unused (renewed on use), and for a browser at the latest some
// time after pairing.
//
// Nothing secret is stored in clear: tokens, setup codes and nonces are kept
// only as SHA-256 hashes. Store has no HTTP, UI or proto; Service is the
// PairingService over it, which the gateway serves.
package pairing

import (
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"database/sql"
	"encoding/base32"
	"encoding/base64"
	"errors"
	"strings"
	"sync"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/contractual/contractual/internal/errs"
	"github.com/contractual/contractual/internal/sqlitestore"
)

// DBFile is the name of the pairing store inside its directory.
const DBFile = "pairing.db"

// MaxNameLen is the longest device name accepted, in characters.
const MaxNameLen = 64

// signPrefix domain-separates the pairing signature from any other use of
// the device key.
const signPrefix = "contractual-pair-v1\n"

// approvedBySetupCode is the approved_by of the device paired with the
// setup code.
const approvedBySetupCode = "setup-code"

// Config configures a Store. Only Dir is required; zero values of the
// others take the defaults.
type Config struct {
	// Dir holds the store.
	Dir string
	// Now returns the current time (default time.Now); tests set it.
	Now func() time.Time
	// SetupCodeTTL is how long a setup code is valid (default 10 min).
	SetupCodeTTL time.Duration
	// RequestTTL is how long a pairing request waits for approval
	// (default 5 min).
	RequestTTL time.Duration
	// NonceTTL is how long, after approval, the device has to sign the
	// nonce and Complete (default 60 s).
	NonceTTL time.Duration
	// MaxPending bounds the live pairing requests at once (default 16).
	MaxPending int
	// BeginsPerMinute bounds Begin calls in any 60 s window (default 30).
	BeginsPerMinute int
	// BeginsPerSourcePerMinute bounds Begin calls from one source (see
	// WithSource) in any 60 s window (default 5).
	BeginsPerSourcePerMinute int
	// AuthFailuresPerMinute bounds failed Authenticate calls per source in
	// any 60 s window (default 10). Past it, a failure is answered
	// errs.ResourceExhausted; a valid token is never refused (see
	// Authenticate).
	AuthFailuresPerMinute int
	// SetupCodeGuesses is how many wrong setup codes, from anyone, retire
	// the current one (default 20): guessing a code is bounded by that
	// many tries, and the right code is never refused for others' wrong
	// ones while it lives. `serve` prints a new one when it is retired.
	SetupCodeGuesses int
	// AuthFailuresPerMinuteTotal bounds failed Authenticate calls from all
	// sources together in any 60 s window (default 100), in the same way.
	AuthFailuresPerMinuteTotal int
	// Browser is the lifetime of a browser's token (default
	// DefaultBrowserLifetime); Client that of any other device's (default
	// DefaultClientLifetime).
	Browser, Client Lifetime
}

// Deps are the services the store calls; each is required.
type Deps struct {
	// Audit records every pairing change and refusal.
	Audit Auditor
}

// withDefaults fills the zero fields of o.
func (o Config) withDefaults() Config {
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.SetupCodeTTL <= 0 {
		o.SetupCodeTTL = 10 * time.Minute
	}
	if o.SetupCodeGuesses <= 0 {
		o.SetupCodeGuesses = 20
	}
	if o.RequestTTL <= 0 {
		o.RequestTTL = 5 * time.Minute
	}
	if o.NonceTTL <= 0 {
		o.NonceTTL = 60 * time.Second
	}
	if o.MaxPending <= 0 {
		o.MaxPending = 16
	}
	if o.BeginsPerMinute <= 0 {
		o.BeginsPerMinute = 30
	}
	if o.BeginsPerSourcePerMinute <= 0 {
		o.BeginsPerSourcePerMinute = 5
	}
	if o.AuthFailuresPerMinute <= 0 {
		o.AuthFailuresPerMinute = 10
	}
	if o.AuthFailuresPerMinuteTotal <= 0 {
		o.AuthFailuresPerMinuteTotal = 100
	}
	if o.Browser.Idle <= 0 {
		o.Browser = DefaultBrowserLifetime
	}
	if o.Client.Idle <= 0 {
		o.Client = DefaultClientLifetime
	}
	return o
}

// Store is the pairing service's state: devices and pairing requests in
// SQLite, rate-limit windows in memory.
type Store struct {
	db    *sql.DB
	opts  Config
	audit Auditor
	// byToken is byTokenQuery, prepared.
	byToken *sql.Stmt

	// mu serializes writers, so that count-then-insert checks (pending
	// limit, one setup code) cannot race within this process.
	mu         sync.Mutex
	begins     *limiter
	beginsFrom *limiter
	authFails  *limiter // per source
	allFails   *limiter // every source, one key
	// setupWrong counts the wrong setup codes since the current code was
	// made; guarded by mu.
	setupWrong int
}

// schema is the pairing store (version 3). Times are Unix nanoseconds.
// Requests are keyed by the hash of their nonce; finished requests
// (completed, rejected, replaced) are kept, for distinct replay and
// rejection errors, until purged a day after creation; setup codes too,
// so that an old code is told apart from a wrong one. Scopes are stored by
// name ("invoke,read"); a device's expires_at moves on use (see
// Authenticate). The lists page by time and rowid (devices_by_paired,
// requests_by_created); indexes need no migration: the schema creates the
// missing ones at every open. A request and a device record the tailnet
// node they came from: tailnet_key is what the device's token is bound to
// (tailnet.Peer.Key; ” outside the tailnet), tailnet_peer the node as the
// tailnet described it then (tailnet.Encode; ” outside), for display.
const schema = `
CREATE TABLE IF NOT EXISTS setup_codes (
	hash       BLOB PRIMARY KEY,
	created_at INTEGER NOT NULL,
	expires_at INTEGER NOT NULL,
	used_at    INTEGER
) STRICT;
CREATE TABLE IF NOT EXISTS requests (
	nonce_hash  BLOB PRIMARY KEY,
	code        TEXT NOT NULL,
	device_id   TEXT NOT NULL,
	name        TEXT NOT NULL,
	pub         BLOB NOT NULL,
	created_at  INTEGER NOT NULL,
	expires_at  INTEGER NOT NULL,
	state       INTEGER NOT NULL,
	decided_by  TEXT NOT NULL DEFAULT '',
	decided_at  INTEGER,
	scopes      TEXT NOT NULL DEFAULT 'owner',
	kind        TEXT NOT NULL DEFAULT 'client',
	tailnet_key  TEXT NOT NULL DEFAULT '',
	tailnet_peer TEXT NOT NULL DEFAULT ''
) STRICT;
CREATE INDEX IF NOT EXISTS requests_by_code ON requests(code);
CREATE INDEX IF NOT EXISTS requests_by_device ON requests(device_id);
CREATE INDEX IF NOT EXISTS requests_by_created ON requests(created_at);
CREATE TABLE IF NOT EXISTS devices (
	id           TEXT PRIMARY KEY,
	name         TEXT NOT NULL,
	pub          BLOB NOT NULL,
	scope        TEXT NOT NULL,
	token_hash   BLOB NOT NULL UNIQUE,
	paired_at    INTEGER NOT NULL,
	approved_by  TEXT NOT NULL,
	revoked_at   INTEGER,
	revoked_by   TEXT NOT NULL DEFAULT '',
	kind         TEXT NOT NULL DEFAULT 'client',
	last_used_at INTEGER NOT NULL DEFAULT 0,
	expires_at   INTEGER NOT NULL DEFAULT 0,
	tailnet_key  TEXT NOT NULL DEFAULT '',
	tailnet_peer TEXT NOT NULL DEFAULT ''
) STRICT;
CREATE INDEX IF NOT EXISTS devices_by_paired ON devices(paired_at);
`

// schemaVersion is the schema's version: 2 added scopes and kinds to
// requests, and kinds, last use and expiry to devices; 3 added the tailnet
// node to both.
const schemaVersion = 3

// addedColumns are the columns versions 2 and 3 added to version 1's
// tables, for migrate.
var addedColumns = []struct{ table, column, def string }{
	{"requests", "scopes", `TEXT NOT NULL DEFAULT 'owner'`},
	{"requests", "kind", `TEXT NOT NULL DEFAULT 'client'`},
	{"devices", "kind", `TEXT NOT NULL DEFAULT 'client'`},
	{"devices", "last_used_at", `INTEGER NOT NULL DEFAULT 0`},
	{"devices", "expires_at", `INTEGER NOT NULL DEFAULT 0`},
	{"requests", "tailnet_key", `TEXT NOT NULL DEFAULT ''`},
	{"requests", "tailnet_peer", `TEXT NOT NULL DEFAULT ''`},
	{"devices", "tailnet_key", `TEXT NOT NULL DEFAULT ''`},
	{"devices", "tailnet_peer", `TEXT NOT NULL DEFAULT ''`},
}

// migrate brings a version 1 or 2 store to version 3, idempotently: it
// adds the missing columns, and gives the devices paired before version 2
// (expires_at 0) their scope as it was (owner), the kind client (a version
// 1 store cannot tell browsers apart) and a client's lifetime from now.
// Devices paired before version 3 are bound to no tailnet node (”): they
// are accepted from outside the tailnet only. Which node a device paired
// from was not recorded, and binding it to the first node that presents
// its token would bind a token stolen before the upgrade to the thief's.
func migrate(ctx context.Context, db *sql.DB, o Config) error {
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return storeErr(err, "starting the migration")
	}
	defer tx.Rollback()
	for _, c := range addedColumns {
		var n int
		err := tx.QueryRowContext(ctx, `SELECT count(*) FROM pragma_table_info(?) WHERE name = ?`, c.table, c.column).Scan(&n)
		if err != nil {
			return storeErr(err, "reading the columns of %s", c.table)
		}
		if n == 0 {
			if _, err := tx.ExecContext(ctx, `ALTER TABLE `+c.table+` ADD COLUMN `+c.column+` `+c.def); err != nil {
				return storeErr(err, "adding %s.%s", c.table, c.column)
			}
		}
	}
	now := o.Now()
	if _, err := tx.ExecContext(ctx, `UPDATE devices SET last_used_at = ?, expires_at = ? WHERE expires_at = 0`,
		nanos(now), nanos(now.Add(o.Client.Idle))); err != nil {
		return storeErr(err, "migrating devices")
	}
	return commit(tx, "committing the migration")
}

// Open opens (creating if needed) the pairing store in cfg.Dir.
func Open(ctx context.Context, cfg Config, deps Deps) (*Store, error) {
	switch {
	case deps.Audit == nil:
		return nil, errs.E(errs.Invalid, "pairing: no audit service")
	case cfg.Dir == "":
		return nil, errs.E(errs.Invalid, "pairing: no store directory")
	}
	opts := cfg
	db, err := sqlitestore.Open(ctx, sqlitestore.Config{
		Service: "pairing", Dir: cfg.Dir, File: DBFile,
		Schema: schema, Version: schemaVersion,
	})
	if err != nil {
		return nil, err
	}
	o := opts.withDefaults()
	if err := migrate(ctx, db, o); err != nil {
		db.Close()
		return nil, err
	}
	byToken, err := db.PrepareContext(ctx, byTokenQuery)
	if err != nil {
		db.Close()
		return nil, storeErr(err, "preparing the token lookup")
	}
	return &Store{
		db:         db,
		opts:       o,
		audit:      deps.Audit,
		byToken:    byToken,
		begins:     newLimiter(o.BeginsPerMinute, time.Minute),
		beginsFrom: newLimiter(o.BeginsPerSourcePerMinute, time.Minute),
		authFails:  newLimiter(o.AuthFailuresPerMinute, time.Minute),
		allFails:   newLimiter(o.AuthFailuresPerMinuteTotal, time.Minute),
	}, nil
}

// Close closes the store.
func (s *Store) Close() error {
	if err := errors.Join(s.byToken.Close(), s.db.Close()); err != nil {
		return errs.Wrap(errs.Internal, err, "pairing: closing the store")
	}
	return nil
}

// now returns the store's current time.
func (s *Store) now() time.Time { return s.opts.Now() }

// b32 is lowercase base32 without padding.
var b32 = base32.NewEncoding("abcdefghijklmnopqrstuvwxyz234567").WithPadding(base32.NoPadding)

// DeviceID returns the id of the device with public key pub: the first 16
// bytes of SHA-256(pub), in lowercase base32 without padding (26 chars).
func DeviceID(pub ed25519.PublicKey) string {
	sum := sha256.Sum256(pub)
	return b32.EncodeToString(sum[:16])
}

// deviceIDLen is the length of every DeviceID.
const deviceIDLen = 26

// Principal returns the principal of device id: "device:<id>".
func Principal(deviceID string) string { return "device:" + deviceID }

// SignedMessage is the exact message a device signs to complete pairing:
// "contractual-pair-v1\n" + deviceID + "\n" + base64(nonce), base64 being
// standard encoding with padding. The prefix keeps the signature from being
// valid for any other protocol.
func SignedMessage(deviceID string, nonce []byte) []byte {
	return []byte(signPrefix + deviceID + "\n" + base64.StdEncoding.EncodeToString(nonce))
}

// checkPub refuses a public key of the wrong length.
func checkPub(pub ed25519.PublicKey) error {
	if len(pub) != ed25519.PublicKeySize {
		return errs.E(errs.Invalid, "pairing: public key must be %d bytes, got %d", ed25519.PublicKeySize, len(pub))
	}
	return nil
}

// checkName refuses an empty, oversized or non-printable device name.
func checkName(name string) error {
	switch {
	case strings.TrimSpace(name) == "":
		return errs.E(errs.Invalid, "pairing: device name is empty")
	case !utf8.ValidString(name):
		return errs.E(errs.Invalid, "pairing: device name is not valid UTF-8")
	case utf8.RuneCountInString(name) > MaxNameLen:
		return errs.E(errs.Invalid, "pairing: device name is longer than %d characters", MaxNameLen)
	case strings.IndexFunc(name, func(r rune) bool { return !unicode.IsPrint(r) }) >= 0:
		return errs.E(errs.Invalid, "pairing: device name has a control or non-printable character")
	}
	return nil
}

// checkDeviceID refuses a string that cannot be a DeviceID.
func checkDeviceID(id string) error {
	if len(id) != deviceIDLen {
		return errs.E(errs.Invalid, "pairing: device id must be %d characters, got %d", deviceIDLen, len(id))
	}
	if _, err := b32.DecodeString(id); err != nil {
		return errs.E(errs.Invalid, "pairing: device id is not lowercase base32")
	}
	return nil
}

// storeErr wraps a database failure.
func storeErr(err error, format string, args ...any) error {
	return errs.Wrap(errs.Unavailable, err, "pairing: "+format, args...)
}

// nanos converts t to the stored form.
func nanos(t time.Time) int64 { return t.UnixNano() }

// fromNanos converts a stored time back.
func fromNanos(n int64) time.Time { return time.Unix(0, n) }
