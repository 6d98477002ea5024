// Package gateway is the only way in: the public Connect API and the
// Control UI for the owner's paired devices. It owns device pairing and
// sessions, authenticates every request before its body is read (gate),
// authorizes it by the device's scopes, and passes it on to the services
// behind it — policy, the runner, the broker, audit — through their Connect
// clients, naming the device it calls for. Webhook deliveries (POST
// /hooks/<job id>) carry no device credential: it passes them, bounded and
// rate limited, to the scheduler, which checks their signatures. It runs no
// tool and reads no secret value.
package gateway

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"connectrpc.com/connect"

	"github.com/contractual/contractual/contracts/gen/contractual/v1/contractualv1connect"
	"github.com/contractual/contractual/internal/errs"
	"github.com/contractual/contractual/internal/invoke"
	"github.com/contractual/contractual/internal/mcpserver"
	"github.com/contractual/contractual/internal/mesh"
	"github.com/contractual/contractual/internal/pairing"
	"github.com/contractual/contractual/internal/rpc"
	"github.com/contractual/contractual/internal/tailnet"
	"github.com/contractual/contractual/ui"
)

// Config configures the gateway.
type Config struct {
	// Dir holds the gateway's store (paired devices) and the Control UI's
	// key.
	Dir string
	// Addr is the listen address ("127.0.0.1:0" picks a free port).
	Addr string
	// Log receives the gateway's logs; nil discards them.
	Log *slog.Logger
	// PublicURL is the URL the owner's devices use when it is not the
	// listen address: the https:// name that `tailscale serve` gives the
	// server on the tailnet. It makes the Control UI's cookies Secure and
	// trusts that origin for form posts.
	PublicURL string
	// Identify tells which tailnet node each request on Addr came from
	// (see tailnet.Identifier). Nil: no request on Addr is from the
	// tailnet, unless PublicURL is set, when the loopback listener is
	// behind `tailscale serve` on the same machine and its identity
	// headers are believed from loopback (tailnet.ServeHeaders).
	Identify tailnet.Identifier
	// TailnetCap is the Tailscale app capability whose grants cap the
	// scopes of a device calling from the tailnet (default
	// tailnet.DefaultCap; see tailnet.CapScopes).
	TailnetCap string
	// Limits bounds connections, unauthenticated requests and how long
	// any request may take; zero fields take the defaults.
	Limits Limits
	// Interceptors run on every API call after authentication (metrics,
	// say).
	Interceptors []connect.Interceptor
}

// Deps are the services the gateway passes requests on to; each is
// required but Scheduler.
type Deps struct {
	Policy mesh.Policy
	Broker mesh.Broker
	Audit  mesh.Audit
	Runner contractualv1connect.RunnerServiceClient
	// Scheduler takes the webhook deliveries (POST /hooks/<job id>); nil:
	// they are refused.
	Scheduler contractualv1connect.SchedulerInternalServiceClient
	// Runs is the worker's JobRunService; without it devices cannot reach
	// jobs' runs.
	Runs contractualv1connect.JobRunServiceClient
	// Engine is the engine's SessionService; without it devices cannot
	// chat.
	Engine contractualv1connect.SessionServiceClient
}

// Request size caps: a publish carries a module (up to the 64 MiB that
// runtime/modcheck allows, which the gateway does not link: a test checks
// the two agree), everything else is small.
const (
	maxPublishBytes = 64<<20 + 2<<20
	maxRequestBytes = 2 << 20
)

// Gateway is a running gateway.
type Gateway struct {
	// URL is the API's base URL, e.g. http://127.0.0.1:7700.
	URL string
	// SetupCode pairs an owner device; set while no owner device is
	// active (the first start, or all revoked or expired).
	SetupCode        string
	SetupCodeExpires time.Time

	log     *slog.Logger
	devices *pairing.Store
	limits  Limits
	gate    *gate
	console *ui.UI
	mcp     *mcpserver.Server
	stopMCP context.CancelFunc // ends the MCP server's following of policy
	mcpDone chan struct{}      // closed when it has ended

	mu      sync.Mutex
	servers []*http.Server
	closed  bool
	stopped chan struct{} // closed when the first server stops
	stop    sync.Once
	err     error // why serving stopped; set before stopped is closed
}

