// Package cacmd is the command line of contractual-ca, the certificate
// service of the compose deployment, over package pki:
//
//	contractual-ca init   --root=/ca/root --issuer=/ca/issuer --certs=/certs --services=gateway,policy,...
//	contractual-ca renew  --issuer=/ca/issuer --certs=/certs --services=... [--validity=6h] [--every=5m]
//	contractual-ca health [--status=/tmp/contractual-ca.json]
//
// init is one-shot: the root CA if absent, the issuing CA when due, each
// service's first certificate (pki.Init). renew runs a pass (pki.Renew) at
// start, every --every and on SIGHUP, until its context ends (SIGTERM), and
// after each pass writes a status file; health, the container healthcheck,
// reads it: healthy if the last pass succeeded within 3 × --every. Logs
// are JSON on stderr. cmd/contractual-ca is a thin main over Run, so that
// tests run the command in-process.
package cacmd

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/contractual/contractual/internal/errs"
	"github.com/contractual/contractual/internal/pki"
)

// Env is what Run takes from its process.
type Env struct {
	Stdout, Stderr io.Writer
	// Now returns the current time (default time.Now); tests set it.
	Now func() time.Time
	// HUP delivers SIGHUP; renew runs a pass on each.
	HUP <-chan os.Signal
}

// DefaultStatus is where renew writes its status and health reads it.
const DefaultStatus = "/tmp/contractual-ca.json"

// staleAfter is how many --every intervals without a successful pass make
// renew unhealthy.
const staleAfter = 3

const usage = "usage: contractual-ca init|renew|health [flags] (contractual-ca <command> -h lists them)"

// Run runs contractual-ca with args (without the program name).
func Run(ctx context.Context, args []string, env Env) error {
	if env.Now == nil {
		env.Now = time.Now
	}
	if len(args) == 0 {
		return errs.E(errs.Invalid, usage)
	}
	switch args[0] {
	case "init":
		return runInit(args[1:], env)
	case "renew":
		return runRenew(ctx, args[1:], env)
	case "health":
		return runHealth(args[1:], env)
	}
	return errs.E(errs.Invalid, "unknown command %q; %s", args[0], usage)
}

// common holds the flags of init and renew.
type common struct {
	issuer, certs, services, logLevel string
	validity                          time.Duration
}

func (c *common) register(fs *flag.FlagSet) {
	fs.StringVar(&c.issuer, "issuer", "/ca/issuer", "the issuing CA's directory")
	fs.StringVar(&c.certs, "certs", "/certs", "the directory of the services' certificate directories")
	fs.StringVar(&c.services, "services", "", "the services, comma-separated (required)")
	fs.DurationVar(&c.validity, "validity", pki.DefaultValidity, "a service certificate's lifetime")
	fs.StringVar(&c.logLevel, "log-level", "info", "debug, info, warn or error")
}

// parse parses args into fs and returns the services and the logger.
func (c *common) parse(fs *flag.FlagSet, args []string, env Env) ([]string, *slog.Logger, error) {
	if err := fs.Parse(args); err != nil {
		return nil, nil, err
	}
	if fs.NArg() != 0 {
		return nil, nil, errs.E(errs.Invalid, "unexpected argument %q", fs.Arg(0))
	}
	var services []string
	for s := range strings.SplitSeq(c.services, ",") {
		if s = strings.TrimSpace(s); s != "" {
			services = append(services, s)
		}
	}
	if len(services) == 0 {
		return nil, nil, errs.E(errs.Invalid, "--services is required")
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(c.logLevel)); err != nil {
		return nil, nil, errs.E(errs.Invalid, "--log-level: %v", err)
	}
	log := slog.New(slog.NewJSONHandler(env.Stderr, &slog.HandlerOptions{Level: level}))
	return services, log, nil
}

func runInit(args []string, env Env) error {
	fs := flag.NewFlagSet("contractual-ca init", flag.ContinueOnError)
	fs.SetOutput(env.Stderr)
	var c common
	c.register(fs)
	root := fs.String("root", "/ca/root", "the root CA's directory (mounted by init only)")
	services, log, err := c.parse(fs, args, env)
	if err != nil {
		return err
	}
	ch, err := pki.Init(*root, c.issuer, c.certs, services, pki.Options{Now: env.Now, Validity: c.validity})
	logChanges(log, ch)
	if err != nil {
		return err
	}
	log.Info("init done", "services", services)
	return nil
}

