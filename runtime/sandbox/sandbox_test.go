package sandbox

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/contractual/contractual/internal/errs"
	"github.com/contractual/contractual/runtime/egress"
	"github.com/contractual/contractual/runtime/egress/egresstest"
	"github.com/contractual/contractual/runtime/modcheck"
)

var (
	sdkDirOnce sync.Once
	sdkDir     string
	sdkDirErr  error
)

// sdkWasm reads one of the Extism plugins shipped in the go-sdk module, real
// modules that nobody on this project wrote.
func sdkWasm(t testing.TB, name string) []byte {
	t.Helper()
	sdkDirOnce.Do(func() {
		out, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", "github.com/extism/go-sdk").Output()
		sdkDir, sdkDirErr = strings.TrimSpace(string(out)), err
	})
	if sdkDirErr != nil {
		t.Fatalf("locating the go-sdk module: %v", sdkDirErr)
	}
	b, err := os.ReadFile(filepath.Join(sdkDir, "wasm", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// fixture reads a committed test module from testdata.
func fixture(t testing.TB, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", path))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func newEngine(t testing.TB, egressCfg egress.Config) *Engine {
	t.Helper()
	e, err := NewEngine(Options{Egress: egressCfg})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Close(context.Background()) })
	return e
}

// load loads wasm under g. Tests that are not about timeouts get a generous
// one, so that a loaded machine does not fail them.
func load(t testing.TB, e *Engine, wasm []byte, g Grants) *Module {
	t.Helper()
	if g.Limits.Timeout == 0 {
		g.Limits.Timeout = 30 * time.Second
	}
	m, err := e.Load(context.Background(), wasm, g)
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	t.Cleanup(func() { m.Close(context.Background()) })
	return m
}

// wantErr fails unless err is of kind k and its text holds every part.
func wantErr(t testing.TB, err error, k errs.Kind, parts ...string) {
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

var wasiClock = &WASI{Clock: true}

// TestExtismPlugins runs the go-sdk's own plugins, unchanged, under
// contracts that grant what they need, and checks the results their
// authors' tests expect.
func TestExtismPlugins(t *testing.T) {
	e := newEngine(t, egress.Config{})
	tests := []struct {
		name, file, export string
		grants             Grants
		input              string
		want               string
	}{
		{name: "hello", file: "hello.wasm", export: "run_test", want: "Hello, world!"},
		{name: "alloc", file: "alloc.wasm", export: "run_test", want: ""},
		{name: "count vowels", file: "count_vowels.wasm", export: "count_vowels",
			grants: Grants{Config: map[string]string{"unused": "x"}}, input: "hello world", want: `"count":3`},
		{name: "config", file: "config.wasm", export: "run_test",
			grants: Grants{WASI: wasiClock, Config: map[string]string{"thing": "hello"}}, want: `{"config": "hello"}`},
		{name: "config unset", file: "config.wasm", export: "run_test",
			grants: Grants{WASI: wasiClock, Config: map[string]string{"other": "x"}}, want: `{"config": "<unset by host>"}`},
		{name: "input offset", file: "input_offset.wasm", export: "input_offset_length", input: "hello", want: ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := load(t, e, sdkWasm(t, tt.file), tt.grants)
			res, err := m.Call(context.Background(), tt.export, []byte(tt.input))
			if err != nil {
				t.Fatalf("Call: %v", err)
			}
			if !strings.Contains(string(res.Output), tt.want) {
				t.Errorf("output %q does not contain %q", res.Output, tt.want)
			}
		})
	}
}

// TestExtismPluginsRefused checks that the same plugins are refused at load,
// naming the import, when the contract does not grant what they ask for.
func TestExtismPluginsRefused(t *testing.T) {
	e := newEngine(t, egress.Config{})
	tests := []struct {
		file   string
		grants Grants
		want   []string
	}{
		{"config.wasm", Grants{Config: map[string]string{"thing": "x"}}, []string{"wasi_snapshot_preview1.fd_write", "does not grant wasi"}},
		{"config.wasm", Grants{WASI: &WASI{}, Config: map[string]string{"thing": "x"}}, []string{"wasi_snapshot_preview1.clock_time_get", "wasi.clock"}},
		{"log.wasm", Grants{WASI: wasiClock}, []string{"extism:host/env.log_info", "does not grant log"}},
		{"http.wasm", Grants{WASI: wasiClock}, []string{"extism:host/env.http_request", "grants no http egress"}},
		{"host_memory.wasm", Grants{WASI: wasiClock, Log: true}, []string{"host.to_upper", "no contract can grant this namespace"}},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			_, err := e.Load(context.Background(), sdkWasm(t, tt.file), tt.grants)
			wantErr(t, err, errs.PermissionDenied, tt.want...)
		})
	}
}

