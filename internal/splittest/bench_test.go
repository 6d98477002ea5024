package splittest_test

import (
	"context"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/structpb"

	"github.com/contractual/contractual/internal/loadtest"
	"github.com/contractual/contractual/internal/server"
	"github.com/contractual/contractual/internal/splittest"
)

// BenchmarkInvoke invokes the small tool through the split (gateway →
// policy → runner → audit, every hop mutual TLS on loopback, each service
// its binary's code) and through the all-in-one server (the same
// components over the in-memory network), interleaved in the same run,
// from a real HTTP client at concurrency 1 and 8. It reports both p50s and
// split/all-in-one, which the issue bounds at 2.
//
//	go test -run '^$' -bench BenchmarkInvoke -benchtime 2000x ./internal/splittest
func BenchmarkInvoke(b *testing.B) {
	ctx := context.Background()
	split := splittest.Start(b)
	srv, err := server.Start(ctx, server.Config{DataDir: b.TempDir(), Addr: "127.0.0.1:0"})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { srv.Close(context.Background()) })
	input := structpb.NewStructValue(&structpb.Struct{Fields: map[string]*structpb.Value{"text": structpb.NewStringValue("hello")}})
	onSplit := owner(b, split).Invoker("count.count_vowels", input)
	onOne := owner(b, &splittest.Split{URL: srv.URL, SetupCode: srv.SetupCode}).Invoker("count.count_vowels", input)
	for _, conc := range []int{1, 8} {
		b.Run(map[int]string{1: "conc=1", 8: "conc=8"}[conc], func(b *testing.B) {
			// Warm both: connections, compiled modules, caches.
			loadtest.Run(ctx, conc, 200, onSplit)
			loadtest.Run(ctx, conc, 200, onOne)
			b.ResetTimer()
			rs, ro := loadtest.Interleave(ctx, conc, b.N, 10, onSplit, onOne)
			b.StopTimer()
			if rs.OK() != rs.Calls() || ro.OK() != ro.Calls() {
				b.Fatalf("failed calls: split %s, all-in-one %s", rs, ro)
			}
			ms := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
			b.ReportMetric(0, "ns/op")
			b.ReportMetric(ms(rs.Quantile(0.5)), "split-p50-ms")
			b.ReportMetric(ms(ro.Quantile(0.5)), "one-p50-ms")
			b.ReportMetric(ms(rs.Quantile(0.99)), "split-p99-ms")
			b.ReportMetric(ms(ro.Quantile(0.99)), "one-p99-ms")
			b.ReportMetric(rs.Throughput(), "split-calls/s")
			b.ReportMetric(ro.Throughput(), "one-calls/s")
			b.ReportMetric(ms(rs.Quantile(0.5))/ms(ro.Quantile(0.5)), "split/one-p50")
		})
	}
}
