package audit

import (
	"context"
	"database/sql"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tink-crypto/tink-go/v2/signature"

	"github.com/contractual/contractual/internal/decision"
	"github.com/contractual/contractual/internal/errs"
)

// sealedLog writes 35 events in batches of 5 with a checkpoint every 10,
// and closes the store: checkpoints 1..4 seal indexes 10, 20, 30 and (on
// Close) 35.
func sealedLog(t *testing.T) string {
	t.Helper()
	s, dir := newStore(t, Options{CheckpointEvery: 10})
	appendN(t, s, 0, 35, 5)
	if err := s.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	return dir
}

// flip returns b with one bit of byte i (counted from the end if negative)
// flipped.
func flip(b []byte, i int) []byte {
	b = append([]byte(nil), b...)
	if i < 0 {
		i += len(b)
	}
	b[i] ^= 1
	return b
}

// shiftUp moves rows from..end one index up, leaving a hole at from.
func shiftUp(t *testing.T, db *sql.DB, from int64) {
	mustExec(t, db, `UPDATE events SET idx = -idx WHERE idx >= ?`, from)
	mustExec(t, db, `UPDATE events SET idx = 1 - idx WHERE idx < 0`)
}

// forge returns a row for a made-up event at idx, chained after prev as
// the log would chain it.
func forge(idx int64, prev []byte, detail string) row {
	e := event(int(idx))
	e.Detail = detail
	body, _ := encodeBody(e)
	enc := encode(uint64(idx), time.Now(), body)
	h := link([32]byte(prev), enc)
	return row{idx: idx, enc: enc, hash: h[:]}
}

// rechain rewrites every row from idx on so that the chain is consistent
// again after a change at idx: the strongest attacker without the key.
func rechain(t *testing.T, db *sql.DB, from int64) {
	prev := readRow(t, db, from-1).hash
	var rows []row
	r, err := db.Query(`SELECT idx, enc FROM events WHERE idx >= ? ORDER BY idx`, from)
	if err != nil {
		t.Fatal(err)
	}
	for r.Next() {
		var x row
		r.Scan(&x.idx, &x.enc)
		rows = append(rows, x)
	}
	r.Close()
	for _, x := range rows {
		h := link([32]byte(prev), x.enc)
		mustExec(t, db, `UPDATE events SET hash = ? WHERE idx = ?`, h[:], x.idx)
		prev = h[:]
	}
}

// editDetail changes the detail of the event at idx and re-encodes it
// (keeping its index and time), without fixing the chain.
func editDetail(t *testing.T, db *sql.DB, idx int64, detail string) {
	e := decodeRow(t, readRow(t, db, idx))
	e.Detail = detail
	body, _ := encodeBody(e)
	enc := encode(e.GetIndex(), e.GetTime().AsTime(), body)
	mustExec(t, db, `UPDATE events SET enc = ? WHERE idx = ?`, enc, idx)
}

