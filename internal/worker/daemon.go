package worker

import (
	"context"
	"flag"

	"github.com/contractual/contractual/internal/authz"
	"github.com/contractual/contractual/internal/daemon"
	"github.com/contractual/contractual/internal/node"
)

// Daemon is the worker as its own process (contractual-worker): its run
// queue in --data, served over mutual TLS, calling policy (decisions and
// jobs), the runner, audit and the engine (--engine-url, for agent steps;
// empty: agent steps fail, saying so). Several worker processes may share one
// store: leases keep them from running a step twice.
func Daemon() daemon.Service {
	var peers node.Peers
	var cfg Config
	return daemon.Service{
		Name: string(authz.Worker),
		Flags: func(fs *flag.FlagSet) {
			peers = node.Flags(fs, authz.Policy, authz.Runner, authz.Audit, authz.Engine)
			fs.IntVar(&cfg.Workers, "workers", DefaultWorkers, "runs this process runs at once")
			fs.DurationVar(&cfg.Lease, "lease", DefaultLease, "how long a claimed run stays claimed without a renewal")
		},
		Run: func(ctx context.Context, env *daemon.Env) error {
			n, err := node.New(env, authz.Worker, peers)
			if err != nil {
				return err
			}
			cfg.Dir, cfg.Logger = env.Data, env.Log
			deps := Deps{Policy: n.Clients.Policy, Runner: n.Clients.Runner, Jobs: n.Clients.Policy, Audit: n.Clients.Audit}
			if *peers[authz.Engine] != "" {
				deps.Engine = n.Clients.EngineInternal
			}
			svc, err := Open(ctx, cfg, deps)
			if err != nil {
				return err
			}
			defer svc.Close(context.Background())
			return n.Serve(ctx, svc.Handlers(n.HandlerOptions()))
		},
	}
}
