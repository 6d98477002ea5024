// Package server assembles Contractual's services into one process: the
// all-in-one shape that `contractual serve` runs. Every service is the
// same component the compose deployment runs in its own container, wired
// the same way — each serves its Connect handlers behind the same
// authorization (package authz), and calls the others through Connect
// clients — over an in-memory network (mesh.Memory) instead of mutual TLS.
// The stores are SQLite files in one data directory; the gateway listens
// on loopback and, with Config.Tailnet, on the owner's tailnet as its own
// node (package tailnet/tsnode).
package server

import (
	"context"
	"errors"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"path/filepath"

	"connectrpc.com/connect"

	"github.com/contractual/contractual/internal/audit"
	"github.com/contractual/contractual/internal/authz"
	"github.com/contractual/contractual/internal/broker"
	"github.com/contractual/contractual/internal/engine"
	"github.com/contractual/contractual/internal/errs"
	"github.com/contractual/contractual/internal/gateway"
	"github.com/contractual/contractual/internal/mesh"
	"github.com/contractual/contractual/internal/metrics"
	"github.com/contractual/contractual/internal/policy"
	"github.com/contractual/contractual/internal/runner"
	"github.com/contractual/contractual/internal/scheduler"
	"github.com/contractual/contractual/internal/tailnet"
	"github.com/contractual/contractual/internal/tailnet/tsnode"
	"github.com/contractual/contractual/internal/worker"
	"github.com/contractual/contractual/runtime/egress"
	"github.com/contractual/contractual/runtime/sandbox"
)

// Config configures the all-in-one server.
type Config struct {
	// DataDir holds the stores, the broker's key (unless KEKFile is set) and
	// the compilation cache.
	DataDir string
	// Addr is the listen address; it must be a loopback address: the
	// tailnet is reached through Tailnet (or `tailscale serve`), never by
	// listening elsewhere. "127.0.0.1:0" picks a free port.
	Addr string
	// Log receives the server's logs; nil discards them.
	Log *slog.Logger
	// Runner bounds concurrent tool calls (zero: the runner's default).
	Runner runner.Config
	// KEKFile is the broker's key-encryption key; empty means broker.kek in
	// DataDir, created at first start.
	KEKFile string
	// PublicURL is the URL the owner's devices use when it is not the
	// listen address: the https:// name that `tailscale serve` gives the
	// server on the tailnet. It makes the Control UI's cookies Secure and
	// trusts that origin for form posts.
	PublicURL string
	// Tailnet, if set, puts the server on the owner's tailnet as its own
	// node (tsnet in the process): the gateway serves it too, and knows
	// each request's node by the tailnet's WhoIs. Its Dir defaults to
	// DataDir/tailnet, its Log to Log; its Cap is the app capability that
	// caps a device's scopes (tailnet.DefaultCap if empty).
	Tailnet *tsnode.Config
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
	// Interceptors run on every call each service serves, and on the
	// gateway's API (metrics, say).
	Interceptors []connect.Interceptor
	// Scheduler configures the scheduler; its Dir and Log are set here.
	// Tests set its Clock, to fire triggers without waiting for them.
	Scheduler scheduler.Config
	// Engine configures the engine (its model above all); its Dir and
	// Logger are set here. Without a model, sessions are refused with how
	// to configure one.
	Engine engine.Config
}

// Limits are the gateway's limits.
type Limits = gateway.Limits

// Server is a running all-in-one server: the gateway (its URL, its setup
// code) in front of the other services.
type Server struct {
	*gateway.Gateway
	// TailnetURL is the base URL devices use on the tailnet
	// (https://contractual.<tailnet>.ts.net, or http:// without HTTPS);
	// empty without Config.Tailnet.
	TailnetURL string
	// Metrics counts every call each service serves, and the runner's
	// tool calls.
	Metrics *metrics.Registry

	log     *slog.Logger
	net     *mesh.Memory
	closers []func(context.Context) error // the services, in opening order
}

