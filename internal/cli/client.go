package cli

import (
	"context"
	"flag"
	"net/http"
	"os"
	"path/filepath"
	"strings"

	"connectrpc.com/connect"

	"github.com/contractual/contractual/contracts/gen/contractual/v1/contractualv1connect"
	"github.com/contractual/contractual/internal/errs"
	"github.com/contractual/contractual/internal/rpc"
	"github.com/contractual/contractual/internal/server"
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

// clients are the API clients a CLI command uses.
type clients struct {
	policy  contractualv1connect.PolicyServiceClient
	tools   contractualv1connect.ToolServiceClient
	audit   contractualv1connect.AuditServiceClient
	broker  contractualv1connect.BrokerServiceClient
	pairing contractualv1connect.PairingServiceClient
}

// connectFlags are the flags of every command that talks to a server.
type connectFlags struct {
	server, tokenFile string
	// tokenSet is true when --token-file was given: it then wins over the
	// device token.
	tokenSet bool
}

func (f *connectFlags) register(fs *flag.FlagSet, env *Env) {
	url := env.getenv("CONTRACTUAL_SERVER")
	if url == "" {
		url = "http://" + DefaultAddr
	}
	fs.StringVar(&f.server, "server", url, "the server's URL ($CONTRACTUAL_SERVER)")
	fs.Func("token-file", "the bootstrap owner token file (default: this device's token from `contractual pair`, else "+
		filepath.Join(defaultDataDir(env), server.TokenFile)+"; $CONTRACTUAL_TOKEN holds a token itself)", func(v string) error {
		f.tokenFile, f.tokenSet = v, true
		return nil
	})
	f.tokenFile = filepath.Join(defaultDataDir(env), server.TokenFile)
}

// dial returns clients that authenticate with $CONTRACTUAL_TOKEN, else this
// device's token (from `contractual pair`), else the bootstrap owner token.
func (f *connectFlags) dial(env *Env) (*clients, error) {
	tok := env.getenv("CONTRACTUAL_TOKEN")
	if tok == "" && !f.tokenSet {
		if b, err := os.ReadFile(deviceTokenFile(env)); err == nil {
			tok = strings.TrimSpace(string(b))
		}
	}
	if tok == "" {
		b, err := os.ReadFile(f.tokenFile)
		if err != nil {
			return nil, errs.Wrap(errs.Unauthenticated, err, "reading the owner token (start `contractual serve` first, or set --token-file)")
		}
		tok = strings.TrimSpace(string(b))
	}
	opts := connect.WithInterceptors(bearer(tok))
	hc := http.DefaultClient
	return &clients{
		policy:  contractualv1connect.NewPolicyServiceClient(hc, f.server, opts),
		tools:   contractualv1connect.NewToolServiceClient(hc, f.server, opts),
		audit:   contractualv1connect.NewAuditServiceClient(hc, f.server, opts),
		broker:  contractualv1connect.NewBrokerServiceClient(hc, f.server, opts),
		pairing: contractualv1connect.NewPairingServiceClient(hc, f.server, opts),
	}, nil
}

// bearer sends the token in the Authorization header and maps errors back
// to the project's kinds.
func bearer(tok string) connect.Interceptor {
	return connect.UnaryInterceptorFunc(func(next connect.UnaryFunc) connect.UnaryFunc {
		return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
			req.Header().Set("Authorization", "Bearer "+tok)
			resp, err := next(ctx, req)
			return resp, rpc.FromConnect(err)
		}
	})
}
