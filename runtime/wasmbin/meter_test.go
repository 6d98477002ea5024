package wasmbin

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/api"
)

// errStackTick is what the test's tick panics with when the guest runs out
// of stack budget.
var errStackTick = errors.New("stack budget exhausted")

// ticker is the test's tick host function: it counts fuel ticks and
// refuels with fuel; a stack tick ends the call.
type ticker struct {
	fuel  int32
	ticks int
}

// meterRuntime returns a runtime with the env module features.wasm imports
// and the tick function under module "meter".
func meterRuntime(t testing.TB, tk *ticker, cfg wazero.RuntimeConfig) wazero.Runtime {
	t.Helper()
	ctx := context.Background()
	rt := wazero.NewRuntimeWithConfig(ctx, cfg)
	t.Cleanup(func() { rt.Close(ctx) })
	_, err := rt.NewHostModuleBuilder("meter").NewFunctionBuilder().
		WithGoModuleFunction(api.GoModuleFunc(func(_ context.Context, _ api.Module, s []uint64) {
			if int32(s[0]) == TickStack {
				panic(errStackTick)
			}
			tk.ticks++
			s[0] = uint64(tk.fuel)
		}), []api.ValueType{api.ValueTypeI32}, []api.ValueType{api.ValueTypeI32}).
		Export("tick").Instantiate(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := rt.InstantiateWithConfig(ctx, readTestdata(t, "env.wasm"), wazero.NewModuleConfig().WithName("env")); err != nil {
		t.Fatal(err)
	}
	return rt
}

func readTestdata(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func meterCfg(fuel, stack int32) Metering {
	return Metering{Module: "meter", Name: "tick", Fuel: fuel, Stack: stack}
}

// run instantiates wasm in rt and calls export.
func run(t testing.TB, rt wazero.Runtime, wasm []byte, export string, params ...uint64) ([]uint64, api.Module, error) {
	t.Helper()
	ctx := context.Background()
	mod, err := rt.InstantiateWithConfig(ctx, wasm, wazero.NewModuleConfig().WithName(""))
	if err != nil {
		t.Fatalf("instantiating: %v", err)
	}
	res, err := mod.ExportedFunction(export).Call(ctx, params...)
	return res, mod, err
}

// TestMeterFeatures runs every export of features.wasm metered and
// unmetered: the results agree with each other and with what the module
// computes, with a fuel so small that every check ticks.
func TestMeterFeatures(t *testing.T) {
	wasm := readTestdata(t, "features.wasm")
	metered, err := Meter(wasm, meterCfg(1, 1<<30))
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]uint64{
		"loops":    1010,
		"indirect": 14 + 21 + 10 + 120 + 720,
		"tables":   20 + 11 + 81 + 27 + 8 + 0 + 16,
		"globals":  42 + 5,
		"bulk":     0x0807_0909_0403_0201, // + i32 (memory.size 1 + trunc_sat 0xffffffff) = 0
		"simd":     0x0000_000e_0000_000d,
		"signext":  api.EncodeI64(-1 - 0x8000),
		"calls":    3628800 + 2,
	}
	tk := &ticker{fuel: 1}
	rt := meterRuntime(t, tk, wazero.NewRuntimeConfig())
	for export, w := range want {
		got, _, err := run(t, rt, wasm, export)
		if err != nil || got[0] != w {
			t.Errorf("%s unmetered: %v, %v; want %#x", export, got, err, w)
		}
		tk.ticks = 0
		got, _, err = run(t, rt, metered, export)
		if err != nil || got[0] != w {
			t.Errorf("%s metered: %v, %v; want %#x", export, got, err, w)
		}
		if tk.ticks == 0 {
			t.Errorf("%s never ticked with a fuel of 1", export)
		}
	}
}

// TestMeterTicks: with a fuel of 1 every check ticks, so the ticks count
// the checks: one at each function entry and one per loop iteration (the
// start function, then the loops export, which iterates 30 times and calls
// nothing). With fuel to spare, nothing ticks.
func TestMeterTicks(t *testing.T) {
	wasm := readTestdata(t, "features.wasm")
	for _, tt := range []struct {
		fuel  int32
		ticks int
	}{{1, 32}, {1 << 30, 0}} {
		metered, err := Meter(wasm, meterCfg(tt.fuel, 1<<30))
		if err != nil {
			t.Fatal(err)
		}
		tk := &ticker{fuel: tt.fuel}
		rt := meterRuntime(t, tk, wazero.NewRuntimeConfig())
		if _, _, err := run(t, rt, metered, "loops"); err != nil {
			t.Fatal(err)
		}
		if tk.ticks != tt.ticks {
			t.Errorf("fuel %d: %d ticks, want %d", tt.fuel, tk.ticks, tt.ticks)
		}
	}
}

// TestMeterStackBudget: a recursion stops at the call that would take the
// budget below zero, and the budget is refunded as calls return.
func TestMeterStackBudget(t *testing.T) {
	wasm := readTestdata(t, "features.wasm")
	frame := FrameSize(1, 1, 0) // $rec and $fact: (i32) -> i32, no locals
	metered, err := Meter(wasm, meterCfg(1<<20, 10*frame))
	if err != nil {
		t.Fatal(err)
	}
	rt := meterRuntime(t, &ticker{fuel: 1 << 20}, wazero.NewRuntimeConfig())
	_, mod, err := run(t, rt, metered, "deep")
	if !errors.Is(err, errStackTick) {
		t.Fatalf("deep: %v, want the stack tick", err)
	}
	if d := mod.ExportedGlobal("depth").Get(); d != 10 {
		t.Errorf("deep recursed %d times on a budget of 10 frames", d)
	}
	// fact(10) nests 10 frames: exactly the budget, again and again.
	ctx := context.Background()
	mod, err = rt.InstantiateWithConfig(ctx, metered, wazero.NewModuleConfig().WithName(""))
	if err != nil {
		t.Fatal(err)
	}
	for range 3 {
		if got, err := mod.ExportedFunction("calls").Call(ctx); err != nil || got[0] != 3628802 {
			t.Fatalf("calls: %v, %v", got, err)
		}
	}
}

// TestMeterRenumbers checks the metered module's imports, exports and
// function names: the tick import comes after the module's own, and every
// function defined by the module moved up by one.
func TestMeterRenumbers(t *testing.T) {
	wasm := readTestdata(t, "features.wasm")
	metered, err := Meter(wasm, meterCfg(100, 1000))
	if err != nil {
		t.Fatal(err)
	}
	imports, err := Imports(metered)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, imp := range imports {
		names = append(names, imp.String()+":"+imp.Kind.String())
	}
	if want := []string{"env.add1:func", "env.g0:global", "meter.tick:func"}; !slices.Equal(names, want) {
		t.Errorf("imports %v, want %v", names, want)
	}
	before, _ := Exports(wasm)
	after, err := Exports(metered)
	if err != nil {
		t.Fatal(err)
	}
	for i := range before {
		if before[i].Kind == KindFunc {
			before[i].Index++
		}
	}
	if !slices.Equal(before, after) {
		t.Errorf("exports %v, want %v", after, before)
	}
	orig, new := functionNames(t, wasm), functionNames(t, metered)
	if orig["add1"] != 0 || new["add1"] != 0 {
		t.Errorf("add1 at %d, then %d; want 0", orig["add1"], new["add1"])
	}
	for _, name := range []string{"double", "fact", "rec"} {
		if new[name] != orig[name]+1 {
			t.Errorf("%s at %d, then %d", name, orig[name], new[name])
		}
	}
}

// functionNames reads the function names of a module's name section.
func functionNames(t *testing.T, wasm []byte) map[string]uint32 {
	t.Helper()
	m, err := parseModule(wasm)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range m.sections {
		r := reader{b: s.body}
		if n, _ := r.name(); s.id != secCustom || n != "name" {
			continue
		}
		for r.off < len(r.b) {
			id, _ := r.byte()
			size, _ := r.u32()
			body, err := r.bytes(int(size))
			if err != nil {
				t.Fatal(err)
			}
			if id != 1 {
				continue
			}
			br := reader{b: body}
			n, _ := br.u32()
			out := map[string]uint32{}
			for range n {
				idx, _ := br.u32()
				name, err := br.name()
				if err != nil {
					t.Fatal(err)
				}
				out[name] = idx
			}
			return out
		}
	}
	t.Fatal("no function names")
	return nil
}

// corpus lists real modules: the sandbox's hostile fixtures, the repo's
// tools, the go-sdk's test plugins, and features.wasm.
func corpus(t *testing.T) []string {
	t.Helper()
	var files []string
	for _, glob := range []string{
		"testdata/*.wasm",
		"../sandbox/testdata/hostile/*.wasm",
		"../../tools/*/*.wasm",
	} {
		m, err := filepath.Glob(glob)
		if err != nil {
			t.Fatal(err)
		}
		files = append(files, m...)
	}
	out, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", "github.com/extism/go-sdk").Output()
	if err != nil {
		t.Fatalf("locating the go-sdk module: %v", err)
	}
	sdk, _ := filepath.Glob(filepath.Join(strings.TrimSpace(string(out)), "wasm", "*.wasm"))
	if len(sdk) == 0 {
		t.Fatal("no go-sdk plugins")
	}
	return append(files, sdk...)
}

// TestMeterCorpus: every real module wazero accepts is accepted metered,
// with the same exports of the same types and one more import.
func TestMeterCorpus(t *testing.T) {
	ctx := context.Background()
	// The interpreter validates exactly as the compiler does, faster.
	rt := wazero.NewRuntimeWithConfig(ctx, wazero.NewRuntimeConfigInterpreter())
	defer rt.Close(ctx)
	for _, file := range corpus(t) {
		t.Run(filepath.Base(file), func(t *testing.T) {
			wasm, err := os.ReadFile(file)
			if err != nil {
				t.Fatal(err)
			}
			orig, err := rt.CompileModule(ctx, wasm)
			if err != nil {
				t.Skipf("wazero refuses the module itself: %v", err)
			}
			metered, err := Meter(wasm, meterCfg(1<<15, 1<<21))
			if err != nil {
				t.Fatalf("Meter: %v", err)
			}
			cm, err := rt.CompileModule(ctx, metered)
			if err != nil {
				t.Fatalf("wazero refuses the metered module: %v", err)
			}
			if got, want := len(cm.ImportedFunctions()), len(orig.ImportedFunctions())+1; got != want {
				t.Errorf("%d imported functions, want %d", got, want)
			}
			if got, want := signatures(cm.ExportedFunctions()), signatures(orig.ExportedFunctions()); got != want {
				t.Errorf("exports %s, want %s", got, want)
			}
		})
	}
}

func signatures(defs map[string]api.FunctionDefinition) string {
	var out []string
	for name, d := range defs {
		out = append(out, fmt.Sprintf("%s%v%v", name, d.ParamTypes(), d.ResultTypes()))
	}
	slices.Sort(out)
	return strings.Join(out, " ")
}

// TestMeterRefuses: Meter fails closed on what it cannot read.
func TestMeterRefuses(t *testing.T) {
	header := concat(magic, version)
	types := section(1, 1, 0x60, 0, 0)
	funcs := section(3, 1, 0)
	body := func(code ...byte) []byte {
		b := append([]byte{0}, code...) // no locals
		return section(10, append([]byte{1, byte(len(b))}, b...)...)
	}
	tests := []struct {
		name string
		wasm []byte
		want error
	}{
		{"return_call", concat(header, types, funcs, body(0x12, 0, 0x0b)), ErrUnsupported},
		{"try", concat(header, types, funcs, body(0x06, 0x40, 0x0b, 0x0b)), ErrUnsupported},
		{"atomics", concat(header, types, funcs, body(0xfe, 0x03, 0x00, 0x0b)), ErrUnsupported},
		{"relaxed simd", concat(header, types, funcs, body(0xfd, 0x80, 0x02, 0x0b)), ErrUnsupported},
		{"unassigned simd", concat(header, types, funcs, body(0xfd, 0x9a, 0x01, 0x0b)), ErrUnsupported},
		{"multi-memory load", concat(header, types, funcs, body(0x41, 0, 0x28, 0x42, 0, 0, 0x1a, 0x0b)), ErrUnsupported},
		{"tag section", concat(header, section(13, 0)), ErrUnsupported},
		{"no end", concat(header, types, funcs, body(0x01)), ErrMalformed},
		{"code after end", concat(header, types, funcs, body(0x0b, 0x01)), ErrMalformed},
		{"bodies missing", concat(header, types, funcs), ErrMalformed},
		{"truncated immediate", concat(header, types, funcs, body(0x41)), ErrMalformed},
		{"sections out of order", concat(header, funcs, types), ErrMalformed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := Meter(tt.wasm, meterCfg(10, 10)); !errors.Is(err, tt.want) {
				t.Errorf("Meter: %v, want %v", err, tt.want)
			}
		})
	}
}

