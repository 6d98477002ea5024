package sandbox

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"runtime/debug"
	"slices"
	"testing"
	"time"

	extism "github.com/extism/go-sdk"
	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/api"

	"github.com/contractual/contractual/internal/errs"
	"github.com/contractual/contractual/runtime/egress"
	"github.com/contractual/contractual/runtime/modcheck"
)

// The benchmarks report each figure next to a baseline measured in the same
// run, interleaved call by call so that machine noise hits both alike:
//
//	go test -run '^$' -bench . -benchtime 2000x ./runtime/sandbox
//
// p50 figures are in microseconds; ratios are sandbox / baseline.

var countInput = []byte("the quick brown fox jumps over the lazy dog")

// bareHost is the least host the count fixture needs: its five kernel
// imports over a plain byte slice, with no limits, no pooling and no
// interruption. It is the "bare wazero instantiate + call" baseline.
type bareHost struct {
	input, kmem []byte
	out         [2]uint64
}

func newBareRuntime(b *testing.B, wasm []byte) (wazero.Runtime, wazero.CompiledModule, *bareHost) {
	ctx := context.Background()
	rt := wazero.NewRuntime(ctx)
	h := &bareHost{}
	env := rt.NewHostModuleBuilder(modcheck.ExtismEnv)
	def := func(name string, f api.GoModuleFunc, params, results []api.ValueType) {
		env.NewFunctionBuilder().WithGoModuleFunction(f, params, results).Export(name)
	}
	I64, I32 := api.ValueTypeI64, api.ValueTypeI32
	def("input_length", func(_ context.Context, _ api.Module, s []uint64) { s[0] = uint64(len(h.input)) }, nil, []api.ValueType{I64})
	def("input_load_u8", func(_ context.Context, _ api.Module, s []uint64) { s[0] = uint64(h.input[s[0]]) }, []api.ValueType{I64}, []api.ValueType{I32})
	def("alloc", func(_ context.Context, _ api.Module, s []uint64) {
		off := uint64(len(h.kmem))
		h.kmem = append(h.kmem, make([]byte, s[0])...)
		s[0] = off
	}, []api.ValueType{I64}, []api.ValueType{I64})
	def("store_u8", func(_ context.Context, _ api.Module, s []uint64) { h.kmem[s[0]] = byte(s[1]) }, []api.ValueType{I64, I32}, nil)
	def("output_set", func(_ context.Context, _ api.Module, s []uint64) { h.out = [2]uint64{s[0], s[1]} }, []api.ValueType{I64, I64}, nil)
	if _, err := env.Instantiate(ctx); err != nil {
		b.Fatal(err)
	}
	cm, err := rt.CompileModule(ctx, wasm)
	if err != nil {
		b.Fatal(err)
	}
	return rt, cm, h
}

func (h *bareHost) call(b *testing.B, rt wazero.Runtime, cm wazero.CompiledModule) []byte {
	ctx := context.Background()
	h.input, h.kmem = countInput, h.kmem[:0]
	mod, err := rt.InstantiateModule(ctx, cm, wazero.NewModuleConfig().WithName(""))
	if err != nil {
		b.Fatal(err)
	}
	if _, err := mod.ExportedFunction("count_vowels").Call(ctx); err != nil {
		b.Fatal(err)
	}
	out := h.kmem[h.out[0] : h.out[0]+h.out[1]]
	mod.Close(ctx)
	return out
}

// p50 returns the median of d in microseconds.
func p50(d []time.Duration) float64 {
	slices.Sort(d)
	return float64(d[len(d)/2]) / float64(time.Microsecond)
}

