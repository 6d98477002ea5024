package audit

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"iter"
	"slices"
	"time"
	"unicode/utf8"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	contractualv1 "github.com/contractual/contractual/contracts/gen/contractual/v1"
	"github.com/contractual/contractual/internal/errs"
	"github.com/contractual/contractual/internal/principal"
)

// A segment file holds the events after one checkpoint (its start; none
// for the start of the log) through a later one (its seal), exactly as the
// chain hashes them:
//
//	"contractual audit segment v1\n"
//	varint length, SegmentHeader{start, seal} (deterministic protobuf)
//	varint length, entry  (seal.index − start.index times)
//
// Both checkpoints carry the log's public keyset, so the file stands
// alone; VerifySegment checks it with a key the checker trusts. The bytes
// are a function of the log alone, so a store can recompute an exported
// file's digest (RecordExport).

// segmentMagic starts every segment file.
const segmentMagic = "contractual audit segment v1\n"

// Segment file limits: an entry holds at most MaxEgressRecords records of
// a few KiB each.
const (
	maxHeaderBytes = 1 << 20
	maxEntryBytes  = 64 << 20
)

// SegmentFileName is the conventional name of segment start..seal.
func SegmentFileName(startSeq, sealSeq uint64) string {
	return fmt.Sprintf("audit-segment-%06d-%06d.bin", startSeq, sealSeq)
}

// WriteSegment writes the segment file from start (nil: the start of the
// log) to seal, with entries, the stored encodings of the events after
// start; it reads no more of them than the segment holds.
func WriteSegment(w io.Writer, start, seal *contractualv1.Checkpoint, entries iter.Seq2[[]byte, error]) error {
	if seal == nil || start.GetIndex() >= seal.GetIndex() {
		return errs.E(errs.Invalid, "audit: a segment's seal (index %d) must follow its start (index %d)", seal.GetIndex(), start.GetIndex())
	}
	hdr, err := deterministic.Marshal(&contractualv1.SegmentHeader{Start: start, Seal: seal})
	if err != nil {
		return errs.Wrap(errs.Internal, err, "audit: encoding a segment header")
	}
	bw := bufio.NewWriterSize(w, 64<<10)
	bw.WriteString(segmentMagic)
	writeRecord(bw, hdr)
	want, n := seal.GetIndex()-start.GetIndex(), uint64(0)
	for enc, err := range entries {
		if err != nil {
			return err
		}
		writeRecord(bw, enc)
		if n++; n == want {
			break
		}
	}
	if n < want {
		return errs.E(errs.FailedPrecondition, "audit: the log holds %d of the %d events of segment %d..%d",
			n, want, start.GetSeq(), seal.GetSeq())
	}
	if err := bw.Flush(); err != nil {
		return errs.Wrap(errs.Unavailable, err, "audit: writing a segment")
	}
	return nil
}

// writeRecord writes b prefixed by its length; errors stick in bw.
func writeRecord(bw *bufio.Writer, b []byte) {
	bw.Write(protowire.AppendVarint(nil, uint64(len(b))))
	bw.Write(b)
}

// ReadSegment reads a segment file's header and returns it with its
// entries, which r yields as they are read. Nothing is verified.
func ReadSegment(r io.Reader) (*contractualv1.SegmentHeader, iter.Seq2[[]byte, error], error) {
	br := bufio.NewReaderSize(r, 64<<10)
	magic := make([]byte, len(segmentMagic))
	if _, err := io.ReadFull(br, magic); err != nil || string(magic) != segmentMagic {
		return nil, nil, errs.E(errs.Invalid, "audit: not a segment file")
	}
	b, err := readRecord(br, maxHeaderBytes)
	if err != nil {
		return nil, nil, errs.Wrap(errs.Invalid, err, "audit: a segment's header")
	}
	hdr := new(contractualv1.SegmentHeader)
	if err := proto.Unmarshal(b, hdr); err != nil {
		return nil, nil, errs.Wrap(errs.Invalid, err, "audit: a segment's header")
	}
	entries := func(yield func([]byte, error) bool) {
		for {
			enc, err := readRecord(br, maxEntryBytes)
			switch {
			case errors.Is(err, io.EOF):
				return
			case err != nil:
				yield(nil, errs.Wrap(errs.Invalid, err, "audit: a segment's entry"))
				return
			}
			if !yield(enc, nil) {
				return
			}
		}
	}
	return hdr, entries, nil
}

