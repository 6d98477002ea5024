package runner

import (
	"context"
	"flag"

	"github.com/contractual/contractual/internal/authz"
	"github.com/contractual/contractual/internal/daemon"
	"github.com/contractual/contractual/internal/node"
	"github.com/contractual/contractual/runtime/sandbox"
)

// Daemon is the runner as its own process (contractual-runner): the
// sandbox with its compiled-module cache in --cache, served over mutual
// TLS, calling policy, the broker and audit. It persists nothing else.
func Daemon() daemon.Service {
	var peers node.Peers
	var cache *string
	var cfg Config
	return daemon.Service{
		Name: string(authz.Runner),
		Flags: func(fs *flag.FlagSet) {
			peers = node.Flags(fs, authz.Policy, authz.Broker, authz.Audit)
			cache = fs.String("cache", "/cache", "the compiled-module cache directory (empty: compile in memory only)")
			fs.IntVar(&cfg.MaxConcurrent, "max-concurrent", 0, "calls running or fetching at once (0: the default)")
		},
		Run: func(ctx context.Context, env *daemon.Env) error {
			n, err := node.New(env, authz.Runner, peers)
			if err != nil {
				return err
			}
			engine, err := sandbox.NewEngine(sandbox.Options{CacheDir: *cache, Logger: env.Log})
			if err != nil {
				return err
			}
			defer engine.Close(context.Background())
			cfg.Logger = env.Log
			svc, err := New(ctx, cfg, Deps{
				Policy: n.Clients.Policy, Broker: n.Clients.Broker, Audit: n.Clients.Audit,
				Engine: engine, Metrics: env.Metrics.Tools(),
			})
			if err != nil {
				return err
			}
			defer svc.Close(context.Background())
			return n.Serve(ctx, svc.Handlers(n.HandlerOptions()))
		},
	}
}