func runRenew(ctx context.Context, args []string, env Env) error {
	fs := flag.NewFlagSet("contractual-ca renew", flag.ContinueOnError)
	fs.SetOutput(env.Stderr)
	var c common
	c.register(fs)
	every := fs.Duration("every", 5*time.Minute, "how often to look for certificates that are due")
	statusFile := fs.String("status", DefaultStatus, "the status file health reads")
	services, log, err := c.parse(fs, args, env)
	if err != nil {
		return err
	}
	if *every <= 0 {
		return errs.E(errs.Invalid, "--every must be positive")
	}
	opts := pki.Options{Now: env.Now, Validity: c.validity}
	if c.validity <= 2*(*every) {
		// A certificate is re-issued at half its life; a pass must come
		// well before it expires.
		log.Warn("--every is too long for --validity: certificates may expire between passes", "every", *every, "validity", c.validity)
	}
	log.Info("renewing", "services", services, "every", *every, "validity", c.validity)
	tick := time.NewTicker(*every)
	defer tick.Stop()
	for {
		ch, err := pki.Renew(c.issuer, c.certs, services, opts)
		logChanges(log, ch)
		st := status{Time: env.Now(), Every: every.String()}
		for _, is := range ch.Issued {
			st.Issued = append(st.Issued, is.Service)
		}
		if err != nil {
			log.Error("renew pass failed", "err", err)
			st.Error = err.Error()
		}
		if err := writeStatus(*statusFile, st); err != nil {
			log.Error("writing the status file", "err", err)
		}
		log.Debug("renew pass done", "ok", st.Error == "")
		select {
		case <-ctx.Done():
			log.Info("renew stopped")
			return nil
		case <-tick.C:
		case <-env.HUP:
			log.Info("SIGHUP: renewing now")
		}
	}
}

// logChanges logs what Init or Renew wrote.
func logChanges(log *slog.Logger, ch pki.Changes) {
	if ch.Root {
		log.Info("created the root CA")
	}
	if ch.Issuer != "" {
		log.Info("minted an issuing CA", "reason", ch.Issuer)
	}
	if ch.IssuerStale {
		log.Warn("the issuing CA is past half its life: run contractual-ca init to mint the next")
	}
	for _, is := range ch.Issued {
		log.Info("issued a certificate", "service", is.Service, "reason", is.Reason, "not_after", is.NotAfter)
	}
}

// status is what renew writes after each pass.
type status struct {
	// Time is when the pass ended.
	Time time.Time `json:"time"`
	// Every is renew's --every.
	Every string `json:"every"`
	// Error is why the pass failed; empty if it succeeded.
	Error  string   `json:"error,omitempty"`
	Issued []string `json:"issued,omitempty"`
}

// writeStatus replaces the status file atomically.
func writeStatus(path string, st status) error {
	b, err := json.Marshal(st)
	if err != nil {
		return err
	}
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	_, werr := f.Write(append(b, '\n'))
	if err := errors.Join(werr, f.Close()); err != nil {
		os.Remove(f.Name())
		return err
	}
	return os.Rename(f.Name(), path)
}

func runHealth(args []string, env Env) error {
	fs := flag.NewFlagSet("contractual-ca health", flag.ContinueOnError)
	fs.SetOutput(env.Stderr)
	statusFile := fs.String("status", DefaultStatus, "the status file renew writes")
	if err := fs.Parse(args); err != nil {
		return err
	}
	b, err := os.ReadFile(*statusFile)
	if err != nil {
		return errs.E(errs.Unavailable, "unhealthy: renew has not finished a pass (%w)", err)
	}
	var st status
	if err := json.Unmarshal(b, &st); err != nil {
		return errs.E(errs.Unavailable, "unhealthy: %s: %w", *statusFile, err)
	}
	every, err := time.ParseDuration(st.Every)
	if err != nil || every <= 0 {
		return errs.E(errs.Unavailable, "unhealthy: %s: bad interval %q", *statusFile, st.Every)
	}
	at := st.Time.UTC().Format(time.RFC3339)
	if st.Error != "" {
		return errs.E(errs.Unavailable, "unhealthy: the last pass, at %s, failed: %s", at, st.Error)
	}
	if age := env.Now().Sub(st.Time); age > staleAfter*every {
		return errs.E(errs.Unavailable, "unhealthy: the last pass was at %s, %s ago, more than %d × %s", at, age.Round(time.Second), staleAfter, every)
	}
	fmt.Fprintf(env.Stdout, "healthy: the last pass, at %s, succeeded\n", at)
	return nil
}