// Start opens the gateway's store, builds its handlers over deps and
// starts serving on cfg.Addr.
func Start(ctx context.Context, cfg Config, deps Deps) (_ *Gateway, err error) {
	switch {
	case deps.Policy.PolicyServiceClient == nil || deps.Policy.PolicyInternalServiceClient == nil || deps.Policy.JobServiceClient == nil:
		return nil, errs.E(errs.Invalid, "gateway: no policy service")
	case deps.Broker.BrokerServiceClient == nil:
		return nil, errs.E(errs.Invalid, "gateway: no broker service")
	case deps.Audit.AuditServiceClient == nil || deps.Audit.AuditInternalServiceClient == nil:
		return nil, errs.E(errs.Invalid, "gateway: no audit service")
	case deps.Runner == nil:
		return nil, errs.E(errs.Invalid, "gateway: no runner service")
	case cfg.Dir == "":
		return nil, errs.E(errs.Invalid, "gateway: no store directory")
	}
	g := &Gateway{log: cfg.Log, stopped: make(chan struct{})}
	if g.log == nil {
		g.log = slog.New(slog.DiscardHandler)
	}
	devices, err := pairing.Open(ctx, pairing.Config{Dir: cfg.Dir}, pairing.Deps{Audit: deps.Audit})
	if err != nil {
		return nil, err
	}
	g.devices = devices
	defer func() {
		if err != nil {
			devices.Close()
		}
	}()
	// The first device pairs with a one-time code printed on the console.
	if code, exp, err := devices.SetupCode(ctx); err == nil {
		g.SetupCode, g.SetupCodeExpires = code, exp
	} else if !errs.Is(err, errs.FailedPrecondition) {
		return nil, err
	}
	g.limits = cfg.Limits.withDefaults()
	if err := g.handler(cfg, deps); err != nil {
		return nil, err
	}
	// The MCP server follows policy's approved contracts until Close.
	follow, stop := context.WithCancel(context.WithoutCancel(ctx))
	g.stopMCP = stop
	mcpDone := make(chan struct{})
	go func() {
		defer close(mcpDone)
		g.mcp.Run(follow)
	}()
	g.mcpDone = mcpDone
	defer func() {
		if err != nil {
			stop()
			<-mcpDone
		}
	}()
	ln, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		return nil, errs.Wrap(errs.Unavailable, err, "listen")
	}
	g.URL = "http://" + ln.Addr().String()
	id := cfg.Identify
	if id == nil && cfg.PublicURL != "" {
		// tailscale serve on this machine proxies to the loopback
		// listener: its headers are believed from loopback only.
		id = tailnet.ServeHeaders{FromProxy: netip.Addr.IsLoopback}
	}
	if err := g.Serve(ln, id, g.URL); err != nil {
		ln.Close()
		return nil, err
	}
	return g, nil
}

