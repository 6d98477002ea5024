package policy

import (
	"context"
	"flag"

	"github.com/contractual/contractual/internal/authz"
	"github.com/contractual/contractual/internal/daemon"
	"github.com/contractual/contractual/internal/node"
)

// Daemon is the policy service as its own process (contractual-policy):
// its store in --data, served over mutual TLS, recording to audit.
func Daemon() daemon.Service {
	var peers node.Peers
	return daemon.Service{
		Name:  string(authz.Policy),
		Flags: func(fs *flag.FlagSet) { peers = node.Flags(fs, authz.Audit) },
		Run: func(ctx context.Context, env *daemon.Env) error {
			n, err := node.New(env, authz.Policy, peers)
			if err != nil {
				return err
			}
			svc, err := Open(ctx, Config{Dir: env.Data}, Deps{Audit: n.Clients.Audit})
			if err != nil {
				return err
			}
			defer svc.Close(context.Background())
			return n.Serve(ctx, svc.Handlers(n.HandlerOptions()))
		},
	}
}
