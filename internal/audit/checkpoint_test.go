package audit

import (
	"bytes"
	"context"
	"errors"
	"iter"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tink-crypto/tink-go/v2/keyset"
	"github.com/tink-crypto/tink-go/v2/signature"
	"google.golang.org/protobuf/proto"

	contractualv1 "github.com/contractual/contractual/contracts/gen/contractual/v1"
	"github.com/contractual/contractual/internal/decision"
	"github.com/contractual/contractual/internal/errs"
)

// checkpoints returns every checkpoint of the log in dir, by seq, as a
// device would have received them.
func checkpoints(t *testing.T, dir string) []*contractualv1.Checkpoint {
	t.Helper()
	pub := publicKeyset(t, dir)
	db := rawDB(t, dir)
	defer db.Close()
	rows, err := db.Query(`SELECT seq, idx, hash, time, sig FROM checkpoints ORDER BY seq`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var out []*contractualv1.Checkpoint
	for rows.Next() {
		var c checkpoint
		if err := rows.Scan(&c.seq, &c.idx, &c.hash, &c.time, &c.sig); err != nil {
			t.Fatal(err)
		}
		out = append(out, c.toProto(pub))
	}
	return out
}

// publicKeyset reads dir's audit-verify.keyset.
func publicKeyset(t *testing.T, dir string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, VerifyKeysetFile))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// sign signs c with the log's own key, as only the server can.
func sign(t *testing.T, dir string, c checkpoint) *contractualv1.Checkpoint {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, SigningKeysetFile))
	if err != nil {
		t.Fatal(err)
	}
	h, err := decision.UnmarshalPrivate(b)
	if err != nil {
		t.Fatal(err)
	}
	s, err := signature.NewSigner(h)
	if err != nil {
		t.Fatal(err)
	}
	if c.sig, err = s.Sign(c.payload()); err != nil {
		t.Fatal(err)
	}
	return c.toProto(publicKeyset(t, dir))
}

