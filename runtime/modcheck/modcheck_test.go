package modcheck

import (
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/contractual/contractual/contracts/contract"
	"github.com/contractual/contractual/internal/errs"
	"github.com/contractual/contractual/runtime/egress"
	"github.com/contractual/contractual/runtime/wasmbin"
)

// module encodes a module with one function type, () -> (), and imports,
// each of its kind with the smallest descriptor.
func module(imports ...wasmbin.Import) []byte {
	var sec []byte
	sec = uleb(sec, uint64(len(imports)))
	for _, imp := range imports {
		sec = name(sec, imp.Module)
		sec = name(sec, imp.Name)
		sec = append(sec, byte(imp.Kind))
		switch imp.Kind {
		case wasmbin.KindFunc:
			sec = append(sec, 0x00) // type 0
		case wasmbin.KindTable:
			sec = append(sec, 0x70, 0x00, 0x00) // funcref, min 0
		case wasmbin.KindMemory:
			sec = append(sec, 0x00, 0x01) // min 1 page
		case wasmbin.KindGlobal:
			sec = append(sec, 0x7f, 0x00) // const i32
		}
	}
	wasm := []byte("\x00asm\x01\x00\x00\x00" + "\x01\x04\x01\x60\x00\x00")
	wasm = append(wasm, 0x02)
	wasm = uleb(wasm, uint64(len(sec)))
	return append(wasm, sec...)
}

func name(b []byte, s string) []byte { return append(uleb(b, uint64(len(s))), s...) }

func uleb(b []byte, v uint64) []byte {
	for {
		c := byte(v & 0x7f)
		if v >>= 7; v == 0 {
			return append(b, c)
		}
		b = append(b, c|0x80)
	}
}

func fn(mod, name string) wasmbin.Import {
	return wasmbin.Import{Module: mod, Name: name, Kind: wasmbin.KindFunc}
}

// wantErr fails unless err is of kind k and its text holds every part.
func wantErr(t *testing.T, err error, k errs.Kind, parts ...string) {
	t.Helper()
	if err == nil {
		t.Fatalf("got no error, want %v error containing %q", k, parts)
	}
	if got := errs.KindOf(err); got != k {
		t.Fatalf("error kind = %v, want %v (error: %v)", got, k, err)
	}
	for _, p := range parts {
		if !strings.Contains(err.Error(), p) {
			t.Fatalf("error %q does not contain %q", err, p)
		}
	}
}

var (
	httpRules = []egress.Rule{{Scheme: "https", Host: "example.com"}}
	all       = Grants{HTTP: httpRules, Log: true, WASI: &WASI{Clock: true, Random: true}}
)

// TestCheckImports: every import must be granted; a refusal names each
// import that is not, and why.
func TestCheckImports(t *testing.T) {
	kernel := []wasmbin.Import{fn(ExtismEnv, "alloc"), fn(ExtismEnv, "input_length"), fn(ExtismEnv, "output_set"),
		fn(ExtismEnv, "config_get"), fn(WASIPreview1, "fd_write")}
	for _, tt := range []struct {
		name    string
		imports []wasmbin.Import
		g       Grants
		want    []string // nil: granted
	}{
		{"nothing", nil, Grants{}, nil},
		{"kernel and config", kernel[:4], Grants{}, nil},
		{"everything granted", append(kernel, fn(ExtismEnv, "log_info"), fn(ExtismEnv, "http_request"),
			fn(WASIPreview1, "clock_time_get"), fn(WASIPreview1, "random_get")), all, nil},
		{"log", []wasmbin.Import{fn(ExtismEnv, "log_warn")}, Grants{HTTP: httpRules},
			[]string{"extism:host/env.log_warn (the contract does not grant log)"}},
		{"http", []wasmbin.Import{fn(ExtismEnv, "http_request")}, Grants{Log: true},
			[]string{"extism:host/env.http_request (the contract grants no http egress)"}},
		{"wasi", kernel, Grants{}, []string{"wasi_snapshot_preview1.fd_write (the contract does not grant wasi)"}},
		{"clock", []wasmbin.Import{fn(WASIPreview1, "clock_time_get")}, Grants{WASI: &WASI{Random: true}},
			[]string{"clock_time_get (the contract does not grant wasi.clock)"}},
		{"random", []wasmbin.Import{fn(WASIPreview1, "random_get")}, Grants{WASI: &WASI{Clock: true}},
			[]string{"random_get (the contract does not grant wasi.random)"}},
		{"unknown host function", []wasmbin.Import{fn(ExtismEnv, "system")}, all,
			[]string{"extism:host/env.system (not an Extism host function)"}},
		{"other namespace", []wasmbin.Import{fn("env", "system")}, all,
			[]string{"env.system (no contract can grant this namespace)"}},
		{"the meter's tick", []wasmbin.Import{fn(MeterEnv, "tick")}, all,
			[]string{"contractual:host/meter.tick (no contract can grant this namespace)"}},
		{"a memory", []wasmbin.Import{{Module: ExtismEnv, Name: "memory", Kind: wasmbin.KindMemory}}, all,
			[]string{"a memory import; only functions can be granted"}},
		{"every one named", []wasmbin.Import{fn("env", "a"), fn(ExtismEnv, "alloc"), fn(ExtismEnv, "log_info")}, Grants{},
			[]string{"2 functions the contract does not grant", "env.a (", "log_info (", "; "}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			err := CheckImports(module(tt.imports...), tt.g)
			if tt.want == nil {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				return
			}
			wantErr(t, err, errs.PermissionDenied, tt.want...)
			// Check refuses it for the same reason.
			wantErr(t, Check(module(tt.imports...), tt.g), errs.PermissionDenied, tt.want...)
		})
	}
	wantErr(t, CheckImports([]byte("not wasm"), all), errs.Invalid, "reading the module's imports")
}

