package runner

import (
	"context"
	"fmt"
	"runtime"
	"slices"
	"sync"
	"testing"
	"time"

	contractualv1 "github.com/contractual/contractual/contracts/gen/contractual/v1"
	"github.com/contractual/contractual/internal/errs"
	"github.com/contractual/contractual/runtime/sandbox"
)

// BenchmarkExecuteFlooded measures one principal's calls of a small tool
// (count.wasm, one call after another) through Execute while another
// principal keeps 16 calls of a never-ending guest (loop.wasm, 200 ms
// timeout) in flight, against the same calls with no flood, in rounds that
// alternate the two, for each quantum, on an engine with GOMAXPROCS-1 CPU slots:
//
//	go test -run '^$' -bench ExecuteFlooded -benchtime 400x ./internal/runner
//
// b.N calls are measured in each phase. Reported: p50 and p99 in µs, the
// ratios flooded / idle, and the small calls refused (there should be
// none).
func BenchmarkExecuteFlooded(b *testing.B) {
	for _, q := range []time.Duration{100 * time.Microsecond, 250 * time.Microsecond, time.Millisecond} {
		b.Run(fmt.Sprintf("quantum=%s", q), func(b *testing.B) {
			e, err := sandbox.NewEngine(sandbox.Options{Quantum: q})
			if err != nil {
				b.Fatal(err)
			}
			defer e.Close(context.Background())
			benchExecuteFlooded(b, e)
		})
	}
}

func benchExecuteFlooded(b *testing.B, e *sandbox.Engine) {
	f := newFixtureOn(b, e, Config{})
	f.svc.audit = &counter{}
	small := f.count("count")
	spinWasm := hostile(b, "loop.wasm")
	spin := f.publish(spinWasm, smallContract(spinWasm, "loop", []string{"run"},
		"limits: {timeout_ms: 200}\n"))
	input := `{"text":"the quick brown fox jumps over the lazy dog"}`
	ctx := context.Background()
	const round = 25
	smallReqs := make([]*contractualv1.ExecuteRequest, 2*(b.N+round))
	for i := range smallReqs {
		smallReqs[i] = f.request(f.decision(small, "count_vowels", input, as("device:small")), input)
	}
	if _, err := f.svc.Execute(ctx, smallReqs[len(smallReqs)-1]); err != nil { // warm the cache
		b.Fatal(err)
	}
	// The flood's decisions are signed as it goes (policy's cost, here).
	floodReq := func() *contractualv1.ExecuteRequest {
		return f.request(f.decision(spin, "run", `{}`, as("device:flood")), `{}`)
	}

	var idle, flooded []time.Duration
	refused, next := 0, 0
	measure := func(n int, into *[]time.Duration) {
		for range n {
			t0 := time.Now()
			resp, err := f.svc.Execute(ctx, smallReqs[next])
			d := time.Since(t0)
			next++
			switch {
			case errs.Is(err, errs.ResourceExhausted) || errs.Is(err, errs.DeadlineExceeded):
				refused++
			case err != nil || string(resp.GetOutput()) != `{"count": 12}`:
				b.Fatalf("%v %v", resp, err)
			}
			*into = append(*into, d)
		}
	}
	b.ResetTimer()
	for left := b.N; left > 0; left -= round {
		n := min(left, round)
		measure(n, &idle)
		fctx, stop := context.WithCancel(ctx)
		var wg sync.WaitGroup
		for range 16 {
			wg.Go(func() {
				for fctx.Err() == nil {
					f.svc.Execute(fctx, floodReq())
				}
			})
		}
		for _, waiting := e.Busy(); waiting < 8; _, waiting = e.Busy() {
			runtime.Gosched() // the flood holds the CPU and queues
		}
		measure(n, &flooded)
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
	b.ReportMetric(0, "ns/op")
}
