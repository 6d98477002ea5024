package sandbox

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/tetratelabs/wazero"

	"github.com/contractual/contractual/runtime/egress"
	"github.com/contractual/contractual/runtime/egress/egresstest"
)

// vmRSS is the process's resident set size, from /proc/self/status.
func vmRSS(t testing.TB) uint64 {
	t.Helper()
	f, err := os.Open("/proc/self/status")
	if err != nil {
		t.Skipf("no /proc/self/status (%v): RSS is measured on Linux only", err)
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		if v, ok := bytes.CutPrefix(s.Bytes(), []byte("VmRSS:")); ok {
			kb, err := strconv.ParseUint(string(bytes.TrimSuffix(bytes.TrimSpace(v), []byte(" kB"))), 10, 64)
			if err != nil {
				t.Fatalf("VmRSS %q: %v", v, err)
			}
			return kb << 10
		}
	}
	t.Fatal("no VmRSS in /proc/self/status")
	return 0
}

// settledRSS collects garbage and returns freed pages to the OS first.
func settledRSS(t testing.TB) uint64 {
	runtime.GC()
	debug.FreeOSMemory()
	return vmRSS(t)
}

// goCalls runs calls of the Go-built ghstars tool, whose HTTP requests go
// to a loopback server that answers only when let go.
type goCalls struct {
	m                *Module
	arrived, release chan struct{}
}

func newGoCalls(t testing.TB, opts Options) (*Engine, *goCalls) {
	g := &goCalls{arrived: make(chan struct{}, 1024), release: make(chan struct{})}
	srv := egresstest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		g.arrived <- struct{}{}
		<-g.release
		w.Write([]byte(`{"full_name": "a/b", "stargazers_count": 1, "forks_count": 2}`))
	}), "api.github.com")
	t.Cleanup(srv.Close)
	dialer, roots := egresstest.New(map[string]*httptest.Server{"api.github.com": srv})
	opts.Egress = egress.Config{Dialer: dialer, RootCAs: roots}
	e, err := NewEngine(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Close(context.Background()) })
	wasm, err := os.ReadFile(filepath.Join("..", "..", "tools", "ghstars", "ghstars.wasm"))
	if err != nil {
		t.Fatal(err)
	}
	g.m = load(t, e, wasm, Grants{
		WASI:   &WASI{Clock: true, Random: true},
		HTTP:   []egress.Rule{{Scheme: "https", Host: "api.github.com", PathPrefix: "/repos/", Methods: []string{"GET"}}},
		Limits: Limits{MemoryBytes: 16 << 20},
	})
	return e, g
}

// run makes n calls at once and, while all n wait for their HTTP answer,
// reads the process's RSS. It returns that and the calls' largest peak memory.
func (g *goCalls) run(t testing.TB, n int) (rss, peak uint64) {
	var wg sync.WaitGroup
	var mu sync.Mutex
	release := make(chan struct{})
	g.release = release
	for range n {
		wg.Go(func() {
			res, err := g.m.Call(context.Background(), "repo_stars", []byte(`{"owner": "a", "repo": "b"}`))
			if err != nil {
				t.Error(err)
			}
			mu.Lock()
			peak = max(peak, res.PeakMemory)
			mu.Unlock()
		})
	}
	for range n {
		<-g.arrived
	}
	rss = vmRSS(t)
	close(release)
	wg.Wait()
	return rss, peak
}

// TestRSSFollowsUse: n calls of a Go tool in flight at once cost the process
// at most twice the guest's own peak memory each, plus a fixed overhead, and
// once they end and the pool is trimmed the process returns near its start.
// Before the pools were mappings, each call's 16 MiB reservation became
// resident once the Go heap reused it (some 20 MiB per call by the third
// round), and the pools kept it. The bounds are generous; the log has the
// exact figures.
func TestRSSFollowsUse(t *testing.T) {
	if raceEnabled {
		t.Skip("RSS is no measure under the race detector")
	}
	const n = 16
	e, g := newGoCalls(t, Options{MaxConcurrent: n})
	g.run(t, 1)
	e.memory.trim()
	base := settledRSS(t)
	for round := range 4 {
		rss, peak := g.run(t, n)
		perCall := (float64(rss) - float64(base)) / n
		t.Logf("round %d: %.1f MiB at start, %.1f MiB with %d calls in flight: %.2f MiB per call, guest peak %.2f MiB",
			round, mib(base), mib(rss), n, perCall/(1<<20), mib(peak))
		if limit := 2*float64(peak) + float64(DefaultPoolResident+16<<20)/n; perCall > limit {
			t.Errorf("round %d: %.2f MiB per call in flight, over 2 × the guest's %.2f MiB + %.2f MiB",
				round, perCall/(1<<20), mib(peak), (limit-2*float64(peak))/(1<<20))
		}
	}
	e.memory.trim()
	idle := vmRSS(t)
	t.Logf("after trim: %.1f MiB (%+.1f MiB)", mib(idle), mib(idle)-mib(base))
	if idle > base+16<<20 {
		t.Errorf("idle RSS %.1f MiB, %.1f MiB over its start", mib(idle), mib(idle)-mib(base))
	}
}

