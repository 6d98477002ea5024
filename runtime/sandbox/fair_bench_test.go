package sandbox

import (
	"context"
	"fmt"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/contractual/contractual/internal/errs"
)

// floodFixture is the guest another principal floods the engine with: an
// empty loop that never ends by itself (the review's case); metering makes
// it tick every few tens of microseconds.
const floodFixture = "hostile/loop.wasm"

// BenchmarkFairness measures a small tool's latency (count.wasm, called
// one call after another by one principal) while another principal keeps
// 16 calls of a never-ending guest in flight, against the same calls on the
// idle engine, in rounds that alternate idle and flooded phases, for each
// quantum:
//
//	go test -run '^$' -bench Fairness -benchtime 400x ./runtime/sandbox
//
// b.N small calls are measured in each phase. The engine has its default
// CPU slots (GOMAXPROCS-1). Reported: p50 and p99 in µs, their ratios
// (flooded / idle), the small calls refused (there should be none), and the
// flood's work (its host calls per ms of the flooded phase).
func BenchmarkFairness(b *testing.B) {
	for _, q := range []time.Duration{50 * time.Microsecond, 100 * time.Microsecond, 250 * time.Microsecond, time.Millisecond, 2 * time.Millisecond} {
		b.Run(fmt.Sprintf("quantum=%s", q), func(b *testing.B) { benchFairness(b, q) })
	}
}

func benchFairness(b *testing.B, quantum time.Duration) {
	e, err := NewEngine(Options{Quantum: quantum})
	if err != nil {
		b.Fatal(err)
	}
	defer e.Close(context.Background())
	flood := load(b, e, fixture(b, floodFixture), Grants{
		Config: map[string]string{"k": "v"},
		Limits: Limits{Timeout: 200 * time.Millisecond, HostCalls: 1 << 40},
	})
	small := load(b, e, fixture(b, "hostile/count.wasm"), Grants{})
	smallFlow := WithFlow("device:small", "count.count_vowels")
	ctx := context.Background()

	var idle, flooded []time.Duration
	var refused int
	var floodCalls atomic.Int64
	var floodTime time.Duration
	measure := func(n int, into *[]time.Duration) {
		for range n {
			t0 := time.Now()
			res, err := small.Call(ctx, "count_vowels", countInput, smallFlow)
			d := time.Since(t0)
			switch {
			case errs.Is(err, errs.ResourceExhausted) || errs.Is(err, errs.DeadlineExceeded):
				refused++
			case err != nil || string(res.Output) != `{"count": 11}`:
				b.Fatalf("%v %v", res, err)
			}
			*into = append(*into, d)
		}
	}
	var warm []time.Duration
	measure(10, &warm)
	b.ResetTimer()
	const round = 25
	for left := b.N; left > 0; left -= round {
		n := min(left, round)
		measure(n, &idle)

		fctx, stop := context.WithCancel(ctx)
		var wg sync.WaitGroup
		for range 16 {
			wg.Go(func() {
				for fctx.Err() == nil {
					res, _ := flood.Call(fctx, "run", nil, WithFlow("device:flood", "spin.run"))
					floodCalls.Add(int64(res.HostCalls))
				}
			})
		}
		for _, waiting := e.Busy(); waiting < 8; _, waiting = e.Busy() {
			runtime.Gosched() // the flood holds the CPU and queues
		}
		t0 := time.Now()
		measure(n, &flooded)
		floodTime += time.Since(t0)
		stop()
		wg.Wait()
	}
	b.StopTimer()
	pct := func(d []time.Duration, p float64) float64 {
		slices.Sort(d)
		return float64(d[min(int(float64(len(d))*p), len(d)-1)]) / float64(time.Microsecond)
	}
	i50, i99, f50, f99 := pct(idle, 0.5), pct(idle, 0.99), pct(flooded, 0.5), pct(flooded, 0.99)
	b.ReportMetric(i50, "idle-p50-µs")
	b.ReportMetric(i99, "idle-p99-µs")
	b.ReportMetric(f50, "flooded-p50-µs")
	b.ReportMetric(f99, "flooded-p99-µs")
	b.ReportMetric(f50/i50, "p50-ratio")
	b.ReportMetric(f99/i99, "p99-ratio")
	b.ReportMetric(float64(refused), "refused")
	b.ReportMetric(float64(floodCalls.Load())/float64(floodTime.Milliseconds()+1), "flood-hostcalls/ms")
	b.ReportMetric(0, "ns/op")
}
