// Package server assembles Contractual's services into one process: the
// all-in-one shape that `contractual serve` runs, with every service in
// process, its SQLite stores in one data directory, and the Connect API on
// loopback.
package server

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"connectrpc.com/connect"

	"github.com/contractual/contractual/contracts/gen/contractual/v1/contractualv1connect"
	"github.com/contractual/contractual/internal/audit"
	"github.com/contractual/contractual/internal/broker"
	"github.com/contractual/contractual/internal/errs"
	"github.com/contractual/contractual/internal/invoke"
	"github.com/contractual/contractual/internal/pairing"
	"github.com/contractual/contractual/internal/policy"
	"github.com/contractual/contractual/internal/rpc"
	"github.com/contractual/contractual/internal/runner"
	"github.com/contractual/contractual/runtime/egress"
	"github.com/contractual/contractual/runtime/sandbox"
	"github.com/contractual/contractual/ui"
)

// Config configures the all-in-one server.
type Config struct {
	// DataDir holds the stores, the broker's key (unless KEKFile is set) and
	// the compilation cache.
	DataDir string
	// Addr is the listen address; it must be a loopback address until the
	// gateway's tailnet listener lands. "127.0.0.1:0" picks a free port.
	Addr string
	// Log receives the server's logs; nil discards them.
	Log *slog.Logger
	// Runner bounds concurrent tool calls (zero: the runner's default).
	Runner runner.Options
	// KEKFile is the broker's key-encryption key; empty means broker.kek in
	// DataDir, created at first start.
	KEKFile string
	// PublicURL is the URL the owner's devices use when it is not the
	// listen address: the https:// name that `tailscale serve` gives the
	// server on the tailnet. It makes the Control UI's cookies Secure and
	// trusts that origin for form posts.
	PublicURL string
	// Egress is the sandbox's egress template. Only tests set it, to reach
	// test servers through a test dialer; the zero value dials public
	// addresses only.
	Egress egress.Config
	// Limits bounds connections, unauthenticated requests and how long
	// any request may take; zero fields take the defaults.
	Limits Limits
	// Audit tunes the audit log, its retention above all (KeepEvents,
	// KeepFor, ExportDir); zero fields take the defaults, which keep
	// everything.
	Audit audit.Options
}

// Request size caps: a publish carries a module, everything else is small.
const (
	maxPublishBytes = sandbox.MaxModuleBytes + 2<<20
	maxRequestBytes = 2 << 20
)

// Server is a running all-in-one server.
type Server struct {
	// URL is the API's base URL, e.g. http://127.0.0.1:7700.
	URL string
	// SetupCode pairs an owner device; set while no owner device is
	// active (the first start, or all revoked or expired).
	SetupCode        string
	SetupCodeExpires time.Time

	log     *slog.Logger
	devices *pairing.Store
	ln      *connLimit
	http    *http.Server
	served  chan error
	closers []func(context.Context) error
}

// Start opens the stores, builds the services and starts serving.
func Start(ctx context.Context, cfg Config) (_ *Server, err error) {
	s := &Server{log: cfg.Log, served: make(chan error, 1)}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	defer func() {
		if err != nil {
			s.closeServices(context.Background())
		}
	}()
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, errs.Wrap(errs.Internal, err, "data directory")
	}
	host, _, err := net.SplitHostPort(cfg.Addr)
	if err != nil {
		return nil, errs.Wrap(errs.Invalid, err, "listen address %q", cfg.Addr)
	}
	if ip := net.ParseIP(host); host != "localhost" && (ip == nil || !ip.IsLoopback()) {
		return nil, errs.E(errs.Invalid, "listen address %s is not loopback: reach the server from your tailnet through `tailscale serve`, not by listening elsewhere", cfg.Addr)
	}
	limits := cfg.Limits.withDefaults()
	handler, err := s.services(ctx, cfg, limits)
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		return nil, errs.Wrap(errs.Unavailable, err, "listen")
	}
	s.ln = newConnLimit(ln, limits.MaxConns)
	s.URL = "http://" + ln.Addr().String()
	// Until a request authenticates, it has UnauthenticatedReadTimeout to
	// be read whole; the gate then sets each authenticated request's
	// deadlines by procedure.
	s.http = &http.Server{
		Handler:           handler,
		ReadHeaderTimeout: limits.ReadHeaderTimeout,
		ReadTimeout:       limits.UnauthenticatedReadTimeout,
		WriteTimeout:      limits.WriteTimeout + writeGrace,
		IdleTimeout:       limits.IdleTimeout,
		MaxHeaderBytes:    limits.MaxHeaderBytes,
		ConnContext: func(ctx context.Context, c net.Conn) context.Context {
			return context.WithValue(ctx, connKey{}, c)
		},
		ErrorLog:  slog.NewLogLogger(s.log.Handler(), slog.LevelDebug),
		Protocols: new(http.Protocols),
	}
	s.http.Protocols.SetHTTP1(true)
	s.http.Protocols.SetUnencryptedHTTP2(true) // gRPC clients speak h2c
	go func() { s.served <- s.http.Serve(s.ln) }()
	s.log.Info("serving", "url", s.URL, "data", cfg.DataDir)
	return s, nil
}

