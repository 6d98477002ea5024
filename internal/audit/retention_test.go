package audit

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	contractualv1 "github.com/contractual/contractual/contracts/gen/contractual/v1"
	"github.com/contractual/contractual/internal/decision"
	"github.com/contractual/contractual/internal/errs"
)

// seal seals s's unsealed events and returns the newest checkpoint.
func seal(t *testing.T, s *Store) *contractualv1.Checkpoint {
	t.Helper()
	c, err := s.LatestCheckpoint(context.Background())
	if err != nil || c == nil {
		t.Fatalf("latest checkpoint: %v %v", c, err)
	}
	return c
}

// verifyOK runs v and fails unless the log is intact; it returns the
// response.
func verifyOK(t *testing.T, v func(context.Context) (*contractualv1.VerifyResponse, error)) *contractualv1.VerifyResponse {
	t.Helper()
	res, err := v(context.Background())
	if err != nil || !res.GetOk() {
		t.Fatalf("verify: %v %v", res, err)
	}
	return res
}

// TestIncrementalVerifyReadsOnlyNewEvents: after a verification, the next
// one reads only the events after the last checkpoint it matched, and
// still catches tampering among them.
func TestIncrementalVerifyReadsOnlyNewEvents(t *testing.T) {
	s, dir := newStore(t, Options{CheckpointEvery: 100})
	appendN(t, s, 0, 1000, 50)
	seal(t, s)
	res := verifyOK(t, s.Verify)
	if res.GetChecked() != 1000 || res.GetFromIndex() != 0 || res.GetEvents() != 1000 {
		t.Fatalf("first verify: %v, want all 1000 events checked from 0", res)
	}
	appendN(t, s, 1000, 50, 10)
	seal(t, s)
	res = verifyOK(t, s.Verify)
	if res.GetChecked() != 50 || res.GetFromIndex() != 1000 || res.GetEvents() != 1050 || res.GetCheckpoints() != 1 {
		t.Fatalf("incremental verify: %v, want the 50 new events checked from index 1000 and 1 checkpoint", res)
	}
	// Events not yet sealed are checked, and again next time.
	appendN(t, s, 1050, 5, 5)
	if res = verifyOK(t, s.Verify); res.GetChecked() != 5 || res.GetFromIndex() != 1050 {
		t.Fatalf("unsealed tail: %v", res)
	}
	if res = verifyOK(t, s.Verify); res.GetChecked() != 5 || res.GetFromIndex() != 1050 {
		t.Fatalf("unsealed tail again: %v", res)
	}

	// A rewritten new event is caught, at its index.
	appendN(t, s, 1055, 25, 5)
	seal(t, s)
	db := rawDB(t, dir)
	dropTriggers(t, db)
	editDetail(t, db, 1060, "rewritten")
	res, err := s.Verify(context.Background())
	if err != nil || res.GetOk() || res.GetFirstBadIndex() != 1060 || res.GetFromIndex() != 1050 || res.GetChecked() != 10 {
		t.Fatalf("verify after tampering: %v %v, want event 1060 bad, found after reading 10 events from 1050", res, err)
	}
	// Rechained by an attacker without the key: the checkpoint catches it.
	rechain(t, db, 1060)
	res, err = s.Verify(context.Background())
	if err != nil || res.GetOk() || !strings.Contains(res.GetProblem(), "events 1051..1080 were rewritten") {
		t.Fatalf("verify after rechaining: %v %v", res, err)
	}
}