func TestVerifyDetectsTampering(t *testing.T) {
	tests := []struct {
		name    string
		tamper  func(t *testing.T, db *sql.DB)
		bad     uint64
		problem string
	}{
		{"flipped byte in an encoding", func(t *testing.T, db *sql.DB) {
			mustExec(t, db, `UPDATE events SET enc = ? WHERE idx = 7`, flip(readRow(t, db, 7).enc, -1))
		}, 7, "event 7 does not match its chain hash: its content or hash was altered"},
		{"flipped byte in a hash", func(t *testing.T, db *sql.DB) {
			mustExec(t, db, `UPDATE events SET hash = ? WHERE idx = 7`, flip(readRow(t, db, 7).hash, 0))
		}, 7, "event 7 does not match its chain hash"},
		{"edited event", func(t *testing.T, db *sql.DB) {
			editDetail(t, db, 23, "nothing to see")
		}, 23, "event 23 does not match its chain hash"},
		{"deleted row", func(t *testing.T, db *sql.DB) {
			mustExec(t, db, `DELETE FROM events WHERE idx = 12`)
		}, 12, "event 12 is missing: the next row is 13"},
		{"reordered rows", func(t *testing.T, db *sql.DB) {
			r5, r6 := readRow(t, db, 5), readRow(t, db, 6)
			mustExec(t, db, `UPDATE events SET enc = ?, hash = ? WHERE idx = 5`, r6.enc, r6.hash)
			mustExec(t, db, `UPDATE events SET enc = ?, hash = ? WHERE idx = 6`, r5.enc, r5.hash)
		}, 5, "the row at index 5 holds event 6 (rows were moved or reordered)"},
		{"inserted row, not chained", func(t *testing.T, db *sql.DB) {
			shiftUp(t, db, 15)
			f := forge(15, make([]byte, 32), "forged")
			mustExec(t, db, `INSERT INTO events (idx, enc, hash) VALUES (?, ?, ?)`, f.idx, f.enc, f.hash)
		}, 15, "event 15 does not match its chain hash"},
		{"inserted row, chained", func(t *testing.T, db *sql.DB) {
			shiftUp(t, db, 15)
			f := forge(15, readRow(t, db, 14).hash, "forged")
			mustExec(t, db, `INSERT INTO events (idx, enc, hash) VALUES (?, ?, ?)`, f.idx, f.enc, f.hash)
		}, 16, "the row at index 16 holds event 15"},
		{"inserted row, every later row rewritten", func(t *testing.T, db *sql.DB) {
			mustExec(t, db, `DELETE FROM events WHERE idx >= 15`)
			prev := readRow(t, db, 14).hash
			for i := int64(15); i <= 36; i++ {
				f := forge(i, prev, "forged")
				mustExec(t, db, `INSERT INTO events (idx, enc, hash) VALUES (?, ?, ?)`, f.idx, f.enc, f.hash)
				prev = f.hash
			}
		}, 11, "events 11..20 were rewritten: the chain hash at 20 differs from signed checkpoint 2"},
		{"edited event, chain recomputed", func(t *testing.T, db *sql.DB) {
			editDetail(t, db, 23, "nothing to see")
			rechain(t, db, 23)
		}, 21, "events 21..30 were rewritten"},
		{"row before the first", func(t *testing.T, db *sql.DB) {
			f := forge(0, make([]byte, 32), "forged")
			mustExec(t, db, `INSERT INTO events (idx, enc, hash) VALUES (?, ?, ?)`, f.idx, f.enc, f.hash)
		}, 1, "a row with index 0 comes before event 1"},
		{"tail truncated below a checkpoint", func(t *testing.T, db *sql.DB) {
			mustExec(t, db, `DELETE FROM events WHERE idx > 25`)
		}, 26, "the log ends at index 25 but checkpoint 3 seals index 30: events 26..30 were removed"},
		{"everything after a checkpoint removed", func(t *testing.T, db *sql.DB) {
			mustExec(t, db, `DELETE FROM events WHERE idx > 30`)
		}, 31, "checkpoint 4 seals index 35"},
		{"all events removed", func(t *testing.T, db *sql.DB) {
			mustExec(t, db, `DELETE FROM events`)
		}, 1, "the log ends at index 0"},
		{"checkpoint hash altered", func(t *testing.T, db *sql.DB) {
			mustExec(t, db, `UPDATE checkpoints SET hash = ? WHERE seq = 2`, readRow(t, db, 19).hash)
		}, 20, "checkpoint 2 (index 20) has a bad signature: it was forged or altered"},
		{"checkpoint moved", func(t *testing.T, db *sql.DB) {
			mustExec(t, db, `UPDATE checkpoints SET idx = 15, hash = ? WHERE seq = 2`, readRow(t, db, 15).hash)
		}, 15, "checkpoint 2 (index 15) has a bad signature"},
		{"checkpoint signature altered", func(t *testing.T, db *sql.DB) {
			var sig []byte
			db.QueryRow(`SELECT sig FROM checkpoints WHERE seq = 3`).Scan(&sig)
			mustExec(t, db, `UPDATE checkpoints SET sig = ? WHERE seq = 3`, flip(sig, -1))
		}, 30, "checkpoint 3 (index 30) has a bad signature"},
		{"checkpoint deleted", func(t *testing.T, db *sql.DB) {
			mustExec(t, db, `DELETE FROM checkpoints WHERE seq = 2`)
		}, 11, "checkpoint 2 is missing: checkpoint 3 follows 1 (checkpoints were deleted)"},
		{"events table dropped", func(t *testing.T, db *sql.DB) {
			mustExec(t, db, `DROP TABLE events`)
		}, 1, "the events table is missing"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := sealedLog(t)
			db := rawDB(t, dir)
			dropTriggers(t, db)
			tt.tamper(t, db)
			db.Close()
			res, err := VerifyFile(context.Background(), dir)
			if err != nil {
				t.Fatal(err)
			}
			if res.GetOk() || res.GetFirstBadIndex() != tt.bad || !strings.Contains(res.GetProblem(), tt.problem) {
				t.Fatalf("verify: ok=%v first bad %d %q; want first bad %d %q",
					res.GetOk(), res.GetFirstBadIndex(), res.GetProblem(), tt.bad, tt.problem)
			}
		})
	}
}

