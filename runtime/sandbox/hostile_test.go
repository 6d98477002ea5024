package sandbox

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/contractual/contractual/internal/errs"
	"github.com/contractual/contractual/runtime/egress"
	"github.com/contractual/contractual/runtime/egress/egresstest"
	"github.com/contractual/contractual/runtime/secretscan"
)

// TestHostile runs each hostile fixture under a contract that grants what it
// imports, checks that it gets a clear error of the right kind, and that the
// same module still serves a well-behaved call right after.
func TestHostile(t *testing.T) {
	e := newEngine(t, egress.Config{})
	// Long enough for the well-behaved call after the loop on a loaded
	// machine; the loop's outcome, not its speed, is what is checked.
	short := Limits{Timeout: 2 * time.Second}
	tests := []struct {
		name, file, export string
		grants             Grants
		kind               errs.Kind
		want               []string
		// after is an export that must then succeed on the same module.
		after string
	}{
		{name: "infinite loop", file: "loop", export: "run", grants: Grants{Limits: short},
			kind: errs.DeadlineExceeded, want: []string{"timeout"}, after: "ok"},
		{name: "memory growth", file: "memory", export: "run", grants: Grants{Limits: Limits{MemoryBytes: 4 << 20}},
			kind: errs.ResourceExhausted, want: []string{"memory limit of 4 MiB"}, after: "ok"},
		{name: "deep recursion", file: "recursion", export: "run",
			kind: errs.ResourceExhausted, want: []string{"call stack"}, after: "ok"},
		{name: "huge output", file: "output", export: "run", grants: Grants{Limits: Limits{MemoryBytes: 128 << 20, OutputBytes: 1 << 20}},
			kind: errs.ResourceExhausted, want: []string{"67108864 bytes", "limit of 1048576"}, after: "output_small"},
		{name: "output past its block", file: "output", export: "output_lie",
			kind: errs.ToolFailed, want: []string{"output_set", "out of bounds"}, after: "output_small"},
		{name: "output that cannot be allocated", file: "output", export: "run",
			kind: errs.ToolFailed, want: []string{"output_set"}, after: "output_small"},
		{name: "host-call flood", file: "hostflood", export: "run",
			grants: Grants{Config: map[string]string{"k": "v"}, Log: true, Limits: Limits{HostCalls: 1000}},
			kind:   errs.ResourceExhausted, want: []string{"limit of 1000 host calls", "config_get"}, after: "ok"},
		{name: "log flood", file: "hostflood", export: "logflood",
			grants: Grants{Config: map[string]string{"k": "v"}, Log: true},
			kind:   errs.ResourceExhausted, want: []string{"host calls"}, after: "ok"},
		{name: "trap", file: "trap", export: "run", kind: errs.ToolFailed, want: []string{"trapped", "unreachable"}, after: "ok"},
		{name: "divide by zero", file: "trap", export: "divzero", kind: errs.ToolFailed, want: []string{"integer divide by zero"}, after: "ok"},
		{name: "unknown export", file: "trap", export: "nope", kind: errs.NotFound, want: []string{`"nope"`}, after: "ok"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := load(t, e, fixture(t, "hostile/"+tt.file+".wasm"), tt.grants)
			res, err := m.Call(context.Background(), tt.export, nil)
			wantErr(t, err, tt.kind, tt.want...)
			if res == nil {
				t.Fatal("a failed call must still return its Result")
			}
			if _, err := m.Call(context.Background(), tt.after, nil); err != nil {
				t.Errorf("the module no longer serves %s: %v", tt.after, err)
			}
		})
	}
}

