package cli

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/contractual/contractual/internal/audit"
	"github.com/contractual/contractual/internal/engine"
	"github.com/contractual/contractual/internal/server"
	"github.com/contractual/contractual/internal/tailnet/tsnode"
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
	onTailnet := fs.Bool("tailnet", false, "also serve on your tailnet, as this server's own node (tsnet, state in DATA/tailnet)")
	tsHost := fs.String("tailnet-hostname", tsnode.DefaultHostname, "the node's name on the tailnet: it serves at <name>.<tailnet>.ts.net")
	tsKey := fs.String("tailnet-auth-key-file", "", "a file holding the tailnet auth key that adds the node (default: $TS_AUTHKEY=file:<path>; without one, serve prints a login URL)")
	tsControl := fs.String("tailnet-control-url", "", "the tailnet's coordination server (default: Tailscale's; a Headscale's URL)")
	tsHTTPS := fs.String("tailnet-https", tsnode.HTTPSAuto, "HTTPS on the tailnet: auto (with the tailnet's certificate if it offers one, else HTTP), on, or off")
	mdl := engine.Flags(fs, env.getenv)
	pos, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 0 {
		return usagef("unexpected argument %q", pos[0])
	}
	log := slog.New(slog.NewTextHandler(env.Stderr, nil))
	cfg := server.Config{DataDir: *data, Addr: *addr, Log: log, KEKFile: *kek, PublicURL: *public,
		Audit:  audit.Options{KeepEvents: *keepEvents, KeepFor: time.Duration(*keepDays) * 24 * time.Hour, ExportDir: *exportDir},
		Engine: engine.Config{Model: *mdl}}
	if *onTailnet {
		if *public != "" {
			return usagef("--public-url is for `tailscale serve` beside the server; with --tailnet, the server is on the tailnet itself")
		}
		switch *tsHTTPS {
		case tsnode.HTTPSAuto, tsnode.HTTPSOn, tsnode.HTTPSOff:
		default:
			return usagef("--tailnet-https %q: want auto, on or off", *tsHTTPS)
		}
		keyFile, err := tsnode.AuthKeyFile(*tsKey, env.getenv)
		if err != nil {
			return usageError{err}
		}
		cfg.Tailnet = &tsnode.Config{Hostname: *tsHost, AuthKeyFile: keyFile, ControlURL: *tsControl, HTTPS: *tsHTTPS,
			LoginURL: func(u string) {
				fmt.Fprintf(env.Stdout, "contractual: to add this server to your tailnet, open %s (or restart with an auth key: --tailnet-auth-key-file or TS_AUTHKEY=file:<path>)\n", u)
			}}
	}
	s, err := server.Start(ctx, cfg)
	if err != nil {
		return err
	}
	fmt.Fprintf(env.Stdout, "contractual: serving %s (Control UI at %s/ui/)\n", s.URL, s.URL)
	if s.TailnetURL != "" {
		fmt.Fprintf(env.Stdout, "contractual: serving your tailnet at %s (Control UI at %s/ui/)\n", s.TailnetURL, s.TailnetURL)
	}
	fmt.Fprintf(env.Stdout, "contractual: data in %s\n", *data)
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

// printSetupCode tells the owner how to pair an owner device: on the
// tailnet when the server is on it, else on loopback. A browser pairs
// only in a secure context (WebCrypto): over HTTPS, or on loopback.
func printSetupCode(env *Env, s *server.Server) {
	browser, server := s.URL, ""
	if s.TailnetURL != "" {
		server = " --server " + s.TailnetURL
		if strings.HasPrefix(s.TailnetURL, "https://") {
			browser = s.TailnetURL
		}
	}
	fmt.Fprintf(env.Stdout, "contractual: no owner device is paired; pair one with setup code %s (valid until %s; if it expires unused, a new one is printed here):\n"+
		"contractual:   in a browser, open %s/ui/pair; or run `contractual pair%s --setup-code %s`\n",
		s.SetupCode, s.SetupCodeExpires.Local().Format("15:04:05"), browser, server, s.SetupCode)
}

func waitDone(s *server.Server) <-chan error {
	ch := make(chan error, 1)
	go func() { ch <- s.Wait() }()
	return ch
}