// TestIncrementalVerifySeesTheStartMoved: the event the last verified
// checkpoint seals must still be there with its hash; a change before it
// is what VerifyFull (and VerifyFile) are for.
func TestIncrementalVerifySeesTheStartMoved(t *testing.T) {
	s, dir := newStore(t, Options{CheckpointEvery: 10})
	appendN(t, s, 0, 30, 5)
	seal(t, s)
	verifyOK(t, s.Verify)
	appendN(t, s, 30, 5, 5)
	db := rawDB(t, dir)
	dropTriggers(t, db)
	editDetail(t, db, 3, "old news")
	if res := verifyOK(t, s.Verify); res.GetChecked() != 5 {
		t.Fatalf("incremental verify: %v, want only the 5 new events read", res)
	}
	res, err := s.VerifyFull(context.Background())
	if err != nil || res.GetOk() || res.GetFirstBadIndex() != 3 || res.GetChecked() != 3 {
		t.Fatalf("full verify: %v %v, want event 3 bad", res, err)
	}
	// After a failure, the next verification is a full one again.
	if res, _ := s.Verify(context.Background()); res.GetOk() || res.GetFromIndex() != 0 {
		t.Fatalf("verify after a failed one: %v, want a full one that fails", res)
	}

	// The event the last verified checkpoint seals has another hash.
	s2, dir2 := newStore(t, Options{CheckpointEvery: 10})
	appendN(t, s2, 0, 30, 5)
	verifyOK(t, s2.Verify)
	db2 := rawDB(t, dir2)
	dropTriggers(t, db2)
	mustExec(t, db2, `UPDATE events SET hash = x'00' WHERE idx = 30`)
	res, err = s2.Verify(context.Background())
	if err != nil || res.GetOk() || res.GetFirstBadIndex() != 30 || !strings.Contains(res.GetProblem(), "has another hash") {
		t.Fatalf("verify from a start whose hash changed: %v %v", res, err)
	}
}