// BenchmarkFreshInstance measures a fresh sandboxed instance + call of a
// small, non-Go Extism tool against a bare wazero instantiate + call of the
// same module, and against the stock go-sdk with a timeout (what a user of
// the SDK gets for an interruptible call).
func BenchmarkFreshInstance(b *testing.B) {
	wasm := fixture(b, "hostile/count.wasm")
	ctx := context.Background()
	e := newEngine(b, egress.Config{})
	m := load(b, e, wasm, Grants{})
	rt, cm, host := newBareRuntime(b, wasm)
	defer rt.Close(ctx)
	sdk, err := extism.NewCompiledPlugin(ctx, extism.Manifest{
		Wasm:    []extism.Wasm{extism.WasmData{Data: wasm}},
		Timeout: 1000,
	}, extism.PluginConfig{}, nil)
	if err != nil {
		b.Fatal(err)
	}
	defer sdk.Close(ctx)

	want := `{"count": 11}`
	var sandbox, bare, gosdk []time.Duration
	b.ResetTimer()
	for range b.N {
		t0 := time.Now()
		res, err := m.Call(ctx, "count_vowels", countInput)
		t1 := time.Now()
		out := host.call(b, rt, cm)
		t2 := time.Now()
		p, err2 := sdk.Instance(ctx, extism.PluginInstanceConfig{})
		if err2 != nil {
			b.Fatal(err2)
		}
		_, sdkOut, err3 := p.CallWithContext(ctx, "count_vowels", countInput)
		p.Close(ctx)
		t3 := time.Now()
		if err != nil || err3 != nil || string(res.Output) != want || string(out) != want || string(sdkOut) != want {
			b.Fatalf("outputs %q %q %q, errors %v %v", res.Output, out, sdkOut, err, err3)
		}
		sandbox = append(sandbox, t1.Sub(t0))
		bare = append(bare, t2.Sub(t1))
		gosdk = append(gosdk, t3.Sub(t2))
	}
	b.StopTimer()
	s, bb, g := p50(sandbox), p50(bare), p50(gosdk)
	b.ReportMetric(s, "sandbox-p50-µs")
	b.ReportMetric(bb, "bare-p50-µs")
	b.ReportMetric(g, "gosdk-p50-µs")
	b.ReportMetric(s/bb, "sandbox/bare")
	b.ReportMetric(s/g, "sandbox/gosdk")
}

// BenchmarkGoTool measures a fresh instance + call of a Go-built tool (the
// Go runtime initializes in every fresh instance), next to the small tool.
func BenchmarkGoTool(b *testing.B) {
	ctx := context.Background()
	e := newEngine(b, egress.Config{})
	small := load(b, e, fixture(b, "hostile/count.wasm"), Grants{})
	goWasm, err := os.ReadFile(filepath.Join("..", "..", "tools", "textkit", "textkit.wasm"))
	if err != nil {
		b.Fatal(err)
	}
	goTool := load(b, e, goWasm, Grants{WASI: &WASI{Clock: true, Random: true}, Limits: Limits{MemoryBytes: 16 << 20}})
	input := []byte(`{"text": "Hello, Contractual World!"}`)
	var goTimes, smallTimes []time.Duration
	b.ResetTimer()
	for range b.N {
		t0 := time.Now()
		res, err := goTool.Call(ctx, "slugify", input)
		t1 := time.Now()
		if _, err2 := small.Call(ctx, "count_vowels", countInput); err != nil || err2 != nil {
			b.Fatal(err, err2)
		}
		t2 := time.Now()
		if string(res.Output) == "" {
			b.Fatal("no output")
		}
		goTimes = append(goTimes, t1.Sub(t0))
		smallTimes = append(smallTimes, t2.Sub(t1))
	}
	b.StopTimer()
	g, s := p50(goTimes), p50(smallTimes)
	b.ReportMetric(g, "go-p50-µs")
	b.ReportMetric(s, "small-p50-µs")
	b.ReportMetric(g/s, "go/small")
}

