package policy

import (
	"context"
	"fmt"
	"testing"

	"github.com/contractual/contractual/contracts/contract"
	contractualv1 "github.com/contractual/contractual/contracts/gen/contractual/v1"
)

// seedApproved stores n approved contracts "t0".."t<n-1>" of count.wasm
// straight into f's store, in one transaction, and reopens the service so
// that it loads them. It returns their digests.
func seedApproved(t testing.TB, f *fixture, n int) []string {
	t.Helper()
	wasm := hostile(t, "count")
	ctx := context.Background()
	tx, err := f.s.db.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback()
	if err := insertModule(ctx, tx, contract.ModuleDigest(wasm), wasm, fixed); err != nil {
		t.Fatal(err)
	}
	digests := make([]string, n)
	for i := range n {
		c, err := contract.Load(named(wasm, fmt.Sprintf("t%d", i), "1.0.0"), "contract.yaml")
		if err != nil {
			t.Fatal(err)
		}
		enc, err := contract.Canonical(c)
		if err != nil {
			t.Fatal(err)
		}
		if digests[i], err = contract.Digest(c); err != nil {
			t.Fatal(err)
		}
		rec := &contractualv1.ContractRecord{Digest: digests[i], Contract: c, State: approved, PublishedBy: ownerDevice, PublishedAt: nil}
		if err := insertContract(ctx, tx, rec, enc); err != nil {
			t.Fatal(err)
		}
	}
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
	f.reopen()
	return digests
}

// TestLookupsDoNotScan: with 1,000 approved contracts, deciding a call of
// any of them and fetching any of them (the runner's per-call lookup) read
// nothing from the store: with the store closed, they still answer.
func TestLookupsDoNotScan(t *testing.T) {
	f := newFixture(t)
	digests := seedApproved(t, f, 1000)
	if err := f.s.db.Close(); err != nil {
		t.Fatal(err)
	}
	for _, i := range []int{0, 500, 999} {
		d := f.evaluate(fmt.Sprintf("t%d.count_vowels", i), `{"text": "aeiou"}`).GetDecision()
		if d.GetVerdict() != contractualv1.Verdict_VERDICT_ALLOW || d.GetContractDigest() != digests[i] {
			t.Fatalf("t%d: %v", i, d)
		}
		if st := f.state(digests[i]); st != approved {
			t.Fatalf("t%d is %v", i, st)
		}
	}
	if _, err := f.s.GetContract(context.Background(), &contractualv1.GetContractRequest{Digest: "sha256:" + fmt.Sprintf("%064d", 0)}); err == nil {
		t.Fatal("the store is not closed: a contract that is not approved was found")
	}
}

// BenchmarkLookups measures Evaluate and GetContract with 10, 100 and
// 1,000 approved contracts, and Open (which loads them): the lookups cost
// the same at every size.
//
//	go test -run '^$' -bench Lookups ./internal/policy
func BenchmarkLookups(b *testing.B) {
	for _, n := range []int{10, 100, 1000} {
		f := newFixture(b)
		digests := seedApproved(b, f, n)
		f.s.auditor = discard{}
		ctx := context.Background()
		b.Run(fmt.Sprintf("Evaluate/contracts=%d", n), func(b *testing.B) {
			req := &contractualv1.EvaluateRequest{Tool: fmt.Sprintf("t%d.count_vowels", n/2), Input: []byte(`{"text": "aeiou"}`), Principal: "device:phone"}
			for b.Loop() {
				if _, err := f.s.Evaluate(ctx, req); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(fmt.Sprintf("GetContract/contracts=%d", n), func(b *testing.B) {
			req := &contractualv1.GetContractRequest{Digest: digests[n/2]}
			for b.Loop() {
				if _, err := f.s.GetContract(ctx, req); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(fmt.Sprintf("Open/contracts=%d", n), func(b *testing.B) {
			for b.Loop() {
				s, err := Open(ctx, Config{Dir: f.dir}, Deps{Audit: discard{}})
				if err != nil {
					b.Fatal(err)
				}
				s.Close(ctx)
			}
		})
	}
}