// Start opens every service, connects them in memory and starts the
// gateway.
func Start(ctx context.Context, cfg Config) (_ *Server, err error) {
	s := &Server{log: cfg.Log, Metrics: metrics.NewRegistry()}
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
		return nil, errs.E(errs.Invalid, "listen address %s is not loopback: reach the server from your tailnet with --tailnet (or through `tailscale serve`), not by listening elsewhere", cfg.Addr)
	}
	deps, err := s.services(ctx, cfg)
	if err != nil {
		return nil, err
	}
	var node *tsnode.Node
	if cfg.Tailnet != nil {
		if node, err = s.joinTailnet(ctx, cfg); err != nil {
			return nil, err
		}
	}
	s.Gateway, err = gateway.Start(ctx, gateway.Config{
		Dir: filepath.Join(cfg.DataDir, "gateway"), Addr: cfg.Addr, Log: s.log,
		PublicURL: cfg.PublicURL, Limits: cfg.Limits, TailnetCap: cfg.tailnetCap(),
		Interceptors: append([]connect.Interceptor{s.Metrics.Interceptor()}, cfg.Interceptors...),
	}, deps)
	if err != nil {
		return nil, err
	}
	if node != nil {
		if err := s.Serve(node.Listener(), node, node.URL); err != nil {
			s.Gateway.Close(ctx)
			return nil, err
		}
		s.TailnetURL = node.URL
	}
	s.log.Info("all-in-one server up", "url", s.URL, "tailnet", s.TailnetURL, "data", cfg.DataDir)
	return s, nil
}

// joinTailnet starts the server's tailnet node; it leaves the tailnet
// after the gateway stops (it is the first of the closers to close).
func (s *Server) joinTailnet(ctx context.Context, cfg Config) (*tsnode.Node, error) {
	tc := *cfg.Tailnet
	if tc.Dir == "" {
		tc.Dir = filepath.Join(cfg.DataDir, "tailnet")
	}
	if tc.Log == nil {
		tc.Log = s.log
	}
	tc.Cap = cfg.tailnetCap()
	node, err := tsnode.Start(ctx, tc)
	if err != nil {
		return nil, err
	}
	s.closers = append(s.closers, func(context.Context) error { return node.Close() })
	return node, nil
}

// tailnetCap is the app capability that caps a tailnet device's scopes.
func (cfg Config) tailnetCap() string {
	if cfg.Tailnet != nil && cfg.Tailnet.Cap != "" {
		return cfg.Tailnet.Cap
	}
	return tailnet.DefaultCap
}

