package audit

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"

	"github.com/tink-crypto/tink-go/v2/tink"
	"google.golang.org/protobuf/proto"

	contractualv1 "github.com/contractual/contractual/contracts/gen/contractual/v1"
	"github.com/contractual/contractual/internal/errs"
)

// Verify recomputes the whole chain of the open log and checks every
// checkpoint, like VerifyFile, and also that the log still holds every event
// and checkpoint this process committed. A log that is not intact is a
// response with Ok false, not an error; an error means the check could not
// run.
func (s *Store) Verify(ctx context.Context) (*contractualv1.VerifyResponse, error) {
	if s.isClosed() {
		return nil, errClosed()
	}
	live := s.published() // before the snapshot, so the snapshot holds at least this
	return verifyDB(ctx, s.rdb, s.verifier, &live)
}

// VerifyFile verifies the log in dir without a running store: it opens the
// database read-only and checks checkpoints with dir's audit-verify.keyset.
// It can run while a store has the log open.
func VerifyFile(ctx context.Context, dir string) (*contractualv1.VerifyResponse, error) {
	pub, err := os.ReadFile(filepath.Join(dir, VerifyKeysetFile))
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, errs.Wrap(errs.Unavailable, err, "audit: reading the verify keyset")
	}
	return verifyFile(ctx, dir, pub)
}

// VerifyFileWithKey is VerifyFile with a public keyset the caller kept
// elsewhere (a copy of audit-verify.keyset taken when the log was created),
// so that an attacker who replaced the keysets in dir and re-signed every
// checkpoint is still caught.
func VerifyFileWithKey(ctx context.Context, dir string, publicKeyset []byte) (*contractualv1.VerifyResponse, error) {
	if len(publicKeyset) == 0 {
		return nil, errs.E(errs.Invalid, "audit: no public keyset")
	}
	return verifyFile(ctx, dir, publicKeyset)
}

// verifyFile opens dir's log read-only and verifies it; pub may be nil when
// there is no verify keyset.
func verifyFile(ctx context.Context, dir string, pub []byte) (*contractualv1.VerifyResponse, error) {
	var v tink.Verifier
	if pub != nil {
		var err error
		if v, err = parseVerifyKeyset(pub); err != nil {
			return nil, errs.Wrap(errs.FailedPrecondition, err, "audit: reading the verify keyset")
		}
	}
	db, err := openReadOnly(ctx, dir)
	if err != nil {
		return nil, err
	}
	defer db.Close()
	return verifyDB(ctx, db, v, nil)
}

// openReadOnly opens the log in dir read-only, beside a store that may
// have it open.
func openReadOnly(ctx context.Context, dir string) (*sql.DB, error) {
	path, err := filepath.Abs(filepath.Join(dir, DBFile))
	if err != nil {
		return nil, errs.Wrap(errs.Invalid, err, "audit: directory %q", dir)
	}
	if _, err := os.Stat(path); err != nil {
		return nil, errs.Wrap(errs.NotFound, err, "audit: no log at %s", path)
	}
	params := url.Values{"mode": {"ro"}, "_pragma": {"busy_timeout(5000)", "query_only(1)"}}
	return openDB(ctx, dsn(path, params), 1)
}

// verifyDB verifies the log in db inside one read transaction, so that
// events and checkpoints come from one snapshot. live, if not nil, is what
// the running store knows it committed.
func verifyDB(ctx context.Context, db *sql.DB, v tink.Verifier, live *head) (*contractualv1.VerifyResponse, error) {
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return nil, errs.Wrap(errs.Unavailable, err, "audit: verify")
	}
	defer tx.Rollback()
	if missing, err := missingTable(ctx, tx); err != nil || missing != "" {
		if err != nil {
			return nil, err
		}
		return &contractualv1.VerifyResponse{FirstBadIndex: 1, Problem: "the " + missing + " table is missing"}, nil
	}
	c := &checker{v: v}
	if err := c.readCheckpoints(ctx, tx); err != nil {
		return nil, err
	}
	if err := c.walkEvents(ctx, tx); err != nil {
		return nil, err
	}
	c.checkEnd(live)
	return c.response(), nil
}

