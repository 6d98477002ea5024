package audit

import (
	"context"
	"flag"
	"time"

	"github.com/contractual/contractual/internal/authz"
	"github.com/contractual/contractual/internal/daemon"
	"github.com/contractual/contractual/internal/node"
)

// Daemon is the audit service as its own process (contractual-audit): the
// log in --data, served over mutual TLS. It calls no one.
func Daemon() daemon.Service {
	var keepEvents *uint64
	var keepDays *uint
	var exportDir *string
	return daemon.Service{
		Name: string(authz.Audit),
		Flags: func(fs *flag.FlagSet) {
			keepEvents = fs.Uint64("keep-events", 0, "retention: prune exported segments that have at least this many events after them (0: keep all)")
			keepDays = fs.Uint("keep-days", 0, "retention: prune exported segments sealed at least this many days ago (0: keep all)")
			exportDir = fs.String("export-dir", "", "retention: export due segments to this directory before pruning them")
		},
		Run: func(ctx context.Context, env *daemon.Env) error {
			n, err := node.New(env, authz.Audit, nil)
			if err != nil {
				return err
			}
			svc, err := OpenService(ctx, Config{Dir: env.Data, Options: Options{
				Log: env.Log, KeepEvents: *keepEvents, KeepFor: time.Duration(*keepDays) * 24 * time.Hour, ExportDir: *exportDir,
			}}, Deps{})
			if err != nil {
				return err
			}
			defer svc.Close(context.Background())
			return n.Serve(ctx, svc.Handlers(n.HandlerOptions()))
		},
	}
}
