package broker

import (
	"context"
	"flag"

	"github.com/contractual/contractual/internal/authz"
	"github.com/contractual/contractual/internal/daemon"
	"github.com/contractual/contractual/internal/errs"
	"github.com/contractual/contractual/internal/node"
)

// Daemon is the broker as its own process (contractual-broker): its store
// in --data, its key-encryption key from --kek (a Docker secret), served
// over mutual TLS, calling policy and audit.
func Daemon() daemon.Service {
	var peers node.Peers
	var kek *string
	return daemon.Service{
		Name: string(authz.Broker),
		Flags: func(fs *flag.FlagSet) {
			peers = node.Flags(fs, authz.Policy, authz.Audit)
			kek = fs.String("kek", "/run/secrets/kek", "the key-encryption key file (a Docker secret; deploy/secrets.sh makes one)")
		},
		Run: func(ctx context.Context, env *daemon.Env) error {
			if *kek == "" {
				return errs.E(errs.Invalid, "--kek is required: the broker never makes its own key-encryption key")
			}
			n, err := node.New(env, authz.Broker, peers)
			if err != nil {
				return err
			}
			svc, err := Open(ctx, Config{Dir: env.Data, KEKFile: *kek}, Deps{Policy: n.Clients.Policy, Audit: n.Clients.Audit})
			if err != nil {
				return err
			}
			defer svc.Close(context.Background())
			return n.Serve(ctx, svc.Handlers(n.HandlerOptions()))
		},
	}
}