// exportAll exports the segment start..sealSeq of s and records it; it
// returns the file's bytes.
func exportAll(t *testing.T, s *Store, startSeq, sealSeq uint64) []byte {
	t.Helper()
	var buf bytes.Buffer
	digest, err := s.Segment(context.Background(), &buf, startSeq, sealSeq)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.RecordExport(context.Background(), startSeq, sealSeq, digest, SegmentFileName(startSeq, sealSeq)); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// TestSegmentVerifiesOffline: an exported segment verifies with the
// public key alone; one changed, cut, extended or checked with another key
// does not.
func TestSegmentVerifiesOffline(t *testing.T) {
	s, dir := newStore(t, Options{CheckpointEvery: 10})
	appendN(t, s, 0, 35, 5)
	seal(t, s)
	pub := publicKeyset(t, dir)
	for _, r := range [][2]uint64{{0, 3}, {1, 3}, {3, 4}} {
		var buf bytes.Buffer
		if _, err := s.Segment(context.Background(), &buf, r[0], r[1]); err != nil {
			t.Fatal(err)
		}
		hdr, err := VerifySegment(bytes.NewReader(buf.Bytes()), pub)
		if err != nil || hdr.GetStart().GetSeq() != r[0] || hdr.GetSeal().GetSeq() != r[1] {
			t.Fatalf("segment %v: %v %v", r, hdr, err)
		}
	}
	var buf bytes.Buffer
	if _, err := s.Segment(context.Background(), &buf, 1, 3); err != nil {
		t.Fatal(err)
	}
	file := buf.Bytes()
	_, entries, err := ReadSegment(bytes.NewReader(file))
	if err != nil {
		t.Fatal(err)
	}
	var es [][]byte
	for e, err := range entries {
		if err != nil {
			t.Fatal(err)
		}
		es = append(es, e)
	}
	if len(es) != 20 {
		t.Fatalf("%d entries, want 20", len(es))
	}
	hdr, _, _ := ReadSegment(bytes.NewReader(file))
	if got := assemble(t, hdr, es); !bytes.Equal(got, file) {
		t.Fatal("assemble does not rebuild the file")
	}
	// Where event 15's detail is in the file.
	at := bytes.Index(file, es[4]) + bytes.Index(es[4], []byte("event 15"))
	h, _ := decision.NewKeyset()
	other, _ := decision.MarshalPublic(h)
	for name, tt := range map[string]struct {
		file []byte
		key  []byte
		msg  string
	}{
		"a detail changed": {flip(file, at+6), pub, "does not reach the hash of its seal"},
		"cut short":        {assemble(t, hdr, es[:19]), pub, "holds 19 of the 20 events"},
		"an entry added":   {assemble(t, hdr, append(es[:20:20], es[19])), pub, "more than the 20 events"},
		"an entry swapped": {assemble(t, hdr, append(append(es[:3:3], es[4], es[3]), es[5:]...)), pub, "is not event 14"},
		"another key":      {file, other, "does not verify with the key"},
	} {
		_, err := VerifySegment(bytes.NewReader(tt.file), tt.key)
		if !errors.Is(err, ErrTampered) || !strings.Contains(err.Error(), tt.msg) {
			t.Errorf("%s: %v, want tampering that says %q", name, err, tt.msg)
		}
	}
	if _, err := VerifySegment(strings.NewReader("not a segment"), pub); !errs.Is(err, errs.Invalid) {
		t.Errorf("not a segment: %v", err)
	}
}

// assemble writes a segment file of hdr and entries, whatever they are.
func assemble(t *testing.T, hdr *contractualv1.SegmentHeader, entries [][]byte) []byte {
	t.Helper()
	b, err := deterministic.Marshal(hdr)
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	w := bufio.NewWriter(&buf)
	w.WriteString(segmentMagic)
	writeRecord(w, b)
	for _, e := range entries {
		writeRecord(w, e)
	}
	w.Flush()
	return buf.Bytes()
}

// TestPruneRefusesUnexported: only events that recorded exports cover are
// pruned, and an export is recorded only with the log's own digest.
func TestPruneRefusesUnexported(t *testing.T) {
	s, dir := newStore(t, Options{CheckpointEvery: 10})
	appendN(t, s, 0, 35, 5)
	seal(t, s)
	_, _, err := s.Prune(context.Background(), 2, time.Time{})
	if !errs.Is(err, errs.FailedPrecondition) || !strings.Contains(err.Error(), "events 1..20 are not exported") {
		t.Fatalf("prune without an export: %v", err)
	}
	_, err = s.RecordExport(context.Background(), 0, 2, "sha256:"+strings.Repeat("0", 64), "forged.bin")
	if !errs.Is(err, errs.FailedPrecondition) || !strings.Contains(err.Error(), "the file is not this log's") {
		t.Fatalf("record with a wrong digest: %v", err)
	}
	exportAll(t, s, 0, 1)
	_, _, err = s.Prune(context.Background(), 2, time.Time{})
	if !errs.Is(err, errs.FailedPrecondition) || !strings.Contains(err.Error(), "events 11..20 are not exported") {
		t.Fatalf("prune past the export: %v", err)
	}
	if _, n, err := s.Prune(context.Background(), 1, time.Time{}); err != nil || n != 9 {
		t.Fatalf("prune through the export: %d %v, want 9 events dropped", n, err)
	}
	// The triggers still refuse to delete past the anchor.
	db := rawDB(t, dir)
	for _, q := range []string{`DELETE FROM events WHERE idx = 10`, `DELETE FROM events WHERE idx = 11`, `DELETE FROM checkpoints WHERE seq = 1`, `DELETE FROM prunes`, `DELETE FROM exports`} {
		if _, err := db.Exec(q); err == nil || !strings.Contains(err.Error(), "append-only") {
			t.Errorf("%s: %v, want the append-only trigger to refuse", q, err)
		}
	}
	if _, _, err := s.Prune(context.Background(), 1, time.Time{}); !errs.Is(err, errs.FailedPrecondition) {
		t.Fatalf("prune to the anchor again: %v", err)
	}
}

// prunedLog returns a store over a log of 35 events (checkpoints every
// 10) pruned through checkpoint 2 (index 20), with the checkpoint a device
// saw at index 10 and the exported segment 0..2.
func prunedLog(t *testing.T) (*Store, string, *contractualv1.Checkpoint, []byte) {
	t.Helper()
	s, dir := newStore(t, Options{CheckpointEvery: 10})
	appendN(t, s, 0, 10, 5)
	seen := seal(t, s)
	appendN(t, s, 10, 25, 5)
	seal(t, s)
	file := exportAll(t, s, 0, 2) // event 36: audit.export
	anchor, n, err := s.Prune(context.Background(), 2, time.Time{})
	if err != nil || n != 19 || anchor.GetIndex() != 20 { // event 37: audit.prune
		t.Fatalf("prune: %v %d %v", anchor, n, err)
	}
	return s, dir, seen, file
}

// TestPrunedLogVerifiesFromItsAnchor: after a prune, the live log verifies
// from the anchor, online, offline and after a restart, and a change at
// the anchor is caught.
func TestPrunedLogVerifiesFromItsAnchor(t *testing.T) {
	s, dir, _, _ := prunedLog(t)
	for i, v := range []func(context.Context) (*contractualv1.VerifyResponse, error){
		s.Verify, s.VerifyFull,
		func(ctx context.Context) (*contractualv1.VerifyResponse, error) { return VerifyFile(ctx, dir) },
	} {
		res := verifyOK(t, v)
		if res.GetFromIndex() != 20 || res.GetEvents() != 37 {
			t.Errorf("verification %d (verify, full, file): %v, want events 21..37 verified from the anchor at 20", i, res)
		}
	}
	if res := verifyOK(t, s.VerifyFull); res.GetChecked() != 17 || res.GetCheckpoints() != 3 {
		t.Errorf("full: %v, want 17 events and checkpoints 2..4", res)
	}
	var n int
	rawDB(t, dir).QueryRow(`SELECT count(*) FROM events`).Scan(&n)
	if n != 18 {
		t.Errorf("%d rows left, want 18 (the anchor's event and 17 after it)", n)
	}
	if err := s.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	s2, err := Open(context.Background(), dir, Options{CheckpointEvery: 10})
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close(context.Background())
	appendN(t, s2, 37, 3, 3)
	if res := verifyOK(t, s2.Verify); res.GetFromIndex() != 20 || res.GetEvents() != 40 {
		t.Fatalf("after reopening: %v", res)
	}

	db := rawDB(t, dir)
	dropTriggers(t, db)
	mustExec(t, db, `UPDATE events SET hash = x'00' WHERE idx = 20`)
	if res, _ := VerifyFile(context.Background(), dir); res.GetOk() || res.GetFirstBadIndex() != 20 {
		t.Fatalf("anchor event altered: %v", res)
	}
	mustExec(t, db, `DELETE FROM checkpoints WHERE seq = 2`)
	res, _ := VerifyFile(context.Background(), dir)
	if res.GetOk() || !strings.Contains(res.GetProblem(), "pruned through checkpoint 2 (index 20), but that checkpoint is missing") {
		t.Fatalf("anchor checkpoint deleted: %v", res)
	}
	// The running store knows where it pruned to.
	mustExec(t, db, `INSERT INTO prunes (seq, idx, time) VALUES (3, 30, 0)`)
	res, _ = s2.Verify(context.Background())
	if res.GetOk() || !strings.Contains(res.GetProblem(), "but this store pruned it to checkpoint 2") {
		t.Fatalf("pruned behind the store's back: %v", res)
	}
}

// TestPrunedCheckpointGetsPrunedAnswer: a device whose checkpoint is older
// than the anchor is told its range was pruned and which export holds it,
// not that the log was tampered with; the exported segment bridges the
// gap.
func TestPrunedCheckpointGetsPrunedAnswer(t *testing.T) {
	s, dir, seen, file := prunedLog(t)
	_, err := s.CheckConsistency(context.Background(), seen)
	if !errors.Is(err, ErrPruned) || errors.Is(err, ErrTampered) || !strings.Contains(err.Error(), "events 11..20, after checkpoint 1 (index 10) that was seen, were pruned") {
		t.Fatalf("consistency with a pruned checkpoint: %v", err)
	}
	resp, err := NewService(s).CheckConsistency(context.Background(), &contractualv1.CheckConsistencyRequest{Seen: seen})
	if err != nil || resp.GetOk() || resp.GetPruned().GetAnchor().GetSeq() != 2 || len(resp.GetPruned().GetExports()) != 1 ||
		resp.GetPruned().GetExports()[0].GetName() != SegmentFileName(0, 2) {
		t.Fatalf("service answer: %v %v", resp, err)
	}
	if _, err := s.Entries(context.Background(), 5, 0); !errors.Is(err, ErrPruned) {
		t.Fatalf("entries of the pruned range: %v", err)
	}
	if _, err := s.Entries(context.Background(), 20, 0); err != nil {
		t.Fatalf("entries after the anchor: %v", err)
	}
	// A checkpoint that only claims to be older is tampering.
	forged := proto2(seen)
	forged.Hash = bytes.Repeat([]byte{7}, 32)
	if _, err := s.CheckConsistency(context.Background(), forged); !errors.Is(err, ErrTampered) {
		t.Fatalf("forged old checkpoint: %v", err)
	}
	// The device bridges the gap with the export: seen → its seal (the
	// anchor) over the file, then the anchor → the newest over the log.
	pub := publicKeyset(t, dir)
	hdr, entries, err := ReadSegment(bytes.NewReader(file))
	if err != nil {
		t.Fatal(err)
	}
	if err := Extends(pub, seen, hdr.GetSeal(), SegmentEntriesAfter(entries, 0, seen.GetIndex())); err != nil {
		t.Fatalf("seen → the segment's seal: %v", err)
	}
	if _, err := s.CheckConsistency(context.Background(), hdr.GetSeal()); err != nil {
		t.Fatalf("the seal → the newest: %v", err)
	}
}

// proto2 copies a checkpoint.
func proto2(c *contractualv1.Checkpoint) *contractualv1.Checkpoint {
	return &contractualv1.Checkpoint{Seq: c.Seq, Index: c.Index, Hash: c.Hash, Time: c.Time, Signature: c.Signature, PublicKeyset: c.PublicKeyset}
}

// TestRetention: with KeepEvents, retention exports what falls outside to
// ExportDir and prunes it; without ExportDir it prunes only what a device
// exported; KeepFor counts on the injected clock.
func TestRetention(t *testing.T) {
	exports := t.TempDir()
	s, dir := newStore(t, Options{CheckpointEvery: 10, KeepEvents: 15, ExportDir: exports})
	appendN(t, s, 0, 40, 5)
	seal(t, s)
	if err := s.Retain(context.Background()); err != nil {
		t.Fatal(err)
	}
	a, _ := s.Anchor(context.Background())
	if a.GetSeq() != 2 || a.GetIndex() != 20 {
		t.Fatalf("anchor %v, want checkpoint 2 (index 20): the newest with 15 events after it", a)
	}
	f, err := os.Open(filepath.Join(exports, SegmentFileName(0, 2)))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := VerifySegment(f, publicKeyset(t, dir)); err != nil {
		t.Fatalf("the exported segment: %v", err)
	}
	verifyOK(t, s.VerifyFull)

	// No export directory: only what a device exported goes.
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	s2, _ := newStore(t, Options{CheckpointEvery: 10, KeepFor: time.Hour, Now: func() time.Time { return now }})
	appendN(t, s2, 0, 40, 5)
	seal(t, s2)
	now = time.Now().Add(2 * time.Hour)
	if err := s2.Retain(context.Background()); err != nil {
		t.Fatal(err)
	}
	if a, _ := s2.Anchor(context.Background()); a != nil {
		t.Fatalf("pruned %v without an export", a)
	}
	exportAll(t, s2, 0, 3)
	if err := s2.Retain(context.Background()); err != nil {
		t.Fatal(err)
	}
	if a, _ := s2.Anchor(context.Background()); a.GetSeq() != 3 {
		t.Fatalf("anchor %v, want checkpoint 3: the end of the export", a)
	}
	// Nothing is an hour old on the real clock.
	now = time.Now()
	appendN(t, s2, 42, 20, 5)
	exportAll(t, s2, 3, 6)
	if err := s2.Retain(context.Background()); err != nil {
		t.Fatal(err)
	}
	if a, _ := s2.Anchor(context.Background()); a.GetSeq() != 3 {
		t.Fatalf("anchor %v, want still checkpoint 3", a)
	}
}

// TestUpgradeFromVersion1: a log written before exports and prunes gets
// them at Open, and its delete triggers learn about prunes.
func TestUpgradeFromVersion1(t *testing.T) {
	dir := sealedLog(t)
	db := rawDB(t, dir)
	mustExec(t, db, `DROP TABLE exports`)
	mustExec(t, db, `DROP TABLE prunes`)
	dropTriggers(t, db)
	mustExec(t, db, `CREATE TRIGGER events_no_delete BEFORE DELETE ON events BEGIN SELECT RAISE(ABORT, 'no delete'); END`)
	mustExec(t, db, `CREATE TRIGGER checkpoints_no_delete BEFORE DELETE ON checkpoints BEGIN SELECT RAISE(ABORT, 'no delete'); END`)
	mustExec(t, db, `PRAGMA user_version = 1`)
	db.Close()
	if res, err := VerifyFile(context.Background(), dir); err != nil || !res.GetOk() {
		t.Fatalf("version 1 offline: %v %v", res, err)
	}
	s, err := Open(context.Background(), dir, Options{CheckpointEvery: 10})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close(context.Background())
	exportAll(t, s, 0, 2)
	if _, n, err := s.Prune(context.Background(), 2, time.Time{}); err != nil || n != 19 {
		t.Fatalf("prune after the upgrade: %d %v", n, err)
	}
	verifyOK(t, s.VerifyFull)
}