func TestExtismFailAndExit(t *testing.T) {
	e := newEngine(t, egress.Config{})
	m := load(t, e, sdkWasm(t, "fail.wasm"), Grants{})
	_, err := m.Call(context.Background(), "run_test", nil)
	wantErr(t, err, errs.ToolFailed, "Some error message")

	for code, want := range map[string]string{"500": "code 500", "abc": "code 1"} {
		m := load(t, e, sdkWasm(t, "exit.wasm"), Grants{WASI: wasiClock, Config: map[string]string{"code": code}})
		_, err := m.Call(context.Background(), "_start", nil)
		wantErr(t, err, errs.ToolFailed, want)
	}
	m = load(t, e, sdkWasm(t, "exit.wasm"), Grants{WASI: wasiClock, Config: map[string]string{"code": "0"}})
	if _, err := m.Call(context.Background(), "_start", nil); err != nil {
		t.Errorf("exit 0: %v", err)
	}
}

func TestExtismLog(t *testing.T) {
	e := newEngine(t, egress.Config{})
	m := load(t, e, sdkWasm(t, "log.wasm"), Grants{WASI: wasiClock, Log: true})
	res, err := m.Call(context.Background(), "run_test", nil)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, l := range res.Logs {
		got = append(got, l.Level+":"+l.Message)
	}
	joined := strings.Join(got, "\n")
	for _, want := range []string{"info:this is an info log", "warn:this is a warning log", "error:this is an error log"} {
		if !strings.Contains(joined, want) {
			t.Errorf("logs %q lack %q", joined, want)
		}
	}
	if strings.Contains(joined, "trace log") {
		t.Errorf("trace logged although the host asked for info and up: %q", joined)
	}

	// The log cap holds: a contract with a tiny log budget keeps only that.
	m = load(t, e, sdkWasm(t, "log.wasm"), Grants{WASI: wasiClock, Log: true, Limits: Limits{LogBytes: 10}})
	res, err = m.Call(context.Background(), "run_test", nil)
	if err != nil {
		t.Fatal(err)
	}
	total := 0
	for _, l := range res.Logs {
		total += len(l.Message)
	}
	if total > 10 {
		t.Errorf("kept %d log bytes under a 10-byte cap", total)
	}
}

// TestExtismVarsDoNotPersist shows that every call is a fresh instance: the
// var plugin doubles a var on each call, and each call starts from scratch.
func TestExtismVarsDoNotPersist(t *testing.T) {
	e := newEngine(t, egress.Config{})
	m := load(t, e, sdkWasm(t, "var.wasm"), Grants{WASI: wasiClock})
	first, err := m.Call(context.Background(), "run_test", nil)
	if err != nil {
		t.Fatal(err)
	}
	second, err := m.Call(context.Background(), "run_test", nil)
	if err != nil {
		t.Fatal(err)
	}
	if string(first.Output) != string(second.Output) {
		t.Errorf("state leaked between calls: %q then %q", first.Output, second.Output)
	}
}

func TestExtismSleepTimeout(t *testing.T) {
	e := newEngine(t, egress.Config{})
	m := load(t, e, sdkWasm(t, "sleep.wasm"), Grants{
		WASI:   wasiClock,
		Config: map[string]string{"duration": "3"},
		Limits: Limits{Timeout: 100 * time.Millisecond},
	})
	_, err := m.Call(context.Background(), "run_test", nil)
	wantErr(t, err, errs.DeadlineExceeded, "100ms")
}

// todo is what the go-sdk's http.wasm expects from jsonplaceholder.
const todo = `{"userId": 1, "id": 1, "title": "delectus aut autem", "completed": false}`

