package audit

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io/fs"
	"math"
	"net/url"
	"os"
	"path/filepath"

	"github.com/tink-crypto/tink-go/v2/tink"
	"google.golang.org/protobuf/proto"

	contractualv1 "github.com/contractual/contractual/contracts/gen/contractual/v1"
	"github.com/contractual/contractual/internal/errs"
)

// Verify checks what was appended since the last checkpoint a Verify of
// this store matched: the events after it, the checkpoints after it, that
// the event it sealed is still there with its hash, and, like VerifyFull,
// that the log still holds every event and checkpoint this process
// committed and starts at the anchor this store pruned to. The first
// Verify of a store, and the first after one that failed, is a full one.
// The response says where the check started (FromIndex) and how many
// events it read (Checked).
//
// A log that is not intact is a response with Ok false, not an error; an
// error means the check could not run.
func (s *Store) Verify(ctx context.Context) (*contractualv1.VerifyResponse, error) {
	return s.verify(ctx, false)
}

// VerifyFull recomputes the whole chain of the live log, from its anchor
// (or its first event), and checks every checkpoint, like VerifyFile, with
// the checks against what this store committed that Verify makes.
func (s *Store) VerifyFull(ctx context.Context) (*contractualv1.VerifyResponse, error) {
	return s.verify(ctx, true)
}

// verify verifies the live log, from the last verified checkpoint unless
// full, and moves that checkpoint on.
func (s *Store) verify(ctx context.Context, full bool) (*contractualv1.VerifyResponse, error) {
	if s.isClosed() {
		return nil, errClosed()
	}
	// Before the snapshot, so the snapshot holds at least this.
	live, anchor := s.published(), s.anchorMark()
	o := verifyOpts{live: &live, anchor: &anchor}
	s.verMu.Lock()
	if v := s.verified; !full && v.seq > 0 {
		o.from = &v
	}
	s.verMu.Unlock()
	res, last, err := verifyDB(ctx, s.rdb, s.verifier, o)
	if err != nil {
		return nil, err
	}
	s.verMu.Lock()
	defer s.verMu.Unlock()
	switch {
	case !res.GetOk():
		s.verified = mark{} // until the log verifies again, from its start
	case last.seq > s.verified.seq && last.idx >= s.anchorMark().idx:
		s.verified = last
	}
	return res, nil
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
	res, _, err := verifyDB(ctx, db, v, verifyOpts{})
	return res, err
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

// verifyOpts says where a verification starts and what a running store
// knows.
type verifyOpts struct {
	// live is what the running store committed, and anchor the checkpoint
	// it pruned to; both unset offline.
	live   *head
	anchor *mark
	// from, if set, is a checkpoint this store verified before: the check
	// starts after it.
	from *mark
}

// verifyDB verifies the log in db inside one read transaction, so that
// events and checkpoints come from one snapshot. It starts at o.from, else
// at the log's anchor, else at its first event, and returns the last
// checkpoint it matched.
func verifyDB(ctx context.Context, db *sql.DB, v tink.Verifier, o verifyOpts) (*contractualv1.VerifyResponse, mark, error) {
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return nil, mark{}, errs.Wrap(errs.Unavailable, err, "audit: verify")
	}
	defer tx.Rollback()
	if missing, err := missingTable(ctx, tx); err != nil || missing != "" {
		if err != nil {
			return nil, mark{}, err
		}
		return &contractualv1.VerifyResponse{FirstBadIndex: 1, Problem: "the " + missing + " table is missing"}, mark{}, nil
	}
	anchor, err := readAnchor(ctx, tx)
	if err != nil {
		return nil, mark{}, err
	}
	c := &checker{v: v}
	switch {
	case o.anchor != nil && o.anchor.seq != anchor.seq:
		c.fail(1, "the log was cut at checkpoint %d (index %d), but this store pruned it to checkpoint %d (index %d)",
			anchor.seq, anchor.idx, o.anchor.seq, o.anchor.idx)
		return c.response(), mark{}, nil
	case o.from != nil && o.from.seq >= anchor.seq:
		c.startAt(*o.from)
	default:
		c.startAt(mark{seq: anchor.seq, idx: anchor.idx})
	}
	if err := c.readCheckpoints(ctx, tx, o.from == nil && anchor.seq > 0); err != nil {
		return nil, mark{}, err
	}
	ok, err := c.checkStart(ctx, tx)
	if err != nil {
		return nil, mark{}, err
	}
	if ok {
		if err := c.walkEvents(ctx, tx); err != nil {
			return nil, mark{}, err
		}
	}
	c.checkEnd(o.live)
	return c.response(), c.last, nil
}

