package daemon_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/contractual/contractual/internal/daemon"
)

// patience bounds every wait on something that takes milliseconds, far
// above need for a loaded machine.
const patience = 2 * time.Minute

// syncBuffer is a bytes.Buffer that a running daemon writes while the
// test reads it.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// running is a daemon.Run in progress.
type running struct {
	env    *daemon.Env
	cancel context.CancelFunc
	code   chan int
	stdout *syncBuffer
	stderr *syncBuffer
}

// start runs svc with args in-process and waits until its Run has the
// Env (so the ops server listens on env.OpsAddr).
func start(t *testing.T, svc daemon.Service, args ...string) *running {
	t.Helper()
	envs := make(chan *daemon.Env, 1)
	run := svc.Run
	svc.Run = func(ctx context.Context, env *daemon.Env) error {
		envs <- env
		return run(ctx, env)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{cancel: cancel, code: make(chan int, 1), stdout: &syncBuffer{}, stderr: &syncBuffer{}}
	go func() { r.code <- daemon.Run(ctx, args, r.stdout, r.stderr, svc) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-r.code:
		case <-time.After(patience):
			t.Error("the daemon did not stop")
		}
	})
	select {
	case r.env = <-envs:
	case code := <-r.code:
		t.Fatalf("Run returned %d before the service ran; stderr:\n%s", code, r.stderr)
	case <-time.After(patience):
		t.Fatal("the service did not start")
	}
	return r
}

// wait returns Run's exit code.
func (r *running) wait(t *testing.T) int {
	t.Helper()
	select {
	case code := <-r.code:
		r.code <- code // for the cleanup
		return code
	case <-time.After(patience):
		t.Fatal("Run did not return")
		return -1
	}
}

