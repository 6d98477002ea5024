package scheduler

import (
	"github.com/contractual/contractual/internal/scheduler/schedulertest"

	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	contractualv1 "github.com/contractual/contractual/contracts/gen/contractual/v1"
	"github.com/contractual/contractual/internal/schedule"
)

// lateQueue is a queue that notes, for each Enqueue, how late it came in
// the clock's terms and in real time (since the clock was moved to the
// fire time).
type lateQueue struct {
	clock *schedulertest.Clock
	mu    sync.Mutex
	moved time.Time // the real time the clock was last moved
	clk   []time.Duration
	real  []time.Duration
	n     int
}

func (q *lateQueue) Enqueue(_ context.Context, req *contractualv1.EnqueueRequest) (*contractualv1.EnqueueResponse, error) {
	now := time.Now()
	late := q.clock.Now().Sub(req.GetScheduledAt().AsTime())
	q.mu.Lock()
	defer q.mu.Unlock()
	q.clk = append(q.clk, late)
	q.real = append(q.real, now.Sub(q.moved))
	q.n++
	return &contractualv1.EnqueueResponse{Run: &contractualv1.JobRun{Id: fmt.Sprint(q.n)}}, nil
}

type discardAudit struct{}

func (discardAudit) Append(context.Context, *contractualv1.AppendRequest) (*contractualv1.AppendResponse, error) {
	return &contractualv1.AppendResponse{}, nil
}

// quantile returns the q-quantile of ds.
func quantile(ds []time.Duration, q float64) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[min(int(q*float64(len(s))), len(s)-1)]
}

// BenchmarkFire10000Jobs schedules 10,000 daily cron jobs in two zones —
// spread (about seven per minute of the day) or in a burst (all at 02:00)
// — and simulates days, moving the clock from fire time to fire time: an
// op is one day, 10,000 firings, each enqueued, audited and recorded in
// the store. It reports the
// lateness of the firings (p50, p99) in the clock's terms and in real time
// since the clock reached the fire time, the cost of one firing, and that
// cost against one schedule.Next of the same kind of schedule, timed in
// the same run.
func BenchmarkFire10000Jobs(b *testing.B) {
	b.Run("spread", func(b *testing.B) {
		benchFire(b, func(i int) string { return fmt.Sprintf("%d %d * * *", (i/2)%60, (i/120)%24) })
	})
	b.Run("burst", func(b *testing.B) { benchFire(b, func(int) string { return "0 2 * * *" }) })
}

func benchFire(b *testing.B, expr func(int) string) {
	const jobs = 10000
	start := time.Date(2026, 6, 1, 0, 0, 0, 0, time.UTC)
	clock := schedulertest.NewClock(start)
	src := newJobSource()
	for i := range jobs {
		zone := []string{"Europe/Berlin", "America/New_York"}[i%2]
		rec := record(b, jobYAML(fmt.Sprintf("job-%05d", i), `{cron: {expression: "`+expr(i)+`", time_zone: `+zone+`}}`, ""),
			contractualv1.JobState_JOB_STATE_APPROVED, start)
		src.current[rec.GetId()] = rec
	}
	q := &lateQueue{clock: clock}
	svc, err := Open(context.Background(), Config{Dir: b.TempDir(), Clock: clock}, Deps{
		Jobs: src, Queue: q, Broker: macBroker{}, Audit: discardAudit{},
	})
	if err != nil {
		b.Fatal(err)
	}
	defer svc.Close(context.Background())
	e := &env{t: b, clock: clock, jobs: src, svc: svc}
	e.synced()

	day := start
	b.ResetTimer()
	for b.Loop() {
		day = day.Add(24 * time.Hour)
		for {
			e.flush()
			at, ok := clock.NextWaiter()
			if !ok || at.After(day) {
				break
			}
			q.mu.Lock()
			q.moved = time.Now()
			q.mu.Unlock()
			clock.Set(at)
		}
	}
	b.StopTimer()
	if q.n < jobs*b.N {
		b.Fatalf("%d firings in %d days of %d jobs", q.n, b.N, jobs)
	}
	perFire := float64(b.Elapsed().Nanoseconds()) / float64(q.n)

	cr, err := schedule.Parse("30 2 * * *", "Europe/Berlin")
	if err != nil {
		b.Fatal(err)
	}
	const nexts = 200000
	t0 := time.Now()
	at := start
	for range nexts {
		at = cr.Next(at)
	}
	perNext := float64(time.Since(t0).Nanoseconds()) / nexts

	b.ReportMetric(float64(quantile(q.clk, 0.5).Nanoseconds()), "clock-late-p50-ns")
	b.ReportMetric(float64(quantile(q.clk, 0.99).Nanoseconds()), "clock-late-p99-ns")
	b.ReportMetric(float64(quantile(q.real, 0.5).Nanoseconds()), "real-late-p50-ns")
	b.ReportMetric(float64(quantile(q.real, 0.99).Nanoseconds()), "real-late-p99-ns")
	b.ReportMetric(perFire, "ns/fire")
	b.ReportMetric(perNext, "ns/next")
	b.ReportMetric(perFire/perNext, "fire/next")
}