// missingTable names the first of the log's tables that does not exist.
// Exports and prunes may be missing: a version 1 log opened read-only.
func missingTable(ctx context.Context, tx *sql.Tx) (string, error) {
	for _, t := range []string{"events", "checkpoints"} {
		ok, err := hasTable(ctx, tx, t)
		if err != nil {
			return "", err
		}
		if !ok {
			return t, nil
		}
	}
	return "", nil
}

// hasTable reports whether table t exists.
func hasTable(ctx context.Context, q querier, t string) (bool, error) {
	var n int
	err := q.QueryRowContext(ctx, `SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = ?`, t).Scan(&n)
	if err != nil {
		return false, errs.Wrap(errs.Unavailable, err, "audit: verify")
	}
	return n > 0, nil
}

// checker accumulates what verification found. Only the problem at the
// lowest index is kept: that is the first index at which the log is not
// what was written.
type checker struct {
	v tink.Verifier

	start   mark // where the check starts; its hash is set once known
	anchor  bool // start is the log's anchor, whose checkpoint is cps[0]
	last    mark // the last checkpoint matched (or start)
	checked uint64

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

// startAt makes the check start after m: a checkpoint whose position is
// known, and whose hash is too unless it is the anchor (read with the
// checkpoints).
func (c *checker) startAt(m mark) {
	c.start, c.last = m, m
	c.events, c.hash, c.sealed, c.lastSeq = m.idx, m.hash, m.idx, m.seq
}

// readCheckpoints reads the checkpoints after the start (from the start on,
// if it is the anchor), checks each signature and that the sequence has no
// gap, and keeps the good ones.
func (c *checker) readCheckpoints(ctx context.Context, tx *sql.Tx, anchor bool) error {
	from := c.start.seq + 1
	if anchor {
		c.anchor, from, c.lastSeq = true, c.start.seq, c.start.seq-1
	}
	rows, err := tx.QueryContext(ctx, `SELECT seq, idx, hash, time, sig FROM checkpoints WHERE seq >= ? ORDER BY seq`, int64(from))
	if err != nil {
		return errs.Wrap(errs.Unavailable, err, "audit: reading checkpoints")
	}
	defer rows.Close()
	prev := checkpoint{seq: c.start.seq, idx: c.start.idx}
	if anchor {
		prev = checkpoint{}
	}
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

// checkStart checks the start: the anchor's checkpoint is there, signed,
// at the index the prune recorded; and the event the start seals is still
// in the log with that chain hash, so that the events after it extend it.
// It reports whether the events after the start can be checked.
func (c *checker) checkStart(ctx context.Context, tx *sql.Tx) (bool, error) {
	if c.start.seq == 0 {
		return true, nil // the start of the log
	}
	if c.anchor {
		if len(c.cps) == 0 || c.cps[0].seq != c.start.seq || c.cps[0].idx != c.start.idx {
			c.fail(c.start.idx+1, "the log was pruned through checkpoint %d (index %d), but that checkpoint is missing or does not verify",
				c.start.seq, c.start.idx)
			return false, nil
		}
		c.hash, c.start.hash = [32]byte(c.cps[0].hash), [32]byte(c.cps[0].hash)
		c.last, c.next, c.matched = c.start, 1, 1
	}
	var stored []byte
	err := tx.QueryRowContext(ctx, `SELECT hash FROM events WHERE idx = ?`, int64(c.start.idx)).Scan(&stored)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		c.fail(c.start.idx, "event %d, which checkpoint %d seals and the log continues from, is missing", c.start.idx, c.start.seq)
	case err != nil:
		return false, errs.Wrap(errs.Unavailable, err, "audit: reading events")
	case !bytes.Equal(stored, c.hash[:]):
		c.fail(c.start.idx, "event %d, which checkpoint %d seals and the log continues from, has another hash: it was altered",
			c.start.idx, c.start.seq)
	default:
		return true, nil
	}
	return false, nil
}

// checkCheckpoint checks cp, which follows prev (the last good one), and
// reports whether it is good.
func (c *checker) checkCheckpoint(cp, prev checkpoint) bool {
	// A missing anchor is checkStart's to report.
	if want := c.lastSeq + 1; cp.seq > want && !(c.anchor && want == c.start.seq) {
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
	after := int64(c.start.idx)
	if c.start.seq == 0 {
		after = math.MinInt64 // a row inserted before the first is tampering too
	}
	rows, err := tx.QueryContext(ctx, `SELECT idx, enc, hash FROM events WHERE idx > ? ORDER BY idx`, after)
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
		c.checked++
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
	c.last = mark{seq: cp.seq, idx: cp.idx, hash: c.hash}
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
		FromIndex:     c.start.idx,
		Checked:       c.checked,
	}
}
