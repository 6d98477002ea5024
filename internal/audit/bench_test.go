package audit

import (
	"context"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

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