func TestExtismHTTP(t *testing.T) {
	srv := egresstest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/todos/1" {
			http.NotFound(w, r)
			return
		}
		w.Write([]byte(todo))
	}), "jsonplaceholder.typicode.com")
	defer srv.Close()
	dialer, roots := egresstest.New(map[string]*httptest.Server{"jsonplaceholder.typicode.com": srv})
	e := newEngine(t, egress.Config{Dialer: dialer, RootCAs: roots})

	allowed := Grants{WASI: wasiClock, HTTP: []egress.Rule{{
		Scheme: "https", Host: "jsonplaceholder.typicode.com", PathPrefix: "/todos/", Methods: []string{"GET"},
	}}}
	m := load(t, e, sdkWasm(t, "http.wasm"), allowed)
	res, err := m.Call(context.Background(), "run_test", nil)
	if err != nil {
		t.Fatalf("Call: %v", err)
	}
	var got map[string]any
	if err := json.Unmarshal(res.Output, &got); err != nil || got["title"] != "delectus aut autem" {
		t.Errorf("output %q (%v)", res.Output, err)
	}
	if len(res.Egress) != 1 || !res.Egress[0].Allowed || res.Egress[0].Status != 200 {
		t.Errorf("egress record %+v", res.Egress)
	}

	// The same module, under a contract naming another path: cut off at the
	// request, and the refusal is on the record.
	narrow := allowed
	narrow.HTTP = []egress.Rule{{Scheme: "https", Host: "jsonplaceholder.typicode.com", PathPrefix: "/users/", Methods: []string{"GET"}}}
	m = load(t, e, sdkWasm(t, "http.wasm"), narrow)
	res, err = m.Call(context.Background(), "run_test", nil)
	wantErr(t, err, errs.PermissionDenied, "jsonplaceholder.typicode.com")
	if len(res.Egress) != 1 || res.Egress[0].Allowed {
		t.Errorf("egress record %+v", res.Egress)
	}
}

// TestExtismHTTPHeaders runs the go-sdk's http_headers plugin: it fetches
// the URL in its input and returns the response headers it was given.
func TestExtismHTTPHeaders(t *testing.T) {
	srv := egresstest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.Write([]byte("<html></html>"))
	}), "extism.org")
	defer srv.Close()
	dialer, roots := egresstest.New(map[string]*httptest.Server{"extism.org": srv})
	e := newEngine(t, egress.Config{Dialer: dialer, RootCAs: roots})
	m := load(t, e, sdkWasm(t, "http_headers.wasm"), Grants{Log: true, HTTP: []egress.Rule{
		{Scheme: "https", Host: "extism.org", PathPrefix: "/", Methods: []string{"GET"}},
	}})
	res, err := m.Call(context.Background(), "http_get", []byte(`{"url": "https://extism.org"}`))
	if err != nil {
		t.Fatal(err)
	}
	var headers map[string]string
	if err := json.Unmarshal(res.Output, &headers); err != nil || headers["content-type"] != "text/html; charset=utf-8" {
		t.Errorf("headers %q (%v)", res.Output, err)
	}
	// Another host, even one the module names itself, is cut off.
	_, err = m.Call(context.Background(), "http_get", []byte(`{"url": "https://example.org"}`))
	wantErr(t, err, errs.PermissionDenied, "example.org")
}