// TestMeterGenerated and FuzzMeter run generated modules (calls, indirect
// calls through every element segment encoding, bounded loops, br_table,
// traps) metered and unmetered, and compare every result.
func TestMeterGenerated(t *testing.T) {
	for seed := range uint64(200) {
		checkGenerated(t, seed, int32(seed%7)+1)
	}
}

func FuzzMeter(f *testing.F) {
	f.Add(uint64(1), int32(1))
	f.Add(uint64(2), int32(1000))
	f.Fuzz(func(t *testing.T, seed uint64, fuel int32) {
		checkGenerated(t, seed, max(fuel, 1))
	})
}

func checkGenerated(t *testing.T, seed uint64, fuel int32) {
	t.Helper()
	wasm := generate(seed)
	metered, err := Meter(wasm, meterCfg(fuel, 1<<30))
	if err != nil {
		t.Fatalf("seed %d: Meter: %v", seed, err)
	}
	ctx := context.Background()
	rt := meterRuntime(t, &ticker{fuel: fuel}, wazero.NewRuntimeConfig())
	orig, err := rt.InstantiateWithConfig(ctx, wasm, wazero.NewModuleConfig().WithName(""))
	if err != nil {
		t.Fatalf("seed %d: the generated module is invalid: %v", seed, err)
	}
	met, err := rt.InstantiateWithConfig(ctx, metered, wazero.NewModuleConfig().WithName(""))
	if err != nil {
		t.Fatalf("seed %d: the metered module is refused: %v", seed, err)
	}
	for name := range orig.ExportedFunctionDefinitions() {
		for _, in := range []uint64{0, 1, 7, api.EncodeI32(-3)} {
			want, werr := orig.ExportedFunction(name).Call(ctx, in)
			got, gerr := met.ExportedFunction(name).Call(ctx, in)
			if !slices.Equal(got, want) || firstLine(werr) != firstLine(gerr) {
				t.Fatalf("seed %d, %s(%d): metered %v, %v; unmetered %v, %v", seed, name, in, got, gerr, want, werr)
			}
		}
	}
}