// get returns the status and body of GET http://addr/path.
func get(t *testing.T, addr, path string) (int, string) {
	t.Helper()
	c := &http.Client{Timeout: patience}
	resp, err := c.Get("http://" + addr + path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(b)
}

// health runs the health subcommand against addr.
func health(t *testing.T, addr string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errb bytes.Buffer
	code = daemon.Run(t.Context(), []string{"health", "--ops=" + addr, "--timeout=" + patience.String()}, &out, &errb, daemon.Service{Name: "test"})
	return code, out.String(), errb.String()
}

// serveUntilDone is a service's Run that calls Ready once ready is closed
// (nil: at once) and serves until ctx ends.
func serveUntilDone(ready <-chan struct{}, readied chan<- struct{}) func(context.Context, *daemon.Env) error {
	return func(ctx context.Context, env *daemon.Env) error {
		if ready != nil {
			select {
			case <-ready:
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		env.Ready()
		if readied != nil {
			close(readied)
		}
		<-ctx.Done()
		return ctx.Err()
	}
}

// logLines parses every line of stderr as a JSON object.
func logLines(t *testing.T, stderr string) []map[string]any {
	t.Helper()
	var lines []map[string]any
	sc := bufio.NewScanner(strings.NewReader(stderr))
	for sc.Scan() {
		var m map[string]any
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			t.Fatalf("a log line is not JSON: %q: %v", sc.Text(), err)
		}
		lines = append(lines, m)
	}
	return lines
}

// logged returns the first log line with msg, or nil.
func logged(lines []map[string]any, msg string) map[string]any {
	for _, l := range lines {
		if l["msg"] == msg {
			return l
		}
	}
	return nil
}

func TestHealthzIsUnavailableUntilReady(t *testing.T) {
	ready, readied := make(chan struct{}), make(chan struct{})
	r := start(t, daemon.Service{Name: "policy", Run: serveUntilDone(ready, readied)}, "--ops=127.0.0.1:0")
	addr := r.env.OpsAddr

	if status, body := get(t, addr, "/healthz"); status != http.StatusServiceUnavailable || body != "starting\n" {
		t.Errorf("before Ready: %d %q, want 503 \"starting\"", status, body)
	}
	if code, _, stderr := health(t, addr); code != 1 || !strings.Contains(stderr, "503") || !strings.Contains(stderr, "starting") {
		t.Errorf("health before Ready: exit %d, stderr %q; want 1 and why", code, stderr)
	}

	close(ready)
	<-readied
	if status, body := get(t, addr, "/healthz"); status != http.StatusOK || body != "ok\n" {
		t.Errorf("after Ready: %d %q, want 200 \"ok\"", status, body)
	}
	if code, stdout, stderr := health(t, addr); code != 0 || stdout != "ok\n" {
		t.Errorf("health after Ready: exit %d, stdout %q, stderr %q; want 0, ok", code, stdout, stderr)
	}

	r.cancel()
	if code := r.wait(t); code != 0 {
		t.Errorf("Run after cancel = %d, want 0; stderr:\n%s", code, r.stderr)
	}
	lines := logLines(t, r.stderr.String())
	for _, msg := range []string{"starting", "ready", "stopping", "stopped"} {
		if l := logged(lines, msg); l == nil {
			t.Errorf("no %q log line in:\n%s", msg, r.stderr)
		}
	}
	for _, l := range lines {
		if l["service"] != "policy" || l["level"] == nil || l["time"] == nil {
			t.Errorf("log line without service=policy, level or time: %v", l)
		}
	}
	if l := logged(lines, "starting"); l != nil && l["ops"] != addr {
		t.Errorf("the starting line's ops = %v, want %s", l["ops"], addr)
	}
}

func TestHealthzRunsTheHealthChecks(t *testing.T) {
	var broken atomic.Bool
	broken.Store(true)
	readied := make(chan struct{})
	r := start(t, daemon.Service{Name: "audit", Run: func(ctx context.Context, env *daemon.Env) error {
		env.Health("log", func(context.Context) error { return nil })
		env.Health("store", func(context.Context) error {
			if broken.Load() {
				return errors.New("disk full")
			}
			return nil
		})
		return serveUntilDone(nil, readied)(ctx, env)
	}}, "--ops=127.0.0.1:0")
	<-readied
	addr := r.env.OpsAddr

	if status, body := get(t, addr, "/healthz"); status != http.StatusServiceUnavailable || body != "store: disk full\n" {
		t.Errorf("with a failing check: %d %q, want 503 \"store: disk full\"", status, body)
	}
	if code, _, stderr := health(t, addr); code != 1 || !strings.Contains(stderr, "store: disk full") {
		t.Errorf("health with a failing check: exit %d, stderr %q; want 1 and the check's message", code, stderr)
	}
	broken.Store(false)
	if status, body := get(t, addr, "/healthz"); status != http.StatusOK || body != "ok\n" {
		t.Errorf("with the check passing again: %d %q, want 200 ok", status, body)
	}
	r.cancel()
	r.wait(t)
	if l := logged(logLines(t, r.stderr.String()), "unhealthy"); l == nil || l["err"] != "store: disk full" {
		t.Errorf("the failing check is not logged: %v", l)
	}
}

func TestHealthzBoundsAHungCheck(t *testing.T) {
	readied := make(chan struct{})
	r := start(t, daemon.Service{Name: "broker", Run: func(ctx context.Context, env *daemon.Env) error {
		env.Health("store", func(ctx context.Context) error {
			<-ctx.Done() // hung until /healthz gives up on it
			return ctx.Err()
		})
		return serveUntilDone(nil, readied)(ctx, env)
	}}, "--ops=127.0.0.1:0")
	<-readied
	if status, body := get(t, r.env.OpsAddr, "/healthz"); status != http.StatusServiceUnavailable || body != "store: context deadline exceeded\n" {
		t.Errorf("with a hung check: %d %q, want 503 and the check's deadline", status, body)
	}
}

func TestHealthzSaysStoppingWhileTheServiceStops(t *testing.T) {
	stopping, release := make(chan struct{}), make(chan struct{})
	r := start(t, daemon.Service{Name: "runner", Run: func(ctx context.Context, env *daemon.Env) error {
		env.Ready()
		<-ctx.Done()
		close(stopping)
		<-release // draining calls
		return nil
	}}, "--ops=127.0.0.1:0")
	r.cancel()
	<-stopping
	if status, body := get(t, r.env.OpsAddr, "/healthz"); status != http.StatusServiceUnavailable || body != "stopping\n" {
		t.Errorf("while stopping: %d %q, want 503 \"stopping\"", status, body)
	}
	close(release)
	if code := r.wait(t); code != 0 {
		t.Errorf("Run = %d, want 0", code)
	}
}

func TestHealthAgainstNothingListening(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	if code, _, stderr := health(t, addr); code != 1 || !strings.Contains(stderr, "unhealthy") {
		t.Errorf("health against nothing: exit %d, stderr %q; want 1 and why", code, stderr)
	}
}

func TestHealthDialsLoopbackForAnOpsAddressWithoutHost(t *testing.T) {
	// An ops server that records the address each request was sent to.
	hosts := make(chan string, 2)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hosts <- r.Host + r.URL.Path
		io.WriteString(w, "ok\n")
	})}
	go srv.Serve(ln)
	defer srv.Close()
	_, port, err := net.SplitHostPort(ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	for _, ops := range []string{":" + port, "0.0.0.0:" + port} {
		if code, _, stderr := health(t, ops); code != 0 {
			t.Errorf("health --ops=%s: exit %d, stderr %q; want 0", ops, code, stderr)
		}
		if got, want := <-hosts, "127.0.0.1:"+port+"/healthz"; got != want {
			t.Errorf("health --ops=%s asked %s, want %s", ops, got, want)
		}
	}
}

