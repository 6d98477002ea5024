package audit

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"time"

	contractualv1 "github.com/contractual/contractual/contracts/gen/contractual/v1"
	"github.com/contractual/contractual/internal/errs"
	"github.com/contractual/contractual/internal/principal"
)

// Retention. The log is cut into segments at its checkpoints: a segment is
// the events after one checkpoint (its start) through a later one (its
// seal). A segment can be exported as a file that verifies on its own
// (WriteSegment, VerifySegment), and a store records each export it
// checked (RecordExport). Prune drops the events before a checkpoint, but
// only once recorded exports cover them: that checkpoint becomes the
// anchor, the live log continues from it, and verification starts there.
// The anchor's own event stays, so that the chain hash at the anchor is
// still in the log; a device whose checkpoint is older than the anchor is
// told the range was pruned (ErrPruned), and which exports hold it.

// ErrPruned marks a request for events that a prune removed from the live
// log; the exports that hold them are named by Segments.
var ErrPruned = errors.New("the audit log was pruned")

// pruneChunk is how many events one transaction of a prune deletes, so
// that appends are not held up for long.
const pruneChunk = 10_000

// readAnchor reads the checkpoint the live log starts at: the newest
// prune, with its checkpoint's hash if that checkpoint is there (verify
// says when it is not). A log without prunes, or without the prunes table
// (version 1, read-only), has none.
func readAnchor(ctx context.Context, q querier) (mark, error) {
	ok, err := hasTable(ctx, q, "prunes")
	if err != nil || !ok {
		return mark{}, err
	}
	var seq, idx int64
	var hash []byte
	err = q.QueryRowContext(ctx,
		`SELECT p.seq, p.idx, c.hash FROM prunes p LEFT JOIN checkpoints c ON c.seq = p.seq ORDER BY p.seq DESC LIMIT 1`).
		Scan(&seq, &idx, &hash)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return mark{}, nil
	case err != nil:
		return mark{}, errs.Wrap(errs.Unavailable, err, "audit: reading the anchor")
	}
	m := mark{seq: uint64(max(seq, 0)), idx: uint64(max(idx, 0))}
	if len(hash) == len(m.hash) {
		m.hash = [32]byte(hash)
	}
	return m, nil
}

// anchorMark returns the anchor this store knows.
func (s *Store) anchorMark() mark {
	s.pubMu.Lock()
	defer s.pubMu.Unlock()
	return s.anchor
}

// Anchor returns the checkpoint the live log starts at, or nil if the log
// was never pruned.
func (s *Store) Anchor(ctx context.Context) (*contractualv1.Checkpoint, error) {
	if s.isClosed() {
		return nil, errClosed()
	}
	a := s.anchorMark()
	if a.seq == 0 {
		return nil, nil
	}
	return checkpointBySeq(ctx, s.rdb, s.public, a.seq)
}

// checkpointBySeq reads checkpoint seq; errs.NotFound if it is not there.
func checkpointBySeq(ctx context.Context, q querier, public []byte, seq uint64) (*contractualv1.Checkpoint, error) {
	return readCheckpoint(ctx, q, public, `SELECT seq, idx, hash, time, sig FROM checkpoints WHERE seq = ?`, int64(min(seq, math.MaxInt64)))
}

// readCheckpoint reads the checkpoint that query selects.
func readCheckpoint(ctx context.Context, q querier, public []byte, query string, args ...any) (*contractualv1.Checkpoint, error) {
	var seq, idx int64
	var c checkpoint
	err := q.QueryRowContext(ctx, query, args...).Scan(&seq, &idx, &c.hash, &c.time, &c.sig)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return nil, errs.E(errs.NotFound, "audit: no such checkpoint in the live log")
	case err != nil:
		return nil, errs.Wrap(errs.Unavailable, err, "audit: reading a checkpoint")
	}
	c.seq, c.idx = uint64(max(seq, 0)), uint64(max(idx, 0))
	return c.toProto(public), nil
}

// GetCheckpoint returns checkpoint seq of the live log or, with seq 0, the
// newest checkpoint signed before before.
func (s *Store) GetCheckpoint(ctx context.Context, seq uint64, before time.Time) (*contractualv1.Checkpoint, error) {
	if s.isClosed() {
		return nil, errClosed()
	}
	if seq != 0 {
		if a := s.anchorMark(); seq < a.seq {
			return nil, s.prunedErr(a, "checkpoint %d", seq)
		}
		return checkpointBySeq(ctx, s.rdb, s.public, seq)
	}
	if before.IsZero() {
		return nil, errs.E(errs.Invalid, "audit: name a checkpoint by seq or by a time it was signed before")
	}
	return readCheckpoint(ctx, s.rdb, s.public,
		`SELECT seq, idx, hash, time, sig FROM checkpoints WHERE time < ? ORDER BY seq DESC LIMIT 1`, before.UnixNano())
}