// missingTable names the first of the log's tables that does not exist.
func missingTable(ctx context.Context, tx *sql.Tx) (string, error) {
	for _, t := range []string{"events", "checkpoints"} {
		var n int
		err := tx.QueryRowContext(ctx, `SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = ?`, t).Scan(&n)
		if err != nil {
			return "", errs.Wrap(errs.Unavailable, err, "audit: verify")
		}
		if n == 0 {
			return t, nil
		}
	}
	return "", nil
}

// checker accumulates what verification found. Only the problem at the
// lowest index is kept: that is the first index at which the log is not
// what was written.
type checker struct {
	v tink.Verifier

	cps     []checkpoint // checkpoints with a good signature, by seq
	next    int          // the first of cps the chain has not reached yet
	matched uint64       // checkpoints whose hash the chain reproduced
	lastSeq uint64       // the highest seq read

	events  uint64   // events that verified, 1..events
	hash    [32]byte // the recomputed chain hash at events
	sealed  uint64   // the highest index a matched checkpoint seals
	bad     uint64
	problem string
}

// fail records a problem at idx if it comes before the one already found.
func (c *checker) fail(idx uint64, format string, args ...any) {
	idx = max(idx, 1)
	if c.problem == "" || idx < c.bad {
		c.bad, c.problem = idx, fmt.Sprintf(format, args...)
	}
}

// readCheckpoints reads every checkpoint, checks its signature and that
// the sequence has no gap, and keeps the good ones.
func (c *checker) readCheckpoints(ctx context.Context, tx *sql.Tx) error {
	rows, err := tx.QueryContext(ctx, `SELECT seq, idx, hash, time, sig FROM checkpoints ORDER BY seq`)
	if err != nil {
		return errs.Wrap(errs.Unavailable, err, "audit: reading checkpoints")
	}
	defer rows.Close()
	var prev checkpoint
	for rows.Next() {
		var seq, idx int64
		var cp checkpoint
		if err := rows.Scan(&seq, &idx, &cp.hash, &cp.time, &cp.sig); err != nil {
			return errs.Wrap(errs.Unavailable, err, "audit: reading checkpoints")
		}
		cp.seq, cp.idx = uint64(max(seq, 0)), uint64(max(idx, 0))
		if c.checkCheckpoint(cp, prev) {
			c.cps = append(c.cps, cp)
			prev = cp
		}
	}
	if err := rows.Err(); err != nil {
		return errs.Wrap(errs.Unavailable, err, "audit: reading checkpoints")
	}
	return nil
}

// checkCheckpoint checks cp, which follows prev (the last good one), and
// reports whether it is good.
func (c *checker) checkCheckpoint(cp, prev checkpoint) bool {
	if want := c.lastSeq + 1; cp.seq > want {
		c.fail(prev.idx+1, "checkpoint %d is missing: checkpoint %d follows %d (checkpoints were deleted)", want, cp.seq, c.lastSeq)
	}
	c.lastSeq = cp.seq
	if c.v == nil {
		c.fail(cp.idx, "checkpoint %d (index %d) cannot be checked: there is no verify keyset", cp.seq, cp.idx)
		return false
	}
	if len(cp.hash) != len(c.hash) || c.v.Verify(cp.sig, cp.payload()) != nil {
		c.fail(cp.idx, "checkpoint %d (index %d) has a bad signature: it was forged or altered", cp.seq, cp.idx)
		return false
	}
	if cp.idx <= prev.idx {
		c.fail(cp.idx, "checkpoint %d seals index %d, not after checkpoint %d's index %d", cp.seq, cp.idx, prev.seq, prev.idx)
		return false
	}
	return true
}

