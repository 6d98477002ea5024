package policy

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/contractual/contractual/contracts/contract"
	contractualv1 "github.com/contractual/contractual/contracts/gen/contractual/v1"
	"github.com/contractual/contractual/internal/decision"
)

// discard is an Auditor that keeps nothing, so that the benchmarks measure
// policy alone.
type discard struct{}

func (discard) Append(_ context.Context, req *contractualv1.AppendRequest) (*contractualv1.AppendResponse, error) {
	return &contractualv1.AppendResponse{Indexes: make([]uint64, len(req.GetEvents()))}, nil
}

// benchService opens a Service with textkit approved.
func benchService(b *testing.B) (*Service, string) {
	b.Helper()
	s, err := Open(context.Background(), Config{Dir: filepath.Join(b.TempDir(), "policy")}, Deps{Audit: discard{}})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { s.Close(context.Background()) })
	wasm, ct := textkit(b)
	pub, err := s.Publish(asOwner, &contractualv1.PublishRequest{Module: wasm, Contract: ct})
	if err != nil {
		b.Fatal(err)
	}
	if _, err := s.Approve(asOwner, &contractualv1.ApproveRequest{Digest: pub.GetRecord().GetDigest()}); err != nil {
		b.Fatal(err)
	}
	return s, pub.GetRecord().GetDigest()
}

var benchReq = &contractualv1.EvaluateRequest{
	Tool:      "textkit.slugify",
	Input:     []byte(`{"text": "Crème brûlée, à la carte!"}`),
	Principal: "device:phone",
}

// BenchmarkEvaluate is one allowed call: canonical input, cached contract
// and compiled schema, a signed decision, the audit event.
func BenchmarkEvaluate(b *testing.B) {
	s, _ := benchService(b)
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := s.Evaluate(ctx, benchReq); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkEvaluateParallel is BenchmarkEvaluate on every core.
func BenchmarkEvaluateParallel(b *testing.B) {
	s, _ := benchService(b)
	ctx := context.Background()
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := s.Evaluate(ctx, benchReq); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// BenchmarkGetContract is the runner's per-call lookup of an approved
// contract.
func BenchmarkGetContract(b *testing.B) {
	s, digest := benchService(b)
	ctx := context.Background()
	req := &contractualv1.GetContractRequest{Digest: digest}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := s.GetContract(ctx, req); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkCheckInput compares the cached compiled schema with
// contract.CheckInput, which compiles the schema on every call.
func BenchmarkCheckInput(b *testing.B) {
	_, ct := textkit(b)
	c, err := contract.Load(ct, "contract.yaml")
	if err != nil {
		b.Fatal(err)
	}
	tool := c.GetTools()[0]
	canon, err := decision.Canonical(benchReq.GetInput())
	if err != nil {
		b.Fatal(err)
	}
	b.Run("cached", func(b *testing.B) {
		te := &toolEntry{tool: tool}
		for b.Loop() {
			if err := te.checkInput(canon); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("contract.CheckInput", func(b *testing.B) {
		for b.Loop() {
			if err := contract.CheckInput(tool, canon); err != nil {
				b.Fatal(err)
			}
		}
	})
}
