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
	"net/http"
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
	// HTTPClient is what commands call a server with; nil means
	// http.DefaultClient. (A test gives a tailnet node's.)
	HTTPClient *http.Client
}

func (e *Env) getenv(k string) string {
	if e.Getenv == nil {
		return os.Getenv(k)
	}
	return e.Getenv(k)
}

func (e *Env) httpClient() *http.Client {
	if e.HTTPClient == nil {
		return http.DefaultClient
	}
	return e.HTTPClient
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
		{"serve", "serve [--data DIR] [--addr 127.0.0.1:7700] [--kek FILE] [--public-url URL] [--audit-keep-days N] [--audit-keep-events N] [--audit-export-dir DIR] [--tailnet [--tailnet-hostname NAME] [--tailnet-auth-key-file FILE] [--tailnet-control-url URL] [--tailnet-https auto|on|off]]",
			"run every service in one process (embedded SQLite), the API on loopback and, with --tailnet, on your tailnet", serveCmd},
		{"publish", "publish <tool.wasm> --contract <file> [--server URL]", "publish a tool; its contract lands pending", publishCmd},
		{"contracts", "contracts list|show|diff|approve|reject|revoke [digest] [--reason TEXT] [--name NAME | --prefix P] [--state S] [--tool NAME.EXPORT] [--all | --page TOKEN] [--page-size N] [--json] [--server URL]",
			"see and decide contracts", contractsCmd},
		{"jobs", "jobs create <file> | list | show <id|digest> | approve|reject <digest> | pause|resume|delete <id> | run <id> [--payload JSON] | runs <id> | run-show <run id> [--reason TEXT] [--state S] [--all | --page TOKEN] [--page-size N] [--json] [--server URL]",
			"create, see, decide and run jobs: the reusable contracts scheduled work runs under; see their runs", jobsCmd},
		{"invoke", "invoke <name.export> --input JSON | --text TEXT | --bytes @FILE [--wait] [--json] [--server URL]", "call a tool through the server (--wait: wait for the owner's one-shot approval of a high-risk call)", invokeCmd},
		{"chat", chatUsage, chatSummary, chatCmd},
		{"mcp", "mcp [--server URL]", "speak MCP on stdin/stdout for a client that launches a command (Claude Desktop), relayed to the server's /mcp as this device", mcpCmd},
		{"approvals", "approvals list | show <ID> | approve <ID> | deny <ID> [--reason TEXT] [--state S] [--all | --page TOKEN] [--page-size N] [--json] [--server URL]",
			"see and decide one-shot call approvals (from a device other than the caller's)", approvalsCmd},
		{"pair", "pair [--server URL] [--setup-code CODE] [--name NAME] [--scope invoke,read,publish,approve,owner]",
			"pair this device with the server, with the scopes it asks for (an owner device with the setup code)", pairCmd},
		{"devices", "devices list | requests | approve <CODE> | reject <CODE> | revoke <ID> [--state S] [--scope S] [--all | --page TOKEN] [--page-size N] [--server URL]", "manage paired devices (as a paired device)", devicesCmd},
		{"secrets", "secrets put <NAME> | list | delete <NAME> | rotate-key [--prefix P] [--all | --page TOKEN] [--page-size N] [--server URL]", "write-only secrets (put reads stdin or a prompt)", secretsCmd},
		{"audit", "audit tail | checkpoint | segments | verify [--data DIR] [--against FILE] [--key FILE] [--online [--full]] [--segment FILE...] | export --segment FILE [--from SEQ] [--through SEQ] | prune --through SEQ|--before TIME [--server URL]",
			"read the audit log, export its newest signed checkpoint, verify it (incrementally), export and prune sealed segments", auditCmd},
		{"run", "run <module.wasm> --contract <file> --input JSON | --text TEXT | --bytes @FILE [--export NAME] [--json]",
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
	if isHelp(args[0]) {
		printUsage(env.Stdout)
		return exitOK
	}
	for _, c := range commands {
		if c.name != args[0] {
			continue
		}
		err := c.run(ctx, env, args[1:])
		var u usageError
		var h helpRequest
		switch {
		case err == nil:
			return exitOK
		case errors.As(err, &h):
			printCommandHelp(env.Stdout, c, h.fs)
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

// helpRequest is the error of a command asked for --help: Main prints the
// command's usage and every flag of fs.
type helpRequest struct{ fs *flag.FlagSet }

func (helpRequest) Error() string { return "help requested" }

// isHelp reports whether arg asks for help.
func isHelp(arg string) bool {
	switch arg {
	case "-h", "-help", "--help", "help":
		return true
	}
	return false
}

func printUsage(w io.Writer) {
	fmt.Fprint(w, `Contractual runs WebAssembly tools only under the contract their owner approved.

usage: contractual <command> [arguments] [flags]

commands:
`)
	for _, c := range commands {
		fmt.Fprintf(w, "  %-10s %s\n", c.name, c.summary)
		fmt.Fprintf(w, "  %-10s   contractual %s\n", "", c.usage)
	}
	fmt.Fprintf(w, `
Commands that talk to a server take:
  --server URL        the server (default: $CONTRACTUAL_SERVER, else the server this
                      device paired with, else http://%s)
  --token-file FILE   this device's token (default: $CONTRACTUAL_CONFIG/device.token;
                      $CONTRACTUAL_TOKEN holds a token itself)

Environment: CONTRACTUAL_SERVER, CONTRACTUAL_TOKEN, CONTRACTUAL_CONFIG (this device's
key, token and server; default ~/.config/contractual), CONTRACTUAL_DATA (serve's data),
CONTRACTUAL_CACHE_DIR (run's compilation cache).

"contractual <command> --help" prints a command's every flag.
`, DefaultAddr)
}

// printCommandHelp prints c's usage and every flag of fs.
func printCommandHelp(w io.Writer, c command, fs *flag.FlagSet) {
	fmt.Fprintf(w, "contractual %s: %s\n\nusage: contractual %s\n", c.name, c.summary, c.usage)
	n := 0
	fs.VisitAll(func(*flag.Flag) { n++ })
	if n == 0 {
		return
	}
	fmt.Fprintln(w, "\nflags:")
	fs.SetOutput(w)
	fs.PrintDefaults()
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
// positional arguments, and returns the positional ones. -h or --help
// returns a helpRequest.
func parseFlags(fs *flag.FlagSet, args []string) ([]string, error) {
	fs.SetOutput(io.Discard)
	var pos []string
	for {
		if err := fs.Parse(args); errors.Is(err, flag.ErrHelp) {
			return nil, helpRequest{fs}
		} else if err != nil {
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