func TestVerifyIntact(t *testing.T) {
	dir := sealedLog(t)
	res, err := VerifyFile(context.Background(), dir)
	if err != nil {
		t.Fatal(err)
	}
	if !res.GetOk() || res.GetEvents() != 35 || res.GetCheckpoints() != 4 || res.GetFirstBadIndex() != 0 || res.GetProblem() != "" {
		t.Fatalf("verify: %v", res)
	}
}

func TestTriggersRefuseChanges(t *testing.T) {
	dir := sealedLog(t)
	db := rawDB(t, dir)
	for _, q := range []string{
		`UPDATE events SET enc = x'00' WHERE idx = 3`,
		`UPDATE events SET idx = 100 WHERE idx = 3`,
		`DELETE FROM events WHERE idx = 3`,
		`DELETE FROM events`,
		`UPDATE checkpoints SET hash = x'00' WHERE seq = 1`,
		`DELETE FROM checkpoints WHERE seq = 1`,
	} {
		_, err := db.Exec(q)
		if err == nil || !strings.Contains(err.Error(), "append-only") {
			t.Errorf("%s: got %v, want the append-only trigger to refuse", q, err)
		}
	}
	db.Close()
	if res, err := VerifyFile(context.Background(), dir); err != nil || !res.GetOk() {
		t.Fatalf("verify: %v %v", res, err)
	}
}

