package loadtest_test

import (
	"bytes"
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/tetratelabs/wazero"

	"github.com/contractual/contractual/contracts/contract"
	"github.com/contractual/contractual/internal/loadtest"
)

// TestRun: conc calls are in flight at once and never more, every index
// is called once, and outcomes are counted by code.
func TestRun(t *testing.T) {
	const conc, n = 4, 100
	var (
		inFlight, most atomic.Int64
		seen           sync.Map
		all            = make(chan struct{}) // closed once conc calls are in flight together
		once           sync.Once
	)
	r := loadtest.Run(context.Background(), conc, n, func(ctx context.Context, i int) error {
		if _, dup := seen.LoadOrStore(i, true); dup {
			t.Errorf("index %d called twice", i)
		}
		cur := inFlight.Add(1)
		defer inFlight.Add(-1)
		for m := most.Load(); cur > m && !most.CompareAndSwap(m, cur); m = most.Load() {
		}
		if cur == conc {
			once.Do(func() { close(all) })
		}
		<-all // the first calls wait until conc are in flight
		if i%10 == 0 {
			return connect.NewError(connect.CodeResourceExhausted, errors.New("full"))
		}
		if i%25 == 1 {
			return errors.New("not a Connect error")
		}
		return nil
	})
	if most.Load() != conc {
		t.Errorf("%d calls in flight at most, want %d", most.Load(), conc)
	}
	var count int
	seen.Range(func(k, _ any) bool {
		if i := k.(int); i < 0 || i >= n {
			t.Errorf("index %d", i)
		}
		count++
		return true
	})
	if count != n || r.Calls() != n || r.OK() != 86 || r.Failed[connect.CodeResourceExhausted] != 10 || r.Failed[connect.CodeUnknown] != 4 {
		t.Errorf("%d indexes called; result %v", count, r)
	}
}

// TestRunUntilCanceled: with n < 0, Run calls until its context ends, and
// starts nothing after.
func TestRunUntilCanceled(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	var calls atomic.Int64
	r := loadtest.Run(ctx, 3, -1, func(ctx context.Context, i int) error {
		if calls.Add(1) == 50 {
			cancel()
		}
		return ctx.Err()
	})
	if r.Calls() != int(calls.Load()) || r.Calls() < 50 || r.Calls() > 52 || r.Failed[connect.CodeCanceled] != r.Calls()-r.OK() {
		t.Errorf("%d calls made; result %v", calls.Load(), r)
	}
}

func TestQuantile(t *testing.T) {
	var r loadtest.Result
	for i := 100; i >= 1; i-- {
		r.Latencies = append(r.Latencies, time.Duration(i)*time.Millisecond)
	}
	for _, c := range []struct {
		q    float64
		want time.Duration
	}{{0.5, 50 * time.Millisecond}, {0.99, 99 * time.Millisecond}, {1, 100 * time.Millisecond}, {0.001, time.Millisecond}} {
		if got := r.Quantile(c.q); got != c.want {
			t.Errorf("Quantile(%v) = %v, want %v", c.q, got, c.want)
		}
	}
	if (loadtest.Result{}).Quantile(0.5) != 0 {
		t.Error("quantile of nothing")
	}
}

// TestInterleave: each side makes its n calls, in alternating runs.
func TestInterleave(t *testing.T) {
	var mu sync.Mutex
	var order []byte
	side := func(c byte) func(context.Context, int) error {
		return func(context.Context, int) error {
			mu.Lock()
			defer mu.Unlock()
			order = append(order, c)
			return nil
		}
	}
	a, b := loadtest.Interleave(context.Background(), 2, 23, 5, side('a'), side('b'))
	if a.OK() != 23 || b.OK() != 23 {
		t.Fatalf("a %v, b %v", a, b)
	}
	if want := "aaaaabbbbbaaaaabbbbbaaaaabbbbbaaaabbbbaaaabbbb"; string(order) != want {
		t.Errorf("order %s, want %s", order, want)
	}
}

// TestWithCustomSection: the module still compiles, and each payload
// makes a module of its own.
func TestWithCustomSection(t *testing.T) {
	count := read(t, countWasm)
	a := loadtest.WithCustomSection(count, "contractual-loadtest", []byte("tiny-0001"))
	b := loadtest.WithCustomSection(count, "contractual-loadtest", bytes.Repeat([]byte("x"), 300)) // a 2-byte section size
	if contract.ModuleDigest(a) == contract.ModuleDigest(b) || contract.ModuleDigest(a) == contract.ModuleDigest(count) {
		t.Fatal("same digests")
	}
	rt := wazero.NewRuntime(context.Background())
	defer rt.Close(context.Background())
	for _, m := range [][]byte{a, b} {
		cm, err := rt.CompileModule(context.Background(), m)
		if err != nil {
			t.Fatal(err)
		}
		if _, ok := cm.ExportedFunctions()["count_vowels"]; !ok {
			t.Error("count_vowels lost")
		}
	}
}