func firstLine(err error) string {
	if err == nil {
		return ""
	}
	s, _, _ := strings.Cut(err.Error(), "\n")
	return s
}

// generator builds a random valid module of functions (i32) -> i32 that
// import env.add1, call only functions after themselves (so every call
// ends), and fill a table through element segments of random encodings.
type generator struct {
	r     *rand.Rand
	funcs int // defined functions; function 0 is the import
}

func generate(seed uint64) []byte {
	g := &generator{r: rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)), funcs: 1 + int(seed%6)}
	total := g.funcs + 1
	u := func(v int) []byte { return binary.AppendUvarint(nil, uint64(v)) }
	types := section(1, 1, 0x60, 1, 0x7f, 1, 0x7f)
	imports := section(2, concat([]byte{1}, name("env"), name("add1"), []byte{0x00, 0})...)
	fsec := []byte{byte(g.funcs)}
	for range g.funcs {
		fsec = append(fsec, 0)
	}
	table := section(4, concat([]byte{1, 0x70, 0x00}, u(total))...)
	// A global initialized with a reference to the last function.
	global := section(6, concat([]byte{1, 0x70, 0x00, 0xd2}, u(g.funcs), []byte{0x0b})...)
	var exports []byte
	for i := 1; i <= g.funcs; i++ {
		exports = concat(exports, name(fmt.Sprint("f", i)), []byte{0x00}, u(i))
	}
	exports = concat(u(g.funcs), exports)
	// Element segments: table slot k holds function k, written by an active
	// segment of a random encoding; plus a passive and a declarative one.
	offset := []byte{0x41, 0, 0x0b}
	idxs, exprs := u(total), u(total)
	for k := range total {
		idxs = concat(idxs, u(k))
		exprs = concat(exprs, []byte{0xd2}, u(k), []byte{0x0b})
	}
	var active []byte
	switch g.r.IntN(4) {
	case 0:
		active = concat([]byte{0}, offset, idxs)
	case 1:
		active = concat([]byte{2, 0}, offset, []byte{0x00}, idxs)
	case 2:
		active = concat([]byte{4}, offset, exprs)
	case 3:
		active = concat([]byte{6, 0}, offset, []byte{0x70}, exprs)
	}
	passive := [][]byte{concat([]byte{1, 0x00}, idxs), concat([]byte{5, 0x70}, exprs)}[g.r.IntN(2)]
	declare := [][]byte{concat([]byte{3, 0x00}, idxs), concat([]byte{7, 0x70}, exprs)}[g.r.IntN(2)]
	elems := section(9, concat([]byte{3}, active, passive, declare)...)
	code := []byte{byte(g.funcs)}
	for i := 1; i <= g.funcs; i++ {
		body := concat([]byte{1, 1, 0x7f}, g.expr(i, 3, false), []byte{0x0b}) // one i32 local
		code = concat(code, u(len(body)), body)
	}
	return concat(magic, version, types, imports, section(3, fsec...), table, global,
		section(7, exports...), elems, section(10, code...))
}