// walkEvents recomputes the chain row by row and stops at the first row
// that is not what was written; every later row would fail with it.
func (c *checker) walkEvents(ctx context.Context, tx *sql.Tx) error {
	rows, err := tx.QueryContext(ctx, `SELECT idx, enc, hash FROM events ORDER BY idx`)
	if err != nil {
		return errs.Wrap(errs.Unavailable, err, "audit: reading events")
	}
	defer rows.Close()
	for rows.Next() {
		var idx int64
		var enc, hash []byte
		if err := rows.Scan(&idx, &enc, &hash); err != nil {
			return errs.Wrap(errs.Unavailable, err, "audit: reading events")
		}
		if !c.checkEvent(idx, enc, hash) || (c.problem != "" && c.events >= c.bad) {
			break
		}
	}
	if err := rows.Err(); err != nil {
		return errs.Wrap(errs.Unavailable, err, "audit: reading events")
	}
	return nil
}

// checkEvent checks the row at idx against the chain so far, then any
// checkpoint that seals it, and reports whether the walk may go on.
func (c *checker) checkEvent(idx int64, enc, stored []byte) bool {
	want := c.events + 1
	switch {
	case idx < int64(want):
		c.fail(want, "a row with index %d comes before event %d (rows were inserted)", idx, want)
		return false
	case uint64(idx) > want:
		c.fail(want, "event %d is missing: the next row is %d (rows were deleted)", want, idx)
		return false
	}
	h := link(c.hash, enc)
	var e contractualv1.AuditEvent
	decErr := proto.Unmarshal(enc, &e)
	switch {
	case decErr == nil && e.GetIndex() != want:
		c.fail(want, "the row at index %d holds event %d (rows were moved or reordered)", want, e.GetIndex())
	case !bytes.Equal(h[:], stored):
		c.fail(want, "event %d does not match its chain hash: its content or hash was altered", want)
	case decErr != nil:
		c.fail(want, "event %d does not decode: %v", want, decErr)
	case len(e.GetHash()) != 0:
		c.fail(want, "event %d carries a hash field in its encoding", want)
	default:
		c.events, c.hash = want, h
		return c.checkSeal()
	}
	return false
}

// checkSeal compares the chain hash with the checkpoint that seals the
// current index, if any.
func (c *checker) checkSeal() bool {
	if c.next >= len(c.cps) || c.cps[c.next].idx != c.events {
		return true
	}
	cp := c.cps[c.next]
	c.next++
	if !bytes.Equal(cp.hash, c.hash[:]) {
		c.fail(c.sealed+1, "events %d..%d were rewritten: the chain hash at %d differs from signed checkpoint %d",
			c.sealed+1, cp.idx, cp.idx, cp.seq)
		return false
	}
	c.matched++
	c.sealed = cp.idx
	return true
}

// checkEnd checks that no checkpoint seals an index past the end of the
// log, and, for a running store, that the log reaches what it committed.
func (c *checker) checkEnd(live *head) {
	if c.problem != "" && c.bad <= c.events+1 {
		return // the walk stopped early
	}
	if c.next < len(c.cps) {
		cp := c.cps[c.next]
		c.fail(c.events+1, "the log ends at index %d but checkpoint %d seals index %d: events %d..%d were removed",
			c.events, cp.seq, cp.idx, c.events+1, cp.idx)
	}
	if live == nil {
		return
	}
	if c.events < live.idx {
		c.fail(c.events+1, "the log ends at index %d but this store committed %d events: the tail was removed", c.events, live.idx)
	}
	if c.lastSeq < live.ckptSeq {
		c.fail(c.sealed+1, "the last checkpoint is %d but this store wrote %d (checkpoints were deleted)", c.lastSeq, live.ckptSeq)
	}
}

// response turns the findings into a VerifyResponse.
func (c *checker) response() *contractualv1.VerifyResponse {
	return &contractualv1.VerifyResponse{
		Ok:            c.problem == "",
		Events:        c.events,
		Checkpoints:   c.matched,
		FirstBadIndex: c.bad,
		Problem:       c.problem,
	}
}