// prunedErr says that what was asked for (what, formatted) lies before the
// anchor a.
func (s *Store) prunedErr(a mark, what string, args ...any) error {
	return errs.E(errs.FailedPrecondition, "%w: %s is before checkpoint %d (index %d), where the live log starts; see the exported segments",
		ErrPruned, fmt.Sprintf(what, args...), a.seq, a.idx)
}

// Prune drops the events before checkpoint seq (or, with seq 0, the newest
// checkpoint signed before before) from the live log, if recorded exports
// cover them, and makes it the anchor. The prune is itself an audit event.
// It returns the new anchor and how many events were dropped.
func (s *Store) Prune(ctx context.Context, seq uint64, before time.Time) (*contractualv1.Checkpoint, uint64, error) {
	cp, err := s.GetCheckpoint(ctx, seq, before)
	if err != nil {
		return nil, 0, err
	}
	s.pruneMu.Lock()
	defer s.pruneMu.Unlock()
	return s.prune(ctx, cp, principal.From(ctx))
}

// prune is Prune at checkpoint cp, with pruneMu held.
func (s *Store) prune(ctx context.Context, cp *contractualv1.Checkpoint, who string) (*contractualv1.Checkpoint, uint64, error) {
	a := s.anchorMark()
	if cp.GetSeq() <= a.seq {
		return nil, 0, errs.E(errs.FailedPrecondition, "audit: checkpoint %d is not after the anchor, checkpoint %d: nothing to prune", cp.GetSeq(), a.seq)
	}
	through, err := exportedThrough(ctx, s.rdb, a)
	if err != nil {
		return nil, 0, err
	}
	if through.idx < cp.GetIndex() {
		return nil, 0, errs.E(errs.FailedPrecondition,
			"audit: events %d..%d are not exported, so they cannot be pruned: recorded exports cover the live log through index %d; export them first (contractual audit export)",
			through.idx+1, cp.GetIndex(), through.idx)
	}
	if _, err := s.wdb.ExecContext(ctx, `INSERT INTO prunes (seq, idx, time) VALUES (?, ?, ?)`,
		int64(cp.GetSeq()), int64(cp.GetIndex()), s.opts.Now().UnixNano()); err != nil {
		return nil, 0, errs.Wrap(errs.Unavailable, err, "audit: recording the prune")
	}
	s.pubMu.Lock()
	s.anchor = mark{seq: cp.GetSeq(), idx: cp.GetIndex(), hash: [32]byte(cp.GetHash())}
	s.pubMu.Unlock()
	dropped, err := s.dropPruned(ctx)
	if err != nil {
		return nil, 0, err
	}
	_, err = s.Append(ctx, []*contractualv1.AuditEvent{{
		Service: "audit", Principal: who, Action: "audit.prune", Outcome: "ok",
		Detail: fmt.Sprintf("pruned the %d events before checkpoint %d (index %d); the live log starts there", dropped, cp.GetSeq(), cp.GetIndex()),
	}})
	return cp, dropped, err
}

// dropPruned deletes what the anchor cut off: the events before its index
// (a chunk per transaction) and the checkpoints before it. A prune that
// was interrupted is finished by the next one, or at Open.
func (s *Store) dropPruned(ctx context.Context) (uint64, error) {
	a := s.anchorMark()
	var dropped uint64
	for {
		r, err := s.wdb.ExecContext(ctx,
			`DELETE FROM events WHERE idx IN (SELECT idx FROM events WHERE idx < ? ORDER BY idx LIMIT ?)`, int64(a.idx), pruneChunk)
		if err != nil {
			return dropped, errs.Wrap(errs.Unavailable, err, "audit: pruning events")
		}
		n, _ := r.RowsAffected()
		if n == 0 {
			break
		}
		dropped += uint64(n)
	}
	if _, err := s.wdb.ExecContext(ctx, `DELETE FROM checkpoints WHERE seq < ?`, int64(a.seq)); err != nil {
		return dropped, errs.Wrap(errs.Unavailable, err, "audit: pruning checkpoints")
	}
	return dropped, nil
}

// exportedThrough returns how far recorded exports cover the live log
// without gap from its anchor a: the seal of the last export in that run,
// or a itself.
func exportedThrough(ctx context.Context, q rowQuerier, a mark) (mark, error) {
	rows, err := q.QueryContext(ctx,
		`SELECT start_idx, seal_seq, seal_idx FROM exports WHERE seal_idx > ? ORDER BY start_idx, seal_idx`, int64(a.idx))
	if err != nil {
		return a, errs.Wrap(errs.Unavailable, err, "audit: reading exports")
	}
	defer rows.Close()
	cur := mark{seq: a.seq, idx: a.idx}
	for rows.Next() {
		var start, sealSeq, sealIdx int64
		if err := rows.Scan(&start, &sealSeq, &sealIdx); err != nil {
			return a, errs.Wrap(errs.Unavailable, err, "audit: reading exports")
		}
		if uint64(start) > cur.idx {
			break // a gap
		}
		if uint64(sealIdx) > cur.idx {
			cur = mark{seq: uint64(sealSeq), idx: uint64(sealIdx)}
		}
	}
	if err := rows.Err(); err != nil {
		return a, errs.Wrap(errs.Unavailable, err, "audit: reading exports")
	}
	return cur, nil
}

