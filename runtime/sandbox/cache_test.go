package sandbox

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"slices"
	"strings"
	"testing"

	"github.com/contractual/contractual/contracts/contract"
	"github.com/contractual/contractual/internal/errs"
)

// Variant returns wasm with a custom section that makes it a distinct
// module (another digest) that behaves the same.
func variant(wasm []byte, i int) []byte {
	sec := append([]byte{1, 'v'}, fmt.Sprintf("%08d", i)...)
	out := append([]byte(nil), wasm...)
	out = append(out, 0, byte(len(sec)))
	return append(out, sec...)
}

// cacheDirOf is the compilation cache directory of wasm in dir.
func cacheDirOf(dir string, wasm []byte) string {
	return filepath.Join(dir, strings.TrimPrefix(contract.ModuleDigest(wasm), "sha256:"))
}

// cachedFiles counts the files under dir; -1 if dir does not exist.
func cachedFiles(t *testing.T, dir string) int {
	t.Helper()
	if _, err := os.Stat(dir); os.IsNotExist(err) {
		return -1
	}
	n := 0
	err := filepath.WalkDir(dir, func(_ string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			n++
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// TestPrune: each module digest compiles into its own directory, shared
// by loads of that module under other grants; Prune deletes the
// directories of the modules it is not told to keep (and the shared cache
// of older versions), and nothing else.
func TestPrune(t *testing.T) {
	dir := t.TempDir()
	e, err := NewEngine(Options{CacheDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close(context.Background())
	a, b := fixture(t, "hostile/count.wasm"), variant(fixture(t, "hostile/count.wasm"), 1)
	ctx := context.Background()
	for _, wasm := range [][]byte{a, a, b} {
		m, err := e.Load(ctx, wasm, Grants{})
		if err != nil {
			t.Fatal(err)
		}
		if res, err := m.Call(ctx, "count_vowels", []byte("aaa")); err != nil || string(res.Output) != `{"count": 3}` {
			t.Fatalf("call: %v", err)
		}
		m.Close(ctx)
	}
	for _, wasm := range [][]byte{a, b} {
		if n := cachedFiles(t, cacheDirOf(dir, wasm)); n != 1 {
			t.Fatalf("module %s has %d compiled files in its directory, want 1", contract.ModuleDigest(wasm), n)
		}
	}
	legacy := filepath.Join(dir, "wazero-v1.11.0-amd64-linux")
	other := filepath.Join(dir, "notes.txt")
	if err := os.MkdirAll(legacy, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(other, nil, 0o600); err != nil {
		t.Fatal(err)
	}

	gone, err := e.Prune(func(d string) bool { return d == contract.ModuleDigest(a) })
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{contract.ModuleDigest(b)}; !slices.Equal(gone, want) {
		t.Fatalf("pruned %v, want %v", gone, want)
	}
	if cachedFiles(t, cacheDirOf(dir, b)) != -1 || cachedFiles(t, legacy) != -1 {
		t.Fatal("the pruned module's directory or the legacy cache is still there")
	}
	if cachedFiles(t, cacheDirOf(dir, a)) != 1 || cachedFiles(t, other) != 1 {
		t.Fatal("Prune deleted what it had to keep")
	}
}

// TestPruneLoaded: the compiled code of a module still loaded stays until
// its last Module closes, unless it is loaded again first.
func TestPruneLoaded(t *testing.T) {
	dir := t.TempDir()
	e, err := NewEngine(Options{CacheDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close(context.Background())
	ctx := context.Background()
	a, b := fixture(t, "hostile/count.wasm"), variant(fixture(t, "hostile/count.wasm"), 2)
	ma1, err := e.Load(ctx, a, Grants{})
	if err != nil {
		t.Fatal(err)
	}
	ma2, err := e.Load(ctx, a, Grants{Log: true})
	if err != nil {
		t.Fatal(err)
	}
	mb, err := e.Load(ctx, b, Grants{})
	if err != nil {
		t.Fatal(err)
	}
	none := func(string) bool { return false }
	if gone, err := e.Prune(none); err != nil || len(gone) != 0 {
		t.Fatalf("pruned %v (%v) while every module is loaded", gone, err)
	}
	if res, err := ma1.Call(ctx, "count_vowels", []byte("ae")); err != nil || string(res.Output) != `{"count": 2}` {
		t.Fatalf("a loaded module stopped working after Prune: %v", err)
	}
	ma1.Close(ctx)
	if cachedFiles(t, cacheDirOf(dir, a)) != 1 {
		t.Fatal("a's code went while another Module of it is loaded")
	}
	ma2.Close(ctx)
	if cachedFiles(t, cacheDirOf(dir, a)) != -1 {
		t.Fatal("a's code stayed after its last Module closed")
	}
	// Loaded again after Prune: b is wanted again and stays.
	mb2, err := e.Load(ctx, b, Grants{})
	if err != nil {
		t.Fatal(err)
	}
	mb.Close(ctx)
	mb2.Close(ctx)
	if cachedFiles(t, cacheDirOf(dir, b)) != 1 {
		t.Fatal("b's code went although b was loaded again after Prune")
	}
}

// TestFootprint: the estimate grows with the module's code, and a tiny
// module costs the fixed overhead.
func TestFootprint(t *testing.T) {
	tiny := fixture(t, "hostile/count.wasm")
	goTool, err := os.ReadFile(filepath.Join("..", "..", "tools", "textkit", "textkit.wasm"))
	if err != nil {
		t.Fatal(err)
	}
	if got := Footprint(tiny); got < footprintBase || got > footprintBase+8<<10 {
		t.Errorf("Footprint(count.wasm) = %d, want about %d", got, footprintBase)
	}
	if got := Footprint(goTool); got < 8*int64(len(goTool))/2 {
		t.Errorf("Footprint(textkit.wasm) = %d for %d bytes with 2 MB of code", got, len(goTool))
	}
}

// BenchmarkFootprint measures what a loaded module keeps resident, per
// module, against Footprint's estimate: n distinct variants of a tiny
// module (count.wasm, 461 bytes) and of a Go-built one (textkit.wasm,
// 3.3 MB), each loaded into an engine with an on-disk cache:
//
//	go test -run '^$' -bench Footprint -benchtime 1x ./runtime/sandbox
//
// rss-KiB is the process's resident set growth, heap-KiB the Go heap's,
// after a GC with the memory returned to the OS.
func BenchmarkFootprint(b *testing.B) {
	goTool, err := os.ReadFile(filepath.Join("..", "..", "tools", "textkit", "textkit.wasm"))
	if err != nil {
		b.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		wasm []byte
		n    int
	}{
		{"tiny", fixture(b, "hostile/count.wasm"), 300},
		{"go", goTool, 8},
	} {
		b.Run(tc.name, func(b *testing.B) {
			ctx := context.Background()
			g := Grants{WASI: &WASI{Clock: true, Random: true}, Log: true}
			for b.Loop() {
				e, err := NewEngine(Options{CacheDir: b.TempDir()})
				if err != nil {
					b.Fatal(err)
				}
				rss0, heap0 := resident()
				var mods []*Module
				for i := range tc.n {
					m, err := e.Load(ctx, variant(tc.wasm, i), g)
					if err != nil {
						b.Fatal(err)
					}
					mods = append(mods, m)
				}
				rss1, heap1 := resident()
				per := func(v0, v1 int64) float64 { return float64(v1-v0) / float64(tc.n) / 1024 }
				b.ReportMetric(per(rss0, rss1), "rss-KiB/module")
				b.ReportMetric(per(heap0, heap1), "heap-KiB/module")
				b.ReportMetric(float64(mods[0].Footprint())/1024, "estimate-KiB/module")
				for _, m := range mods {
					m.Close(ctx)
				}
				e.Close(ctx)
			}
		})
	}
}

// resident returns the process's resident set and the Go heap in use, in
// bytes, after a garbage collection that returns free memory to the OS.
func resident() (rss, heap int64) {
	debug.FreeOSMemory()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	statm, err := os.ReadFile("/proc/self/statm")
	if err != nil {
		return 0, int64(ms.HeapInuse)
	}
	var size, pages int64
	fmt.Sscan(string(statm), &size, &pages)
	return pages * int64(os.Getpagesize()), int64(ms.HeapInuse)
}

// TestCloseWaitsForLoads: Close never closes the compilation cache under a
// load in progress (wazero would crash the process): with ctx ending
// first it returns an error and leaves the engine usable by that load; no
// load starts after it; once the loads are done (and their modules
// closed), it closes.
func TestCloseWaitsForLoads(t *testing.T) {
	e, err := NewEngine(Options{CacheDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	loading, release := make(chan struct{}), make(chan struct{})
	e.testHookLoading = func() { close(loading); <-release }
	type result struct {
		m   *Module
		err error
	}
	loaded := make(chan result, 1)
	go func() {
		m, err := e.Load(context.Background(), fixture(t, "hostile/count.wasm"), Grants{})
		loaded <- result{m, err}
	}()
	<-loading
	e.testHookLoading = nil

	expired, cancel := context.WithCancel(context.Background())
	cancel()
	if err := e.Close(expired); !errs.Is(err, errs.Unavailable) {
		t.Fatalf("Close with a load in progress and an ended context: %v, want unavailable", err)
	}
	if _, err := e.Load(context.Background(), fixture(t, "hostile/count.wasm"), Grants{}); !errs.Is(err, errs.Unavailable) {
		t.Fatalf("Load after Close: %v, want unavailable", err)
	}
	close(release)
	r := <-loaded
	if r.err != nil {
		t.Fatalf("the load in progress at Close: %v", r.err)
	}
	ctx := context.Background()
	if res, err := r.m.Call(ctx, "count_vowels", []byte("aaa")); err != nil || string(res.Output) != `{"count": 3}` {
		t.Fatalf("calling the module loaded during Close: %v", err)
	}
	r.m.Close(ctx)
	if err := e.Close(ctx); err != nil {
		t.Fatalf("Close once the load is done: %v", err)
	}
}