func mib(b uint64) float64 { return float64(b) / (1 << 20) }

// BenchmarkRSSPerCall reports the RSS that each of n calls of a Go tool in
// flight at once costs the process, next to the guest's own peak memory,
// and the RSS of the idle process after the pool is trimmed, against its
// start:
//
//	go test -run '^$' -bench RSSPerCall -benchtime 5x ./runtime/sandbox
func BenchmarkRSSPerCall(b *testing.B) {
	for _, n := range []int{1, 8, 32} {
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			e, g := newGoCalls(b, Options{MaxConcurrent: n})
			g.run(b, 1)
			e.memory.trim()
			base := settledRSS(b)
			var worst, peak uint64
			for b.Loop() {
				rss, p := g.run(b, n)
				worst, peak = max(worst, rss), max(peak, p)
			}
			e.memory.trim()
			idle := vmRSS(b)
			perCall := (mib(worst) - mib(base)) / float64(n)
			b.ReportMetric(perCall, "MiB/call")
			b.ReportMetric(mib(peak), "guest-peak-MiB")
			b.ReportMetric(perCall/mib(peak), "call/peak")
			b.ReportMetric(mib(base), "start-MiB")
			b.ReportMetric(mib(idle)-mib(base), "idle-over-start-MiB")
		})
	}
}

// rotatingModules returns n distinct copies of the small count.wasm tool:
// each carries a custom section of its own, so each compiles on its own.
func rotatingModules(b *testing.B, n int) [][]byte {
	wasm := fixture(b, "hostile/count.wasm")
	mods := make([][]byte, n)
	for i := range mods {
		name := fmt.Sprintf("rotating-%d", i)
		payload := append(append([]byte{byte(len(name))}, name...), 0)
		mods[i] = append(append(bytes.Clone(wasm), 0, byte(len(payload))), payload...)
	}
	return mods
}

// BenchmarkRotatingModules calls 200 distinct small tools in turn, under a
// 16 and a 64 MiB memory limit, and reports the process's RSS over its start
// after the calls (as they left it, and after the pool is trimmed), against
// the same calls through bare wazero (Go heap memories of the size the
// module asks for, no limit, no pool) in the same run, and each one's p90:
//
//	go test -run '^$' -bench RotatingModules -benchtime 5x ./runtime/sandbox
func BenchmarkRotatingModules(b *testing.B) {
	const n = 200
	mods := rotatingModules(b, n)
	ctx := context.Background()
	for _, limit := range []uint64{16 << 20, 64 << 20} {
		b.Run(fmt.Sprintf("%dMiB", limit>>20), func(b *testing.B) {
			base := settledRSS(b)
			e := newEngine(b, egress.Config{})
			sandboxed := make([]*Module, n)
			for i, wasm := range mods {
				sandboxed[i] = load(b, e, wasm, Grants{Limits: Limits{MemoryBytes: limit}})
			}
			type bare struct {
				rt   wazero.Runtime
				cm   wazero.CompiledModule
				host *bareHost
			}
			bares := make([]bare, n)
			for i, wasm := range mods {
				rt, cm, host := newBareRuntime(b, wasm)
				defer rt.Close(ctx)
				bares[i] = bare{rt, cm, host}
			}
			loaded := settledRSS(b)
			var sandboxTimes, bareTimes []time.Duration
			var afterSandbox, afterBare uint64
			for b.Loop() {
				for _, m := range sandboxed {
					t0 := time.Now()
					if _, err := m.Call(ctx, "count_vowels", countInput); err != nil {
						b.Fatal(err)
					}
					sandboxTimes = append(sandboxTimes, time.Since(t0))
				}
				afterSandbox = max(afterSandbox, vmRSS(b))
			}
			settled := settledRSS(b)
			e.memory.trim()
			trimmed := vmRSS(b)
			for range len(sandboxTimes) / n {
				for _, m := range bares {
					t0 := time.Now()
					m.host.call(b, m.rt, m.cm)
					bareTimes = append(bareTimes, time.Since(t0))
				}
				afterBare = max(afterBare, vmRSS(b))
			}
			b.ReportMetric(mib(loaded)-mib(base), "loaded-MiB")
			b.ReportMetric(mib(afterSandbox)-mib(loaded), "sandbox-MiB")
			b.ReportMetric(mib(settled)-mib(loaded), "sandbox-settled-MiB")
			b.ReportMetric(mib(trimmed)-mib(loaded), "sandbox-trimmed-MiB")
			b.ReportMetric(mib(afterBare)-mib(trimmed), "bare-MiB")
			b.ReportMetric(p90(sandboxTimes), "sandbox-p90-µs")
			b.ReportMetric(p90(bareTimes), "bare-p90-µs")
		})
	}
}

// p90 returns the 90th percentile of d in microseconds.
func p90(d []time.Duration) float64 {
	slices.Sort(d)
	return float64(d[len(d)*9/10]) / float64(time.Microsecond)
}