// TestLiveVerifySeesTailRemoval: a tail removed after the last checkpoint
// is invisible to an offline check, but the running store knows how far it
// wrote.
func TestLiveVerifySeesTailRemoval(t *testing.T) {
	s, dir := newStore(t, Options{})
	appendN(t, s, 0, 12, 3)
	db := rawDB(t, dir)
	dropTriggers(t, db)
	mustExec(t, db, `DELETE FROM events WHERE idx > 8`)
	if res, err := VerifyFile(context.Background(), dir); err != nil || !res.GetOk() {
		t.Fatalf("offline verify without a checkpoint past 8: %v %v", res, err)
	}
	res, err := s.Verify(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if res.GetOk() || res.GetFirstBadIndex() != 9 || !strings.Contains(res.GetProblem(), "this store committed 12 events") {
		t.Fatalf("live verify: %v", res)
	}
}

// TestReplacedKeysCaughtByPinnedKey: an attacker who also replaces both
// keysets and re-signs every checkpoint passes VerifyFile, but not a check
// against a copy of the public keyset kept elsewhere.
func TestReplacedKeysCaughtByPinnedKey(t *testing.T) {
	dir := sealedLog(t)
	pinned, err := os.ReadFile(filepath.Join(dir, VerifyKeysetFile))
	if err != nil {
		t.Fatal(err)
	}
	db := rawDB(t, dir)
	dropTriggers(t, db)
	editDetail(t, db, 3, "rewritten")
	rechain(t, db, 3)
	resignAll(t, db, dir)
	db.Close()

	if res, err := VerifyFile(context.Background(), dir); err != nil || !res.GetOk() {
		t.Fatalf("verify with the attacker's keyset: %v %v", res, err)
	}
	res, err := VerifyFileWithKey(context.Background(), dir, pinned)
	if err != nil {
		t.Fatal(err)
	}
	if res.GetOk() || res.GetFirstBadIndex() != 10 || !strings.Contains(res.GetProblem(), "checkpoint 1 (index 10) has a bad signature") {
		t.Fatalf("verify with the pinned keyset: %v", res)
	}
}

// resignAll replaces the keysets in dir with new ones and re-signs every
// checkpoint over the chain as it now is.
func resignAll(t *testing.T, db *sql.DB, dir string) {
	h, _ := decision.NewKeyset()
	priv, _ := decision.MarshalPrivate(h)
	pub, _ := decision.MarshalPublic(h)
	os.WriteFile(filepath.Join(dir, SigningKeysetFile), priv, 0o600)
	os.WriteFile(filepath.Join(dir, VerifyKeysetFile), pub, 0o644)
	signer, err := signature.NewSigner(h)
	if err != nil {
		t.Fatal(err)
	}
	rows, _ := db.Query(`SELECT seq, idx, time FROM checkpoints`)
	var cps []checkpoint
	for rows.Next() {
		var c checkpoint
		rows.Scan(&c.seq, &c.idx, &c.time)
		cps = append(cps, c)
	}
	rows.Close()
	for _, c := range cps {
		c.hash = readRow(t, db, int64(c.idx)).hash
		sig, _ := signer.Sign(c.payload())
		mustExec(t, db, `UPDATE checkpoints SET hash = ?, sig = ? WHERE seq = ?`, c.hash, sig, c.seq)
	}
}

func TestVerifyFileErrors(t *testing.T) {
	_, err := VerifyFile(context.Background(), t.TempDir())
	wantKind(t, err, errs.NotFound)
	_, err = VerifyFileWithKey(context.Background(), t.TempDir(), nil)
	wantKind(t, err, errs.Invalid)
}

func TestVerifyFileWithoutKeyset(t *testing.T) {
	dir := sealedLog(t)
	os.Remove(filepath.Join(dir, VerifyKeysetFile))
	res, err := VerifyFile(context.Background(), dir)
	if err != nil {
		t.Fatal(err)
	}
	if res.GetOk() || res.GetFirstBadIndex() != 10 || !strings.Contains(res.GetProblem(), "no verify keyset") {
		t.Fatalf("verify: %v", res)
	}
}

// TestVerifyFileWhileOpen checks a log that a store has open and is
// writing, read-only, from one snapshot.
func TestVerifyFileWhileOpen(t *testing.T) {
	s, dir := newStore(t, Options{CheckpointEvery: 4})
	appendN(t, s, 0, 10, 2)
	res, err := VerifyFile(context.Background(), dir)
	if err != nil || !res.GetOk() || res.GetEvents() != 10 || res.GetCheckpoints() != 2 {
		t.Fatalf("verify: %v %v", res, err)
	}
	appendN(t, s, 10, 2, 2) // the store still writes after a reader came and went
	mustVerify(t, s, 12)
}

// TestLiveVerifySeesCheckpointRemoval: deleting the last checkpoint cannot
// be seen offline (the log then looks like one that crashed before it), but
// the running store knows what it signed.
func TestLiveVerifySeesCheckpointRemoval(t *testing.T) {
	s, dir := newStore(t, Options{CheckpointEvery: 5})
	appendN(t, s, 0, 12, 1) // checkpoints at 5 and 10
	db := rawDB(t, dir)
	dropTriggers(t, db)
	mustExec(t, db, `DELETE FROM checkpoints WHERE seq = 2`)
	if res, err := VerifyFile(context.Background(), dir); err != nil || !res.GetOk() {
		t.Fatalf("offline verify: %v %v", res, err)
	}
	res, err := s.Verify(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if res.GetOk() || res.GetFirstBadIndex() != 6 || !strings.Contains(res.GetProblem(), "the last checkpoint is 1 but this store wrote 2") {
		t.Fatalf("live verify: %v", res)
	}
}
