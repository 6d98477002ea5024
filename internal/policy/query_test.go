package policy

import (
	"bytes"
	"context"
	"fmt"
	"slices"
	"testing"

	contractualv1 "github.com/contractual/contractual/contracts/gen/contractual/v1"
	"github.com/contractual/contractual/internal/errs"
	"github.com/contractual/contractual/internal/paging"
	"google.golang.org/protobuf/proto"
)

// publishNamed publishes hostile count.wasm as the contract name at
// version, and returns its digest.
func (f *fixture) publishNamed(wasm []byte, name, version string) string {
	f.t.Helper()
	ct := bytes.Replace(counter(wasm, version, "low", ""), []byte("name: counter"), []byte("name: "+name), 1)
	return f.publish(wasm, ct).GetRecord().GetDigest()
}

// list lists contracts and fails on error.
func (f *fixture) list(req *contractualv1.ListContractsRequest) *contractualv1.ListContractsResponse {
	f.t.Helper()
	resp, err := f.s.ListContracts(context.Background(), req)
	if err != nil {
		f.t.Fatalf("ListContracts(%v): %v", req, err)
	}
	return resp
}

// digests returns the digests of recs, in order.
func digests(recs []*contractualv1.ContractRecord) []string {
	var out []string
	for _, r := range recs {
		out = append(out, r.GetDigest())
	}
	return out
}

// TestListContractsPages: following the page tokens visits every contract
// exactly once, newest first, while contracts are published between pages
// (they are newer than the walk's start, so it does not reach them), and
// the last page has no token.
func TestListContractsPages(t *testing.T) {
	f := newFixture(t)
	wasm := hostile(t, "count")
	var want []string // newest first
	for i := range 23 {
		want = slices.Insert(want, 0, f.publishNamed(wasm, fmt.Sprintf("c-%02d", i), "1.0.0"))
	}
	var got []string
	req := &contractualv1.ListContractsRequest{PageSize: 5}
	for page := 0; ; page++ {
		resp := f.list(req)
		if n := len(resp.GetRecords()); n > 5 || n != 5 && resp.GetNextPageToken() != "" {
			t.Fatalf("page %d holds %d contracts for page size 5 (next page token %q)", page, n, resp.GetNextPageToken())
		}
		got = append(got, digests(resp.GetRecords())...)
		if resp.GetNextPageToken() == "" {
			break
		}
		f.publishNamed(wasm, fmt.Sprintf("new-%02d", page), "1.0.0")
		req.PageToken = resp.GetNextPageToken()
	}
	if !slices.Equal(got, want) {
		t.Fatalf("the pages listed\n%v\nwant\n%v", got, want)
	}
	// A new walk sees the contracts published meanwhile, first.
	if first := f.list(&contractualv1.ListContractsRequest{PageSize: 1}).GetRecords()[0]; first.GetContract().GetName() != "new-03" {
		t.Fatalf("newest contract %s, want new-03 (published after the 4th of 5 pages)", first.GetContract().GetName())
	}
}

// TestListContractsPageSize: no page size is 50, a larger one than 500 is
// 500, a negative one is refused.
func TestListContractsPageSize(t *testing.T) {
	f := newFixture(t)
	wasm := hostile(t, "count")
	for i := range paging.DefaultSize + 2 {
		f.publishNamed(wasm, fmt.Sprintf("c-%02d", i), "1.0.0")
	}
	first := f.list(&contractualv1.ListContractsRequest{})
	if len(first.GetRecords()) != paging.DefaultSize || first.GetNextPageToken() == "" {
		t.Fatalf("no page size: %d contracts, token %q", len(first.GetRecords()), first.GetNextPageToken())
	}
	rest := f.list(&contractualv1.ListContractsRequest{PageToken: first.GetNextPageToken()})
	if len(rest.GetRecords()) != 2 || rest.GetNextPageToken() != "" {
		t.Fatalf("second page: %d contracts, token %q", len(rest.GetRecords()), rest.GetNextPageToken())
	}
	if all := f.list(&contractualv1.ListContractsRequest{PageSize: 1 << 20}); len(all.GetRecords()) != paging.DefaultSize+2 || all.GetNextPageToken() != "" {
		t.Fatalf("page size 2^20: %d contracts, token %q", len(all.GetRecords()), all.GetNextPageToken())
	}
	_, err := f.s.ListContracts(context.Background(), &contractualv1.ListContractsRequest{PageSize: -1})
	wantErr(t, err, errs.Invalid, "page_size -1")
}

