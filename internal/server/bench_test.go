package server_test

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"slices"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	"connectrpc.com/grpchealth"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/contractual/contractual/contracts/contract"
	contractualv1 "github.com/contractual/contractual/contracts/gen/contractual/v1"
	"github.com/contractual/contractual/contracts/gen/contractual/v1/contractualv1connect"
	"github.com/contractual/contractual/internal/server"
)

// vowelsContract is a contract for the small non-Go fixture count.wasm.
const vowelsContract = `module: %s
name: vowels
version: 1.0.0
publisher: benchmarks
description: Counts vowels.
tools:
  - export: count_vowels
    description: Count the vowels of the input.
    risk: low
    input_schema: {type: object, properties: {text: {type: string}}, required: [text]}
`

// BenchmarkInvoke measures one invocation through the Connect API of the
// all-in-one server (policy decision, signature, runner, sandbox, durable
// audit) next to a bare Connect call (the health check) on the same server,
// interleaved:
//
//	go test -run '^$' -bench Invoke -benchtime 2000x ./internal/server
func BenchmarkInvoke(b *testing.B) {
	s, tok := vowelsServer(b)
	auth := connect.WithInterceptors(bearer(tok))
	tools := contractualv1connect.NewToolServiceClient(http.DefaultClient, s.URL, auth)
	health := grpchealth.NewClient(http.DefaultClient, s.URL)
	in, _ := structpb.NewValue(map[string]any{"text": "the quick brown fox"})
	req := &contractualv1.InvokeRequest{Tool: "vowels.count_vowels", Input: in}
	ctx := context.Background()

	var inv, bare []time.Duration
	b.ResetTimer()
	for range b.N {
		t0 := time.Now()
		if _, err := tools.Invoke(ctx, req); err != nil {
			b.Fatal(err)
		}
		t1 := time.Now()
		if _, err := health.Check(ctx, &grpchealth.CheckRequest{}); err != nil {
			b.Fatal(err)
		}
		inv, bare = append(inv, t1.Sub(t0)), append(bare, time.Since(t1))
	}
	b.StopTimer()

	// Throughput: concurrent clients for a fixed number of invocations.
	const clients, per = 16, 200
	start := time.Now()
	var wg sync.WaitGroup
	for range clients {
		wg.Go(func() {
			for range per {
				if _, err := tools.Invoke(ctx, req); err != nil {
					b.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	rate := clients * per / time.Since(start).Seconds()

	p50 := func(d []time.Duration) float64 {
		slices.Sort(d)
		return float64(d[len(d)/2]) / float64(time.Microsecond)
	}
	pi, pb := p50(inv), p50(bare)
	b.ReportMetric(pi, "invoke-p50-µs")
	b.ReportMetric(pb, "bare-p50-µs")
	b.ReportMetric(pi/pb, "invoke/bare")
	b.ReportMetric(rate, "invokes/s")
}

// vowelsServer starts an all-in-one server for a benchmark, with an owner
// device (its token returned) and the small vowels tool approved.
func vowelsServer(b *testing.B) (*server.Server, string) {
	b.Helper()
	s, err := server.Start(context.Background(), server.Config{DataDir: b.TempDir(), Addr: "127.0.0.1:0"})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { s.Close(context.Background()) })
	tok, _ := owner(b, s)
	pol := contractualv1connect.NewPolicyServiceClient(http.DefaultClient, s.URL, connect.WithInterceptors(bearer(tok)))
	wasm, err := os.ReadFile("../../runtime/sandbox/testdata/hostile/count.wasm")
	if err != nil {
		b.Fatal(err)
	}
	pub, err := pol.Publish(context.Background(), &contractualv1.PublishRequest{
		Module: wasm, Contract: fmt.Appendf(nil, vowelsContract, contract.ModuleDigest(wasm)), ContractFilename: "vowels.yaml",
	})
	if err != nil {
		b.Fatal(err)
	}
	if _, err := pol.Approve(context.Background(), &contractualv1.ApproveRequest{Digest: pub.GetRecord().GetDigest()}); err != nil {
		b.Fatal(err)
	}
	return s, tok
}