// readRecord reads one length-prefixed record of at most limit bytes;
// io.EOF only at a clean end.
func readRecord(br *bufio.Reader, limit uint64) ([]byte, error) {
	var n uint64
	for shift := uint(0); ; shift += 7 {
		c, err := br.ReadByte()
		if err != nil {
			if shift > 0 && errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF
			}
			return nil, err
		}
		if shift > 63 {
			return nil, fmt.Errorf("a record's length does not parse")
		}
		n |= uint64(c&0x7f) << shift
		if c < 0x80 {
			break
		}
	}
	if n > limit {
		return nil, fmt.Errorf("a record of %d bytes, over %d", n, limit)
	}
	b := make([]byte, n)
	if _, err := io.ReadFull(br, b); err != nil {
		return nil, io.ErrUnexpectedEOF
	}
	return b, nil
}

// VerifySegment checks a segment file with publicKeyset, the key the
// caller trusts: both checkpoints verify, each entry is the event at its
// index, the chain from the start's hash (zero for the start of the log)
// over exactly the segment's entries reaches the seal's hash, and nothing
// follows. It returns the header. A file that does not verify is an
// errs.FailedPrecondition error wrapping ErrTampered.
func VerifySegment(r io.Reader, publicKeyset []byte) (*contractualv1.SegmentHeader, error) {
	v, err := parseVerifyKeyset(publicKeyset)
	if err != nil {
		return nil, errs.Wrap(errs.Invalid, err, "audit: the public keyset does not parse")
	}
	hdr, entries, err := ReadSegment(r)
	if err != nil {
		return nil, err
	}
	var start, seal checkpoint
	for _, c := range []struct {
		p    *contractualv1.Checkpoint
		into *checkpoint
		name string
	}{{hdr.GetStart(), &start, "start"}, {hdr.GetSeal(), &seal, "seal"}} {
		if c.p == nil {
			if c.name == "seal" {
				return nil, tampered("the segment has no seal")
			}
			continue
		}
		if *c.into, err = fromProto(c.p); err == nil {
			err = v.Verify(c.into.sig, c.into.payload())
		}
		if err != nil {
			return nil, tampered("the segment's %s checkpoint (%d, index %d) does not verify with the key", c.name, c.p.GetSeq(), c.p.GetIndex())
		}
	}
	if seal.seq <= start.seq || seal.idx <= start.idx {
		return nil, tampered("the segment's seal (checkpoint %d, index %d) does not follow its start (checkpoint %d, index %d)",
			seal.seq, seal.idx, start.seq, start.idx)
	}
	var h [32]byte
	if start.seq != 0 {
		h = [32]byte(start.hash)
	}
	idx := start.idx
	for enc, err := range entries {
		if err != nil {
			return nil, err
		}
		if idx++; idx > seal.idx {
			return nil, tampered("the segment holds more than the %d events its seal covers", seal.idx-start.idx)
		}
		var e contractualv1.AuditEvent
		if err := proto.Unmarshal(enc, &e); err != nil || e.GetIndex() != idx {
			return nil, tampered("the segment's entry for index %d is not event %d", idx, idx)
		}
		h = link(h, enc)
	}
	switch {
	case idx < seal.idx:
		return nil, tampered("the segment holds %d of the %d events its seal covers: events were removed", idx-start.idx, seal.idx-start.idx)
	case !bytes.Equal(h[:], seal.hash):
		return nil, tampered("the chain over the segment's events does not reach the hash of its seal, checkpoint %d: events %d..%d were altered",
			seal.seq, start.idx+1, seal.idx)
	}
	return hdr, nil
}

