// Package cli is the contractual command: a thin layer of flag parsing and
// printing over the packages that do the work, runnable in-process by tests
// through Main.
package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/contractual/contractual/internal/errs"
)

// Env is what a command may touch of the process: its arguments, streams and
// environment lookups. Tests give their own.
type Env struct {
	Stdin          io.Reader
	Stdout, Stderr io.Writer
	// Getenv looks up environment variables; nil means os.Getenv.
	Getenv func(string) string
}

func (e *Env) getenv(k string) string {
	if e.Getenv == nil {
		return os.Getenv(k)
	}
	return e.Getenv(k)
}

// Exit statuses.
const (
	exitOK      = 0
	exitFailure = 1 // the command ran and failed, or refused
	exitUsage   = 2 // the command line is wrong
)

type command struct {
	name, usage, summary string
	run                  func(ctx context.Context, env *Env, args []string) error
}

var commands []command

func init() {
	commands = []command{
		{"serve", "serve [--data DIR] [--addr 127.0.0.1:7700] [--kek FILE]",
			"run every service in one process (embedded SQLite), the API on loopback", serveCmd},
		{"publish", "publish <tool.wasm> --contract <file>", "publish a tool; its contract lands pending", publishCmd},
		{"contracts", "contracts list|show|diff|approve|reject|revoke [digest] [--reason TEXT]",
			"see and decide contracts", contractsCmd},
		{"invoke", "invoke <name.export> --input <json|@file|->", "call a tool through the server", invokeCmd},
		{"pair", "pair [--setup-code CODE] [--name NAME] [--scope invoke,read,publish,approve,owner]",
			"pair this device with the server, with the scopes it asks for (an owner device with the setup code)", pairCmd},
		{"devices", "devices list | requests | approve <CODE> | reject <CODE> | revoke <ID>", "manage paired devices (as a paired device)", devicesCmd},
		{"secrets", "secrets put <NAME> | list | delete <NAME> | rotate-key", "write-only secrets (put reads stdin or a prompt)", secretsCmd},
		{"audit", "audit tail|verify [--data DIR] [--online]", "read the audit log, verify its chain and checkpoints", auditCmd},
		{"run", "run <module.wasm> --contract <file> --input <json|@file|-> [--export NAME] [--json]",
			"run one call of a tool locally, under its contract", runCmd},
		{"contract", "contract check <file> [--module <module.wasm>]",
			"validate a contract and print its digest", contractCmd},
		{"version", "version", "print the version", versionCmd},
		{"help", "help", "print this help", helpCmd},
	}
}

// Version is set at build time with -ldflags "-X ...cli.Version=...".
var Version = "dev"

// Main runs the contractual command with args (without the program name)
// and returns the exit status.
func Main(ctx context.Context, args []string, env *Env) int {
	if len(args) == 0 {
		printUsage(env.Stderr)
		return exitUsage
	}
	for _, c := range commands {
		if c.name != args[0] {
			continue
		}
		err := c.run(ctx, env, args[1:])
		var u usageError
		switch {
		case err == nil:
			return exitOK
		case errors.As(err, &u):
			fmt.Fprintf(env.Stderr, "contractual %s: %v\nusage: contractual %s\n", c.name, u.error, c.usage)
			return exitUsage
		case errors.Is(err, errReported):
			return exitFailure
		}
		fmt.Fprintf(env.Stderr, "contractual %s: %s: %v\n", c.name, errs.KindOf(err), err)
		return exitFailure
	}
	fmt.Fprintf(env.Stderr, "contractual: unknown command %q\n", args[0])
	printUsage(env.Stderr)
	return exitUsage
}

// errReported means the command already printed why it failed.
var errReported = errors.New("failure reported")

type usageError struct{ error }

func usagef(format string, args ...any) error { return usageError{fmt.Errorf(format, args...)} }

func printUsage(w io.Writer) {
	fmt.Fprintln(w, "Contractual runs WebAssembly tools only under the contract their owner approved.\n\nusage:")
	for _, c := range commands {
		fmt.Fprintf(w, "  contractual %-75s %s\n", c.usage, c.summary)
	}
}

func helpCmd(_ context.Context, env *Env, _ []string) error {
	printUsage(env.Stdout)
	return nil
}

func versionCmd(_ context.Context, env *Env, _ []string) error {
	fmt.Fprintln(env.Stdout, "contractual", Version)
	return nil
}

// parseFlags parses flags that may come before, between or after the
// positional arguments, and returns the positional ones.
func parseFlags(fs *flag.FlagSet, args []string) ([]string, error) {
	fs.SetOutput(io.Discard)
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, usageError{err}
		}
		args = fs.Args()
		if len(args) == 0 {
			return pos, nil
		}
		if args[0] == "--" {
			return append(pos, args[1:]...), nil
		}
		pos = append(pos, args[0])
		args = args[1:]
	}
}

// readArg reads a value given as a literal, as @file, or as - for stdin.
func readArg(env *Env, v string) ([]byte, error) {
	switch {
	case v == "-":
		return io.ReadAll(io.LimitReader(env.Stdin, maxArgBytes+1))
	case strings.HasPrefix(v, "@"):
		return os.ReadFile(v[1:])
	}
	return []byte(v), nil
}

const maxArgBytes = 8 << 20