// TestListContractsTokens: a garbage token, another list's and one made for
// other filters are refused.
func TestListContractsTokens(t *testing.T) {
	f := newFixture(t)
	wasm := hostile(t, "count")
	for i := range 3 {
		f.publishNamed(wasm, fmt.Sprintf("c-%d", i), "1.0.0")
	}
	tok := f.list(&contractualv1.ListContractsRequest{PageSize: 1, NamePrefix: "c-"}).GetNextPageToken()
	if tok == "" {
		t.Fatal("no next page")
	}
	for name, req := range map[string]*contractualv1.ListContractsRequest{
		"garbage":       {PageToken: "not a token"},
		"another list":  {PageToken: paging.Encode("secrets", `prefix=""`, "A")},
		"other filters": {PageToken: tok, NamePrefix: "c"},
		"no filters":    {PageToken: tok},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := f.s.ListContracts(context.Background(), req)
			wantErr(t, err, errs.Invalid, "page_token")
		})
	}
	if got := f.list(&contractualv1.ListContractsRequest{PageToken: tok, NamePrefix: "c-"}); len(got.GetRecords()) != 2 {
		t.Fatalf("the token with its own filters: %v", got)
	}
}

// TestListContractsFilters: name, name prefix, state and tool, alone and
// together, each paged.
func TestListContractsFilters(t *testing.T) {
	f := newFixture(t)
	wasm := hostile(t, "count")
	alpha1 := f.publishNamed(wasm, "alpha", "1.0.0")
	alpha2 := f.publishNamed(wasm, "alpha", "2.0.0")
	alphabet := f.publishNamed(wasm, "alphabet", "1.0.0")
	beta := f.publishNamed(wasm, "beta", "1.0.0")
	tk, ct := textkit(t)
	textkitD := f.publish(tk, ct).GetRecord().GetDigest()
	f.approve(alpha1)
	f.approve(beta)

	// all follows the tokens with page size 1.
	all := func(req *contractualv1.ListContractsRequest) []string {
		t.Helper()
		req.PageSize = 1
		var out []string
		for {
			resp := f.list(req)
			out = append(out, digests(resp.GetRecords())...)
			if resp.GetNextPageToken() == "" {
				return out
			}
			req.PageToken = resp.GetNextPageToken()
		}
	}
	approved := contractualv1.ContractState_CONTRACT_STATE_APPROVED
	pending := contractualv1.ContractState_CONTRACT_STATE_PENDING
	for _, c := range []struct {
		name string
		req  *contractualv1.ListContractsRequest
		want []string
	}{
		{"none", &contractualv1.ListContractsRequest{}, []string{textkitD, beta, alphabet, alpha2, alpha1}},
		{"name", &contractualv1.ListContractsRequest{Name: "alpha"}, []string{alpha2, alpha1}},
		{"prefix", &contractualv1.ListContractsRequest{NamePrefix: "alph"}, []string{alphabet, alpha2, alpha1}},
		{"prefix is the name", &contractualv1.ListContractsRequest{NamePrefix: "alphabet"}, []string{alphabet}},
		{"state", &contractualv1.ListContractsRequest{State: approved}, []string{beta, alpha1}},
		{"prefix and state", &contractualv1.ListContractsRequest{NamePrefix: "alpha", State: pending}, []string{alphabet, alpha2}},
		{"tool", &contractualv1.ListContractsRequest{Tool: "alpha.count_vowels"}, []string{alpha2, alpha1}},
		{"tool and state", &contractualv1.ListContractsRequest{Tool: "alpha.count_vowels", State: approved}, []string{alpha1}},
		{"tool of another contract", &contractualv1.ListContractsRequest{Tool: "textkit.slugify"}, []string{textkitD}},
		{"unknown export", &contractualv1.ListContractsRequest{Tool: "alpha.slugify"}, nil},
		{"unknown prefix", &contractualv1.ListContractsRequest{NamePrefix: "gamma"}, nil},
	} {
		if got := all(c.req); !slices.Equal(got, c.want) {
			t.Errorf("%s: %v, want %v", c.name, got, c.want)
		}
	}
	for req, sub := range map[*contractualv1.ListContractsRequest]string{
		{NamePrefix: "Alpha"}:                    "name_prefix",
		{Tool: "alpha"}:                          "tool",
		{Tool: ".count_vowels"}:                  "tool",
		{Tool: "alpha.count_vowels", Name: "bx"}: "not a tool of contracts named",
		{State: 9}:                               "state 9",
	} {
		_, err := f.s.ListContracts(context.Background(), req)
		wantErr(t, err, errs.Invalid, sub)
	}
}

// BenchmarkListContracts is the first page of ListContracts (no page size:
// 50) with 10, 60 and 1,000 contracts stored: with keyset pages on the
// indexes its cost follows the page (10 or 50 contracts), not the store.
// B/resp is the response's size.
func BenchmarkListContracts(b *testing.B) {
	for _, n := range []int{10, 60, 1000} {
		b.Run(fmt.Sprintf("contracts=%d", n), func(b *testing.B) {
			f := newFixture(b)
			wasm := hostile(b, "count")
			for i := range n {
				f.publishNamed(wasm, fmt.Sprintf("tool-%04d", i), "1.0.0")
			}
			ctx := context.Background()
			var size int
			b.ReportAllocs()
			for b.Loop() {
				resp, err := f.s.ListContracts(ctx, &contractualv1.ListContractsRequest{})
				if err != nil {
					b.Fatal(err)
				}
				size = proto.Size(resp)
			}
			b.ReportMetric(float64(size), "B/resp")
		})
	}
}
