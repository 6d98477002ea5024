package engine

import (
	"context"
	"flag"
	"os"

	"github.com/contractual/contractual/internal/authz"
	"github.com/contractual/contractual/internal/daemon"
	"github.com/contractual/contractual/internal/node"
)

// Daemon is the engine as its own process (contractual-engine): its store
// in --data, SessionService served over mutual TLS (to the gateway alone,
// as the authz table says), calling policy (the approved tools, the
// decisions, the one-shot approvals), the runner (the decided calls, the
// model relay's among them) and audit. The model's flags (--model,
// --model-relay, --model-url, ...) default from the environment (Flags):
// in the compose deployment the engine has no network but the internal
// one, so its model requests go through the relay tool and the runner's
// egress.
func Daemon() daemon.Service {
	var peers node.Peers
	var m *ModelConfig
	return daemon.Service{
		Name: string(authz.Engine),
		Flags: func(fs *flag.FlagSet) {
			peers = node.Flags(fs, authz.Policy, authz.Runner, authz.Audit)
			m = Flags(fs, os.Getenv)
		},
		Run: func(ctx context.Context, env *daemon.Env) error {
			n, err := node.New(env, authz.Engine, peers)
			if err != nil {
				return err
			}
			c := n.Clients
			svc, err := Open(ctx, Config{Dir: env.Data, Model: *m, Logger: env.Log},
				Deps{Policy: c.Policy, Contracts: c.Policy, Runner: c.Runner, Audit: c.Audit})
			if err != nil {
				return err
			}
			defer svc.Close(context.Background())
			switch {
			case m.Model == "":
				env.Log.Warn("no model is configured: chat sessions are refused until --model (or $" + EnvModel + ") names one")
			case m.Relay != "":
				env.Log.Info("model", "model", m.Model, "relay", m.Relay)
			default:
				env.Log.Info("model", "model", m.Model, "url", m.BaseURL)
			}
			return n.Serve(ctx, svc.Handlers(n.HandlerOptions()))
		},
	}
}