func TestHealthGivesUpOnAServerThatDoesNotAnswer(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hung := make(chan struct{})
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { <-hung })}
	go srv.Serve(ln)
	defer srv.Close()
	defer close(hung)
	var out, errb bytes.Buffer
	code := daemon.Run(t.Context(), []string{"health", "--ops=" + ln.Addr().String(), "--timeout=1ms"}, &out, &errb, daemon.Service{Name: "test"})
	if code != 1 || !strings.Contains(errb.String(), "deadline exceeded") {
		t.Errorf("exit %d, stderr %q; want 1 and the deadline", code, errb.String())
	}
}

func TestOpsServesMetrics(t *testing.T) {
	readied := make(chan struct{})
	r := start(t, daemon.Service{Name: "runner", Run: func(ctx context.Context, env *daemon.Env) error {
		env.Metrics.Tools().Observe("weather.forecast", nil, time.Millisecond)
		return serveUntilDone(nil, readied)(ctx, env)
	}}, "--ops=127.0.0.1:0")
	<-readied
	status, body := get(t, r.env.OpsAddr, "/metrics")
	if status != http.StatusOK {
		t.Fatalf("GET /metrics: %d", status)
	}
	for _, want := range []string{`contractual_tool_calls_total{outcome="ok",tool="weather.forecast"} 1`, "go_goroutines ", "process_cpu_seconds_total "} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics has no %q", want)
		}
	}
}

