package audit

import (
	"bufio"
	"context"
	"database/sql"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	contractualv1 "github.com/contractual/contractual/contracts/gen/contractual/v1"
	"github.com/contractual/contractual/internal/errs"
)

func TestEncodeIsDeterministicMarshal(t *testing.T) {
	times := []time.Time{
		time.Date(2026, 5, 1, 12, 0, 0, 123456789, time.UTC),
		time.Unix(1700000000, 0),
		time.Unix(0, 5),
		time.Unix(0, 0),
		time.Unix(-86400, 1),
	}
	for _, ts := range times {
		for _, idx := range []uint64{1, 127, 128, 1 << 40} {
			e := event(3)
			body, err := encodeBody(e)
			if err != nil {
				t.Fatal(err)
			}
			full := proto.Clone(e).(*contractualv1.AuditEvent)
			full.Index, full.Time = idx, timestamppb.New(ts)
			compact(full)
			want, err := deterministic.Marshal(full)
			if err != nil {
				t.Fatal(err)
			}
			if got := encode(idx, ts, body); string(got) != string(want) {
				t.Fatalf("encode(%d, %v) = %x, want %x", idx, ts, got, want)
			}
		}
	}
}

func TestEncodeBodyDropsWhatTheLogSets(t *testing.T) {
	e := event(1)
	e.Index, e.Time, e.Hash = 99, timestamppb.Now(), []byte("junk")
	unknown := protowire.AppendTag(nil, 99, protowire.BytesType)
	unknown = protowire.AppendBytes(unknown, []byte("extra"))
	e.ProtoReflect().SetUnknown(unknown)
	e.Egress[0].ProtoReflect().SetUnknown(unknown)
	body, err := encodeBody(e)
	if err != nil {
		t.Fatal(err)
	}
	want, _ := encodeBody(event(1))
	if string(body) != string(want) {
		t.Fatalf("body keeps index, time, hash or unknown fields: %x", body)
	}
	if e.GetIndex() != 99 || len(e.ProtoReflect().GetUnknown()) == 0 {
		t.Fatal("encodeBody changed the caller's event")
	}
}

// TestDigestsStoredCompact: a "sha256:<hex>" digest is stored as its 32
// bytes and comes back from Tail as the string; anything else is stored
// as it is, and bytes a caller sets in the compact fields are dropped.
func TestDigestsStoredCompact(t *testing.T) {
	s, dir := newStore(t, Options{})
	e := event(1)
	e.ModuleDigest = "sha256:" + strings.Repeat("AB", 32) // upper case: kept as a string
	e.OutputHash = "md5:abc"
	e.InputSha256 = []byte("caller's")
	if _, err := s.Append(context.Background(), []*contractualv1.AuditEvent{e}); err != nil {
		t.Fatal(err)
	}
	enc := readRow(t, rawDB(t, dir), 1).enc
	var stored contractualv1.AuditEvent
	if err := proto.Unmarshal(enc, &stored); err != nil {
		t.Fatal(err)
	}
	if stored.GetContractDigest() != "" || len(stored.GetContractSha256()) != 32 || stored.GetInputHash() != "" ||
		stored.GetModuleDigest() != e.ModuleDigest || stored.GetModuleSha256() != nil || stored.GetOutputHash() != "md5:abc" {
		t.Fatalf("stored: %v", &stored)
	}
	if full := event(1); len(enc) > proto.Size(full)-2*(71-34)+16 {
		t.Fatalf("stored %d bytes, the event as strings is %d", len(enc), proto.Size(full))
	}
	got, err := s.Tail(context.Background(), 0, 1)
	if err != nil {
		t.Fatal(err)
	}
	want := proto.Clone(e).(*contractualv1.AuditEvent)
	want.InputSha256, want.Index, want.Time, want.Hash = nil, 1, got[0].GetTime(), got[0].GetHash()
	if !proto.Equal(got[0], want) {
		t.Fatalf("tail: %v\nwant %v", got[0], want)
	}
	mustVerify(t, s, 1)
}

