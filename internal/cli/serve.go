package cli

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"time"

	"github.com/contractual/contractual/internal/server"
)

// serveCmd runs the all-in-one server until the context ends.
func serveCmd(ctx context.Context, env *Env, args []string) error {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	data := fs.String("data", defaultDataDir(env), "the data directory ($CONTRACTUAL_DATA)")
	addr := fs.String("addr", DefaultAddr, "the loopback address to listen on")
	kek := fs.String("kek", env.getenv("CONTRACTUAL_KEK_FILE"),
		"the broker's key-encryption key file ($CONTRACTUAL_KEK_FILE; default: broker.kek in the data directory, created at first start)")
	pos, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 0 {
		return usagef("unexpected argument %q", pos[0])
	}
	log := slog.New(slog.NewTextHandler(env.Stderr, nil))
	s, err := server.Start(ctx, server.Config{DataDir: *data, Addr: *addr, Log: log, KEKFile: *kek})
	if err != nil {
		return err
	}
	fmt.Fprintf(env.Stdout, "contractual: serving %s (Control UI at %s/ui/)\ncontractual: data in %s\n", s.URL, s.URL, *data)
	if s.SetupCode != "" {
		fmt.Fprintf(env.Stdout, "contractual: no device is paired yet; pair the first one with setup code %s (valid until %s):\n"+
			"contractual:   in a browser, open %s/ui/pair; or run `contractual pair --setup-code %s`\n",
			s.SetupCode, s.SetupCodeExpires.Local().Format("15:04:05"), s.URL, s.SetupCode)
	}
	select {
	case <-ctx.Done():
	case <-waitDone(s):
	}
	shutdown, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return s.Close(shutdown)
}

func waitDone(s *server.Server) <-chan error {
	ch := make(chan error, 1)
	go func() { ch <- s.Wait() }()
	return ch
}