// SegmentEntriesAfter yields entries, a segment's entries from index
// start+1, from index after+1 on (start ≤ after).
func SegmentEntriesAfter(entries iter.Seq2[[]byte, error], start, after uint64) iter.Seq2[[]byte, error] {
	return func(yield func([]byte, error) bool) {
		skip := after - start
		for enc, err := range entries {
			if err == nil && skip > 0 {
				skip--
				continue
			}
			if !yield(enc, err) || err != nil {
				return
			}
		}
	}
}

// Segment writes the segment of the live log from checkpoint startSeq (0:
// the start of the log) to checkpoint sealSeq to w, from one snapshot,
// and returns the digest of what it wrote, "sha256:<hex>".
func (s *Store) Segment(ctx context.Context, w io.Writer, startSeq, sealSeq uint64) (string, error) {
	if s.isClosed() {
		return "", errClosed()
	}
	tx, err := s.rdb.BeginTx(ctx, nil)
	if err != nil {
		return "", errs.Wrap(errs.Unavailable, err, "audit: export")
	}
	defer tx.Rollback()
	a, err := readAnchor(ctx, tx)
	if err != nil {
		return "", err
	}
	if startSeq < a.seq {
		return "", s.prunedErr(a, "checkpoint %d", startSeq)
	}
	var start *contractualv1.Checkpoint
	if startSeq != 0 {
		if start, err = checkpointBySeq(ctx, tx, s.public, startSeq); err != nil {
			return "", err
		}
	}
	seal, err := checkpointBySeq(ctx, tx, s.public, sealSeq)
	if err != nil {
		return "", err
	}
	h := sha256.New()
	if err := WriteSegment(io.MultiWriter(w, h), start, seal, entries(ctx, tx, start.GetIndex())); err != nil {
		return "", err
	}
	return "sha256:" + hex.EncodeToString(h.Sum(nil)), nil
}

// RecordExport records that the segment file from checkpoint startSeq to
// sealSeq, with digest "sha256:<hex>", was exported as name: it first
// recomputes the file from the log and refuses (errs.FailedPrecondition)
// a digest that differs. The export is itself an audit event.
func (s *Store) RecordExport(ctx context.Context, startSeq, sealSeq uint64, digest, name string) (*contractualv1.Export, error) {
	if len(name) > maxShortBytes || !utf8.ValidString(name) {
		return nil, errs.E(errs.Invalid, "audit: an export's name is at most %d bytes of UTF-8", maxShortBytes)
	}
	s.pruneMu.Lock()
	defer s.pruneMu.Unlock()
	got, err := s.Segment(ctx, io.Discard, startSeq, sealSeq)
	if err != nil {
		return nil, err
	}
	if got != digest {
		return nil, errs.E(errs.FailedPrecondition, "audit: the segment %d..%d of this log has digest %s, not %s: the file is not this log's", startSeq, sealSeq, got, digest)
	}
	return s.recordExport(ctx, startSeq, sealSeq, digest, name, principal.From(ctx))
}

