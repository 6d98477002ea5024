// Command contractual-ca is the certificate service of the compose
// deployment: init makes the internal CA and the services' first
// certificates, renew re-issues them before they expire (every --every, and
// on SIGHUP; SIGTERM stops it), health is its container healthcheck. See
// package cacmd.
package main

import (
	"context"
	"errors"
	"flag"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/contractual/contractual/internal/pki/cacmd"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	err := cacmd.Run(ctx, os.Args[1:], cacmd.Env{Stdout: os.Stdout, Stderr: os.Stderr, HUP: hup})
	stop()
	switch {
	case errors.Is(err, flag.ErrHelp):
	case err != nil:
		slog.New(slog.NewJSONHandler(os.Stderr, nil)).Error("contractual-ca", "err", err)
		os.Exit(1)
	}
}