// Serve serves the API and the Control UI on ln too, with the same limits
// and its own connection cap, until Close: the tailnet listener of the
// embedded tsnet node, say. id identifies the tailnet node of each request
// on ln (nil: none is from the tailnet). url is the base URL devices use
// on ln: the Control UI trusts its origin for form posts, and an https://
// url makes its cookies Secure there. A listener that fails stops the
// gateway (Wait returns its error). Serve fails once the gateway is
// closed, or for an invalid url.
func (g *Gateway) Serve(ln net.Listener, id tailnet.Identifier, url string) error {
	if err := g.console.AddOrigin(url); err != nil {
		return err
	}
	if err := g.gate.origins.add(url); err != nil {
		return err
	}
	// Until a request authenticates, it has UnauthenticatedReadTimeout to
	// be read whole; the gate then sets each authenticated request's
	// deadlines by procedure.
	srv := &http.Server{
		Handler:           listener{gate: g.gate, id: id, https: strings.HasPrefix(url, "https://"), url: url},
		ReadHeaderTimeout: g.limits.ReadHeaderTimeout,
		ReadTimeout:       g.limits.UnauthenticatedReadTimeout,
		WriteTimeout:      g.limits.WriteTimeout + writeGrace,
		IdleTimeout:       g.limits.IdleTimeout,
		MaxHeaderBytes:    g.limits.MaxHeaderBytes,
		ConnContext: func(ctx context.Context, c net.Conn) context.Context {
			return context.WithValue(ctx, connKey{}, c)
		},
		ErrorLog:  slog.NewLogLogger(g.log.Handler(), slog.LevelDebug),
		Protocols: new(http.Protocols),
	}
	srv.Protocols.SetHTTP1(true)
	srv.Protocols.SetUnencryptedHTTP2(true) // gRPC clients speak h2c
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed {
		return errs.E(errs.FailedPrecondition, "gateway: closed")
	}
	g.servers = append(g.servers, srv)
	limited := newConnLimit(ln, g.limits.MaxConns)
	go func() { g.serverStopped(srv.Serve(limited)) }()
	g.log.Info("serving", "url", url, "listen", ln.Addr().String(), "tailnet", id != nil)
	return nil
}

// serverStopped records why serving stopped: the first server to stop, with err.
func (g *Gateway) serverStopped(err error) {
	g.stop.Do(func() {
		if !errors.Is(err, http.ErrServerClosed) {
			g.err = err
		}
		close(g.stopped)
	})
}

// handler mounts the API and the Control UI behind the gate (g.gate).
func (g *Gateway) handler(cfg Config, deps Deps) error {
	auth := tailnetAuth{devices: g.devices, capName: cmp.Or(cfg.TailnetCap, tailnet.DefaultCap)}
	opts := connect.WithHandlerOptions(append(rpc.Codecs(),
		connect.WithInterceptors(append([]connect.Interceptor{rpc.ErrorInterceptor(g.log), authInterceptor(auth)}, cfg.Interceptors...)...),
		connect.WithReadMaxBytes(maxRequestBytes),
		withCappedGzip(maxPublishBytes+1),
	)...)
	r := http.NewServeMux()
	mount := func(path string, h http.Handler) { r.Handle(path, h) }
	mount(contractualv1connect.NewPolicyServiceHandler(deps.Policy, opts, connect.WithReadMaxBytes(maxPublishBytes)))
	mount(contractualv1connect.NewJobServiceHandler(deps.Policy, opts))
	tools := invoke.New(deps.Policy, deps.Runner)
	mount(contractualv1connect.NewToolServiceHandler(tools, opts))
	mount(contractualv1connect.NewAuditServiceHandler(deps.Audit, opts))
	mount(contractualv1connect.NewBrokerServiceHandler(deps.Broker, opts))
	services := []string{
		contractualv1connect.PolicyServiceName, contractualv1connect.JobServiceName, contractualv1connect.ToolServiceName,
		contractualv1connect.AuditServiceName, contractualv1connect.BrokerServiceName,
		contractualv1connect.PairingServiceName,
	}
	if deps.Runs != nil {
		mount(contractualv1connect.NewJobRunServiceHandler(deps.Runs, opts))
		services = append(services, contractualv1connect.JobRunServiceName)
	}
	if deps.Engine != nil {
		mount(contractualv1connect.NewSessionServiceHandler(sessions{deps.Engine}, opts))
		services = append(services, contractualv1connect.SessionServiceName)
	}
	pairingSvc := pairing.NewService(g.devices)
	mount(contractualv1connect.NewPairingServiceHandler(pairingSvc, opts))
	public := map[string]bool{}
	for _, p := range publicProcedures() {
		public[p] = true
	}
	for p := range openAPI {
		public[p] = true
	}
	introspection, err := publicIntrospection(services, public)
	if err != nil {
		return err
	}
	for p, h := range introspection {
		mount(p, h)
	}

	console, err := ui.New(ui.Config{
		Policy: deps.Policy, Pairing: pairingSvc, Broker: deps.Broker, Audit: deps.Audit, Auth: auth, Log: g.log,
		Jobs: deps.Policy, Runs: deps.Runs, Sessions: deps.Engine,
		KeyFile: filepath.Join(cfg.Dir, "ui.key"), PublicURL: cfg.PublicURL,
	})
	if err != nil {
		return err
	}
	g.console = console
	top := http.NewServeMux()
	top.Handle("/ui/", console)
	top.Handle("GET /{$}", http.RedirectHandler("/ui/", http.StatusSeeOther))
	top.Handle("/", http.MaxBytesHandler(r, maxPublishBytes+1<<20))
	// The MCP endpoint: the approved tools, called through the same
	// ToolService as Invoke. A call ends a little before its request's
	// deadline (InvokeTimeout), so that its result still reaches the
	// stream that carries it.
	mcpSrv, err := mcpserver.New(mcpserver.Config{
		Contracts: deps.Policy, Tools: tools, Log: g.log.With("part", "mcp"),
		CallTimeout:     g.limits.InvokeTimeout - min(writeGrace, g.limits.InvokeTimeout/10),
		MaxRequestBytes: maxRequestBytes,
	})
	if err != nil {
		return err
	}
	g.mcp = mcpSrv
	g.gate = &gate{
		next: top, auth: auth, uiToken: console.SessionToken, limits: g.limits, public: public,
		slots: make(chan struct{}, g.limits.MaxUnauthenticated),
		errw:  connect.NewErrorWriter(), log: g.log,
		hooks: hooks{scheduler: deps.Scheduler, limit: newWindowLimit(g.limits.WebhooksPerMinute, time.Minute)},
		mcp:   mcpSrv,
	}
	if cfg.PublicURL != "" {
		if err := g.gate.origins.add(cfg.PublicURL); err != nil {
			return err
		}
	}
	return nil
}

