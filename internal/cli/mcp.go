package cli

import (
	"context"
	"flag"
	"log/slog"

	"github.com/contractual/contractual/internal/mcpbridge"
)

// mcpCmd is `contractual mcp`: the stdio bridge for MCP clients that launch
// a command (package mcpbridge). Stdout carries nothing but the protocol;
// what the bridge has to say goes to stderr.
func mcpCmd(ctx context.Context, env *Env, args []string) error {
	var cf connectFlags
	fs := flag.NewFlagSet("mcp", flag.ContinueOnError)
	cf.register(fs, env)
	pos, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 0 {
		return usagef("mcp takes no arguments")
	}
	tok, err := cf.token(env)
	if err != nil {
		return err
	}
	return mcpbridge.Run(ctx, mcpbridge.Config{
		Endpoint:   mcpbridge.Endpoint(cf.server),
		Token:      tok,
		HTTPClient: env.httpClient(),
		Logger:     slog.New(slog.NewTextHandler(env.Stderr, nil)),
	}, env.Stdin, env.Stdout)
}
