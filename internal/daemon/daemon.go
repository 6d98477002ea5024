// Package daemon is what every service binary shares: its command line
// (serve, the default, and health), its JSON logs, its metrics registry,
// and the ops HTTP server with /metrics and /healthz.
//
// A binary's main is one call:
//
//	func main() { daemon.Main(daemon.Service{Name: "policy", Flags: ..., Run: ...}) }
package daemon

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/contractual/contractual/internal/errs"
	"github.com/contractual/contractual/internal/metrics"
)

// Defaults of the command line.
const (
	DefaultListen      = ":8443"
	DefaultOps         = ":9090"
	DefaultTLSDir      = "/run/certs"
	DefaultData        = "/data"
	DefaultHealthOps   = "127.0.0.1:9090"
	DefaultStopTimeout = 8 * time.Second // below Docker's 10 s grace before SIGKILL
)

// checkTimeout bounds one /healthz request's health checks.
const checkTimeout = time.Second

// Service describes one service binary.
type Service struct {
	// Name is the service's name ("policy", "runner", ...): the binary is
	// contractual-<Name>, and every log line carries service=<Name>.
	Name string
	// Listen is the default of --listen; empty means DefaultListen.
	Listen string
	// Flags registers the service's own flags (its peers' URLs, --kek,
	// --cache, ...) on fs; nil if it has none.
	Flags func(fs *flag.FlagSet)
	// Run starts the service, calls env.Ready once it serves, and serves
	// until ctx ends; then it stops and returns nil (or ctx's error).
	Run func(ctx context.Context, env *Env) error
	// StopTimeout bounds how long Run may take to return once ctx ends;
	// zero means DefaultStopTimeout.
	StopTimeout time.Duration
}

func (s Service) prog() string { return "contractual-" + s.Name }

// Env is what the daemon gives a service's Run: the common flags, a
// logger, the metrics registry, and the service's health.
type Env struct {
	// The common flags of serve.
	Listen   string     // --listen: the service's Connect port
	Ops      string     // --ops: the ops server's address as given
	TLSDir   string     // --tls-dir: cert.pem, key.pem and bundle.pem
	Data     string     // --data: the service's store directory
	LogLevel slog.Level // --log-level

	// OpsAddr is the address the ops server listens on, with the port it
	// got when --ops asked for port 0.
	OpsAddr string
	// Log writes JSON lines to stderr, each with service=<Name>.
	Log *slog.Logger
	// Metrics is the process's registry, served on /metrics.
	Metrics *metrics.Registry

	stopping context.Context // serve's: once it ends, the service stops
	mu       sync.Mutex
	ready    bool
	checks   []check
}

type check struct {
	name string
	fn   func(context.Context) error
}

// Ready says the service serves: from now on /healthz answers 200 while
// every health check passes.
func (e *Env) Ready() {
	e.mu.Lock()
	defer e.mu.Unlock()
	if !e.ready {
		e.ready = true
		e.Log.Info("ready")
	}
}

// Health adds a check that /healthz runs on every request, concurrently
// with the others: the service is healthy while every check returns nil.
// A check's context ends a second after the request came; the check must
// return then (a hung check is a failed one: "name: context deadline
// exceeded").
func (e *Env) Health(name string, fn func(ctx context.Context) error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.checks = append(e.checks, check{name, fn})
}

// Main runs the service binary: Run with the process's arguments, a
// context that SIGINT and SIGTERM cancel (a second signal kills at once),
// and os.Exit with Run's code.
func Main(svc Service) {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	context.AfterFunc(ctx, stop)
	code := Run(ctx, os.Args[1:], os.Stdout, os.Stderr, svc)
	stop()
	os.Exit(code)
}

