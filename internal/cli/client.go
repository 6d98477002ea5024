package cli

import (
	"context"
	"errors"
	"flag"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"connectrpc.com/connect"

	"github.com/contractual/contractual/contracts/gen/contractual/v1/contractualv1connect"
	"github.com/contractual/contractual/internal/errs"
	"github.com/contractual/contractual/internal/rpc"
)

// DefaultAddr is where `contractual serve` listens unless told otherwise.
const DefaultAddr = "127.0.0.1:7700"

// defaultDataDir is where `contractual serve` keeps its data:
// $CONTRACTUAL_DATA, else $XDG_DATA_HOME/contractual, else
// ~/.local/share/contractual.
func defaultDataDir(env *Env) string {
	if d := env.getenv("CONTRACTUAL_DATA"); d != "" {
		return d
	}
	if d := env.getenv("XDG_DATA_HOME"); d != "" {
		return filepath.Join(d, "contractual")
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return "contractual-data"
	}
	return filepath.Join(home, ".local", "share", "contractual")
}

// serverFile is where `contractual pair` remembers the server it paired
// with, so that every later command talks to it.
func serverFile(env *Env) string { return filepath.Join(configDir(env), "server") }

// defaultServer is the server a command talks to without --server:
// $CONTRACTUAL_SERVER, else the one this device paired with, else the
// default local address.
func defaultServer(env *Env) string {
	if u := env.getenv("CONTRACTUAL_SERVER"); u != "" {
		return u
	}
	if b, err := os.ReadFile(serverFile(env)); err == nil {
		if u := strings.TrimSpace(string(b)); u != "" {
			return u
		}
	}
	return "http://" + DefaultAddr
}

// rememberServer records the server this device paired with.
func rememberServer(env *Env, url string) error {
	return writeSecretFile(serverFile(env), []byte(strings.TrimRight(url, "/")+"\n"))
}

// clients are the API clients a CLI command uses.
type clients struct {
	policy  contractualv1connect.PolicyServiceClient
	jobs    contractualv1connect.JobServiceClient
	runs    contractualv1connect.JobRunServiceClient
	tools   contractualv1connect.ToolServiceClient
	audit   contractualv1connect.AuditServiceClient
	broker  contractualv1connect.BrokerServiceClient
	pairing contractualv1connect.PairingServiceClient
}

// connectFlags are the flags of every command that talks to a server.
type connectFlags struct {
	server, tokenFile string
}

func (f *connectFlags) register(fs *flag.FlagSet, env *Env) {
	fs.StringVar(&f.server, "server", defaultServer(env),
		"the server's URL: $CONTRACTUAL_SERVER, else the server this device paired with, else http://"+DefaultAddr)
	fs.StringVar(&f.tokenFile, "token-file", deviceTokenFile(env),
		"this device's token file, written by contractual pair ($CONTRACTUAL_TOKEN holds a token itself)")
}

// token returns $CONTRACTUAL_TOKEN, else the device token in --token-file.
func (f *connectFlags) token(env *Env) (string, error) {
	if tok := env.getenv("CONTRACTUAL_TOKEN"); tok != "" {
		return tok, nil
	}
	b, err := os.ReadFile(f.tokenFile)
	if errors.Is(err, fs.ErrNotExist) {
		return "", errs.E(errs.Unauthenticated, "this device is not paired (no %s): run `contractual pair` first", f.tokenFile)
	}
	if err != nil {
		return "", errs.Wrap(errs.Unauthenticated, err, "reading the device token")
	}
	return strings.TrimSpace(string(b)), nil
}

// dial returns clients that authenticate with $CONTRACTUAL_TOKEN, else
// with the device token in --token-file.
func (f *connectFlags) dial(env *Env) (*clients, error) {
	tok, err := f.token(env)
	if err != nil {
		return nil, err
	}
	opts := connect.WithInterceptors(bearer(tok))
	hc := env.httpClient()
	return &clients{
		policy:  contractualv1connect.NewPolicyServiceClient(hc, f.server, opts),
		jobs:    contractualv1connect.NewJobServiceClient(hc, f.server, opts),
		runs:    contractualv1connect.NewJobRunServiceClient(hc, f.server, opts),
		tools:   contractualv1connect.NewToolServiceClient(hc, f.server, opts),
		audit:   contractualv1connect.NewAuditServiceClient(hc, f.server, opts),
		broker:  contractualv1connect.NewBrokerServiceClient(hc, f.server, opts),
		pairing: contractualv1connect.NewPairingServiceClient(hc, f.server, opts),
	}, nil
}

// bearer sends the token in the Authorization header of unary calls and
// streams alike, and maps unary errors back to the project's kinds (a
// stream's error is mapped where it is read).
func bearer(tok string) connect.Interceptor { return cliBearer{rpc.Bearer(tok)} }

type cliBearer struct{ connect.Interceptor }

func (b cliBearer) WrapUnary(next connect.UnaryFunc) connect.UnaryFunc {
	send := b.Interceptor.WrapUnary(next)
	return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
		resp, err := send(ctx, req)
		return resp, rpc.FromConnect(err)
	}
}
