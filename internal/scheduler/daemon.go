package scheduler

import (
	"context"
	"flag"

	"github.com/contractual/contractual/internal/authz"
	"github.com/contractual/contractual/internal/daemon"
	"github.com/contractual/contractual/internal/node"
)

// Daemon is the scheduler as its own process (contractual-scheduler): its
// store in --data, served over mutual TLS (the gateway's webhook
// deliveries), following policy's jobs, enqueueing with the worker, and
// recording to audit.
func Daemon() daemon.Service {
	var peers node.Peers
	return daemon.Service{
		Name:  string(authz.Scheduler),
		Flags: func(fs *flag.FlagSet) { peers = node.Flags(fs, authz.Policy, authz.Worker, authz.Broker, authz.Audit) },
		Run: func(ctx context.Context, env *daemon.Env) error {
			n, err := node.New(env, authz.Scheduler, peers)
			if err != nil {
				return err
			}
			c := n.Clients
			svc, err := Open(ctx, Config{Dir: env.Data, Log: env.Log}, Deps{Jobs: c.Policy, Queue: c.Worker, Broker: c.Broker, Audit: c.Audit})
			if err != nil {
				return err
			}
			defer svc.Close(context.Background())
			return n.Serve(ctx, svc.Handlers(n.HandlerOptions()))
		},
	}
}