// services opens every service and mounts their handlers behind the gate.
func (s *Server) services(ctx context.Context, cfg Config, limits Limits) (http.Handler, error) {
	auditOpts := cfg.Audit
	if auditOpts.Log == nil {
		auditOpts.Log = s.log
	}
	auditSvc, err := audit.OpenService(ctx, filepath.Join(cfg.DataDir, "audit"), auditOpts)
	if err != nil {
		return nil, err
	}
	s.closers = append(s.closers, auditSvc.Close)
	pol, err := policy.Open(ctx, filepath.Join(cfg.DataDir, "policy"), auditSvc, policy.Options{})
	if err != nil {
		return nil, err
	}
	s.closers = append(s.closers, pol.Close)
	kek := cfg.KEKFile
	if kek == "" {
		// All-in-one: the key-encryption key lives beside the data, created
		// at first start. In compose it is a Docker secret (Config.KEKFile).
		kek = filepath.Join(cfg.DataDir, "broker.kek")
		if _, err := os.Stat(kek); errors.Is(err, fs.ErrNotExist) {
			if err := broker.GenerateKEK(kek); err != nil {
				return nil, err
			}
		}
	}
	brk, err := broker.Open(ctx, filepath.Join(cfg.DataDir, "broker"), kek, pol, auditSvc, broker.Options{})
	if err != nil {
		return nil, err
	}
	s.closers = append(s.closers, brk.Close)
	engine, err := sandbox.NewEngine(sandbox.Options{CacheDir: filepath.Join(cfg.DataDir, "cache"), Logger: s.log, Egress: cfg.Egress})
	if err != nil {
		return nil, err
	}
	s.closers = append(s.closers, engine.Close)
	// The runner follows pol's change feed (WatchContracts) in process: it
	// compiles approved modules before their first call and deletes the
	// compiled code of revoked ones from DataDir/cache.
	runOpts := cfg.Runner
	runOpts.Broker = brk
	if runOpts.Logger == nil {
		runOpts.Logger = s.log
	}
	run, err := runner.New(ctx, pol, auditSvc, engine, runOpts)
	if err != nil {
		return nil, err
	}
	s.closers = append(s.closers, run.Close)
	tools := invoke.New(pol, run)
	devices, err := pairing.Open(ctx, filepath.Join(cfg.DataDir, "gateway"), pairing.Options{Audit: auditSvc})
	if err != nil {
		return nil, err
	}
	s.closers = append(s.closers, func(context.Context) error { return devices.Close() })
	s.devices = devices
	// The first device pairs with a one-time code printed on the console.
	if code, exp, err := devices.SetupCode(ctx); err == nil {
		s.SetupCode, s.SetupCodeExpires = code, exp
	} else if !errs.Is(err, errs.FailedPrecondition) {
		return nil, err
	}

	opts := connect.WithHandlerOptions(append(rpc.Codecs(),
		connect.WithInterceptors(rpc.ErrorInterceptor(s.log), authInterceptor(devices)),
		connect.WithReadMaxBytes(maxRequestBytes),
		withCappedGzip(maxPublishBytes+1),
	)...)
	r := http.NewServeMux()
	mount := func(path string, h http.Handler) { r.Handle(path, h) }
	mount(contractualv1connect.NewPolicyServiceHandler(pol, opts, connect.WithReadMaxBytes(maxPublishBytes)))
	mount(contractualv1connect.NewToolServiceHandler(tools, opts))
	mount(contractualv1connect.NewAuditServiceHandler(auditSvc, opts))
	mount(contractualv1connect.NewRunnerServiceHandler(run, opts))
	mount(contractualv1connect.NewBrokerServiceHandler(brk, opts))
	pairingSvc := pairing.NewService(devices)
	mount(contractualv1connect.NewPairingServiceHandler(pairingSvc, opts))
	public := map[string]bool{}
	for _, p := range publicProcedures() {
		public[p] = true
	}
	for p := range openAPI {
		public[p] = true
	}
	introspection, err := publicIntrospection([]string{
		contractualv1connect.PolicyServiceName, contractualv1connect.ToolServiceName,
		contractualv1connect.AuditServiceName, contractualv1connect.RunnerServiceName,
		contractualv1connect.BrokerServiceName, contractualv1connect.PairingServiceName,
	}, public)
	if err != nil {
		return nil, err
	}
	for p, h := range introspection {
		mount(p, h)
	}

	console, err := ui.New(ui.Config{
		Policy: pol, Pairing: pairingSvc, Broker: brk, Audit: auditSvc, Auth: devices, Log: s.log,
		KeyFile: filepath.Join(cfg.DataDir, "gateway", "ui.key"), PublicURL: cfg.PublicURL,
	})
	if err != nil {
		return nil, err
	}
	top := http.NewServeMux()
	top.Handle("/ui/", console)
	top.Handle("GET /{$}", http.RedirectHandler("/ui/", http.StatusSeeOther))
	top.Handle("/", http.MaxBytesHandler(r, maxPublishBytes+1<<20))
	return &gate{
		next: top, auth: devices, uiToken: console.SessionToken, limits: limits,
		trustProxy: cfg.PublicURL != "", public: public,
		slots: make(chan struct{}, limits.MaxUnauthenticated),
		errw:  connect.NewErrorWriter(), log: s.log,
	}, nil
}