func TestAppendAndTail(t *testing.T) {
	s, _ := newStore(t, Options{})
	appendN(t, s, 0, 60, 7)
	tests := []struct {
		name        string
		after       uint64
		limit       int
		first, last uint64
	}{
		{"default limit", 0, 0, 11, 60},
		{"limit", 0, 5, 56, 60},
		{"after", 50, 0, 51, 60},
		{"after and limit", 20, 3, 58, 60},
		{"after the end", 60, 10, 0, 0},
		{"huge after", 1 << 63, 10, 0, 0},
		{"clamped limit", 0, 5000, 1, 60},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			evs, err := s.Tail(context.Background(), tt.after, tt.limit)
			if err != nil {
				t.Fatal(err)
			}
			if tt.first == 0 {
				if len(evs) != 0 {
					t.Fatalf("got %d events, want none", len(evs))
				}
				return
			}
			if len(evs) != int(tt.last-tt.first+1) {
				t.Fatalf("got %d events, want %d..%d", len(evs), tt.first, tt.last)
			}
			for i, e := range evs {
				if want := tt.first + uint64(i); e.GetIndex() != want || e.GetDetail() != fmt.Sprintf("event %d", want) {
					t.Fatalf("events[%d] is %d %q, want %d", i, e.GetIndex(), e.GetDetail(), want)
				}
				if len(e.GetHash()) != 32 || e.GetTime() == nil {
					t.Fatalf("event %d lacks hash or time", e.GetIndex())
				}
			}
		})
	}
}

func TestTailLimitClamp(t *testing.T) {
	s, _ := newStore(t, Options{})
	for i := 0; i < 2; i++ {
		evs := make([]*contractualv1.AuditEvent, MaxAppend)
		for j := range evs {
			evs[j] = event(i*MaxAppend + j + 1)
		}
		if _, err := s.Append(context.Background(), evs); err != nil {
			t.Fatal(err)
		}
	}
	evs, err := s.Tail(context.Background(), 0, 5000)
	if err != nil {
		t.Fatal(err)
	}
	if len(evs) != MaxTailLimit || evs[0].GetIndex() != 1001 || evs[len(evs)-1].GetIndex() != 2000 {
		t.Fatalf("got %d events from %d, want the newest %d", len(evs), evs[0].GetIndex(), MaxTailLimit)
	}
}

