package audit

import (
	"bytes"
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"errors"
	"iter"
	"math"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/timestamppb"

	contractualv1 "github.com/contractual/contractual/contracts/gen/contractual/v1"
	"github.com/contractual/contractual/internal/errs"
)

// A signed checkpoint leaves the server: a device remembers the newest one
// it has seen, and later checks that the log extends it, as Certificate
// Transparency clients do with a log's signed tree heads. The consistency
// proof of a hash chain is the events between two checkpoints, as stored:
// the chain from the older checkpoint's hash over them must land on the
// newer one's. Extends is that check; the CLI runs it over entries fetched
// from the server, the server runs it for the Control UI over its own
// rows, and `audit verify --against` runs it over a copy of the data.

// ErrTampered marks a failed consistency check: the log no longer extends
// a checkpoint that was seen.
var ErrTampered = errors.New("the audit log was tampered with")

// Entries limits.
const (
	// MaxEntries is the most events one Entries returns.
	MaxEntries = 1000
	// maxEntriesBytes caps the encodings one Entries returns (it always
	// returns at least one event, whatever its size). 1 MiB stays under the
	// 4 MiB that gRPC clients accept by default.
	maxEntriesBytes = 1 << 20
)

// Extends checks that checkpoint b extends checkpoint a: both verify with
// publicKeyset (the key the caller trusts, not the one a checkpoint
// carries), b is a or newer, and the chain from a's hash over entries
// reaches b's hash. entries are the stored encodings of the events
// a.index+1 .. b.index, in order; Extends reads no further than that.
//
// a may be nil (nothing seen yet): only b's signature is checked. b may be
// nil (the log has no checkpoint): a rollback unless a is nil too.
//
// A failed check is an errs.FailedPrecondition error that wraps
// ErrTampered; an error that entries yields is returned as it is.
func Extends(publicKeyset []byte, a, b *contractualv1.Checkpoint, entries iter.Seq2[[]byte, error]) error {
	v, err := parseVerifyKeyset(publicKeyset)
	if err != nil {
		return errs.Wrap(errs.Invalid, err, "audit: the public keyset does not parse")
	}
	var ca, cb checkpoint
	if a != nil {
		if ca, err = fromProto(a); err == nil {
			err = v.Verify(ca.sig, ca.payload())
		}
		if err != nil {
			return tampered("the checkpoint seen before (%d, index %d) does not verify with the log's key: the key or the checkpoint was replaced",
				a.GetSeq(), a.GetIndex())
		}
	}
	if b == nil {
		if a == nil {
			return nil
		}
		return tampered("the log has no signed checkpoint, but checkpoint %d (index %d) was seen: its checkpoints were removed", ca.seq, ca.idx)
	}
	if cb, err = fromProto(b); err == nil {
		err = v.Verify(cb.sig, cb.payload())
	}
	if err != nil {
		return tampered("the log's newest checkpoint (%d, index %d) does not verify with the log's key: it was forged, or the key was replaced",
			b.GetSeq(), b.GetIndex())
	}
	if a == nil {
		return nil
	}
	switch {
	case cb.seq < ca.seq || cb.idx < ca.idx:
		return tampered("rollback: the log's newest checkpoint is %d (index %d), but checkpoint %d (index %d) was seen: events or checkpoints were removed",
			cb.seq, cb.idx, ca.seq, ca.idx)
	case cb.seq == ca.seq:
		if cb.idx != ca.idx || cb.time != ca.time || !bytes.Equal(cb.hash, ca.hash) {
			return tampered("checkpoint %d (index %d) is not the checkpoint %d (index %d) that was seen: the log was rewritten",
				cb.seq, cb.idx, ca.seq, ca.idx)
		}
		return nil
	case cb.idx == ca.idx:
		return tampered("checkpoint %d seals index %d, which checkpoint %d sealed already: the checkpoints were rewritten", cb.seq, cb.idx, ca.seq)
	}
	h, want := [32]byte(ca.hash), cb.idx-ca.idx
	var n uint64
	for enc, err := range entries {
		if err != nil {
			return err
		}
		h = link(h, enc)
		if n++; n == want {
			break
		}
	}
	if n < want {
		return tampered("the log holds %d of the %d events between checkpoint %d (index %d) and checkpoint %d (index %d): events were removed",
			n, want, ca.seq, ca.idx, cb.seq, cb.idx)
	}
	if !bytes.Equal(h[:], cb.hash) {
		return tampered("the log does not extend checkpoint %d (index %d): the chain from its hash over events %d..%d does not reach the hash of checkpoint %d; the log was rewritten at or before index %d",
			ca.seq, ca.idx, ca.idx+1, cb.idx, cb.seq, cb.idx)
	}
	return nil
}

// tampered returns a failed consistency check.
func tampered(format string, args ...any) error {
	return errs.E(errs.FailedPrecondition, "%w: "+format, append([]any{ErrTampered}, args...)...)
}

