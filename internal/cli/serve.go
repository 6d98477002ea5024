package cli

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"time"

	"github.com/contractual/contractual/internal/audit"
	"github.com/contractual/contractual/internal/server"
)

// serveCmd runs the all-in-one server until the context ends.
func serveCmd(ctx context.Context, env *Env, args []string) error {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	data := fs.String("data", defaultDataDir(env), "the data directory ($CONTRACTUAL_DATA)")
	addr := fs.String("addr", DefaultAddr, "the loopback address to listen on")
	kek := fs.String("kek", env.getenv("CONTRACTUAL_KEK_FILE"),
		"the broker's key-encryption key file ($CONTRACTUAL_KEK_FILE; default: broker.kek in the data directory, created at first start)")
	public := fs.String("public-url", env.getenv("CONTRACTUAL_PUBLIC_URL"),
		"the https:// URL your devices use, e.g. the name `tailscale serve` gives this machine ($CONTRACTUAL_PUBLIC_URL)")
	keepEvents := fs.Uint64("audit-keep-events", 0, "audit retention: prune exported segments that have at least this many events after them (0: keep all)")
	keepDays := fs.Uint("audit-keep-days", 0, "audit retention: prune exported segments sealed at least this many days ago (0: keep all)")
	exportDir := fs.String("audit-export-dir", "", "audit retention: export due segments to this directory before pruning them (default: prune only what devices exported with `audit export`)")
	pos, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 0 {
		return usagef("unexpected argument %q", pos[0])
	}
	log := slog.New(slog.NewTextHandler(env.Stderr, nil))
	s, err := server.Start(ctx, server.Config{DataDir: *data, Addr: *addr, Log: log, KEKFile: *kek, PublicURL: *public,
		Audit: audit.Options{KeepEvents: *keepEvents, KeepFor: time.Duration(*keepDays) * 24 * time.Hour, ExportDir: *exportDir}})
	if err != nil {
		return err
	}
	fmt.Fprintf(env.Stdout, "contractual: serving %s (Control UI at %s/ui/)\ncontractual: data in %s\n", s.URL, s.URL, *data)
	if s.SetupCode != "" {
		printSetupCode(env, s)
	}
	// Every minute, print a fresh setup code if one is due: the last one
	// expired or was used while no owner device is active, or every owner
	// device was revoked or expired.
	tick := time.NewTicker(time.Minute)
	defer tick.Stop()
	done := waitDone(s)
wait:
	for {
		select {
		case <-ctx.Done():
			break wait
		case <-done:
			break wait
		case <-tick.C:
			fresh, err := s.EnsureSetupCode(ctx)
			if err != nil {
				log.Error("making a setup code", "err", err)
			} else if fresh {
				printSetupCode(env, s)
			}
		}
	}
	shutdown, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return s.Close(shutdown)
}

// printSetupCode tells the owner how to pair an owner device.
func printSetupCode(env *Env, s *server.Server) {
	fmt.Fprintf(env.Stdout, "contractual: no owner device is paired; pair one with setup code %s (valid until %s; if it expires unused, a new one is printed here):\n"+
		"contractual:   in a browser, open %s/ui/pair; or run `contractual pair --setup-code %s`\n",
		s.SetupCode, s.SetupCodeExpires.Local().Format("15:04:05"), s.URL, s.SetupCode)
}

func waitDone(s *server.Server) <-chan error {
	ch := make(chan error, 1)
	go func() { ch <- s.Wait() }()
	return ch
}