// expr returns code that pushes one i32, in function fn.
func (g *generator) expr(fn, depth int, inLoop bool) []byte {
	u := func(v int) []byte { return binary.AppendUvarint(nil, uint64(v)) }
	later := g.funcs - fn // functions after fn
	choice := g.r.IntN(10)
	if depth == 0 {
		choice = g.r.IntN(2)
	}
	switch choice {
	case 0:
		return appendSLEB([]byte{0x41}, int64(g.r.Int32N(1000)-500))
	case 1:
		return []byte{0x20, byte(g.r.IntN(2))} // local.get 0 or 1
	case 2, 3:
		ops := []byte{0x6a, 0x6b, 0x6c, 0x71, 0x72, 0x73, 0x74, 0x76, 0x77, 0x6e} // ... div_u traps on 0
		return concat(g.expr(fn, depth-1, inLoop), g.expr(fn, depth-1, inLoop), []byte{ops[g.r.IntN(len(ops))]})
	case 4: // call a later function, or the import
		if inLoop {
			break
		}
		callee := 0
		if later > 0 && g.r.IntN(4) > 0 {
			callee = fn + 1 + g.r.IntN(later)
		}
		return concat(g.expr(fn, depth-1, inLoop), []byte{0x10}, u(callee))
	case 5: // call_indirect through the table slot of a later function
		if inLoop || later == 0 {
			break
		}
		slot := fn + 1 + g.r.IntN(later)
		return concat(g.expr(fn, depth-1, inLoop), []byte{0x41}, u(slot), []byte{0x11, 0, 0})
	case 6: // if/else with a result
		return concat(g.expr(fn, depth-1, inLoop), []byte{0x04, 0x7f}, g.expr(fn, depth-1, inLoop),
			[]byte{0x05}, g.expr(fn, depth-1, inLoop), []byte{0x0b})
	case 7: // a bounded loop adding to local 0, then local 0
		if inLoop {
			break
		}
		n := 1 + g.r.IntN(50)
		return concat([]byte{0x41}, u(n), []byte{0x21, 1, 0x03, 0x40, // local.set 1, loop
			0x20, 0}, g.expr(fn, 1, true), []byte{0x6a, 0x21, 0, // local 0 += expr
			0x20, 1, 0x41, 1, 0x6b, 0x22, 1, 0x0d, 0, 0x0b, // local 1 -= 1, br_if 0, end
			0x20, 0})
	case 8: // br_table out of two blocks: local 1 = expr only for selector 0
		if inLoop { // local 1 is the loop's counter
			break
		}
		return concat([]byte{0x02, 0x40, 0x02, 0x40}, g.expr(fn, depth-1, inLoop),
			[]byte{0x41, 3, 0x70, 0x0e, 2, 0, 1, 1, 0x0b}, g.expr(fn, depth-1, inLoop),
			[]byte{0x21, 1, 0x0b, 0x20, 1})
	case 9: // a block left early with br_if and a value
		return concat([]byte{0x02, 0x7f}, g.expr(fn, depth-1, inLoop), g.expr(fn, depth-1, inLoop),
			[]byte{0x0d, 0}, g.expr(fn, depth-1, inLoop), []byte{0x6a, 0x0b})
	}
	return []byte{0x20, 0}
}

// BenchmarkMeterRewrite measures Meter itself on a 3 MB Go-built tool, and
// the growth of the module:
//
//	go test -run '^$' -bench MeterRewrite ./runtime/wasmbin
func BenchmarkMeterRewrite(b *testing.B) {
	wasm, err := os.ReadFile("../../tools/textkit/textkit.wasm")
	if err != nil {
		b.Fatal(err)
	}
	var out []byte
	for b.Loop() {
		if out, err = Meter(wasm, meterCfg(1<<15, 1<<21)); err != nil {
			b.Fatal(err)
		}
	}
	b.SetBytes(int64(len(wasm)))
	b.ReportMetric(float64(len(out))/float64(len(wasm)), "size-ratio")
}