// services opens audit, policy, the broker, the runner, the worker, the
// scheduler and the engine,
// each serving on the in-memory network as itself and calling the others
// as itself, and returns the gateway's clients of them.
func (s *Server) services(ctx context.Context, cfg Config) (gateway.Deps, error) {
	s.net = mesh.NewMemory(s.log)
	s.closers = append(s.closers, s.net.Close)
	opts := mesh.HandlerOptions(s.log, append([]connect.Interceptor{s.Metrics.Interceptor()}, cfg.Interceptors...)...)
	serve := func(name authz.Service, h mesh.Handlers) error { return s.net.Serve(name, h.Mux()) }
	clients := func(name authz.Service) mesh.Clients { return mesh.NewClients(s.net, name) }

	auditOpts := cfg.Audit
	if auditOpts.Log == nil {
		auditOpts.Log = s.log
	}
	auditSvc, err := audit.OpenService(ctx, audit.Config{Dir: filepath.Join(cfg.DataDir, "audit"), Options: auditOpts}, audit.Deps{})
	if err != nil {
		return gateway.Deps{}, err
	}
	s.closers = append(s.closers, auditSvc.Close)
	if err := serve(authz.Audit, auditSvc.Handlers(opts)); err != nil {
		return gateway.Deps{}, err
	}

	pc := clients(authz.Policy)
	pol, err := policy.Open(ctx, policy.Config{Dir: filepath.Join(cfg.DataDir, "policy")}, policy.Deps{Audit: pc.Audit})
	if err != nil {
		return gateway.Deps{}, err
	}
	s.closers = append(s.closers, pol.Close)
	if err := serve(authz.Policy, pol.Handlers(opts)); err != nil {
		return gateway.Deps{}, err
	}

	kek := cfg.KEKFile
	if kek == "" {
		// All-in-one: the key-encryption key lives beside the data, created
		// at first start. In compose it is a Docker secret.
		kek = filepath.Join(cfg.DataDir, "broker.kek")
		if _, err := os.Stat(kek); errors.Is(err, fs.ErrNotExist) {
			if err := broker.GenerateKEK(kek); err != nil {
				return gateway.Deps{}, err
			}
		}
	}
	bc := clients(authz.Broker)
	brk, err := broker.Open(ctx, broker.Config{Dir: filepath.Join(cfg.DataDir, "broker"), KEKFile: kek}, broker.Deps{Policy: bc.Policy, Audit: bc.Audit})
	if err != nil {
		return gateway.Deps{}, err
	}
	s.closers = append(s.closers, brk.Close)
	if err := serve(authz.Broker, brk.Handlers(opts)); err != nil {
		return gateway.Deps{}, err
	}

	sbx, err := sandbox.NewEngine(sandbox.Options{CacheDir: filepath.Join(cfg.DataDir, "cache"), Logger: s.log, Egress: cfg.Egress})
	if err != nil {
		return gateway.Deps{}, err
	}
	s.closers = append(s.closers, sbx.Close)
	// The runner follows policy's change feed (WatchContracts): it compiles
	// approved modules before their first call and deletes the compiled
	// code of revoked ones from DataDir/cache.
	runCfg := cfg.Runner
	if runCfg.Logger == nil {
		runCfg.Logger = s.log
	}
	rc := clients(authz.Runner)
	run, err := runner.New(ctx, runCfg, runner.Deps{Policy: rc.Policy, Broker: rc.Broker, Audit: rc.Audit, Engine: sbx, Metrics: s.Metrics.Tools()})
	if err != nil {
		return gateway.Deps{}, err
	}
	s.closers = append(s.closers, run.Close)
	if err := serve(authz.Runner, run.Handlers(opts)); err != nil {
		return gateway.Deps{}, err
	}

	// The worker runs jobs' steps through policy and the runner as the
	// job, and agent steps through the engine, with its run queue in
	// DataDir/worker. (The engine serves below: the in-memory network
	// finds a service's handler at each call, not here.)
	wc := clients(authz.Worker)
	wrk, err := worker.Open(ctx, worker.Config{Dir: filepath.Join(cfg.DataDir, "worker"), Logger: s.log},
		worker.Deps{Policy: wc.Policy, Runner: wc.Runner, Jobs: wc.Policy, Audit: wc.Audit, Engine: wc.EngineInternal})
	if err != nil {
		return gateway.Deps{}, err
	}
	s.closers = append(s.closers, wrk.Close)
	if err := serve(authz.Worker, wrk.Handlers(opts)); err != nil {
		return gateway.Deps{}, err
	}

	// The scheduler follows policy's approved jobs, enqueues their runs
	// with the worker and takes the gateway's webhook deliveries.
	sc := clients(authz.Scheduler)
	schedCfg := cfg.Scheduler
	schedCfg.Dir = filepath.Join(cfg.DataDir, "scheduler")
	if schedCfg.Log == nil {
		schedCfg.Log = s.log
	}
	sched, err := scheduler.Open(ctx, schedCfg, scheduler.Deps{Jobs: sc.Policy, Queue: sc.Worker, Broker: sc.Broker, Audit: sc.Audit})
	if err != nil {
		return gateway.Deps{}, err
	}
	s.closers = append(s.closers, sched.Close)
	if err := serve(authz.Scheduler, sched.Handlers(opts)); err != nil {
		return gateway.Deps{}, err
	}

	// The engine runs the chat sessions: it proposes through the model,
	// has policy decide and the runner run, as each session.
	ec := clients(authz.Engine)
	engCfg := cfg.Engine
	engCfg.Dir = filepath.Join(cfg.DataDir, "engine")
	if engCfg.Logger == nil {
		engCfg.Logger = s.log
	}
	eng, err := engine.Open(ctx, engCfg, engine.Deps{Policy: ec.Policy, Contracts: ec.Policy, Runner: ec.Runner, Audit: ec.Audit})
	if err != nil {
		return gateway.Deps{}, err
	}
	s.closers = append(s.closers, eng.Close)
	if err := serve(authz.Engine, eng.Handlers(opts)); err != nil {
		return gateway.Deps{}, err
	}

	gc := clients(authz.Gateway)
	return gateway.Deps{Policy: gc.Policy, Broker: gc.Broker, Audit: gc.Audit, Runner: gc.Runner, Runs: gc.Worker, Scheduler: gc.Scheduler, Engine: gc.Engine}, nil
}

// Close stops the gateway, letting requests in flight finish (until ctx
// ends), then the services, in reverse order of opening.
func (s *Server) Close(ctx context.Context) error {
	var err error
	if s.Gateway != nil {
		err = s.Gateway.Close(ctx)
	}
	return errors.Join(err, s.closeServices(ctx))
}

// closeServices closes the services in reverse order of opening — the
// worker first (it stops taking runs), then the runner (it stops following
// policy's feed), audit last — and then
// the in-memory network, so that no service is closed while another one
// still calls it.
func (s *Server) closeServices(ctx context.Context) error {
	var err error
	for i := len(s.closers) - 1; i >= 0; i-- {
		err = errors.Join(err, s.closers[i](ctx))
	}
	s.closers = nil
	return err
}