// BenchmarkRestart measures loading a 3 MB Go-built tool and making its
// first call with a cold compiler against a "restarted" engine that finds
// the module in its on-disk compilation cache.
func BenchmarkRestart(b *testing.B) {
	ctx := context.Background()
	wasm, err := os.ReadFile(filepath.Join("..", "..", "tools", "textkit", "textkit.wasm"))
	if err != nil {
		b.Fatal(err)
	}
	g := Grants{WASI: &WASI{Clock: true, Random: true}, Limits: Limits{MemoryBytes: 64 << 20}}
	input := []byte(`{"text": "restart"}`)
	first := func(dir string) time.Duration {
		start := time.Now()
		e, err := NewEngine(Options{CacheDir: dir})
		if err != nil {
			b.Fatal(err)
		}
		m, err := e.Load(ctx, wasm, g)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := m.Call(ctx, "slugify", input); err != nil {
			b.Fatal(err)
		}
		d := time.Since(start)
		m.Close(ctx)
		e.Close(ctx)
		return d
	}
	var cold, warm []time.Duration
	b.ResetTimer()
	for i := range b.N {
		dir := filepath.Join(b.TempDir(), fmt.Sprint(i))
		cold = append(cold, first(dir))
		warm = append(warm, first(dir))
	}
	b.StopTimer()
	c, w := p50(cold), p50(warm)
	b.ReportMetric(c/1000, "cold-p50-ms")
	b.ReportMetric(w/1000, "restart-p50-ms")
	b.ReportMetric(c/w, "cold/restart")
	b.ReportMetric(float64(len(wasm))/(1<<20), "module-MiB")
}

// BenchmarkTimeoutOvershoot measures how long after its timeout a guest
// that does not end stops: the call's duration minus its timeout, for an
// infinite loop and a loop-free recursion (fib(60)), reported as
// overshoot-ms/op (mean) and overshoot-max-ms next to the timeout. Tests
// assert only that such calls stop with DeadlineExceeded; this is where
// their promptness is seen. (The endless recursion of recursion.wasm ends
// on its stack budget long before any timeout: BenchmarkStackRSS.)
//
//	go test -run '^$' -bench TimeoutOvershoot -benchtime 20x ./runtime/sandbox
func BenchmarkTimeoutOvershoot(b *testing.B) {
	const timeout = 50 * time.Millisecond
	e := newEngine(b, egress.Config{})
	for _, file := range []string{"loop", "fib"} {
		b.Run(file, func(b *testing.B) {
			m := load(b, e, fixture(b, "hostile/"+file+".wasm"), Grants{Limits: Limits{Timeout: timeout}})
			var over, worst time.Duration
			for b.Loop() {
				res, err := m.Call(context.Background(), "run", nil)
				if errs.KindOf(err) != errs.DeadlineExceeded {
					b.Fatalf("%s: %v", file, err)
				}
				over += res.Duration - timeout
				worst = max(worst, res.Duration-timeout)
			}
			b.ReportMetric(float64(over)/float64(b.N)/float64(time.Millisecond), "overshoot-ms/op")
			b.ReportMetric(float64(worst)/float64(time.Millisecond), "overshoot-max-ms")
			b.ReportMetric(float64(timeout)/float64(time.Millisecond), "timeout-ms")
		})
	}
}

// meterVariants are the engines BenchmarkMeter compares, in the same run:
// the sandbox before metering (the module as it is, with wazero's own
// check at every loop back-edge, WithCloseOnContextDone), metering with
// that check kept, and metering alone (what Load does).
var meterVariants = []struct {
	name                   string
	unmetered, closeOnDone bool
}{
	{"before", true, true},
	{"metered+close", false, true},
	{"metered", false, false},
}