// fromProto reads a checkpoint message; its signature is not checked.
func fromProto(p *contractualv1.Checkpoint) (checkpoint, error) {
	t := p.GetTime()
	switch {
	case p.GetSeq() == 0 || p.GetIndex() == 0:
		return checkpoint{}, errs.E(errs.Invalid, "audit: a checkpoint's seq and index start at 1")
	case len(p.GetHash()) != sha256.Size:
		return checkpoint{}, errs.E(errs.Invalid, "audit: a checkpoint's hash is %d bytes, not %d", len(p.GetHash()), sha256.Size)
	case t == nil || t.CheckValid() != nil:
		return checkpoint{}, errs.E(errs.Invalid, "audit: a checkpoint's time is missing or invalid")
	}
	ns := t.AsTime().UnixNano()
	if !t.AsTime().Equal(timeOf(ns)) {
		return checkpoint{}, errs.E(errs.Invalid, "audit: a checkpoint's time is out of range")
	}
	return checkpoint{seq: p.GetSeq(), idx: p.GetIndex(), hash: p.GetHash(), time: ns, sig: p.GetSignature()}, nil
}

// timeOf is the time of unix nanoseconds ns, as a checkpoint stores it.
func timeOf(ns int64) time.Time { return time.Unix(0, ns).UTC() }

// toProto returns c as a message carrying the log's public keyset.
func (c checkpoint) toProto(public []byte) *contractualv1.Checkpoint {
	return &contractualv1.Checkpoint{
		Seq: c.seq, Index: c.idx, Hash: c.hash, Time: timestamppb.New(timeOf(c.time)),
		Signature: c.sig, PublicKeyset: public,
	}
}

// KeyID names a public keyset: "sha256:<hex>" of its bytes.
func KeyID(publicKeyset []byte) string {
	sum := sha256.Sum256(publicKeyset)
	return "sha256:" + hex.EncodeToString(sum[:])
}

// MarshalCheckpoint returns the file form of c: its JSON (proto field
// names), indented, with a final newline, the same for the same c.
func MarshalCheckpoint(c *contractualv1.Checkpoint) ([]byte, error) {
	b, err := protojson.MarshalOptions{UseProtoNames: true}.Marshal(c)
	if err != nil {
		return nil, errs.Wrap(errs.Internal, err, "audit: encoding a checkpoint")
	}
	// protojson varies its spacing on purpose; a file should not.
	var out bytes.Buffer
	if err := json.Indent(&out, b, "", "  "); err != nil {
		return nil, errs.Wrap(errs.Internal, err, "audit: encoding a checkpoint")
	}
	out.WriteByte('\n')
	return out.Bytes(), nil
}

// ParseCheckpoint reads the file form of a checkpoint.
func ParseCheckpoint(b []byte) (*contractualv1.Checkpoint, error) {
	c := new(contractualv1.Checkpoint)
	if err := protojson.Unmarshal(b, c); err != nil {
		return nil, errs.Wrap(errs.Invalid, err, "audit: not a checkpoint")
	}
	if _, err := fromProto(c); err != nil {
		return nil, err
	}
	return c, nil
}

// WriteCheckpointFile writes c to path in its file form, atomically, mode
// 0600.
func WriteCheckpointFile(path string, c *contractualv1.Checkpoint) error {
	b, err := MarshalCheckpoint(c)
	if err != nil {
		return err
	}
	return writeFileAtomic(path, b, 0o600)
}

// LatestCheckpoint seals the events no checkpoint covers yet (see Seal)
// and returns the newest signed checkpoint, or nil while the log is empty.
func (s *Store) LatestCheckpoint(ctx context.Context) (*contractualv1.Checkpoint, error) {
	if err := s.Seal(ctx); err != nil {
		return nil, err
	}
	return latestCheckpoint(ctx, s.rdb, s.public)
}

// Entries returns the stored encodings of the events after index after,
// oldest first: at most limit of them (0 means MaxEntries; more is
// clamped), and fewer once they add up to 1 MiB. Events before the
// anchor were pruned: asking for them is an error wrapping ErrPruned.
func (s *Store) Entries(ctx context.Context, after uint64, limit int) ([][]byte, error) {
	if s.isClosed() {
		return nil, errClosed()
	}
	if limit <= 0 || limit > MaxEntries {
		limit = MaxEntries
	}
	tx, err := s.rdb.BeginTx(ctx, nil)
	if err != nil {
		return nil, errs.Wrap(errs.Unavailable, err, "audit: reading events")
	}
	defer tx.Rollback()
	a, err := readAnchor(ctx, tx)
	if err != nil {
		return nil, err
	}
	if after < a.idx {
		return nil, s.prunedErr(a, "event %d", after+1)
	}
	var out [][]byte
	size := 0
	for enc, err := range entries(ctx, tx, after) {
		if err != nil {
			return nil, err
		}
		out = append(out, enc)
		if size += len(enc); len(out) == limit || size >= maxEntriesBytes {
			break
		}
	}
	return out, nil
}