// recordExport inserts an export whose digest was checked; pruneMu is
// held.
func (s *Store) recordExport(ctx context.Context, startSeq, sealSeq uint64, digest, name, who string) (*contractualv1.Export, error) {
	var startIdx uint64
	if startSeq != 0 {
		c, err := checkpointBySeq(ctx, s.rdb, s.public, startSeq)
		if err != nil {
			return nil, err
		}
		startIdx = c.GetIndex()
	}
	seal, err := checkpointBySeq(ctx, s.rdb, s.public, sealSeq)
	if err != nil {
		return nil, err
	}
	now := s.opts.Now()
	x := &contractualv1.Export{
		StartSeq: startSeq, StartIndex: startIdx, SealSeq: sealSeq, SealIndex: seal.GetIndex(),
		Sha256: digest, Name: name, Principal: who, Time: timestamppb.New(now),
	}
	_, err = s.wdb.ExecContext(ctx,
		`INSERT OR IGNORE INTO exports (start_seq, start_idx, seal_seq, seal_idx, sha256, name, principal, time) VALUES (?, ?, ?, ?, ?, ?, ?, ?)`,
		int64(startSeq), int64(startIdx), int64(sealSeq), int64(x.SealIndex), digest, name, who, now.UnixNano())
	if err != nil {
		return nil, errs.Wrap(errs.Unavailable, err, "audit: recording an export")
	}
	_, err = s.Append(ctx, []*contractualv1.AuditEvent{{
		Service: "audit", Principal: who, Action: "audit.export", Outcome: "ok",
		Detail: fmt.Sprintf("exported segment %d..%d (events %d..%d) as %s, %s", startSeq, sealSeq, startIdx+1, x.SealIndex, name, digest),
	}})
	return x, err
}

// maxListedExports caps the exports Segments returns.
const maxListedExports = 1000

// Segments returns the log's retention state: its anchor (nil if never
// pruned), its newest checkpoint, the recorded exports (the newest 1000,
// oldest first) and how far they cover the live log from the anchor.
func (s *Store) Segments(ctx context.Context) (*contractualv1.SegmentsResponse, error) {
	if s.isClosed() {
		return nil, errClosed()
	}
	tx, err := s.rdb.BeginTx(ctx, nil)
	if err != nil {
		return nil, errs.Wrap(errs.Unavailable, err, "audit: segments")
	}
	defer tx.Rollback()
	out := new(contractualv1.SegmentsResponse)
	a, err := readAnchor(ctx, tx)
	if err != nil {
		return nil, err
	}
	if a.seq != 0 {
		if out.Anchor, err = checkpointBySeq(ctx, tx, s.public, a.seq); err != nil {
			return nil, err
		}
	}
	if out.Latest, err = latestCheckpoint(ctx, tx, s.public); err != nil {
		return nil, err
	}
	through, err := exportedThrough(ctx, tx, a)
	if err != nil {
		return nil, err
	}
	out.ExportedThrough = through.idx
	out.Exports, err = readExports(ctx, tx, 0)
	return out, err
}

// readExports reads the newest recorded exports whose seal is after index
// after, oldest first.
func readExports(ctx context.Context, q rowQuerier, after uint64) ([]*contractualv1.Export, error) {
	rows, err := q.QueryContext(ctx, `SELECT start_seq, start_idx, seal_seq, seal_idx, sha256, name, principal, time FROM exports
		WHERE seal_idx > ? ORDER BY time DESC, seal_seq DESC LIMIT ?`, int64(min(after, 1<<62)), maxListedExports)
	if err != nil {
		return nil, errs.Wrap(errs.Unavailable, err, "audit: reading exports")
	}
	defer rows.Close()
	var out []*contractualv1.Export
	for rows.Next() {
		var ss, si, es, ei, t int64
		x := new(contractualv1.Export)
		if err := rows.Scan(&ss, &si, &es, &ei, &x.Sha256, &x.Name, &x.Principal, &t); err != nil {
			return nil, errs.Wrap(errs.Unavailable, err, "audit: reading exports")
		}
		x.StartSeq, x.StartIndex, x.SealSeq, x.SealIndex = uint64(ss), uint64(si), uint64(es), uint64(ei)
		x.Time = timestamppb.New(time.Unix(0, t))
		out = append(out, x)
	}
	if err := rows.Err(); err != nil {
		return nil, errs.Wrap(errs.Unavailable, err, "audit: reading exports")
	}
	slices.Reverse(out)
	return out, nil
}
