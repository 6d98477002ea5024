package audit

import (
	"context"
	"database/sql"
	"errors"
	"time"

	contractualv1 "github.com/contractual/contractual/contracts/gen/contractual/v1"
	"github.com/contractual/contractual/internal/errs"
)

// request is one Append, or one Seal, waiting for the writer.
type request struct {
	bodies [][]byte   // the events' encodings without index and time
	seal   bool       // sign a checkpoint over everything committed with this batch
	idxs   []uint64   // set by the writer before it sends on done
	done   chan error // buffered: the writer never blocks on it
}

// Append validates events, records them in order and returns their
// indexes. It returns only once the events are committed to disk. Callers'
// values for index, time and hash are ignored: the log sets them.
//
// If ctx ends while the events wait for the writer, Append returns an error
// but the events may still be recorded; the log stays consistent either way.
func (s *Store) Append(ctx context.Context, events []*contractualv1.AuditEvent) ([]uint64, error) {
	bodies, err := encodeBodies(events)
	if err != nil {
		return nil, err
	}
	r := &request{bodies: bodies, done: make(chan error, 1)}
	if err := s.submit(ctx, r); err != nil {
		return nil, err
	}
	select {
	case err := <-r.done:
		if err != nil {
			return nil, err
		}
		return r.idxs, nil
	case <-ctx.Done():
		return nil, ctxErr(ctx, "audit: gave up waiting for the write; the events may or may not be recorded")
	}
}

// Seal signs a checkpoint over the events that no checkpoint covers yet,
// if there are any, and returns once it is on disk: the newest checkpoint
// then covers every event appended before the call. A device is given a
// checkpoint only after a Seal, so that all it has seen is signed.
func (s *Store) Seal(ctx context.Context) error {
	r := &request{seal: true, done: make(chan error, 1)}
	if err := s.submit(ctx, r); err != nil {
		return err
	}
	select {
	case err := <-r.done:
		return err
	case <-ctx.Done():
		return ctxErr(ctx, "audit: gave up waiting for the checkpoint")
	}
}

// submit hands r to the writer, unless the store is closed or ctx ends.
func (s *Store) submit(ctx context.Context, r *request) error {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return errClosed()
	}
	if ctx.Err() != nil {
		return ctxErr(ctx, "audit: nothing recorded")
	}
	select {
	case s.reqs <- r:
		return nil
	case <-ctx.Done():
		return ctxErr(ctx, "audit: nothing recorded")
	}
}

// ctxErr wraps ctx's error with the matching kind.
func ctxErr(ctx context.Context, msg string) error {
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		return errs.Wrap(errs.DeadlineExceeded, ctx.Err(), "%s", msg)
	}
	return errs.Wrap(errs.Unavailable, ctx.Err(), "%s", msg)
}

// run is the writer goroutine: it takes every request that is waiting (up
// to maxBatch events), commits them in one transaction, then acknowledges
// each one. It returns when reqs is closed and drained.
// While the log is quiet, it seals the events appended since the last
// checkpoint every CheckpointInterval.
func (s *Store) run() {
	defer close(s.exited)
	batch := make([]*request, 0, 64)
	tick := time.NewTicker(s.opts.CheckpointInterval)
	defer tick.Stop()
	for {
		select {
		case r, ok := <-s.reqs:
			if !ok {
				return
			}
			batch = s.gather(append(batch[:0], r))
			err := s.commit(batch)
			for _, r := range batch {
				r.done <- err
			}
			clear(batch)
		case <-tick.C:
			// A failure here leaves the events unsealed until the next
			// commit or Close, which report it; the log stays correct.
			_ = s.seal(context.Background())
		}
	}
}

// gather adds to batch the requests already waiting, without blocking,
// until maxBatch events.
func (s *Store) gather(batch []*request) []*request {
	n := len(batch[0].bodies)
	for n < s.opts.maxBatch {
		select {
		case r, ok := <-s.reqs:
			if !ok {
				return batch
			}
			batch = append(batch, r)
			n += len(r.bodies)
		default:
			return batch
		}
	}
	return batch
}