// TestHostileLoopLeavesNoGoroutine runs infinite loops concurrently with
// well-behaved calls: each loop ends at its timeout, the other calls are
// served meanwhile, and no goroutine is left behind.
func TestHostileLoopLeavesNoGoroutine(t *testing.T) {
	e := newEngine(t, egress.Config{})
	loop := load(t, e, fixture(t, "hostile/loop.wasm"), Grants{Limits: Limits{Timeout: 200 * time.Millisecond}})
	count := load(t, e, fixture(t, "hostile/count.wasm"), Grants{})
	before := runtime.NumGoroutine()

	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			res, err := loop.Call(context.Background(), "run", nil)
			if errs.KindOf(err) != errs.DeadlineExceeded || res == nil {
				t.Errorf("loop: %v", err)
			}
			// How soon after its timeout a loop stops is measured by
			// BenchmarkTimeoutOvershoot, not asserted here: on a loaded
			// machine a wall-clock bound fails for reasons of its own.
		})
	}
	for range 50 {
		res, err := count.Call(context.Background(), "count_vowels", []byte("aeiou"))
		if err != nil || string(res.Output) != `{"count": 5}` {
			t.Fatalf("served %q, %v while loops run", res.Output, err)
		}
	}
	wg.Wait()
	// Goroutines of finished calls exit promptly; give the scheduler a
	// moment rather than asserting on an instant.
	deadline := time.Now().Add(time.Minute)
	for runtime.NumGoroutine() > before && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if n := runtime.NumGoroutine(); n > before {
		buf := make([]byte, 1<<16)
		t.Errorf("%d goroutines before, %d after:\n%s", before, n, buf[:runtime.Stack(buf, true)])
	}
}

func TestHostileCancel(t *testing.T) {
	e := newEngine(t, egress.Config{})
	m := load(t, e, fixture(t, "hostile/loop.wasm"), Grants{Limits: Limits{Timeout: time.Minute}})
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(50*time.Millisecond, cancel)
	_, err := m.Call(ctx, "run", nil)
	wantErr(t, err, errs.Unavailable, "canceled")
}

// TestHostileImports checks load-time refusal, naming the import.
func TestHostileImports(t *testing.T) {
	e := newEngine(t, egress.Config{})
	tests := []struct {
		file   string
		grants Grants
		want   []string
	}{
		{"badimport", Grants{WASI: &WASI{Clock: true, Random: true}, Log: true}, []string{"env.system", "no contract can grant"}},
		{"sneaky_http", Grants{}, []string{"extism:host/env.http_request", "grants no http egress"}},
		{"hostflood", Grants{Config: map[string]string{"k": "v"}}, []string{"extism:host/env.log_info", "does not grant log"}},
		{"wasi_fs", Grants{}, []string{"wasi_snapshot_preview1.path_open", "does not grant wasi"}},
		{"wasi_env", Grants{}, []string{"wasi_snapshot_preview1.environ_get", "does not grant wasi"}},
		{"random", Grants{WASI: &WASI{Clock: true}}, []string{"wasi_snapshot_preview1.random_get", "wasi.random"}},
		{"clock", Grants{WASI: &WASI{Random: true}}, []string{"wasi_snapshot_preview1.clock_time_get", "wasi.clock"}},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			_, err := e.Load(context.Background(), fixture(t, "hostile/"+tt.file+".wasm"), tt.grants)
			wantErr(t, err, errs.PermissionDenied, tt.want...)
		})
	}
}

