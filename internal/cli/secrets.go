package cli

import (
	"bufio"
	"bytes"
	"context"
	"flag"
	"fmt"
	"io"
	"os"

	"golang.org/x/term"

	contractualv1 "github.com/contractual/contractual/contracts/gen/contractual/v1"
	"github.com/contractual/contractual/internal/errs"
	"github.com/contractual/contractual/internal/secret"
)

// secretsCmd writes, lists and deletes secrets, and rotates the broker's
// key. No command reads a secret back: there is no way to.
func secretsCmd(ctx context.Context, env *Env, args []string) error {
	var cf connectFlags
	fs := flag.NewFlagSet("secrets", flag.ContinueOnError)
	cf.register(fs, env)
	prefix := fs.String("prefix", "", "only secrets whose name starts with this (list)")
	var lf listFlags
	lf.register(fs)
	pos, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if len(pos) == 0 {
		return usagef("want a subcommand: put, list, delete, rotate-key")
	}
	sub, pos := pos[0], pos[1:]
	c, err := cf.dial(env)
	if err != nil {
		return err
	}
	switch sub {
	case "put":
		if len(pos) != 1 {
			return usagef("want one secret name; the value comes from stdin or a prompt, never an argument")
		}
		value, err := readSecret(env, pos[0])
		if err != nil {
			return err
		}
		resp, err := c.broker.PutSecret(ctx, &contractualv1.PutSecretRequest{Name: pos[0], Value: value})
		clear(value)
		if err != nil {
			return err
		}
		fmt.Fprintf(env.Stdout, "stored %s version %d\n", resp.GetSecret().GetName(), resp.GetSecret().GetVersion())
		return nil
	case "list":
		return lf.table(env, "NAME\tVERSION\tUPDATED\tLAST USED", func(w io.Writer, tok string) (string, error) {
			resp, err := c.broker.ListSecrets(ctx, &contractualv1.ListSecretsRequest{NamePrefix: *prefix, PageSize: lf.size(), PageToken: tok})
			for _, s := range resp.GetSecrets() {
				used := "never"
				if s.GetLastUsedAt() != nil {
					used = s.GetLastUsedAt().AsTime().Format("2006-01-02 15:04:05")
				}
				fmt.Fprintf(w, "%s\t%d\t%s\t%s\n", s.GetName(), s.GetVersion(), s.GetUpdatedAt().AsTime().Format("2006-01-02 15:04:05"), used)
			}
			return resp.GetNextPageToken(), err
		})
	case "delete":
		if len(pos) != 1 {
			return usagef("want one secret name")
		}
		if _, err := c.broker.DeleteSecret(ctx, &contractualv1.DeleteSecretRequest{Name: pos[0]}); err != nil {
			return err
		}
		fmt.Fprintf(env.Stdout, "deleted %s\n", pos[0])
		return nil
	case "rotate-key":
		resp, err := c.broker.RotateKey(ctx, &contractualv1.RotateKeyRequest{})
		if err != nil {
			return err
		}
		fmt.Fprintf(env.Stdout, "new primary key %d; %d secret versions re-encrypted; %d old keys retired\n",
			resp.GetPrimaryKeyId(), resp.GetReencrypted(), resp.GetRetired())
		return nil
	}
	return usagef("unknown subcommand %q", sub)
}

// readSecret reads a secret value: from a prompt without echo when stdin is
// a terminal, else the whole of stdin (one trailing newline dropped).
func readSecret(env *Env, name string) ([]byte, error) {
	if f, ok := env.Stdin.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		fmt.Fprintf(env.Stderr, "value for %s (not echoed): ", name)
		v, err := term.ReadPassword(int(f.Fd()))
		fmt.Fprintln(env.Stderr)
		if err != nil {
			return nil, errs.Wrap(errs.Invalid, err, "reading the value")
		}
		return v, nil
	}
	v, err := io.ReadAll(io.LimitReader(bufio.NewReader(env.Stdin), secret.MaxValueBytes+1))
	if err != nil {
		return nil, errs.Wrap(errs.Invalid, err, "reading the value from stdin")
	}
	if len(v) > secret.MaxValueBytes {
		return nil, errs.E(errs.Invalid, "the value is over %d bytes", secret.MaxValueBytes)
	}
	v = bytes.TrimSuffix(bytes.TrimSuffix(v, []byte("\n")), []byte("\r"))
	if len(v) == 0 {
		return nil, errs.E(errs.Invalid, "empty value: pipe it in, e.g. printf '%%s' \"$TOKEN\" | contractual secrets put %s", name)
	}
	return v, nil
}
