// Package audit keeps Contractual's append-only, tamper-evident log of every
// decision.
//
// The log is one SQLite file (audit.db) that nothing but this package
// writes. Each event is stored as the deterministic protobuf encoding of its
// AuditEvent (without the hash field), next to a chain hash:
//
//	hash_0 = 32 zero bytes
//	hash_i = sha256(hash_{i-1} || encoding_i)
//
// Every CheckpointEvery events, and on Close, the store signs (index, hash)
// with an Ed25519 keyset kept in a separate file (audit-signing.keyset); the
// public half (audit-verify.keyset) is enough to verify. Verify and
// VerifyFile recompute the chain, check every checkpoint and name the first
// index at which the log is not what was written.
//
// A log cut back to an earlier state verifies on its own, so the newest
// signed checkpoint also leaves the server: a device remembers the newest
// one it saw (LatestCheckpoint), and later checks with Extends, over the
// stored encodings of the events in between (Entries), that the log still
// extends it. CheckConsistency runs the same check on the server, for the
// Control UI; CheckFileConsistency runs it on a copy of the data against
// an exported checkpoint.
//
// Verify is incremental: it starts from the last checkpoint this store
// verified, so it reads only what was appended since; VerifyFull and
// VerifyFile recompute the whole live log.
//
// The log does not grow forever: it is cut into segments at its
// checkpoints; a segment exported as a file (Segment, WriteSegment)
// verifies on its own with the public key (VerifySegment), and once
// recorded exports cover a prefix, Prune (or retention: Options.KeepEvents,
// KeepFor, ExportDir) drops it. The checkpoint it was cut at is the anchor:
// the live log, and its verification, start there; a device whose
// checkpoint is older is told the range was pruned (ErrPruned), not that
// the log was tampered with. Digests ("sha256:<hex>") are stored as their
// 32 bytes.
//
// Appends are durable (fsync) before they return. Concurrent appends are
// batched by one writer goroutine into one transaction: one fsync for many
// events (group commit). When the log cannot be written, Append fails with
// errs.Unavailable; it never reports success for events that are not on
// disk.
package audit

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"sync"
	"time"

	"github.com/tink-crypto/tink-go/v2/tink"
	_ "modernc.org/sqlite" // the "sqlite" database/sql driver

	"github.com/contractual/contractual/internal/errs"
	"github.com/contractual/contractual/internal/sqlitestore"
)

// File names inside the audit directory.
const (
	// DBFile is the SQLite log.
	DBFile = "audit.db"
	// SigningKeysetFile holds the private Ed25519 keyset that signs
	// checkpoints, in the clear, mode 0600.
	SigningKeysetFile = "audit-signing.keyset"
	// VerifyKeysetFile holds the public half of the signing keyset.
	VerifyKeysetFile = "audit-verify.keyset"
)

// Defaults and limits.
const (
	// DefaultCheckpointEvery is the default number of events between two
	// signed checkpoints.
	DefaultCheckpointEvery = 1000
	// DefaultCheckpointInterval is the default longest time events stay
	// unsealed while the log is quiet.
	DefaultCheckpointInterval = 10 * time.Second
	// DefaultBusyTimeout is how long a write waits for a lock by default.
	DefaultBusyTimeout = 5 * time.Second
	// DefaultRetainEvery is how often retention runs by default.
	DefaultRetainEvery = time.Hour
	// defaultMaxBatch caps the events the writer puts in one transaction.
	defaultMaxBatch = 4096
	// queueLen is how many append requests may wait for the writer.
	queueLen = 1024
	// schemaVersion is stored in PRAGMA user_version. Version 2 added
	// exports and prunes; a version 1 log is upgraded in place.
	schemaVersion = 2
)

// Options tunes a Store. The zero value is the production configuration.
type Options struct {
	// CheckpointEvery is how many events may be appended before the next
	// signed checkpoint; 0 or less means DefaultCheckpointEvery.
	CheckpointEvery int
	// CheckpointInterval is how long appended events may stay unsealed
	// while the log is quiet; 0 or less means DefaultCheckpointInterval.
	CheckpointInterval time.Duration
	// BusyTimeout bounds how long a write or read waits for a lock held by
	// another connection; 0 or less means DefaultBusyTimeout.
	BusyTimeout time.Duration

	// Retention. With KeepEvents or KeepFor set, the store prunes, every
	// RetainEvery, the sealed segments that fall outside them: the newest
	// checkpoint with at least KeepEvents events after it and signed at
	// least KeepFor ago (each condition only if set) becomes the anchor.
	// Only exported segments are pruned: with ExportDir set, the store
	// first exports them there itself; without it, a segment waits for a
	// device's export (RecordExport).
	KeepEvents uint64
	KeepFor    time.Duration
	ExportDir  string
	// RetainEvery is how often retention runs; 0 or less means
	// DefaultRetainEvery.
	RetainEvery time.Duration
	// Now is the clock of retention's KeepFor; nil means time.Now.
	Now func() time.Time
	// Log receives retention's reports; nil means slog.Default().
	Log *slog.Logger

	// maxBatch caps the events per transaction (0: defaultMaxBatch). The
	// benchmark sets 1 for its one-event-per-transaction baseline.
	maxBatch int
}