// TestHostileWASI checks that WASI, when granted, has no filesystem, no
// environment, no arguments and no stdin, that stdout is captured and capped
// rather than reaching the host's, and that random and clock are real.
func TestHostileWASI(t *testing.T) {
	t.Setenv("SECRET_FOR_TEST", "hunter2")
	e := newEngine(t, egress.Config{})
	all := Grants{WASI: &WASI{Clock: true, Random: true}, Limits: Limits{StdioBytes: 1024}}
	call := func(file, export string) (*Result, error) {
		t.Helper()
		return load(t, e, fixture(t, "hostile/"+file+".wasm"), all).Call(context.Background(), export, nil)
	}
	for _, export := range []string{"run", "relative", "dotdot", "prestat"} {
		res, err := call("wasi_fs", export)
		if err != nil {
			t.Fatalf("wasi_fs %s: %v", export, err)
		}
		if errno, err := strconv.Atoi(string(res.Output)); err != nil || errno == 0 {
			t.Errorf("wasi_fs %s opened something: %q", export, res.Output)
		}
	}
	for export, want := range map[string]string{"run": "0", "dump": "", "args": "0", "stdin": "0"} {
		res, err := call("wasi_env", export)
		if err != nil {
			t.Fatalf("wasi_env %s: %v", export, err)
		}
		if string(res.Output) != want {
			t.Errorf("wasi_env %s = %q, want %q", export, res.Output, want)
		}
	}
	res, err := call("stdout_flood", "run")
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Stdout) > 1024+64 || !strings.Contains(res.Stdout, "bytes dropped") {
		t.Errorf("stdout not capped: %d bytes", len(res.Stdout))
	}

	a, err1 := call("random", "run")
	b, err2 := call("random", "run")
	if err1 != nil || err2 != nil || len(a.Output) != 64 || bytes.Equal(a.Output, b.Output) {
		t.Errorf("random: %q and %q (%v, %v): must be fresh crypto randomness", a.Output, b.Output, err1, err2)
	}
	res, err = call("clock", "run")
	if err != nil {
		t.Fatal(err)
	}
	ns, _ := strconv.ParseInt(string(res.Output), 10, 64)
	if d := time.Since(time.Unix(0, ns)); d < 0 || d > time.Hour {
		t.Errorf("clock granted but reads %v (%s)", time.Unix(0, ns), res.Output)
	}
}

// TestMemoryDoesNotLeakBetweenCalls checks that pooled memory is zeroed:
// each call writes a marker where the next call looks for one.
func TestMemoryDoesNotLeakBetweenCalls(t *testing.T) {
	e := newEngine(t, egress.Config{})
	m := load(t, e, fixture(t, "hostile/leak.wasm"), Grants{})
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for range 50 {
				res, err := m.Call(context.Background(), "run", nil)
				if err != nil {
					t.Error(err)
					return
				}
				if !bytes.Equal(res.Output, make([]byte, 16)) {
					t.Errorf("a call saw %q, left by an earlier one", res.Output)
					return
				}
			}
		})
	}
	wg.Wait()
}

// TestSneakyHTTP: a module with an http grant for one host may not reach the
// metadata address, however it writes it; nothing is dialled.
func TestSneakyHTTP(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		t.Errorf("the test server was reached: %s", r.URL)
	}))
	defer srv.Close()
	dialer, _ := egresstest.New(map[string]*httptest.Server{"169.254.169.254": srv, "api.example.com": srv})
	e := newEngine(t, egress.Config{Dialer: dialer})
	m := load(t, e, fixture(t, "hostile/sneaky_http.wasm"), Grants{HTTP: []egress.Rule{
		{Scheme: "http", Host: "api.example.com", PathPrefix: "/", Methods: []string{"GET"}},
	}})
	for _, export := range []string{"run", "decimal", "ipv6_mapped"} {
		res, err := m.Call(context.Background(), export, nil)
		wantErr(t, err, errs.PermissionDenied)
		if len(res.Egress) != 1 || res.Egress[0].Allowed {
			t.Errorf("%s: egress record %+v", export, res.Egress)
		}
	}
	if d := dialer.Dialed(); len(d) != 0 {
		t.Errorf("dialled %v", d)
	}
}