// grow reopens the log in dir and appends n events to it, with a
// checkpoint every 10 and one on close: what a server restarted on a
// tampered copy goes on to write.
func grow(t *testing.T, dir string, n int) {
	t.Helper()
	s, err := Open(context.Background(), dir, Options{CheckpointEvery: 10})
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < n; i++ {
		if _, err := s.Append(context.Background(), []*contractualv1.AuditEvent{event(1000 + i)}); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
}

// wantTampered fails unless err is a failed consistency check that says
// msg.
func wantTampered(t *testing.T, err error, msg string) {
	t.Helper()
	if !errors.Is(err, ErrTampered) || !errs.Is(err, errs.FailedPrecondition) {
		t.Fatalf("got %v, want tampering", err)
	}
	if !strings.Contains(err.Error(), msg) {
		t.Fatalf("%q does not say %q", err, msg)
	}
}

// TestConsistencyCatchesTampering: a device saw a checkpoint of the log;
// the log in the directory was then changed by someone without the signing
// key. Each change is one the offline verification cannot see, and each is
// caught by checking the log against the checkpoint the device saw.
func TestConsistencyCatchesTampering(t *testing.T) {
	tests := []struct {
		name   string
		seen   int // the seq the device saw
		tamper func(t *testing.T, dir string)
		msg    string // "" means the log still extends it
	}{
		{name: "intact, saw the newest", seen: 4},
		{name: "intact, saw an older one", seen: 2},
		{name: "truncated tail and deleted last checkpoint", seen: 4, tamper: func(t *testing.T, dir string) {
			db := rawDB(t, dir)
			dropTriggers(t, db)
			mustExec(t, db, `DELETE FROM events WHERE idx > 30`)
			mustExec(t, db, `DELETE FROM checkpoints WHERE seq > 3`)
		}, msg: "rollback: the log's newest checkpoint is 3 (index 30), but checkpoint 4 (index 35) was seen"},
		{name: "truncated further back than the checkpoint seen", seen: 3, tamper: func(t *testing.T, dir string) {
			db := rawDB(t, dir)
			dropTriggers(t, db)
			mustExec(t, db, `DELETE FROM events WHERE idx > 12`)
			mustExec(t, db, `DELETE FROM checkpoints WHERE seq > 1`)
		}, msg: "rollback: the log's newest checkpoint is 1 (index 10), but checkpoint 3 (index 30) was seen"},
		{name: "deleted last checkpoint, events kept", seen: 4, tamper: func(t *testing.T, dir string) {
			db := rawDB(t, dir)
			dropTriggers(t, db)
			mustExec(t, db, `DELETE FROM checkpoints WHERE seq = 4`)
		}, msg: "rollback: the log's newest checkpoint is 3 (index 30)"},
		{name: "deleted every checkpoint", seen: 1, tamper: func(t *testing.T, dir string) {
			db := rawDB(t, dir)
			dropTriggers(t, db)
			mustExec(t, db, `DELETE FROM checkpoints`)
		}, msg: "the log has no signed checkpoint, but checkpoint 1 (index 10) was seen"},
		{name: "truncated, then regrown to the same checkpoint number", seen: 4, tamper: func(t *testing.T, dir string) {
			db := rawDB(t, dir)
			dropTriggers(t, db)
			mustExec(t, db, `DELETE FROM events WHERE idx > 20`)
			mustExec(t, db, `DELETE FROM checkpoints WHERE seq > 2`)
			db.Close()
			grow(t, dir, 15) // checkpoints 3 at 30 and 4 at 35 again, over other events
		}, msg: "checkpoint 4 (index 35) is not the checkpoint 4 (index 35) that was seen"},
		{name: "truncated, then regrown past the checkpoint seen", seen: 3, tamper: func(t *testing.T, dir string) {
			db := rawDB(t, dir)
			dropTriggers(t, db)
			mustExec(t, db, `DELETE FROM events WHERE idx > 20`)
			mustExec(t, db, `DELETE FROM checkpoints WHERE seq > 2`)
			db.Close()
			grow(t, dir, 25)
		}, msg: "the log does not extend checkpoint 3 (index 30)"},
		{name: "event before the checkpoint seen rewritten and rechained, then regrown", seen: 1, tamper: func(t *testing.T, dir string) {
			db := rawDB(t, dir)
			dropTriggers(t, db)
			editDetail(t, db, 5, "nothing to see")
			rechain(t, db, 5)
			mustExec(t, db, `DELETE FROM checkpoints`) // none of them matches any more
			db.Close()
			grow(t, dir, 10)
		}, msg: "the log does not extend checkpoint 1 (index 10)"},
		{name: "keys replaced and every checkpoint re-signed", seen: 2, tamper: func(t *testing.T, dir string) {
			db := rawDB(t, dir)
			dropTriggers(t, db)
			resignAll(t, db, dir)
		}, msg: "the log's newest checkpoint (4, index 35) does not verify with the log's key"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := sealedLog(t)
			pinned := publicKeyset(t, dir)
			seen := checkpoints(t, dir)[tt.seen-1]
			if tt.tamper != nil {
				tt.tamper(t, dir)
				// The offline verification alone sees nothing wrong.
				if res, err := VerifyFile(context.Background(), dir); err != nil || !res.GetOk() {
					t.Fatalf("the tampering is visible offline, so it is not this class: %v %v", res, err)
				}
			}
			latest, err := CheckFileConsistency(context.Background(), dir, pinned, seen)
			if tt.msg == "" {
				if err != nil {
					t.Fatal(err)
				}
				if !proto.Equal(latest, checkpoints(t, dir)[3]) {
					t.Fatalf("latest %v", latest)
				}
				return
			}
			wantTampered(t, err, tt.msg)
		})
	}
}