func TestServeGivesTheServiceItsFlags(t *testing.T) {
	var policyURL string
	readied := make(chan struct{})
	r := start(t, daemon.Service{
		Name:   "runner",
		Listen: ":8080",
		Flags:  func(fs *flag.FlagSet) { fs.StringVar(&policyURL, "policy-url", "https://policy:8443", "policy") },
		Run: func(ctx context.Context, env *daemon.Env) error {
			env.Log.Debug("debug is on")
			return serveUntilDone(nil, readied)(ctx, env)
		},
	}, "serve", "--ops=127.0.0.1:0", "--tls-dir=/tmp/certs", "--data=/tmp/data", "--log-level=debug", "--policy-url=https://127.0.0.1:1")
	<-readied
	e := r.env
	if e.Listen != ":8080" || e.Ops != "127.0.0.1:0" || e.TLSDir != "/tmp/certs" || e.Data != "/tmp/data" || e.LogLevel != slog.LevelDebug {
		t.Errorf("env = listen %q ops %q tls-dir %q data %q log-level %v", e.Listen, e.Ops, e.TLSDir, e.Data, e.LogLevel)
	}
	if policyURL != "https://127.0.0.1:1" {
		t.Errorf("--policy-url = %q", policyURL)
	}
	r.cancel()
	r.wait(t)
	if logged(logLines(t, r.stderr.String()), "debug is on") == nil {
		t.Errorf("--log-level=debug: no debug line in:\n%s", r.stderr)
	}
}

func TestServeDefaults(t *testing.T) {
	// The defaults are the container's; only --ops is set, to listen on a
	// free loopback port.
	r := start(t, daemon.Service{Name: "policy", Run: serveUntilDone(nil, nil)}, "--ops=127.0.0.1:0")
	e := r.env
	if e.Listen != ":8443" || e.TLSDir != "/run/certs" || e.Data != "/data" || e.LogLevel != slog.LevelInfo {
		t.Errorf("defaults: listen %q tls-dir %q data %q log-level %v", e.Listen, e.TLSDir, e.Data, e.LogLevel)
	}
}

func TestARunErrorExits1AndIsLogged(t *testing.T) {
	var out, errb syncBuffer
	svc := daemon.Service{Name: "broker", Run: func(context.Context, *daemon.Env) error {
		return errors.New("no key-encryption key at /run/secrets/kek")
	}}
	if code := daemon.Run(t.Context(), []string{"--ops=127.0.0.1:0"}, &out, &errb, svc); code != 1 {
		t.Errorf("Run = %d, want 1", code)
	}
	l := logged(logLines(t, errb.String()), "stopped")
	if l == nil || l["level"] != "ERROR" || l["err"] != "no key-encryption key at /run/secrets/kek" {
		t.Errorf("the error is not logged: %v\n%s", l, errb.String())
	}
}

func TestAServiceThatDoesNotStopExits1(t *testing.T) {
	hang := make(chan struct{})
	defer close(hang)
	r := start(t, daemon.Service{Name: "runner", StopTimeout: time.Millisecond, Run: func(ctx context.Context, env *daemon.Env) error {
		<-hang // ignores ctx
		return nil
	}}, "--ops=127.0.0.1:0")
	r.cancel()
	if code := r.wait(t); code != 1 {
		t.Errorf("Run = %d, want 1", code)
	}
	if l := logged(logLines(t, r.stderr.String()), "stopped"); l == nil || !strings.Contains(l["err"].(string), "did not stop within 1ms") {
		t.Errorf("not logged: %v\n%s", l, r.stderr)
	}
}

func TestOpsAddressInUseExits1(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	var out, errb syncBuffer
	ran := false
	svc := daemon.Service{Name: "audit", Run: func(context.Context, *daemon.Env) error { ran = true; return nil }}
	if code := daemon.Run(t.Context(), []string{"--ops=" + ln.Addr().String()}, &out, &errb, svc); code != 1 || ran {
		t.Errorf("Run = %d (service ran: %v), want 1 without running it", code, ran)
	}
	if l := logged(logLines(t, errb.String()), "ops server"); l == nil {
		t.Errorf("the failure is not logged:\n%s", errb.String())
	}
}

