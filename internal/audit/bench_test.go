package audit

import (
	"context"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	contractualv1 "github.com/contractual/contractual/contracts/gen/contractual/v1"
)

// benchWriters is how many goroutines append at once.
const benchWriters = 64

// BenchmarkAppend measures durable appends (fsync per commit) of one event
// per call from 64 goroutines, with group commit, against a baseline in the
// same run: the same store, calls and goroutines, but one event per
// transaction. b.N is the number of group-committed events; the baseline
// writes a twentieth as many (at least 200), since it is far slower.
//
//	go test -run '^$' -bench BenchmarkAppend -benchtime 2s ./internal/audit/
func BenchmarkAppend(b *testing.B) {
	grouped, per := appendRate(b, Options{}, b.N)
	base, _ := appendRate(b, Options{maxBatch: 1}, max(b.N/20, 200))
	b.ReportMetric(per, "ns/op")
	b.ReportMetric(grouped, "events/s")
	b.ReportMetric(base, "baseline-events/s")
	b.ReportMetric(grouped/base, "x-baseline")
}

// appendRate appends n events from benchWriters goroutines to a fresh
// store and returns events per second and nanoseconds per event.
func appendRate(b *testing.B, opts Options, n int) (float64, float64) {
	b.StopTimer()
	s, err := Open(context.Background(), filepath.Join(b.TempDir(), "audit"), opts)
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close(context.Background())
	ev := []*contractualv1.AuditEvent{event(1)}
	var left atomic.Int64
	left.Store(int64(n))
	var wg sync.WaitGroup
	b.StartTimer()
	start := time.Now()
	for range benchWriters {
		wg.Go(func() {
			for left.Add(-1) >= 0 {
				if _, err := s.Append(context.Background(), ev); err != nil {
					b.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	d := time.Since(start)
	b.StopTimer()
	return float64(n) / d.Seconds(), float64(d.Nanoseconds()) / float64(n)
}

// BenchmarkVerify measures a full verification (hash chain and signed
// checkpoints) of a log of 100,000 events, which the Control UI runs on its
// overview and runs pages, against a baseline in the same run: reading the
// newest 200 events (the runs page's other query).
//
//	go test -run '^$' -bench BenchmarkVerify -benchtime 5x ./internal/audit/
func BenchmarkVerify(b *testing.B) {
	const events = 100_000
	s, err := Open(context.Background(), filepath.Join(b.TempDir(), "audit"), Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close(context.Background())
	batch := make([]*contractualv1.AuditEvent, 1000)
	for i := range batch {
		batch[i] = event(i)
	}
	for range events / len(batch) {
		if _, err := s.Append(context.Background(), batch); err != nil {
			b.Fatal(err)
		}
	}
	tail := time.Now()
	for range 10 {
		if _, err := s.Tail(context.Background(), 0, 200); err != nil {
			b.Fatal(err)
		}
	}
	base := time.Since(tail) / 10
	b.ResetTimer()
	for range b.N {
		res, err := s.Verify(context.Background())
		if err != nil || !res.GetOk() || res.GetEvents() != events {
			b.Fatalf("verify: %v %v", res, err)
		}
	}
	per := time.Duration(int64(b.Elapsed()) / int64(b.N))
	b.ReportMetric(float64(per.Microseconds())/1000, "ms/verify")
	b.ReportMetric(float64(per)/events, "ns/event")
	b.ReportMetric(float64(base.Microseconds())/1000, "baseline-ms/tail200")
	b.ReportMetric(float64(per)/float64(base), "x-baseline")
}

// BenchmarkConsistency measures the check that a log of 100,000 events
// extends its first checkpoint (index 1,000), which is what a device that
// last looked 99,000 events ago costs: on the server for the Control UI
// (CheckConsistency), and as a device does it (Entries page by page, then
// Extends), against a baseline in the same run: a full verification.
//
//	go test -run '^$' -bench BenchmarkConsistency -benchtime 5x ./internal/audit/
func BenchmarkConsistency(b *testing.B) {
	const events = 100_000
	s, err := Open(context.Background(), filepath.Join(b.TempDir(), "audit"), Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close(context.Background())
	batch := make([]*contractualv1.AuditEvent, 1000)
	for i := range batch {
		batch[i] = event(i)
	}
	var first *contractualv1.Checkpoint
	for range events / len(batch) {
		if _, err := s.Append(context.Background(), batch); err != nil {
			b.Fatal(err)
		}
		if first == nil {
			if first, err = s.LatestCheckpoint(context.Background()); err != nil || first == nil {
				b.Fatal(first, err)
			}
		}
	}
	start := time.Now()
	if res, err := s.Verify(context.Background()); err != nil || !res.GetOk() {
		b.Fatal(res, err)
	}
	base := time.Since(start)
	var device time.Duration
	b.ResetTimer()
	for range b.N {
		latest, err := s.CheckConsistency(context.Background(), first)
		if err != nil || latest.GetIndex() != events {
			b.Fatal(latest, err)
		}
		b.StopTimer()
		start := time.Now()
		if err := Extends(s.public, first, latest, pagedEntries(s, first.GetIndex())); err != nil {
			b.Fatal(err)
		}
		device += time.Since(start)
		b.StartTimer()
	}
	per := time.Duration(int64(b.Elapsed()) / int64(b.N))
	b.ReportMetric(float64(per.Microseconds())/1000, "ms/check")
	b.ReportMetric(float64(device.Microseconds())/1000/float64(b.N), "ms/device-check")
	b.ReportMetric(float64(base.Microseconds())/1000, "baseline-ms/verify")
	b.ReportMetric(float64(per)/float64(base), "x-baseline")
}

// pagedEntries yields s's entries after index after as a device fetches
// them, page by page.
func pagedEntries(s *Store, after uint64) func(func([]byte, error) bool) {
	return func(yield func([]byte, error) bool) {
		for {
			page, err := s.Entries(context.Background(), after, MaxEntries)
			if err != nil {
				yield(nil, err)
				return
			}
			if len(page) == 0 {
				return
			}
			for _, e := range page {
				if !yield(e, nil) {
					return
				}
			}
			after += uint64(len(page))
		}
	}
}

// bigLogEvents is the size of the log BenchmarkIncrementalVerify builds.
const bigLogEvents = 600_000

// buildLog appends n events to s in batches of MaxAppend from 4
// goroutines (group commit puts several batches in one transaction).
func buildLog(b *testing.B, s *Store, n int) {
	b.Helper()
	batch := make([]*contractualv1.AuditEvent, MaxAppend)
	for i := range batch {
		batch[i] = event(i)
	}
	var left atomic.Int64
	left.Store(int64(n / MaxAppend))
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for left.Add(-1) >= 0 {
				if _, err := s.Append(context.Background(), batch); err != nil {
					b.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
}

// BenchmarkIncrementalVerify measures verifying 1,000 new events on top of
// a log of 600,000, as the server does it (Verify, from the last
// checkpoint it verified) and as a device does it (`audit verify
// --online`: Entries after its pinned checkpoint, then Extends), against
// a baseline in the same run: a full verification of the whole log
// (VerifyFull). It also reports the log's bytes per event (the database
// file over its events), the average stored encoding against the same
// event with its digests as strings (how events were stored before), and a
// segment file's bytes per event.
//
//	go test -run '^$' -bench BenchmarkIncrementalVerify -benchtime 20x -timeout 30m ./internal/audit/
func BenchmarkIncrementalVerify(b *testing.B) {
	s, dir := newStore(b, Options{})
	buildLog(b, s, bigLogEvents)
	seen, err := s.LatestCheckpoint(context.Background())
	if err != nil {
		b.Fatal(err)
	}
	start := time.Now()
	res, err := s.VerifyFull(context.Background())
	if err != nil || !res.GetOk() || res.GetChecked() != bigLogEvents {
		b.Fatalf("full verify: %v %v", res, err)
	}
	full := time.Since(start)
	size, encs := logBytes(b, s, dir)
	var seg countingWriter
	if _, err := s.Segment(context.Background(), &seg, 0, seen.GetSeq()); err != nil {
		b.Fatal(err)
	}

	var device time.Duration
	b.ResetTimer()
	for range b.N {
		b.StopTimer()
		appendN(b, s, int(seen.GetIndex()), 1000, MaxAppend)
		latest, err := s.LatestCheckpoint(context.Background())
		if err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		res, err := s.Verify(context.Background())
		if err != nil || !res.GetOk() || res.GetChecked() != 1000 || res.GetFromIndex() != seen.GetIndex() {
			b.Fatalf("incremental verify: %v %v", res, err)
		}
		b.StopTimer()
		start := time.Now()
		if err := Extends(s.public, seen, latest, pagedEntries(s, seen.GetIndex())); err != nil {
			b.Fatal(err)
		}
		device += time.Since(start)
		seen = latest
		b.StartTimer()
	}
	per := time.Duration(int64(b.Elapsed()) / int64(b.N))
	b.ReportMetric(float64(per), "ns/op")
	b.ReportMetric(float64(per.Microseconds())/1000, "ms/verify-1000-new")
	b.ReportMetric(float64(device.Microseconds())/1000/float64(b.N), "ms/device-1000-new")
	b.ReportMetric(float64(full.Microseconds())/1000, "baseline-ms/full-verify")
	b.ReportMetric(float64(full)/float64(per), "x-faster")
	b.ReportMetric(float64(size)/bigLogEvents, "B/event-db")
	b.ReportMetric(float64(encs)/bigLogEvents, "B/event-enc")
	// The same events as they were stored before digests were compacted.
	asStrings := proto.Clone(event(bigLogEvents)).(*contractualv1.AuditEvent)
	asStrings.Index, asStrings.Time = bigLogEvents, timestamppb.Now()
	b.ReportMetric(float64(proto.Size(asStrings)), "baseline-B/event-enc-strings")
	b.ReportMetric(float64(seg)/bigLogEvents, "B/event-segment")
}

// logBytes returns the size of the log's database (after a WAL
// checkpoint) and the total length of its stored encodings.
func logBytes(b *testing.B, s *Store, dir string) (int64, int64) {
	b.Helper()
	if _, err := s.wdb.Exec(`PRAGMA wal_checkpoint(TRUNCATE)`); err != nil {
		b.Fatal(err)
	}
	fi, err := os.Stat(filepath.Join(dir, DBFile))
	if err != nil {
		b.Fatal(err)
	}
	var encs int64
	if err := s.rdb.QueryRow(`SELECT sum(length(enc)) FROM events`).Scan(&encs); err != nil {
		b.Fatal(err)
	}
	return fi.Size(), encs
}

// countingWriter counts the bytes written to it.
type countingWriter int64

func (w *countingWriter) Write(p []byte) (int, error) {
	*w += countingWriter(len(p))
	return len(p), nil
}
