package runner

import (
	"context"
	"sync/atomic"
	"testing"

	contractualv1 "github.com/contractual/contractual/contracts/gen/contractual/v1"
	"github.com/contractual/contractual/runtime/sandbox"
)

// The benchmarks measure one Execute of a cached small tool (count.wasm):
// decision verification, spending, the contract state check, the sandbox
// call and the audit append (to an in-memory auditor), next to the bare
// sandbox call of the same module as a baseline:
//
//	go test -run '^$' -bench . -benchmem ./internal/runner
//
// Decisions are signed before the timer starts: signing is policy's cost.

// counter is an Auditor that only counts.
type counter struct{ n atomic.Int64 }

func (c *counter) Append(_ context.Context, req *contractualv1.AppendRequest) (*contractualv1.AppendResponse, error) {
	c.n.Add(int64(len(req.GetEvents())))
	return &contractualv1.AppendResponse{}, nil
}

// benchFixture is a runner with count.wasm cached and n signed requests.
func benchFixture(b *testing.B, n int) (*fixture, []*contractualv1.ExecuteRequest) {
	f := newFixture(b, Config{})
	f.svc.audit = &counter{}
	ct := f.count("count")
	reqs := make([]*contractualv1.ExecuteRequest, n+1)
	for i := range reqs {
		reqs[i] = f.call(ct, "count_vowels", `{"text":"the quick brown fox jumps over the lazy dog"}`)
	}
	if _, err := f.svc.Execute(context.Background(), reqs[n]); err != nil { // warm the cache
		b.Fatal(err)
	}
	return f, reqs[:n]
}

// BenchmarkExecute is one call through the runner.
func BenchmarkExecute(b *testing.B) {
	f, reqs := benchFixture(b, b.N)
	ctx := context.Background()
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		if _, err := f.svc.Execute(ctx, reqs[i]); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkExecuteParallel is BenchmarkExecute from GOMAXPROCS goroutines.
func BenchmarkExecuteParallel(b *testing.B) {
	f, reqs := benchFixture(b, b.N)
	ctx := context.Background()
	var next atomic.Int64
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := f.svc.Execute(ctx, reqs[next.Add(1)-1]); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// BenchmarkModuleCall is the baseline: the same call straight to the
// sandbox module, without decision, contract check or audit.
func BenchmarkModuleCall(b *testing.B) {
	wasm := hostile(b, "count.wasm")
	ctx := context.Background()
	m, err := engine.Load(ctx, wasm, sandbox.Grants{})
	if err != nil {
		b.Fatal(err)
	}
	defer m.Close(ctx)
	input := []byte(`{"text":"the quick brown fox jumps over the lazy dog"}`)
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		if _, err := m.Call(ctx, "count_vowels", input); err != nil {
			b.Fatal(err)
		}
	}
}