// TestCallEgress: one request of a call may take as long as the call when
// the contract's timeout is longer than the egress timeout (the template's,
// or egress.DefaultTimeout); a shorter call keeps the egress timeout, and so
// does a longer template timeout. The rest comes from the contract and the
// call.
func TestCallEgress(t *testing.T) {
	rules := []egress.Rule{{Scheme: "https", Host: "api.openai.com", PathPrefix: "/v1/chat/completions", Methods: []string{"POST"}}}
	key := func(n int) string { return fmt.Sprint("k", n) }
	for _, tt := range []struct {
		name       string
		tmpl, call time.Duration
		want       time.Duration
	}{
		{"contract 120 s", 0, 120 * time.Second, 120 * time.Second},
		{"contract 1 s", 0, time.Second, egress.DefaultTimeout},
		{"contract equal to the default", 0, egress.DefaultTimeout, egress.DefaultTimeout},
		{"template longer", time.Minute, 30 * time.Second, time.Minute},
		{"template shorter", 100 * time.Millisecond, 120 * time.Second, 120 * time.Second},
		{"template shorter, call shorter", 100 * time.Millisecond, 50 * time.Millisecond, 100 * time.Millisecond},
	} {
		t.Run(tt.name, func(t *testing.T) {
			tmpl := egress.Config{Timeout: tt.tmpl, MaxRequestBytes: 123}
			g := Grants{HTTP: rules, Limits: Limits{Timeout: tt.call, HTTPRequests: 1, HTTPResponseBytes: 4 << 20}}
			src := oneSecret("s")
			cfg := callEgress(tmpl, &g, &callOptions{secrets: src, idempotency: key})
			if cfg.Timeout != tt.want {
				t.Errorf("timeout %s, want %s", cfg.Timeout, tt.want)
			}
			if len(cfg.Rules) != 1 || cfg.MaxRequests != 1 || cfg.MaxResponseBytes != 4<<20 || cfg.MaxRequestBytes != 123 ||
				cfg.Secrets != src || cfg.IdempotencyKey == nil || cfg.IdempotencyKey(2) != "k2" {
				t.Errorf("config %+v", cfg)
			}
		})
	}
	// Without call options the template's secret source stays.
	tmplSrc := oneSecret("t")
	g := Grants{HTTP: rules, Limits: modcheck.DefaultLimits}
	if cfg := callEgress(egress.Config{Secrets: tmplSrc}, &g, &callOptions{}); cfg.Secrets != tmplSrc || cfg.IdempotencyKey != nil || cfg.Timeout != egress.DefaultTimeout {
		t.Errorf("config %+v", cfg)
	}
}

type oneSecret string

func (s oneSecret) Secret(context.Context, string, egress.Audience) ([]byte, error) {
	return []byte(s), nil
}

// TestSecretEchoIsRedacted: the host injects a secret; the server echoes it
// back in the body and a header, raw and encoded. The module (the go-sdk's
// http.wasm, which outputs the body it got) never sees the value.
func TestSecretEchoIsRedacted(t *testing.T) {
	const key = "sk-echo-0123456789"
	srv := egresstest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got := r.Header.Get("X-Api-Key")
		w.Header().Set("X-Echo", got)
		fmt.Fprintf(w, `{"raw": %q, "b64": %q, "hex": %q}`, got, base64.StdEncoding.EncodeToString([]byte(got)), hex.EncodeToString([]byte(got)))
	}), "jsonplaceholder.typicode.com")
	defer srv.Close()
	dialer, roots := egresstest.New(map[string]*httptest.Server{"jsonplaceholder.typicode.com": srv})
	e := newEngine(t, egress.Config{Dialer: dialer, RootCAs: roots})
	m := load(t, e, sdkWasm(t, "http.wasm"), Grants{WASI: wasiClock, HTTP: []egress.Rule{{
		Scheme: "https", Host: "jsonplaceholder.typicode.com", PathPrefix: "/todos/", Methods: []string{"GET"},
		Secrets: []egress.SecretSpec{{Name: "API_KEY", Header: "X-Api-Key"}},
	}}})
	res, err := m.Call(context.Background(), "run_test", nil, WithSecrets(oneSecret(key)))
	if err != nil {
		t.Fatal(err)
	}
	for _, spelled := range []string{key, base64.StdEncoding.EncodeToString([]byte(key)), hex.EncodeToString([]byte(key))} {
		if strings.Contains(string(res.Output), spelled) {
			t.Errorf("the module saw the secret: %s", res.Output)
		}
	}
	if strings.Count(string(res.Output), "[REDACTED]") != 3 {
		t.Errorf("output %s", res.Output)
	}
	// After the call, the module's memory (back in the pool) holds no trace.
	m.memory.mu.Lock()
	defer m.memory.mu.Unlock()
	n := 0
	for _, rs := range m.memory.idle {
		for _, r := range rs {
			n++
			if bytes.Contains(r.buf[:r.writable], []byte(key)) {
				t.Error("the secret is in the module's pooled memory")
			}
		}
	}
	if n == 0 {
		t.Error("no pooled memory to inspect")
	}
}
