package gateway

import (
	"context"
	"flag"
	"strings"
	"time"

	"connectrpc.com/connect"

	"github.com/contractual/contractual/internal/authz"
	"github.com/contractual/contractual/internal/daemon"
	"github.com/contractual/contractual/internal/node"
	"github.com/contractual/contractual/internal/tailnet"
)

// Daemon is the gateway as its own process (contractual-gateway): the
// public API and Control UI on --listen (plain HTTP inside the compose
// network, published on the host's loopback only), its device store in
// --data, and mutual TLS to the services behind it: among them the
// worker, whose JobRunService devices reach through it, the scheduler,
// which takes webhook deliveries, and the engine, whose SessionService
// (the chat sessions) devices reach through it. It serves no
// service-to-service port: no service calls the gateway.
//
// Behind the compose profile's Tailscale sidecar, --tailscale-serve-from
// names the sidecar: the gateway then serves only it, and believes the
// identity headers of `tailscale serve` from its addresses only.
func Daemon() daemon.Service {
	var peers node.Peers
	var public, serveFrom, capName *string
	return daemon.Service{
		Name:   string(authz.Gateway),
		Listen: ":8080",
		Flags: func(fs *flag.FlagSet) {
			peers = node.Flags(fs, authz.Policy, authz.Runner, authz.Broker, authz.Audit, authz.Scheduler, authz.Worker, authz.Engine)
			public = fs.String("public-url", "", "the URL the owner's devices use, when it is not the listen address (tailscale serve's https:// name)")
			serveFrom = fs.String("tailscale-serve-from", "", "serve only the `host`s (comma-separated names or addresses) that run `tailscale serve` in front of the gateway, and take the tailnet identity from their headers")
			capName = fs.String("tailnet-cap", tailnet.DefaultCap, "the Tailscale app capability whose grants cap the scopes of devices on the tailnet")
		},
		Run: func(ctx context.Context, env *daemon.Env) error {
			n, err := node.New(env, authz.Gateway, peers)
			if err != nil {
				return err
			}
			c := n.Clients
			var id tailnet.Identifier
			if hosts := splitHosts(*serveFrom); len(hosts) > 0 {
				proxy := newProxyHosts(hosts, env.Log.Warn)
				id = tailnet.ServeHeaders{FromProxy: proxy.contains, ProxyOnly: true}
			}
			g, err := Start(ctx, Config{
				Dir: env.Data, Addr: env.Listen, Log: env.Log, PublicURL: *public, Identify: id, TailnetCap: *capName,
				Interceptors: []connect.Interceptor{env.Metrics.Interceptor()},
			}, Deps{Policy: c.Policy, Broker: c.Broker, Audit: c.Audit, Runner: c.Runner, Scheduler: c.Scheduler, Runs: c.Worker.JobRunServiceClient, Engine: c.Engine})
			if err != nil {
				return err
			}
			if g.SetupCode != "" {
				env.Log.Info("no owner device is paired: pair one with this setup code",
					"setup_code", g.SetupCode, "expires", g.SetupCodeExpires.UTC().Format(time.RFC3339))
			}
			env.Ready()
			tick := time.NewTicker(time.Minute)
			defer tick.Stop()
			for {
				select {
				case <-ctx.Done():
					sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
					defer cancel()
					return g.Close(sctx)
				case <-tick.C:
					// Never leave the owner without a way to pair.
					if made, err := g.EnsureSetupCode(ctx); err != nil {
						env.Log.Warn("checking the setup code", "err", err)
					} else if made {
						env.Log.Info("no owner device is active: pair one with this setup code",
							"setup_code", g.SetupCode, "expires", g.SetupCodeExpires.UTC().Format(time.RFC3339))
					}
				}
			}
		},
	}
}

// splitHosts splits a comma-separated list of hosts, dropping empty ones.
func splitHosts(v string) []string {
	var out []string
	for h := range strings.SplitSeq(v, ",") {
		if h = strings.TrimSpace(h); h != "" {
			out = append(out, h)
		}
	}
	return out
}