// CheckConsistency seals the events no checkpoint covers yet (see Seal),
// checks that the log extends seen, a checkpoint a device saw (nil if it
// saw none), and returns the newest checkpoint (nil while the log is
// empty). Tampering is an error wrapping ErrTampered; the newest
// checkpoint is returned with it.
func (s *Store) CheckConsistency(ctx context.Context, seen *contractualv1.Checkpoint) (*contractualv1.Checkpoint, error) {
	if err := s.Seal(ctx); err != nil {
		return nil, err
	}
	return checkConsistency(ctx, s.rdb, s.public, seen)
}

// CheckFileConsistency is CheckConsistency for the log in dir, without a
// running store, with a public keyset the caller trusts: `audit verify
// --against` checks a copy of the data against an exported checkpoint.
func CheckFileConsistency(ctx context.Context, dir string, publicKeyset []byte, seen *contractualv1.Checkpoint) (*contractualv1.Checkpoint, error) {
	db, err := openReadOnly(ctx, dir)
	if err != nil {
		return nil, err
	}
	defer db.Close()
	return checkConsistency(ctx, db, publicKeyset, seen)
}

// checkConsistency reads the newest checkpoint and the events after seen
// from one snapshot of db, and checks that the one extends the other. If
// seen is older than the anchor, the events after it were pruned: that is
// an error wrapping ErrPruned (after seen's signature is checked), not
// tampering.
func checkConsistency(ctx context.Context, db *sql.DB, public []byte, seen *contractualv1.Checkpoint) (*contractualv1.Checkpoint, error) {
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return nil, errs.Wrap(errs.Unavailable, err, "audit: consistency check")
	}
	defer tx.Rollback()
	latest, err := latestCheckpoint(ctx, tx, public)
	if err != nil {
		return nil, err
	}
	a, err := readAnchor(ctx, tx)
	if err != nil {
		return nil, err
	}
	if seen != nil && seen.GetIndex() < a.idx {
		// Only a genuine checkpoint older than the anchor was pruned.
		if err := Extends(public, nil, seen, nil); err != nil {
			return latest, tampered("the checkpoint seen (%d, index %d) does not verify with the log's key", seen.GetSeq(), seen.GetIndex())
		}
		if seen.GetSeq() >= a.seq {
			return latest, tampered("checkpoint %d seals index %d, but the log's anchor, checkpoint %d, seals index %d: the checkpoints were rewritten",
				seen.GetSeq(), seen.GetIndex(), a.seq, a.idx)
		}
		return latest, errs.E(errs.FailedPrecondition,
			"%w: events %d..%d, after checkpoint %d (index %d) that was seen, were pruned; the live log starts at checkpoint %d (index %d)",
			ErrPruned, seen.GetIndex()+1, a.idx, seen.GetSeq(), seen.GetIndex(), a.seq, a.idx)
	}
	return latest, Extends(public, seen, latest, entries(ctx, tx, seen.GetIndex()))
}

// latestCheckpoint reads the newest checkpoint, or nil if there is none.
func latestCheckpoint(ctx context.Context, q querier, public []byte) (*contractualv1.Checkpoint, error) {
	var seq, idx int64
	var c checkpoint
	err := q.QueryRowContext(ctx, `SELECT seq, idx, hash, time, sig FROM checkpoints ORDER BY seq DESC LIMIT 1`).
		Scan(&seq, &idx, &c.hash, &c.time, &c.sig)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return nil, nil
	case err != nil:
		return nil, errs.Wrap(errs.Unavailable, err, "audit: reading the newest checkpoint")
	}
	c.seq, c.idx = uint64(max(seq, 0)), uint64(max(idx, 0))
	return c.toProto(public), nil
}

// rowQuerier is what entries needs: a *sql.DB or a *sql.Tx.
type rowQuerier interface {
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
}

// entries yields the stored encodings of the events after index after, in
// index order, until the end of the log or until the consumer stops.
func entries(ctx context.Context, q rowQuerier, after uint64) iter.Seq2[[]byte, error] {
	return func(yield func([]byte, error) bool) {
		if after >= math.MaxInt64 {
			return
		}
		rows, err := q.QueryContext(ctx, `SELECT enc FROM events WHERE idx > ? ORDER BY idx`, int64(after))
		if err != nil {
			yield(nil, errs.Wrap(errs.Unavailable, err, "audit: reading events"))
			return
		}
		defer rows.Close()
		for rows.Next() {
			var enc []byte
			if err := rows.Scan(&enc); err != nil {
				yield(nil, errs.Wrap(errs.Unavailable, err, "audit: reading events"))
				return
			}
			if !yield(enc, nil) {
				return
			}
		}
		if err := rows.Err(); err != nil {
			yield(nil, errs.Wrap(errs.Unavailable, err, "audit: reading events"))
		}
	}
}