func TestUsage(t *testing.T) {
	svc := daemon.Service{
		Name:  "policy",
		Flags: func(fs *flag.FlagSet) { fs.String("audit-url", "https://audit:8443", "the audit service") },
		Run: func(context.Context, *daemon.Env) error {
			panic("the service ran")
		},
	}
	for _, tt := range []struct {
		args     []string
		code     int
		stdout   string // what stdout contains
		stderr   string // what stderr contains
		noStdout bool
	}{
		{args: []string{"--bogus"}, code: 2, stderr: "flag provided but not defined: -bogus"},
		{args: []string{"serve", "--bogus=1"}, code: 2, stderr: "usage: contractual-policy [serve] [flags]"},
		{args: []string{"serve", "extra"}, code: 2, stderr: `unexpected argument "extra"`},
		{args: []string{"--log-level=loud"}, code: 2, stderr: "log-level"},
		{args: []string{"frobnicate"}, code: 2, stderr: `unknown command "frobnicate"`},
		{args: []string{"health", "--bogus"}, code: 2, stderr: "flag provided but not defined: -bogus"},
		{args: []string{"health", "--ops=nocolon"}, code: 2, stderr: "--ops"},
		{args: []string{"--help"}, code: 0, stdout: "-audit-url"},
		{args: []string{"health", "-h"}, code: 0, stdout: "-timeout"},
	} {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			var out, errb bytes.Buffer
			code := daemon.Run(t.Context(), tt.args, &out, &errb, svc)
			if code != tt.code || !strings.Contains(out.String(), tt.stdout) || !strings.Contains(errb.String(), tt.stderr) {
				t.Errorf("exit %d, stdout %q, stderr %q; want %d, %q, %q", code, out.String(), errb.String(), tt.code, tt.stdout, tt.stderr)
			}
		})
	}
}

// TestMain runs daemon.Main as the test binary itself when
// DAEMON_TEST_MAIN names a service behaviour: "serve" serves until
// signalled, "hang" ignores the signal.
func TestMain(m *testing.M) {
	switch os.Getenv("DAEMON_TEST_MAIN") {
	case "":
		os.Exit(m.Run())
	case "serve":
		daemon.Main(daemon.Service{Name: "test", Run: serveUntilDone(nil, nil)})
	case "hang":
		daemon.Main(daemon.Service{Name: "test", StopTimeout: time.Millisecond, Run: func(ctx context.Context, env *daemon.Env) error {
			env.Ready()
			select {}
		}})
	}
	panic("daemon.Main returned")
}

func TestMainStopsOnASignal(t *testing.T) {
	for _, tt := range []struct {
		behaviour string
		sig       syscall.Signal
		code      int
	}{
		{"serve", syscall.SIGTERM, 0},
		{"serve", syscall.SIGINT, 0},
		{"hang", syscall.SIGTERM, 1},
	} {
		t.Run(tt.behaviour+" "+tt.sig.String(), func(t *testing.T) {
			ctx, cancel := context.WithTimeout(t.Context(), patience)
			defer cancel()
			cmd := exec.CommandContext(ctx, os.Args[0], "--ops=127.0.0.1:0")
			cmd.Env = append(os.Environ(), "DAEMON_TEST_MAIN="+tt.behaviour)
			stderr, err := cmd.StderrPipe()
			if err != nil {
				t.Fatal(err)
			}
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			// Wait for the "ready" line: the signal handler is installed.
			var log bytes.Buffer
			sc := bufio.NewScanner(io.TeeReader(stderr, &log))
			ready := false
			for !ready && sc.Scan() {
				ready = strings.Contains(sc.Text(), `"msg":"ready"`)
			}
			if !ready {
				cmd.Wait()
				t.Fatalf("the daemon did not get ready:\n%s", log.String())
			}
			if err := cmd.Process.Signal(tt.sig); err != nil {
				t.Fatal(err)
			}
			io.Copy(io.Discard, io.TeeReader(stderr, &log))
			err = cmd.Wait()
			code := cmd.ProcessState.ExitCode()
			if code != tt.code {
				t.Errorf("exit %d (%v), want %d; stderr:\n%s", code, err, tt.code, log.String())
			}
			if !strings.Contains(log.String(), `"msg":"stopped"`) {
				t.Errorf("no stopped line:\n%s", log.String())
			}
		})
	}
}