func (o Options) withDefaults() Options {
	if o.CheckpointEvery <= 0 {
		o.CheckpointEvery = DefaultCheckpointEvery
	}
	if o.CheckpointInterval <= 0 {
		o.CheckpointInterval = DefaultCheckpointInterval
	}
	if o.BusyTimeout <= 0 {
		o.BusyTimeout = DefaultBusyTimeout
	}
	if o.maxBatch <= 0 {
		o.maxBatch = defaultMaxBatch
	}
	if o.RetainEvery <= 0 {
		o.RetainEvery = DefaultRetainEvery
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Log == nil {
		o.Log = slog.Default()
	}
	return o
}

// Store is the audit log. Its methods are safe for concurrent use.
type Store struct {
	opts     Options
	wdb      *sql.DB // the writer's single connection
	rdb      *sql.DB // query-only connections for Tail and Verify
	ins      *sql.Stmt
	signer   tink.Signer
	verifier tink.Verifier
	public   []byte // the public keyset, as in audit-verify.keyset

	// mu guards closed against the send in submit, so that Close can close
	// reqs once no sender is left.
	mu     sync.RWMutex
	closed bool
	reqs   chan *request
	exited chan struct{} // closed when the writer goroutine returns

	// w is the writer's view of the log head; only the writer goroutine
	// (and Close, after the writer exited) touch it.
	w head
	// wedged is set when a failed write left the log in a state the writer
	// does not recognise; see ready.
	wedged error
	// resync is set after a failed write: the next batch first checks the
	// head on disk.
	resync bool
	// pending is the head the failed batch would have reached.
	pending head

	// pub is the last committed head, for Verify.
	pubMu sync.Mutex
	pub   head

	// pruneMu serialises prunes and export records; anchor is the
	// checkpoint the live log starts at (zero before any prune), as this
	// store knows it.
	pruneMu sync.Mutex
	anchor  mark

	// verified is the last checkpoint a Verify of this store matched: the
	// next one starts there.
	verMu    sync.Mutex
	verified mark

	stopRetain chan struct{} // closed by Close
	retained   chan struct{} // closed when the retention goroutine returns
}

// mark is a signed checkpoint's position and chain hash: a point from
// which the chain can be verified onwards.
type mark struct {
	seq, idx uint64
	hash     [32]byte
}

// head is the state of the log that the writer continues from.
type head struct {
	idx     uint64   // the last event's index, 0 for an empty log
	hash    [32]byte // its chain hash
	ckptSeq uint64   // the last checkpoint's sequence number
	ckptIdx uint64   // the index it seals
}

// Open opens (or creates) the audit log in dir, with its signing keyset,
// and starts the writer. The caller must Close it.
func Open(ctx context.Context, dir string, opts Options) (*Store, error) {
	opts = opts.withDefaults()
	dbPath, err := prepareDir(dir)
	if err != nil {
		return nil, err
	}
	s := &Store{
		opts: opts, reqs: make(chan *request, queueLen), exited: make(chan struct{}),
		stopRetain: make(chan struct{}), retained: make(chan struct{}),
	}
	if err := s.openDBs(ctx, dbPath); err != nil {
		return nil, err
	}
	if err := s.init(ctx, dir); err != nil {
		s.closeDBs()
		return nil, err
	}
	go s.run()
	go s.retainLoop()
	return s, nil
}

// init creates the schema, reads the head and loads the keys.
func (s *Store) init(ctx context.Context, dir string) error {
	if err := createSchema(ctx, s.wdb); err != nil {
		return err
	}
	h, err := readHead(ctx, s.wdb)
	if err != nil {
		return err
	}
	s.w, s.pub = h, h
	if s.anchor, err = readAnchor(ctx, s.wdb); err != nil {
		return err
	}
	if _, err := s.dropPruned(ctx); err != nil { // an interrupted prune
		return err
	}
	k, err := loadKeys(dir, h.ckptSeq > 0)
	if err != nil {
		return err
	}
	s.signer, s.verifier, s.public = k.signer, k.verifier, k.public
	s.ins, err = s.wdb.PrepareContext(ctx, `INSERT INTO events (idx, enc, hash) VALUES (?, ?, ?)`)
	if err != nil {
		return errs.Wrap(errs.Unavailable, err, "audit: preparing insert")
	}
	return nil
}

// prepareDir makes dir (0700) and the database file (0600) and returns the
// file's absolute path.
func prepareDir(dir string) (string, error) {
	return sqlitestore.PrepareFile("audit", dir, DBFile)
}

// dsn builds a SQLite URI for path with the given query parameters.
func dsn(path string, params url.Values) string {
	return (&url.URL{Scheme: "file", Path: path, RawQuery: params.Encode()}).String()
}

// openDBs opens the writer's connection and the readers' pool.
func (s *Store) openDBs(ctx context.Context, path string) error {
	busy := fmt.Sprintf("busy_timeout(%d)", s.opts.BusyTimeout.Milliseconds())
	w := url.Values{
		"_pragma": {busy, "journal_mode(WAL)", "synchronous(FULL)"},
		"_txlock": {"immediate"},
	}
	r := url.Values{"_pragma": {busy, "synchronous(FULL)", "query_only(1)"}}
	var err error
	if s.wdb, err = openDB(ctx, dsn(path, w), 1); err != nil {
		return err
	}
	if s.rdb, err = openDB(ctx, dsn(path, r), 4); err != nil {
		s.wdb.Close()
		return err
	}
	return nil
}

// openDB opens a pool of at most n connections and checks that it works.
func openDB(ctx context.Context, dsn string, n int) (*sql.DB, error) {
	db, err := sql.Open("sqlite", dsn)
	if err != nil {
		return nil, errs.Wrap(errs.Unavailable, err, "audit: opening the database")
	}
	db.SetMaxOpenConns(n)
	db.SetMaxIdleConns(n)
	db.SetConnMaxLifetime(0)
	if err := db.PingContext(ctx); err != nil {
		db.Close()
		return nil, errs.Wrap(errs.Unavailable, err, "audit: opening the database")
	}
	return db, nil
}

// schema is the log's tables and the triggers that refuse any change to a
// written row. Indexes start at 1; a checkpoint's seq too. The only rows
// that may be deleted are those a prune cut off: events before the
// newest prune's index, and checkpoints before its checkpoint (the anchor,
// which stays). Exports and prunes are append-only too.
const schema = `
CREATE TABLE IF NOT EXISTS events (
	idx  INTEGER PRIMARY KEY,
	enc  BLOB NOT NULL,
	hash BLOB NOT NULL
) STRICT;
CREATE TABLE IF NOT EXISTS checkpoints (
	seq  INTEGER PRIMARY KEY,
	idx  INTEGER NOT NULL,
	hash BLOB NOT NULL,
	time INTEGER NOT NULL,
	sig  BLOB NOT NULL
) STRICT;
CREATE TABLE IF NOT EXISTS exports (
	start_seq INTEGER NOT NULL,
	start_idx INTEGER NOT NULL,
	seal_seq  INTEGER NOT NULL,
	seal_idx  INTEGER NOT NULL,
	sha256    TEXT NOT NULL,
	name      TEXT NOT NULL,
	principal TEXT NOT NULL,
	time      INTEGER NOT NULL,
	PRIMARY KEY (start_seq, seal_seq, sha256)
) STRICT;
CREATE TABLE IF NOT EXISTS prunes (
	seq  INTEGER PRIMARY KEY,
	idx  INTEGER NOT NULL,
	time INTEGER NOT NULL
) STRICT;
CREATE TRIGGER IF NOT EXISTS events_no_update BEFORE UPDATE ON events
BEGIN SELECT RAISE(ABORT, 'audit events are append-only: no update'); END;
DROP TRIGGER IF EXISTS events_no_delete;
CREATE TRIGGER events_no_delete BEFORE DELETE ON events
WHEN OLD.idx >= (SELECT coalesce(max(idx), 0) FROM prunes)
BEGIN SELECT RAISE(ABORT, 'audit events are append-only: no delete'); END;
CREATE TRIGGER IF NOT EXISTS checkpoints_no_update BEFORE UPDATE ON checkpoints
BEGIN SELECT RAISE(ABORT, 'audit checkpoints are append-only: no update'); END;
DROP TRIGGER IF EXISTS checkpoints_no_delete;
CREATE TRIGGER checkpoints_no_delete BEFORE DELETE ON checkpoints
WHEN OLD.seq >= (SELECT coalesce(max(seq), 0) FROM prunes)
BEGIN SELECT RAISE(ABORT, 'audit checkpoints are append-only: no delete'); END;
CREATE TRIGGER IF NOT EXISTS exports_no_update BEFORE UPDATE ON exports
BEGIN SELECT RAISE(ABORT, 'audit exports are append-only: no update'); END;
CREATE TRIGGER IF NOT EXISTS exports_no_delete BEFORE DELETE ON exports
BEGIN SELECT RAISE(ABORT, 'audit exports are append-only: no delete'); END;
CREATE TRIGGER IF NOT EXISTS prunes_no_update BEFORE UPDATE ON prunes
BEGIN SELECT RAISE(ABORT, 'audit prunes are append-only: no update'); END;
CREATE TRIGGER IF NOT EXISTS prunes_no_delete BEFORE DELETE ON prunes
BEGIN SELECT RAISE(ABORT, 'audit prunes are append-only: no delete'); END;
`

// createSchema creates the tables and (again, should someone have dropped
// them) the triggers, and checks the schema version.
func createSchema(ctx context.Context, db *sql.DB) error {
	var v int
	if err := db.QueryRowContext(ctx, `PRAGMA user_version`).Scan(&v); err != nil {
		return errs.Wrap(errs.Unavailable, err, "audit: reading the schema version")
	}
	if v > schemaVersion {
		return errs.E(errs.FailedPrecondition, "audit: the log has schema version %d; this build knows %d", v, schemaVersion)
	}
	stmt := schema + fmt.Sprintf("PRAGMA user_version = %d;", schemaVersion)
	if _, err := db.ExecContext(ctx, stmt); err != nil {
		return errs.Wrap(errs.Unavailable, err, "audit: creating the schema")
	}
	return nil
}

// querier is what readHead needs: a *sql.DB or a *sql.Tx.
type querier interface {
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

// readHead reads the last event and the last checkpoint.
func readHead(ctx context.Context, q querier) (head, error) {
	var h head
	var idx int64
	var hash []byte
	err := q.QueryRowContext(ctx, `SELECT idx, hash FROM events ORDER BY idx DESC LIMIT 1`).Scan(&idx, &hash)
	switch {
	case errors.Is(err, sql.ErrNoRows):
	case err != nil:
		return h, errs.Wrap(errs.Unavailable, err, "audit: reading the last event")
	case idx < 1 || len(hash) != len(h.hash):
		return h, errs.E(errs.FailedPrecondition, "audit: the last event (index %d) is damaged; run verify", idx)
	default:
		h.idx = uint64(idx)
		copy(h.hash[:], hash)
	}
	var seq, cidx int64
	err = q.QueryRowContext(ctx, `SELECT seq, idx FROM checkpoints ORDER BY seq DESC LIMIT 1`).Scan(&seq, &cidx)
	switch {
	case errors.Is(err, sql.ErrNoRows):
	case err != nil:
		return h, errs.Wrap(errs.Unavailable, err, "audit: reading the last checkpoint")
	default:
		h.ckptSeq, h.ckptIdx = uint64(max(seq, 0)), uint64(max(cidx, 0))
	}
	return h, nil
}

// Close stops accepting appends, waits for the pending ones, writes a final
// checkpoint if events were appended since the last one, and closes the
// database. Closing twice is a no-op.
func (s *Store) Close(ctx context.Context) error {
	if !s.stop() {
		return nil
	}
	close(s.stopRetain)
	<-s.retained
	err := s.seal(ctx)
	return errors.Join(err, s.closeDBs())
}

// stop closes the request queue and waits for the writer to drain it. It
// reports false if the store was already closed.
func (s *Store) stop() bool {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return false
	}
	s.closed = true
	close(s.reqs)
	s.mu.Unlock()
	<-s.exited
	return true
}

// closeDBs closes the statement and both pools.
func (s *Store) closeDBs() error {
	var err error
	if s.ins != nil {
		err = s.ins.Close()
	}
	err = errors.Join(err, s.rdb.Close(), s.wdb.Close())
	if err != nil {
		return errs.Wrap(errs.Unavailable, err, "audit: closing the database")
	}
	return nil
}

// published returns the last committed head.
func (s *Store) published() head {
	s.pubMu.Lock()
	defer s.pubMu.Unlock()
	return s.pub
}

// isClosed reports whether Close was called.
func (s *Store) isClosed() bool {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.closed
}

// errClosed is returned by every operation on a closed store.
func errClosed() error { return errs.E(errs.Unavailable, "audit: the log is closed") }