// retainLoop runs retention every RetainEvery until Close.
func (s *Store) retainLoop() {
	defer close(s.retained)
	if s.opts.KeepEvents == 0 && s.opts.KeepFor <= 0 {
		return
	}
	tick := time.NewTicker(s.opts.RetainEvery)
	defer tick.Stop()
	for {
		select {
		case <-s.stopRetain:
			return
		case <-tick.C:
			if err := s.Retain(context.Background()); err != nil {
				s.opts.Log.Error("audit retention", "err", err)
			}
		}
	}
}

// Retain applies the retention options once: it prunes through the newest
// checkpoint that has at least KeepEvents events after it and was signed
// at least KeepFor ago, exporting the segment to ExportDir first if that is
// set. Without ExportDir it prunes only what devices exported, and logs
// what is due but not exported. It does nothing without KeepEvents or
// KeepFor.
func (s *Store) Retain(ctx context.Context) error {
	o := s.opts
	if o.KeepEvents == 0 && o.KeepFor <= 0 {
		return nil
	}
	if s.isClosed() {
		return errClosed()
	}
	s.pruneMu.Lock()
	defer s.pruneMu.Unlock()
	maxIdx, maxTime := int64(math.MaxInt64), int64(math.MaxInt64)
	if h := s.published(); o.KeepEvents > 0 {
		if h.idx < o.KeepEvents {
			return nil
		}
		maxIdx = int64(h.idx - o.KeepEvents)
	}
	if o.KeepFor > 0 {
		maxTime = o.Now().Add(-o.KeepFor).UnixNano()
	}
	cut, err := readCheckpoint(ctx, s.rdb, s.public,
		`SELECT seq, idx, hash, time, sig FROM checkpoints WHERE idx <= ? AND time <= ? ORDER BY seq DESC LIMIT 1`, maxIdx, maxTime)
	a := s.anchorMark()
	switch {
	case errs.Is(err, errs.NotFound):
		return nil
	case err != nil:
		return err
	case cut.GetSeq() <= a.seq:
		return nil
	}
	through, err := exportedThrough(ctx, s.rdb, a)
	if err != nil {
		return err
	}
	if through.idx < cut.GetIndex() && o.ExportDir != "" {
		if _, err := s.exportToDir(ctx, through.seq, cut.GetSeq()); err != nil {
			return err
		}
	} else if through.idx < cut.GetIndex() {
		o.Log.Warn("audit retention: events are due for pruning but not exported; export them (contractual audit export) or set an export directory",
			"from", through.idx+1, "through", cut.GetIndex())
		if through.seq <= a.seq {
			return nil
		}
		if cut, err = checkpointBySeq(ctx, s.rdb, s.public, through.seq); err != nil {
			return err
		}
	}
	cp, dropped, err := s.prune(ctx, cut, principal.Service("audit"))
	if err != nil {
		return err
	}
	o.Log.Info("audit retention: pruned", "events", dropped, "anchor_seq", cp.GetSeq(), "anchor_index", cp.GetIndex())
	return nil
}

// exportToDir writes the segment startSeq..sealSeq to ExportDir (a new
// file, synced) and records the export; pruneMu is held.
func (s *Store) exportToDir(ctx context.Context, startSeq, sealSeq uint64) (*contractualv1.Export, error) {
	dir := s.opts.ExportDir
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, errs.Wrap(errs.Unavailable, err, "audit: creating the export directory")
	}
	name := SegmentFileName(startSeq, sealSeq)
	path := filepath.Join(dir, name)
	f, err := os.CreateTemp(dir, "."+name+".*")
	if err != nil {
		return nil, errs.Wrap(errs.Unavailable, err, "audit: exporting a segment")
	}
	tmp := f.Name()
	digest, err := s.Segment(ctx, f, startSeq, sealSeq)
	err = errors.Join(err, f.Sync(), f.Close())
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		os.Remove(tmp)
		return nil, errs.Wrap(errs.Unavailable, err, "audit: exporting a segment to %s", path)
	}
	if err := syncDir(dir); err != nil {
		return nil, err
	}
	return s.recordExport(ctx, startSeq, sealSeq, digest, name, principal.Service("audit"))
}