// EnsureSetupCode makes a fresh setup code when one is due (no owner device
// is active and no setup code is valid: the last one expired or was used,
// or every owner device was revoked or expired) and reports whether it
// did: `serve` checks every minute and prints the new code, so that the
// owner is never left without a way to pair.
func (s *Server) EnsureSetupCode(ctx context.Context) (bool, error) {
	due, err := s.devices.SetupCodeDue(ctx)
	if err != nil || !due {
		return false, err
	}
	if _, _, err := s.NewSetupCode(ctx); err != nil {
		return false, err
	}
	return true, nil
}

// NewSetupCode replaces the setup code with a fresh one, while no owner
// device is active (errs.FailedPrecondition while one is).
func (s *Server) NewSetupCode(ctx context.Context) (string, time.Time, error) {
	code, exp, err := s.devices.SetupCode(ctx)
	if err != nil {
		return "", time.Time{}, err
	}
	s.SetupCode, s.SetupCodeExpires = code, exp
	return code, exp, nil
}

// Wait blocks until the server stops serving.
func (s *Server) Wait() error {
	err := <-s.served
	s.served <- err
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}

// Close stops serving, lets calls in flight finish (until ctx ends), and
// closes the services in reverse order of opening.
func (s *Server) Close(ctx context.Context) error {
	err := s.http.Shutdown(ctx)
	return errors.Join(err, s.closeServices(ctx))
}

func (s *Server) closeServices(ctx context.Context) error {
	var err error
	for i := len(s.closers) - 1; i >= 0; i-- {
		err = errors.Join(err, s.closers[i](ctx))
	}
	s.closers = nil
	return err
}

// String describes the server for logs.
func (s *Server) String() string { return fmt.Sprintf("contractual at %s", s.URL) }