// Run runs the service binary's command line args (without the program
// name) and returns its exit code: 0 once serve stopped because ctx ended
// or health found the service healthy, 1 on failure, 2 on a usage error.
func Run(ctx context.Context, args []string, stdout, stderr io.Writer, svc Service) int {
	cmd := "serve"
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		cmd, args = args[0], args[1:]
	}
	switch cmd {
	case "serve":
		return serve(ctx, args, stdout, stderr, svc)
	case "health":
		return health(ctx, args, stdout, stderr, svc)
	case "help":
		usage(stdout, svc, nil)
		return 0
	}
	fmt.Fprintf(stderr, "%s: unknown command %q\n", svc.prog(), cmd)
	usage(stderr, svc, nil)
	return 2
}

// usage prints the command line, and fs's flags if fs is not nil.
func usage(w io.Writer, svc Service, fs *flag.FlagSet) {
	fmt.Fprintf(w, "usage: %[1]s [serve] [flags]\n       %[1]s health [--ops=%[2]s] [--timeout=2s]\n", svc.prog(), DefaultHealthOps)
	if fs != nil {
		fmt.Fprintf(w, "\nflags of %s:\n", fs.Name())
		fs.SetOutput(w)
		fs.PrintDefaults()
	}
}

// parse parses args into fs; it returns an exit code when the command
// line is done with (help or a usage error).
func parse(fs *flag.FlagSet, args []string, stdout, stderr io.Writer, svc Service) (int, bool) {
	fs.SetOutput(stderr)
	fs.Usage = func() {}
	err := fs.Parse(args)
	switch {
	case errors.Is(err, flag.ErrHelp):
		usage(stdout, svc, fs)
		return 0, true
	case err == nil && fs.NArg() > 0:
		err = fmt.Errorf("unexpected argument %q", fs.Arg(0))
		fmt.Fprintf(stderr, "%s: %v\n", fs.Name(), err)
	}
	if err != nil {
		usage(stderr, svc, fs)
		return 2, true
	}
	return 0, false
}

// serve runs the service until ctx ends.
func serve(ctx context.Context, args []string, stdout, stderr io.Writer, svc Service) int {
	env := &Env{stopping: ctx}
	fs := flag.NewFlagSet(svc.prog()+" serve", flag.ContinueOnError)
	listen := svc.Listen
	if listen == "" {
		listen = DefaultListen
	}
	fs.StringVar(&env.Listen, "listen", listen, "the service's Connect `address`")
	fs.StringVar(&env.Ops, "ops", DefaultOps, "the ops server's `address`: /metrics and /healthz over plain HTTP, for the internal network only")
	fs.StringVar(&env.TLSDir, "tls-dir", DefaultTLSDir, "the `directory` of this service's cert.pem, key.pem and bundle.pem, reloaded when renewed")
	fs.StringVar(&env.Data, "data", DefaultData, "the service's store `directory`")
	fs.TextVar(&env.LogLevel, "log-level", slog.LevelInfo, "the least `level` logged: debug, info, warn or error")
	if svc.Flags != nil {
		svc.Flags(fs)
	}
	if code, done := parse(fs, args, stdout, stderr, svc); done {
		return code
	}
	env.Log = slog.New(slog.NewJSONHandler(stderr, &slog.HandlerOptions{Level: env.LogLevel})).With("service", svc.Name)
	env.Metrics = metrics.NewRegistry()

	ln, err := net.Listen("tcp", env.Ops)
	if err != nil {
		env.Log.Error("ops server", "err", err)
		return 1
	}
	env.OpsAddr = ln.Addr().String()
	ops := env.opsServer()
	go ops.Serve(ln)
	defer func() {
		sctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		if ops.Shutdown(sctx) != nil {
			ops.Close()
		}
	}()
	env.Log.Info("starting", "listen", env.Listen, "ops", env.OpsAddr)

	done := make(chan error, 1)
	go func() { done <- svc.Run(ctx, env) }()
	select {
	case err = <-done:
	case <-ctx.Done():
		env.Log.Info("stopping", "cause", context.Cause(ctx).Error())
		bound := svc.StopTimeout
		if bound == 0 {
			bound = DefaultStopTimeout
		}
		t := time.NewTimer(bound)
		defer t.Stop()
		select {
		case err = <-done:
		case <-t.C:
			err = errs.E(errs.DeadlineExceeded, "the service did not stop within %v", bound)
		}
	}
	if err != nil && !(ctx.Err() != nil && errors.Is(err, ctx.Err())) {
		env.Log.Error("stopped", "err", err)
		return 1
	}
	env.Log.Info("stopped")
	return 0
}