// commit writes batch in one transaction, with a checkpoint if one is due
// or a request in batch asks to seal. On success it sets each request's
// indexes and advances the head; on failure the head stays where it was
// and every request gets the error.
func (s *Store) commit(batch []*request) error {
	ctx := context.Background() // a caller's cancellation must not cut a write short
	if err := s.ready(ctx); err != nil {
		return err
	}
	events, seal := 0, false
	for _, r := range batch {
		events, seal = events+len(r.bodies), seal || r.seal
	}
	next := s.w
	if events == 0 && (!seal || next.idx == next.ckptIdx) {
		return nil // only seals, and nothing to seal
	}
	err := s.inTx(ctx, func(tx *sql.Tx) error {
		if err := s.insert(ctx, tx, batch, &next); err != nil {
			return err
		}
		if next.idx-next.ckptIdx >= uint64(s.opts.CheckpointEvery) || seal && next.idx > next.ckptIdx {
			return s.writeCheckpoint(ctx, tx, &next)
		}
		return nil
	})
	if err != nil {
		s.resync = true
		s.pending = next
		return errs.Wrap(errs.Unavailable, err, "audit: events not recorded")
	}
	s.advance(next)
	return nil
}

// insert appends batch's events after h, advancing h.
func (s *Store) insert(ctx context.Context, tx *sql.Tx, batch []*request, h *head) error {
	stmt := tx.StmtContext(ctx, s.ins)
	defer stmt.Close()
	now := time.Now()
	for _, r := range batch {
		r.idxs = make([]uint64, len(r.bodies))
		for i, body := range r.bodies {
			h.idx++
			enc := encode(h.idx, now, body)
			h.hash = link(h.hash, enc)
			if _, err := stmt.ExecContext(ctx, int64(h.idx), enc, h.hash[:]); err != nil {
				return err
			}
			r.idxs[i] = h.idx
		}
	}
	return nil
}

// inTx runs f in a write transaction and commits it.
func (s *Store) inTx(ctx context.Context, f func(*sql.Tx) error) error {
	tx, err := s.wdb.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	if err := f(tx); err != nil {
		return errors.Join(err, rollback(tx))
	}
	return tx.Commit()
}

// rollback rolls tx back; a transaction SQLite already ended is fine.
func rollback(tx *sql.Tx) error {
	if err := tx.Rollback(); err != nil && !errors.Is(err, sql.ErrTxDone) {
		return err
	}
	return nil
}

// advance makes h the writer's head and publishes it.
func (s *Store) advance(h head) {
	s.w = h
	s.pubMu.Lock()
	s.pub = h
	s.pubMu.Unlock()
}

// ready checks, after a failed write, that the log on disk is at the head
// the writer knows (nothing was written) or at the head of the failed batch
// (it was written after all, though its callers got an error). Anything
// else means someone else changed the file: the writer refuses every later
// write rather than chain onto rows it did not write.
func (s *Store) ready(ctx context.Context) error {
	if s.wedged != nil {
		return s.wedged
	}
	if !s.resync {
		return nil
	}
	disk, err := readHead(ctx, s.wdb)
	if err != nil {
		return errs.Wrap(errs.Unavailable, err, "audit: events not recorded")
	}
	switch disk {
	case s.w:
	case s.pending:
		s.advance(disk)
	default:
		s.wedged = errs.E(errs.Unavailable,
			"audit: the log on disk (index %d, checkpoint %d) is not what this process wrote (index %d, checkpoint %d); refusing to write until it is verified and reopened",
			disk.idx, disk.ckptSeq, s.w.idx, s.w.ckptSeq)
		return s.wedged
	}
	s.resync = false
	return nil
}

// seal writes a checkpoint over the events appended since the last one, if
// there are any. Only the writer goroutine, or Close after it exited, calls
// it.
func (s *Store) seal(ctx context.Context) error {
	if err := s.ready(ctx); err != nil {
		return err
	}
	if s.w.idx == s.w.ckptIdx {
		return nil
	}
	next := s.w
	err := s.inTx(ctx, func(tx *sql.Tx) error { return s.writeCheckpoint(ctx, tx, &next) })
	if err != nil {
		return errs.Wrap(errs.Unavailable, err, "audit: writing the final checkpoint")
	}
	s.advance(next)
	return nil
}

// writeCheckpoint signs h's index and hash as the next checkpoint.
func (s *Store) writeCheckpoint(ctx context.Context, tx *sql.Tx, h *head) error {
	c := checkpoint{seq: h.ckptSeq + 1, idx: h.idx, hash: h.hash[:], time: time.Now().UnixNano()}
	sig, err := s.signer.Sign(c.payload())
	if err != nil {
		return err
	}
	_, err = tx.ExecContext(ctx, `INSERT INTO checkpoints (seq, idx, hash, time, sig) VALUES (?, ?, ?, ?, ?)`,
		int64(c.seq), int64(c.idx), c.hash, c.time, sig)
	if err != nil {
		return err
	}
	h.ckptSeq, h.ckptIdx = c.seq, c.idx
	return nil
}