// EnsureSetupCode makes a fresh setup code when one is due (no owner device
// is active and no setup code is valid: the last one expired or was used,
// or every owner device was revoked or expired) and reports whether it
// did: `serve` checks every minute and prints the new code, so that the
// owner is never left without a way to pair.
func (g *Gateway) EnsureSetupCode(ctx context.Context) (bool, error) {
	due, err := g.devices.SetupCodeDue(ctx)
	if err != nil || !due {
		return false, err
	}
	if _, _, err := g.NewSetupCode(ctx); err != nil {
		return false, err
	}
	return true, nil
}

// NewSetupCode replaces the setup code with a fresh one, while no owner
// device is active (errs.FailedPrecondition while one is).
func (g *Gateway) NewSetupCode(ctx context.Context) (string, time.Time, error) {
	code, exp, err := g.devices.SetupCode(ctx)
	if err != nil {
		return "", time.Time{}, err
	}
	g.SetupCode, g.SetupCodeExpires = code, exp
	return code, exp, nil
}

// Wait blocks until the gateway stops serving on any of its listeners: it
// returns nil after Close, else the error that stopped it.
func (g *Gateway) Wait() error {
	<-g.stopped
	return g.err
}

// Close stops serving on every listener, lets requests in flight finish
// (until ctx ends), and closes the store.
func (g *Gateway) Close(ctx context.Context) error {
	g.mu.Lock()
	g.closed = true
	servers := g.servers
	g.mu.Unlock()
	var err error
	if g.mcp != nil {
		g.mcp.Close() // its streams end, so that Shutdown need not wait for them
	}
	for _, srv := range servers {
		err = errors.Join(err, srv.Shutdown(ctx))
	}
	if g.stopMCP != nil {
		g.stopMCP()
		<-g.mcpDone
	}
	g.serverStopped(http.ErrServerClosed)
	return errors.Join(err, g.devices.Close())
}

// String describes the gateway for logs.
func (g *Gateway) String() string { return fmt.Sprintf("contractual gateway at %s", g.URL) }