// TestCheck: Check refuses a module over the size limit and one the meter
// cannot instrument, as Load would, and passes one it can.
func TestCheck(t *testing.T) {
	if err := Check(module(fn(ExtismEnv, "alloc")), Grants{}); err != nil {
		t.Fatalf("a module that imports a kernel function: %v", err)
	}
	huge := append(module(), make([]byte, MaxModuleBytes)...)
	wantErr(t, Check(huge, all), errs.Invalid, "over the 67108864 byte limit")

	// A module whose only function body uses return_call (tail calls, not
	// enabled): type () -> (), one function, code: return_call 0, end. It
	// imports nothing, so only the meter refuses it.
	tail := []byte("\x00asm\x01\x00\x00\x00" +
		"\x01\x04\x01\x60\x00\x00" + // type section
		"\x03\x02\x01\x00" + // function section
		"\x0a\x06\x01\x04\x00\x12\x00\x0b") // code section
	if err := CheckImports(tail, Grants{}); err != nil {
		t.Fatalf("CheckImports: %v", err)
	}
	wantErr(t, Check(tail, Grants{}), errs.Invalid, "a feature the sandbox does not run", "unsupported")
}

// TestMeter: the metered module imports the meter's tick, which no module
// may import itself.
func TestMeter(t *testing.T) {
	out, err := Meter(module(fn(ExtismEnv, "alloc")), DefaultLimits)
	if err != nil {
		t.Fatal(err)
	}
	imports, err := wasmbin.Imports(out)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"extism:host/env.alloc", "contractual:host/meter.tick"}
	var got []string
	for _, imp := range imports {
		got = append(got, imp.String())
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("metered module imports %q, want %q", got, want)
	}
	wantErr(t, CheckImports(out, all), errs.PermissionDenied, "contractual:host/meter.tick")
}

// TestStackBudget: the stack share follows memory_mib, and the linear
// memory gets the rest.
func TestStackBudget(t *testing.T) {
	for _, tt := range []struct {
		mib         uint64
		stack       uint64
		memoryPages uint32
	}{
		{1, 256 << 10, 12},
		{16, 2 << 20, 224},
		{64, 8 << 20, 896},
		{1024, 8 << 20, 16256},
	} {
		l := Limits{MemoryBytes: tt.mib << 20}
		if got := l.StackBytes(); got != tt.stack {
			t.Errorf("%d MiB: stack %d, want %d", tt.mib, got, tt.stack)
		}
		if got := l.MemoryPages(); got != tt.memoryPages {
			t.Errorf("%d MiB: %d memory pages, want %d", tt.mib, got, tt.memoryPages)
		}
	}
}

// TestGrantsFor maps a contract that states every capability, and one
// that states none.
func TestGrantsFor(t *testing.T) {
	c, err := contract.Load([]byte(`
module: sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef
name: weather
version: 1.0.0
publisher: alice@example.com
tools:
  - export: forecast
    description: Fetch the forecast for a city
    risk: low
    input_schema: {type: object}
capabilities:
  http:
    - scheme: https
      host: api.open-meteo.com
      port: 8443
      path_prefix: /v1/
      methods: [GET, POST]
      secrets:
        - {name: OPENMETEO_KEY, header: Authorization, format: "Bearer {{secret}}"}
  config: {units: metric}
  log: {}
  wasi: {clock: true}
limits: {memory_mib: 32, timeout_ms: 2000, output_bytes: 65536, http_requests: 4, http_response_bytes: 4096,
  log_bytes: 1024, stdio_bytes: 2048, host_calls: 99}
`), "weather.yaml")
	if err != nil {
		t.Fatal(err)
	}
	want := Grants{
		HTTP: []egress.Rule{{Scheme: "https", Host: "api.open-meteo.com", Port: 8443, PathPrefix: "/v1/", Methods: []string{"GET", "POST"},
			Secrets: []egress.SecretSpec{{Name: "OPENMETEO_KEY", Header: "Authorization", Format: "Bearer {{secret}}"}}}},
		Config: map[string]string{"units": "metric"},
		Log:    true,
		WASI:   &WASI{Clock: true},
		Limits: Limits{MemoryBytes: 32 << 20, Timeout: 2 * time.Second, OutputBytes: 65536, HTTPRequests: 4,
			HTTPResponseBytes: 4096, LogBytes: 1024, StdioBytes: 2048, HostCalls: 99},
	}
	if got := GrantsFor(c); !reflect.DeepEqual(got, want) {
		t.Errorf("GrantsFor:\n got %+v\nwant %+v", got, want)
	}
	c.Capabilities, c.Limits = nil, nil
	if got := GrantsFor(c); !reflect.DeepEqual(got, Grants{}) {
		t.Errorf("GrantsFor of a contract that states nothing = %+v, want the zero Grants", got)
	}
	if got := (Limits{}).WithDefaults(); got != DefaultLimits {
		t.Errorf("zero Limits with defaults = %+v, want %+v", got, DefaultLimits)
	}
}