// BenchmarkMeter measures what metering costs a call: a tight loop (spin,
// 10^7 iterations), a call-heavy recursion (fib(25), 250,000 calls), a small
// tool (count) and a Go-built tool (textkit), each as p50 per variant and
// as the ratio to "before":
//
//	go test -run '^$' -bench Meter -benchtime 20x ./runtime/sandbox
func BenchmarkMeter(b *testing.B) {
	textkit, err := os.ReadFile(filepath.Join("..", "..", "tools", "textkit", "textkit.wasm"))
	if err != nil {
		b.Fatal(err)
	}
	goGrants := Grants{WASI: &WASI{Clock: true, Random: true}, Limits: Limits{MemoryBytes: 16 << 20}}
	long := Grants{Limits: Limits{Timeout: time.Minute}}
	for _, w := range []struct {
		name, export string
		wasm         []byte
		grants       Grants
		input        []byte
	}{
		{"spin", "run", fixture(b, "hostile/spin.wasm"), long, nil},
		{"fib", "check", fixture(b, "hostile/fib.wasm"), long, nil},
		{"count", "count_vowels", fixture(b, "hostile/count.wasm"), Grants{}, countInput},
		{"textkit", "slugify", textkit, goGrants, []byte(`{"text": "Hello, Contractual World!"}`)},
	} {
		b.Run(w.name, func(b *testing.B) {
			ctx := context.Background()
			mods := make([]*Module, len(meterVariants))
			times := make([][]time.Duration, len(meterVariants))
			for i, v := range meterVariants {
				e := newEngine(b, egress.Config{})
				e.unmetered, e.closeOnDone = v.unmetered, v.closeOnDone
				mods[i] = load(b, e, w.wasm, w.grants)
			}
			b.ResetTimer()
			for range b.N {
				for i, m := range mods {
					t0 := time.Now()
					if _, err := m.Call(ctx, w.export, w.input); err != nil {
						b.Fatalf("%s: %v", meterVariants[i].name, err)
					}
					times[i] = append(times[i], time.Since(t0))
				}
			}
			b.StopTimer()
			base := p50(times[0])
			for i, v := range meterVariants {
				p := p50(times[i])
				b.ReportMetric(p, v.name+"-p50-µs")
				if i > 0 {
					b.ReportMetric(p/base, v.name+"/before")
				}
			}
		})
	}
}

// BenchmarkTick measures how often a metered guest ticks: the call's
// duration divided by its ticks (counted by the yield hook), for a bare
// infinite loop, a tight counting loop, and a loop-free recursion. This is
// the interval at which a timeout or the scheduler can act.
//
//	go test -run '^$' -bench Tick -benchtime 10x ./runtime/sandbox
func BenchmarkTick(b *testing.B) {
	e := newEngine(b, egress.Config{})
	for _, w := range []struct{ file, export string }{
		{"loop", "run"}, {"spin", "run"}, {"fib", "run"},
	} {
		b.Run(w.file, func(b *testing.B) {
			m := load(b, e, fixture(b, "hostile/"+w.file+".wasm"), Grants{Limits: Limits{Timeout: 100 * time.Millisecond}})
			var ticks int
			var total time.Duration
			for range b.N {
				res, _ := m.Call(context.Background(), w.export, nil, withYield(func(context.Context) error {
					ticks++
					return nil
				}))
				total += res.Duration
			}
			if ticks == 0 {
				b.Fatal("no ticks")
			}
			b.ReportMetric(float64(total)/float64(ticks)/float64(time.Microsecond), "µs/tick")
			b.ReportMetric(float64(ticks)/float64(b.N), "ticks/op")
		})
	}
}

// BenchmarkStackRSS measures the peak RSS growth of one call that recurses
// without end (recursion.wasm, memory_mib 16), metered (ends on its 2 MiB
// stack budget) and before metering (ends at wazero's 50 MB stack ceiling).
//
//	go test -run '^$' -bench StackRSS -benchtime 3x ./runtime/sandbox
func BenchmarkStackRSS(b *testing.B) {
	for _, v := range []struct {
		name      string
		unmetered bool
	}{{"metered", false}, {"before", true}} {
		b.Run(v.name, func(b *testing.B) {
			e := newEngine(b, egress.Config{})
			e.unmetered, e.closeOnDone = v.unmetered, v.unmetered
			m := load(b, e, fixture(b, "hostile/recursion.wasm"), Grants{Limits: Limits{MemoryBytes: 16 << 20, Timeout: time.Minute}})
			var grew, took float64
			for range b.N {
				debug.FreeOSMemory()
				resetPeakRSS(b)
				before := rss(b, "VmRSS")
				res, err := m.Call(context.Background(), "run", nil)
				if errs.KindOf(err) != errs.ResourceExhausted {
					b.Fatalf("recursion: %v", err)
				}
				grew += float64(rss(b, "VmHWM") - before)
				took += float64(res.Duration)
			}
			b.ReportMetric(grew/float64(b.N)/(1<<20), "peak-RSS-growth-MiB")
			b.ReportMetric(took/float64(b.N)/float64(time.Millisecond), "call-ms")
		})
	}
}