// TestExtends covers the consistency check on its own: crafted
// checkpoints (signed with the log's key where the case needs it) and
// entries.
func TestExtends(t *testing.T) {
	dir := sealedLog(t)
	pub := publicKeyset(t, dir)
	cps := checkpoints(t, dir)
	all := storedEntries(t, dir)
	from := func(c *contractualv1.Checkpoint) iter.Seq2[[]byte, error] { return sliceEntries(all[c.GetIndex():]) }
	cp1, cp2, cp4 := cps[0], cps[1], cps[3]
	mutate := func(c *contractualv1.Checkpoint, f func(*contractualv1.Checkpoint)) *contractualv1.Checkpoint {
		c = proto.Clone(c).(*contractualv1.Checkpoint)
		f(c)
		return c
	}
	raw := func(c *contractualv1.Checkpoint) checkpoint {
		r, err := fromProto(c)
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	other := sealedLog(t)

	tests := []struct {
		name    string
		key     []byte
		a, b    *contractualv1.Checkpoint
		entries iter.Seq2[[]byte, error]
		msg     string // "" means b extends a
	}{
		{name: "b extends a", key: pub, a: cp1, b: cp4, entries: from(cp1)},
		{name: "equal checkpoints", key: pub, a: cp4, b: cp4, entries: from(cp4)},
		{name: "nothing seen yet", key: pub, b: cp2},
		{name: "nothing seen, no checkpoint yet", key: pub},
		{name: "seen one, the log has none", key: pub, a: cp2, msg: "the log has no signed checkpoint, but checkpoint 2 (index 20) was seen"},
		{name: "b older than a", key: pub, a: cp4, b: cp2, entries: from(cp4), msg: "rollback: the log's newest checkpoint is 2 (index 20), but checkpoint 4 (index 35) was seen"},
		{name: "b's signature forged", key: pub, a: cp1, entries: from(cp1),
			b:   mutate(cp4, func(c *contractualv1.Checkpoint) { c.Signature = flip(c.Signature, -1) }),
			msg: "the log's newest checkpoint (4, index 35) does not verify"},
		{name: "b's hash altered under its signature", key: pub, a: cp1, entries: from(cp1),
			b:   mutate(cp4, func(c *contractualv1.Checkpoint) { c.Hash = flip(c.Hash, 0) }),
			msg: "does not verify"},
		{name: "a altered (the device's memory)", key: pub, b: cp4, entries: from(cp1),
			a:   mutate(cp1, func(c *contractualv1.Checkpoint) { c.Index = 9 }),
			msg: "the checkpoint seen before (1, index 9) does not verify with the log's key"},
		{name: "a malformed", key: pub, b: cp4, entries: from(cp1),
			a:   mutate(cp1, func(c *contractualv1.Checkpoint) { c.Hash = c.Hash[:31] }),
			msg: "the checkpoint seen before (1, index 10) does not verify"},
		{name: "a different key", key: publicKeyset(t, other), a: cp1, b: cp4, entries: from(cp1),
			msg: "the checkpoint seen before (1, index 10) does not verify with the log's key"},
		{name: "b from another log with its own key", key: pub, a: cp1, entries: from(cp1),
			b:   checkpoints(t, other)[3],
			msg: "the log's newest checkpoint (4, index 35) does not verify"},
		{name: "same seq, another index, signed", key: pub, a: cp2, entries: from(cp2),
			b: sign(t, dir, func() checkpoint {
				c := raw(cp2)
				c.idx, c.hash = 21, bytes.Repeat([]byte{7}, 32)
				return c
			}()),
			msg: "checkpoint 2 (index 21) is not the checkpoint 2 (index 20) that was seen"},
		{name: "same seq and index, another hash, signed", key: pub, a: cp2, entries: from(cp2),
			b: sign(t, dir, func() checkpoint {
				c := raw(cp2)
				c.hash = bytes.Repeat([]byte{7}, 32)
				return c
			}()),
			msg: "is not the checkpoint 2 (index 20) that was seen"},
		{name: "newer seq, same index, signed", key: pub, a: cp2, entries: from(cp2),
			b:   sign(t, dir, checkpoint{seq: 3, idx: 20, hash: cp2.GetHash(), time: time.Now().UnixNano()}),
			msg: "checkpoint 3 seals index 20, which checkpoint 2 sealed already"},
		{name: "an event between a and b rewritten", key: pub, a: cp1, b: cp4,
			entries: sliceEntries(replace(all[10:], 3, flip(all[13], -1))),
			msg:     "the log does not extend checkpoint 1 (index 10): the chain from its hash over events 11..35 does not reach the hash of checkpoint 4"},
		{name: "entries cut short", key: pub, a: cp1, b: cp4, entries: sliceEntries(all[10:13]),
			msg: "the log holds 3 of the 25 events between checkpoint 1 (index 10) and checkpoint 4 (index 35)"},
		{name: "entries of another stretch", key: pub, a: cp1, b: cp4, entries: sliceEntries(all),
			msg: "the log does not extend checkpoint 1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := Extends(tt.key, tt.a, tt.b, tt.entries)
			if tt.msg == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			wantTampered(t, err, tt.msg)
		})
	}

	t.Run("reads no further than b", func(t *testing.T) {
		n := 0
		counted := func(yield func([]byte, error) bool) {
			for _, e := range all[10:] {
				n++
				if !yield(e, nil) {
					return
				}
			}
		}
		if err := Extends(pub, cp1, cps[1], counted); err != nil || n != 10 {
			t.Fatalf("err %v after reading %d entries, want 10", err, n)
		}
	})
	t.Run("an error reading entries is not tampering", func(t *testing.T) {
		broken := func(yield func([]byte, error) bool) { yield(nil, errs.E(errs.Unavailable, "the server went away")) }
		err := Extends(pub, cp1, cp4, broken)
		if errors.Is(err, ErrTampered) || !errs.Is(err, errs.Unavailable) {
			t.Fatalf("got %v", err)
		}
	})
	t.Run("a keyset that does not parse", func(t *testing.T) {
		wantKind(t, Extends([]byte("not a keyset"), cp1, cp4, from(cp1)), errs.Invalid)
	})
}