// opsServer serves /metrics and /healthz, with every timeout bounded.
func (e *Env) opsServer() *http.Server {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", e.Metrics.Handler())
	mux.HandleFunc("GET /healthz", e.healthz)
	return &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       10 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       time.Minute,
		MaxHeaderBytes:    8 << 10,
		ErrorLog:          slog.NewLogLogger(e.Log.Handler(), slog.LevelDebug),
	}
}

// healthz answers 200 "ok" when the service is ready and every check
// passes, else 503 with why.
func (e *Env) healthz(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	e.mu.Lock()
	ready, checks := e.ready, slices.Clone(e.checks)
	e.mu.Unlock()
	switch {
	case e.stopping.Err() != nil:
		unavailable(w, "stopping")
		return
	case !ready:
		unavailable(w, "starting")
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), checkTimeout)
	defer cancel()
	failed := make([]error, len(checks))
	var wg sync.WaitGroup
	for i, c := range checks {
		wg.Go(func() {
			if err := c.fn(ctx); err != nil {
				failed[i] = fmt.Errorf("%s: %w", c.name, err)
			}
		})
	}
	wg.Wait()
	if err := errors.Join(failed...); err != nil {
		e.Log.Warn("unhealthy", "err", err)
		unavailable(w, err.Error())
		return
	}
	fmt.Fprintln(w, "ok")
}

func unavailable(w http.ResponseWriter, why string) {
	w.WriteHeader(http.StatusServiceUnavailable)
	fmt.Fprintln(w, why)
}

// health asks a service's ops server whether it is healthy.
func health(ctx context.Context, args []string, stdout, stderr io.Writer, svc Service) int {
	fs := flag.NewFlagSet(svc.prog()+" health", flag.ContinueOnError)
	ops := fs.String("ops", DefaultHealthOps, "the ops server's `address` (no host: 127.0.0.1)")
	timeout := fs.Duration("timeout", 2*time.Second, "how long to wait for the answer")
	if code, done := parse(fs, args, stdout, stderr, svc); done {
		return code
	}
	addr, err := dialAddr(*ops)
	if err != nil {
		fmt.Fprintf(stderr, "%s: --ops: %v\n", fs.Name(), err)
		return 2
	}
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/healthz", nil)
	if err != nil {
		fmt.Fprintf(stderr, "%s: %v\n", fs.Name(), err)
		return 2
	}
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}} // no proxy
	resp, err := client.Do(req)
	if err != nil {
		fmt.Fprintf(stderr, "%s: unhealthy: %v\n", fs.Name(), err)
		return 1
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 4<<10))
	if err != nil {
		fmt.Fprintf(stderr, "%s: unhealthy: reading the answer: %v\n", fs.Name(), err)
		return 1
	}
	if resp.StatusCode != http.StatusOK {
		fmt.Fprintf(stderr, "%s: unhealthy: %s: %s\n", fs.Name(), resp.Status, strings.TrimSpace(string(body)))
		return 1
	}
	fmt.Fprintf(stdout, "%s\n", strings.TrimSpace(string(body)))
	return 0
}

// dialAddr is the address to reach an ops server listening on addr: with
// no host, or an unspecified one (0.0.0.0, ::), that is 127.0.0.1.
func dialAddr(addr string) (string, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return "", err
	}
	if ip := net.ParseIP(host); host == "" || ip != nil && ip.IsUnspecified() {
		host = "127.0.0.1"
	}
	return net.JoinHostPort(host, port), nil
}