// TestConcurrentAppends: many goroutines, one chain, no index given twice
// or skipped, every checkpoint in place.
func TestConcurrentAppends(t *testing.T) {
	s, dir := newStore(t, Options{CheckpointEvery: 50})
	const goroutines, appends = 16, 40
	var mu sync.Mutex
	seen := map[uint64]string{}
	var wg sync.WaitGroup
	for g := range goroutines {
		wg.Go(func() {
			for i := range appends {
				n := 1 + (g+i)%3
				evs := make([]*contractualv1.AuditEvent, n)
				for j := range evs {
					evs[j] = event(0)
					evs[j].Detail = fmt.Sprintf("g%d-%d-%d", g, i, j)
				}
				idxs, err := s.Append(context.Background(), evs)
				if err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				for j, idx := range idxs {
					if j > 0 && idx != idxs[j-1]+1 {
						t.Errorf("one append's events got indexes %v", idxs)
					}
					if _, dup := seen[idx]; dup {
						t.Errorf("index %d given twice", idx)
					}
					seen[idx] = evs[j].Detail
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	n := uint64(len(seen))
	for i := uint64(1); i <= n; i++ {
		if _, ok := seen[i]; !ok {
			t.Fatalf("index %d never given (of %d)", i, n)
		}
	}
	mustVerify(t, s, n)
	evs, _ := s.Tail(context.Background(), 0, 1)
	if evs[0].GetDetail() != seen[n] {
		t.Fatalf("event %d is %q, its append was told %q", n, evs[0].GetDetail(), seen[n])
	}
	if err := s.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	res, err := VerifyFile(context.Background(), dir)
	if err != nil || !res.GetOk() || res.GetEvents() != n || res.GetCheckpoints() == 0 {
		t.Fatalf("verify: %v %v", res, err)
	}
}

func TestFiles(t *testing.T) {
	s, dir := newStore(t, Options{})
	appendN(t, s, 0, 3, 3)
	for name, perm := range map[string]os.FileMode{
		DBFile:            0o600,
		SigningKeysetFile: 0o600,
		VerifyKeysetFile:  0o644,
	} {
		fi, err := os.Stat(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != perm {
			t.Errorf("%s has mode %v, want %v", name, fi.Mode().Perm(), perm)
		}
	}
	if fi, _ := os.Stat(dir); fi.Mode().Perm() != 0o700 {
		t.Errorf("dir has mode %v, want 0700", fi.Mode().Perm())
	}
	var mode string
	var sync, busy int
	s.wdb.QueryRow(`PRAGMA journal_mode`).Scan(&mode)
	s.wdb.QueryRow(`PRAGMA synchronous`).Scan(&sync)
	s.wdb.QueryRow(`PRAGMA busy_timeout`).Scan(&busy)
	if mode != "wal" || sync != 2 || busy != int(DefaultBusyTimeout.Milliseconds()) {
		t.Errorf("journal_mode %q, synchronous %d, busy_timeout %d; want wal, 2 (FULL), %d", mode, sync, busy, DefaultBusyTimeout.Milliseconds())
	}
}

func TestOpenRefuses(t *testing.T) {
	tests := []struct {
		name  string
		setup func(t *testing.T, dir string)
		kind  errs.Kind
		msg   string
	}{
		{"dir is a file", func(t *testing.T, dir string) {
			os.WriteFile(dir, []byte("x"), 0o600)
		}, errs.Unavailable, "creating"},
		{"database is a directory", func(t *testing.T, dir string) {
			os.MkdirAll(filepath.Join(dir, DBFile), 0o700)
		}, errs.Unavailable, "opening"},
		{"signing key lost", func(t *testing.T, dir string) {
			sealed(t, dir)
			os.Remove(filepath.Join(dir, SigningKeysetFile))
		}, errs.FailedPrecondition, "is missing; restore it"},
		{"verify keyset replaced", func(t *testing.T, dir string) {
			sealed(t, dir)
			other := filepath.Join(t.TempDir(), "other")
			sealed(t, other)
			b, _ := os.ReadFile(filepath.Join(other, VerifyKeysetFile))
			os.WriteFile(filepath.Join(dir, VerifyKeysetFile), b, 0o644)
		}, errs.FailedPrecondition, "does not match"},
		{"newer schema", func(t *testing.T, dir string) {
			sealed(t, dir)
			db := rawDB(t, dir)
			mustExec(t, db, `PRAGMA user_version = 7`)
			db.Close()
		}, errs.FailedPrecondition, "schema version 7"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "audit")
			tt.setup(t, dir)
			s, err := Open(context.Background(), dir, Options{})
			if err == nil {
				s.Close(context.Background())
			}
			wantKind(t, err, tt.kind)
			if !strings.Contains(err.Error(), tt.msg) {
				t.Fatalf("error %q does not say %q", err, tt.msg)
			}
		})
	}
}

// sealed writes a few events and a checkpoint in dir.
func sealed(t *testing.T, dir string) {
	s, err := Open(context.Background(), dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	appendN(t, s, 0, 2, 2)
	if err := s.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
}

func TestAppendAfterCloseFails(t *testing.T) {
	s, dir := newStore(t, Options{})
	appendN(t, s, 0, 3, 1)
	if err := s.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(context.Background()); err != nil {
		t.Fatalf("second close: %v", err)
	}
	_, err := s.Append(context.Background(), []*contractualv1.AuditEvent{event(4)})
	wantKind(t, err, errs.Unavailable)
	_, err = s.Tail(context.Background(), 0, 0)
	wantKind(t, err, errs.Unavailable)
	_, err = s.Verify(context.Background())
	wantKind(t, err, errs.Unavailable)
	res, err := VerifyFile(context.Background(), dir)
	if err != nil || !res.GetOk() || res.GetEvents() != 3 || res.GetCheckpoints() != 1 {
		t.Fatalf("verify: %v %v", res, err)
	}
}

// lockLog takes the write lock with another connection, as a second writer
// would, and returns the function that releases it.
func lockLog(t *testing.T, dir string) func() {
	t.Helper()
	db, err := sql.Open("sqlite", filepath.Join(dir, DBFile)+"?_txlock=immediate")
	if err != nil {
		t.Fatal(err)
	}
	tx, err := db.Begin()
	if err != nil {
		t.Fatal(err)
	}
	return func() {
		tx.Rollback()
		db.Close()
	}
}

// TestFailClosedWhenUnwritable: while the log cannot be written, Append
// fails, and the chain goes on without a gap once it can.
func TestFailClosedWhenUnwritable(t *testing.T) {
	s, _ := newStore(t, Options{BusyTimeout: 20 * time.Millisecond})
	appendN(t, s, 0, 3, 1)
	unlock := lockLog(t, filepath.Dir(s.dbPathForTest()))
	_, err := s.Append(context.Background(), []*contractualv1.AuditEvent{event(4)})
	wantKind(t, err, errs.Unavailable)
	if !strings.Contains(err.Error(), "events not recorded") {
		t.Fatalf("error %q", err)
	}
	unlock()
	appendN(t, s, 3, 2, 1)
	mustVerify(t, s, 5)
}

// TestWedgedWhenChangedUnderneath: a row the writer did not write makes it
// refuse every later write, rather than chain onto it.
func TestWedgedWhenChangedUnderneath(t *testing.T) {
	s, dir := newStore(t, Options{})
	appendN(t, s, 0, 3, 1)
	db := rawDB(t, dir)
	f := forge(4, readRow(t, db, 3).hash, "forged")
	mustExec(t, db, `INSERT INTO events (idx, enc, hash) VALUES (?, ?, ?)`, f.idx, f.enc, f.hash)
	for range 2 {
		_, err := s.Append(context.Background(), []*contractualv1.AuditEvent{event(5)})
		wantKind(t, err, errs.Unavailable)
	}
	_, err := s.Append(context.Background(), []*contractualv1.AuditEvent{event(5)})
	if !strings.Contains(err.Error(), "is not what this process wrote") {
		t.Fatalf("error %q", err)
	}
}

// TestCancelledAppend: a caller that gives up, before or while its events
// wait, gets an error and leaves the log consistent.
func TestCancelledAppend(t *testing.T) {
	s, _ := newStore(t, Options{})
	appendN(t, s, 0, 3, 1)

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := s.Append(ctx, []*contractualv1.AuditEvent{event(4)})
	wantKind(t, err, errs.Unavailable)

	unlock := lockLog(t, filepath.Dir(s.dbPathForTest()))
	ctx, cancel = context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() {
		_, err := s.Append(ctx, []*contractualv1.AuditEvent{event(4)})
		errc <- err
	}()
	cancel() // the writer cannot commit while the lock is held
	wantKind(t, <-errc, errs.Unavailable)
	unlock()

	idxs, err := s.Append(context.Background(), []*contractualv1.AuditEvent{event(5)})
	if err != nil {
		t.Fatal(err)
	}
	if idxs[0] != 4 && idxs[0] != 5 {
		t.Fatalf("next index %d, want 4 or 5", idxs[0])
	}
	mustVerify(t, s, idxs[0])
}

// abandon stops the store the way a crash would: no final checkpoint.
func abandon(s *Store) {
	s.stop()
	s.closeDBs()
}

func TestReopenAfterAbandon(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "audit")
	s, err := Open(context.Background(), dir, Options{CheckpointEvery: 10})
	if err != nil {
		t.Fatal(err)
	}
	appendN(t, s, 0, 14, 2) // checkpoint at 10; 11..14 not sealed
	abandon(s)

	s, err = Open(context.Background(), dir, Options{CheckpointEvery: 10})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close(context.Background())
	appendN(t, s, 14, 4, 2)
	res := mustVerify(t, s, 18)
	if res.GetCheckpoints() != 1 {
		t.Fatalf("%d checkpoints, want 1", res.GetCheckpoints())
	}
	if err := s.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	res, err = VerifyFile(context.Background(), dir)
	if err != nil || !res.GetOk() || res.GetEvents() != 18 || res.GetCheckpoints() != 2 {
		t.Fatalf("verify: %v %v", res, err)
	}
}

// TestCrashRecovery kills a process that appends from several goroutines
// with SIGKILL, then reopens: every acknowledged event is there, the chain
// continues, and it verifies.
func TestCrashRecovery(t *testing.T) {
	if testing.Short() {
		t.Skip("runs a child process")
	}
	dir := filepath.Join(t.TempDir(), "audit")
	cmd := exec.Command(os.Args[0], "-test.run=^TestCrashChild$")
	cmd.Env = append(os.Environ(), "AUDIT_CRASH_DIR="+dir)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	acked := readAcks(out, 300)
	cmd.Process.Kill()
	cmd.Wait()
	if len(acked) < 300 {
		t.Fatalf("child acknowledged only %d events: %s", len(acked), stderr.String())
	}

	s, err := Open(context.Background(), dir, Options{CheckpointEvery: 64})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close(context.Background())
	for idx, detail := range acked {
		var enc []byte
		if err := s.rdb.QueryRow(`SELECT enc FROM events WHERE idx = ?`, idx).Scan(&enc); err != nil {
			t.Fatalf("acknowledged event %d is gone: %v", idx, err)
		}
		if e, _ := decodeEvent(enc); e.GetDetail() != detail {
			t.Fatalf("event %d is %q, acknowledged as %q", idx, e.GetDetail(), detail)
		}
	}
	last := s.published().idx
	idxs, err := s.Append(context.Background(), []*contractualv1.AuditEvent{event(0)})
	if err != nil || idxs[0] != last+1 {
		t.Fatalf("append after the crash got %v %v, want index %d", idxs, err, last+1)
	}
	mustVerify(t, s, last+1)
}

// readAcks reads acknowledged events (index and detail) from the child
// until it has n.
func readAcks(out io.Reader, n int) map[uint64]string {
	acked := map[uint64]string{}
	sc := bufio.NewScanner(out)
	for len(acked) < n && sc.Scan() {
		idx, detail, _ := strings.Cut(sc.Text(), " ")
		if i, err := strconv.ParseUint(idx, 10, 64); err == nil {
			acked[i] = detail
		}
	}
	return acked
}

// TestCrashChild is the child of TestCrashRecovery: it appends until it is
// killed, printing each index once Append returned.
func TestCrashChild(t *testing.T) {
	dir := os.Getenv("AUDIT_CRASH_DIR")
	if dir == "" {
		t.Skip("only runs as TestCrashRecovery's child")
	}
	s, err := Open(context.Background(), dir, Options{CheckpointEvery: 64})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Go(func() {
			for i := 0; ; i++ {
				e := event(g*1_000_000 + i)
				idxs, err := s.Append(context.Background(), []*contractualv1.AuditEvent{e})
				if err != nil {
					fmt.Fprintln(os.Stderr, err)
					os.Exit(2)
				}
				mu.Lock()
				fmt.Println(idxs[0], e.GetDetail())
				mu.Unlock()
			}
		})
	}
	wg.Wait()
}

// dbPathForTest returns the database path of s, from its connection.
func (s *Store) dbPathForTest() string {
	var seq int
	var name, file string
	s.rdb.QueryRow(`PRAGMA database_list`).Scan(&seq, &name, &file)
	return file
}

func TestOddDirectoryName(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "a b?c#d%20e")
	s, err := Open(context.Background(), dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	appendN(t, s, 0, 3, 3)
	if err := s.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, DBFile)); err != nil {
		t.Fatal(err)
	}
	res, err := VerifyFile(context.Background(), dir)
	if err != nil || !res.GetOk() || res.GetEvents() != 3 {
		t.Fatalf("verify: %v %v", res, err)
	}
}

// TestQuietLogIsSealed: events appended to a log that then goes quiet get a
// signed checkpoint without waiting for Close or the next write.
func TestQuietLogIsSealed(t *testing.T) {
	s, dir := newStore(t, Options{CheckpointInterval: 20 * time.Millisecond})
	if _, err := s.Append(context.Background(), []*contractualv1.AuditEvent{event(1), event(2)}); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(2 * time.Minute)
	for {
		res, err := VerifyFile(context.Background(), dir)
		if err != nil {
			t.Fatal(err)
		}
		if !res.GetOk() {
			t.Fatalf("verify: %v", res)
		}
		if res.GetCheckpoints() >= 1 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("a quiet log was never sealed")
		}
		time.Sleep(10 * time.Millisecond)
	}
}