// storedEntries returns every stored encoding of the log in dir, by index
// (entry i is event i+1).
func storedEntries(t *testing.T, dir string) [][]byte {
	t.Helper()
	db := rawDB(t, dir)
	defer db.Close()
	var out [][]byte
	for enc, err := range entries(context.Background(), db, 0) {
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, enc)
	}
	return out
}

// sliceEntries yields es.
func sliceEntries(es [][]byte) iter.Seq2[[]byte, error] {
	return func(yield func([]byte, error) bool) {
		for _, e := range es {
			if !yield(e, nil) {
				return
			}
		}
	}
}

// replace returns a copy of es with es[i] replaced by e.
func replace(es [][]byte, i int, e []byte) [][]byte {
	es = append([][]byte(nil), es...)
	es[i] = e
	return es
}

// TestStoreCheckpointAndEntries: what a device gets from a running store
// is enough to recompute the chain from scratch to the newest checkpoint,
// and the store's own consistency check agrees.
func TestStoreCheckpointAndEntries(t *testing.T) {
	s, dir := newStore(t, Options{CheckpointEvery: 10})
	if c, err := s.LatestCheckpoint(context.Background()); err != nil || c != nil {
		t.Fatalf("an empty log's checkpoint: %v %v", c, err)
	}
	appendN(t, s, 0, 25, 5) // checkpoints at 10 and 20, and 25 when a device asks
	latest, err := s.LatestCheckpoint(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if latest.GetSeq() != 3 || latest.GetIndex() != 25 || !bytes.Equal(latest.GetPublicKeyset(), publicKeyset(t, dir)) {
		t.Fatalf("latest %v", latest)
	}
	var got [][]byte
	for after := uint64(0); ; {
		page, err := s.Entries(context.Background(), after, 7)
		if err != nil {
			t.Fatal(err)
		}
		if len(page) == 0 {
			break
		}
		if len(page) > 7 {
			t.Fatalf("a page of %d entries, asked for 7", len(page))
		}
		got = append(got, page...)
		after += uint64(len(page))
	}
	if len(got) != 25 {
		t.Fatalf("%d entries, want 25", len(got))
	}
	var h [32]byte
	for _, e := range got {
		h = link(h, e)
	}
	if !bytes.Equal(h[:], latest.GetHash()) {
		t.Fatal("the chain over the entries does not reach the newest checkpoint's hash")
	}
	first := checkpoints(t, dir)[0]
	if err := Extends(publicKeyset(t, dir), first, latest, sliceEntries(got[10:])); err != nil {
		t.Fatal(err)
	}
	if l, err := s.CheckConsistency(context.Background(), first); err != nil || !proto.Equal(l, latest) {
		t.Fatalf("the store's own check: %v %v", l, err)
	}
	forged := proto.Clone(latest).(*contractualv1.Checkpoint)
	forged.Seq = 9
	_, err = s.CheckConsistency(context.Background(), forged)
	wantTampered(t, err, "the checkpoint seen before (9, index 25) does not verify")
	if page, err := s.Entries(context.Background(), 25, 0); err != nil || len(page) != 0 {
		t.Fatalf("entries past the end: %d %v", len(page), err)
	}
	if page, err := s.Entries(context.Background(), 1<<63, 0); err != nil || len(page) != 0 {
		t.Fatalf("entries far past the end: %d %v", len(page), err)
	}
}

// TestDevicesGetSealedHeads: a device is only ever given a checkpoint that
// covers every event appended before it asked, so that all it has seen is
// signed and a truncated tail cannot pass for events no checkpoint
// covered; asking again without new events signs nothing new.
func TestDevicesGetSealedHeads(t *testing.T) {
	s, dir := newStore(t, Options{}) // a checkpoint every 1000 events, or after 10 s of quiet
	appendN(t, s, 0, 5, 1)
	for range 2 {
		if c, err := s.LatestCheckpoint(context.Background()); err != nil || c.GetSeq() != 1 || c.GetIndex() != 5 {
			t.Fatalf("latest after 5 events: %v %v", c, err)
		}
	}
	appendN(t, s, 5, 3, 3)
	seen, err := s.CheckConsistency(context.Background(), nil)
	if err != nil || seen.GetSeq() != 2 || seen.GetIndex() != 8 {
		t.Fatalf("the UI's check after 8 events: %v %v", seen, err)
	}
	appendN(t, s, 8, 2, 1)
	if err := s.Seal(context.Background()); err != nil {
		t.Fatal(err)
	}
	mustVerify(t, s, 10)

	// The tail the device saw is cut off, with its checkpoints.
	db := rawDB(t, dir)
	dropTriggers(t, db)
	mustExec(t, db, `DELETE FROM events WHERE idx > 5`)
	mustExec(t, db, `DELETE FROM checkpoints WHERE seq > 1`)
	_, err = CheckFileConsistency(context.Background(), dir, publicKeyset(t, dir), seen)
	wantTampered(t, err, "rollback: the log's newest checkpoint is 1 (index 5), but checkpoint 2 (index 8) was seen")
}

// TestEntriesPageBytes: a page stops at 1 MiB of encodings, but always
// holds at least one event.
func TestEntriesPageBytes(t *testing.T) {
	s, _ := newStore(t, Options{})
	var evs []*contractualv1.AuditEvent
	for i := range 1000 {
		e := event(i + 1)
		e.Detail = strings.Repeat("x", MaxDetailBytes)
		evs = append(evs, e)
	}
	if _, err := s.Append(context.Background(), evs); err != nil {
		t.Fatal(err)
	}
	page, err := s.Entries(context.Background(), 0, MaxEntries)
	if err != nil {
		t.Fatal(err)
	}
	size := 0
	for _, e := range page {
		size += len(e)
	}
	if len(page) == 0 || len(page) >= 1000 || size < maxEntriesBytes || size-len(page[len(page)-1]) >= maxEntriesBytes {
		t.Fatalf("a page of %d entries, %d bytes; want it to end just past %d bytes", len(page), size, maxEntriesBytes)
	}
}

// TestCheckpointFile: the file form is stable, reads back to the same
// checkpoint, and refuses what is not one.
func TestCheckpointFile(t *testing.T) {
	dir := sealedLog(t)
	c := checkpoints(t, dir)[3]
	b, err := MarshalCheckpoint(c)
	if err != nil {
		t.Fatal(err)
	}
	again, _ := MarshalCheckpoint(proto.Clone(c).(*contractualv1.Checkpoint))
	if !bytes.Equal(b, again) || !bytes.HasSuffix(b, []byte("}\n")) || !bytes.Contains(b, []byte(`"public_keyset": "`)) {
		t.Fatalf("file form:\n%s\nagain:\n%s", b, again)
	}
	path := filepath.Join(t.TempDir(), "sub", "checkpoint.json")
	os.MkdirAll(filepath.Dir(path), 0o700)
	if err := WriteCheckpointFile(path, c); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("file mode %v %v", fi, err)
	}
	read, _ := os.ReadFile(path)
	back, err := ParseCheckpoint(read)
	if err != nil || !proto.Equal(back, c) {
		t.Fatalf("read back %v %v", back, err)
	}
	for name, bad := range map[string]string{
		"not JSON":       "checkpoint 4",
		"unknown field":  `{"seq": "1", "colour": "red"}`,
		"short hash":     strings.Replace(string(b), `"hash": "`, `"hash": "AAAA`, 1),
		"no seq":         strings.Replace(string(b), `"seq": "4"`, `"seq": "0"`, 1),
		"no time":        `{"seq": "1", "index": "1", "hash": "` + strings.Repeat("A", 43) + `="}`,
		"an empty thing": `{}`,
	} {
		if _, err := ParseCheckpoint([]byte(bad)); !errs.Is(err, errs.Invalid) {
			t.Errorf("%s: %v", name, err)
		}
	}
}

// TestVerifyKeysetWithAnExtraKeyRefused: a public keyset that holds the
// real key and another one verifies the real signatures, and would verify
// the other key's too; devices pin this file, so Open refuses it.
func TestVerifyKeysetWithAnExtraKeyRefused(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "audit")
	sealed(t, dir)
	b, _ := os.ReadFile(filepath.Join(dir, SigningKeysetFile))
	h, err := decision.UnmarshalPrivate(b)
	if err != nil {
		t.Fatal(err)
	}
	m := keyset.NewManagerFromHandle(h)
	if _, err := m.Add(signature.ED25519KeyTemplate()); err != nil {
		t.Fatal(err)
	}
	both, err := m.Handle()
	if err != nil {
		t.Fatal(err)
	}
	pub, err := decision.MarshalPublic(both)
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(dir, VerifyKeysetFile), pub, 0o644)
	s, err := Open(context.Background(), dir, Options{})
	if err == nil {
		s.Close(context.Background())
	}
	wantKind(t, err, errs.FailedPrecondition)
	if !strings.Contains(err.Error(), "does not match") {
		t.Fatalf("error %q", err)
	}
}