// TestSlots: guest code cannot be preempted, so the engine runs at most
// MaxConcurrent calls at once; a caller that gives up while waiting gets a
// clear error, and the slot is free again after the hog ends. (The calls
// are of one flow, so the hog never yields to the other.)
func TestSlots(t *testing.T) {
	e, err := NewEngine(Options{MaxConcurrent: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close(context.Background())
	loop := load(t, e, fixture(t, "hostile/loop.wasm"), Grants{Limits: Limits{Timeout: time.Minute}})
	count := load(t, e, fixture(t, "hostile/count.wasm"), Grants{})

	hogCtx, stopHog := context.WithCancel(context.Background())
	hogDone := make(chan error)
	go func() {
		_, err := loop.Call(hogCtx, "run", nil, oneFlow)
		hogDone <- err
	}()
	waitHeld(e, 1)
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	_, err = count.Call(ctx, "count_vowels", []byte("a"), oneFlow)
	wantErr(t, err, errs.Unavailable, "canceled waiting to start")

	stopHog()
	wantErr(t, <-hogDone, errs.Unavailable, "canceled")
	if _, err := count.Call(context.Background(), "count_vowels", []byte("a")); err != nil {
		t.Errorf("after the hog: %v", err)
	}
}

// TestExfiltration runs a module that gets the injected secret echoed
// back, in each spelling servers produce (egresstest.Spellings), and POSTs
// what it got to another path of the same host. The module gets the echo
// with the secret redacted, so what reaches /collect is the echo with
// [REDACTED] in its place, and no spelling of the secret.
func TestExfiltration(t *testing.T) {
	const key = "sk-exfil/98+76=543210"
	var mu sync.Mutex
	var collected []string
	echo := egresstest.Echo("Authorization")
	srv := egresstest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/echo":
			echo(w, r)
		case "/collect":
			b, _ := io.ReadAll(r.Body)
			mu.Lock()
			collected = append(collected, string(b))
			mu.Unlock()
			w.Write([]byte("thanks"))
		}
	}), "api.example.com")
	defer srv.Close()
	dialer, roots := egresstest.New(map[string]*httptest.Server{"api.example.com": srv})
	e := newEngine(t, egress.Config{Dialer: dialer, RootCAs: roots})
	m := load(t, e, fixture(t, "hostile/exfil.wasm"), Grants{HTTP: []egress.Rule{{
		Scheme: "https", Host: "api.example.com", PathPrefix: "/", Methods: []string{"GET", "POST"},
		Secrets: []egress.SecretSpec{{Name: "API_KEY", Header: "Authorization", Format: "Bearer {{secret}}"}},
	}}})
	set := secretscan.New([][]byte{[]byte(key)})
	for _, sp := range egresstest.Spellings {
		mu.Lock()
		collected = nil
		mu.Unlock()
		input := `{"url": "https://api.example.com/echo?spelling=` + url.QueryEscape(sp.Name) + `"}`
		res, err := m.Call(context.Background(), "run", []byte(input), WithSecrets(oneSecret(key)))
		if err != nil || len(res.Egress) != 2 {
			t.Errorf("%s: %v %v", sp.Name, err, res)
			continue
		}
		mu.Lock()
		got := collected
		mu.Unlock()
		if len(got) != 1 {
			t.Errorf("%s: /collect got %q", sp.Name, got)
			continue
		}
		if strings.Contains(got[0], key) || set.Contains([]byte(got[0])) || !strings.Contains(got[0], secretscan.Redacted) {
			t.Errorf("%s: the module saw and forwarded %q", sp.Name, got[0])
		}
	}
	// The module's view of the review's three examples, exactly: the rest
	// of the echo is left as the server wrote it.
	var uEsc, pct strings.Builder
	for _, c := range []byte("Bearer ") {
		fmt.Fprintf(&uEsc, `\u%04X`, c)
		fmt.Fprintf(&pct, "%%%02x", c)
	}
	for name, want := range map[string]string{
		"json, escaped slashes (PHP json_encode)": `{"authorization":"Bearer [REDACTED]"}`,
		`json, \uXXXX for every character`:        `{"authorization":"` + uEsc.String() + `[REDACTED]"}`,
		"percent-encoded, every byte":             "https://app.example.com/callback?auth=" + pct.String() + "[REDACTED]&state=1",
	} {
		mu.Lock()
		collected = nil
		mu.Unlock()
		input := `{"url": "https://api.example.com/echo?spelling=` + url.QueryEscape(name) + `"}`
		if _, err := m.Call(context.Background(), "run", []byte(input), WithSecrets(oneSecret(key))); err != nil {
			t.Fatal(err)
		}
		mu.Lock()
		if len(collected) != 1 || collected[0] != want {
			t.Errorf("%s: /collect got %q, want %q", name, collected, want)
		}
		mu.Unlock()
	}
}
