package cli

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"iter"
	"os"
	"path/filepath"
	"strings"

	contractualv1 "github.com/contractual/contractual/contracts/gen/contractual/v1"
	"github.com/contractual/contractual/internal/audit"
	"github.com/contractual/contractual/internal/errs"
)

// checkpointFile is where a device remembers the newest signed checkpoint
// of the audit log it has seen, with the log's public keyset it pinned at
// first use: beside its token.
const checkpointFile = "audit-checkpoint.json"

// auditCmd reads, verifies and exports the audit log. Every command that
// talks to the server first checks that the server's newest signed
// checkpoint extends the one this device remembers, and only then
// remembers the new one; a rollback is reported as tampering.
func auditCmd(ctx context.Context, env *Env, args []string) error {
	var cf connectFlags
	fs := flag.NewFlagSet("audit", flag.ContinueOnError)
	cf.register(fs, env)
	data := fs.String("data", defaultDataDir(env), "the data directory (verify reads its audit log directly)")
	online := fs.Bool("online", false, "verify through the server instead of reading the data directory")
	against := fs.String("against", "", "also check that the log extends the checkpoint in this file (from audit checkpoint)")
	keyFile := fs.String("key", "", "check signatures with this public keyset (a copy of audit-verify.keyset kept elsewhere; offline, and for --against)")
	limit := fs.Uint("n", 20, "how many events (tail)")
	asJSON := fs.Bool("json", false, "print JSON")
	pos, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if len(pos) == 0 {
		return usagef("want a subcommand: tail, verify, checkpoint")
	}
	sub, pos := pos[0], pos[1:]
	if len(pos) != 0 {
		return usagef("unexpected argument %q", pos[0])
	}
	a := &auditor{env: env, memory: filepath.Join(filepath.Dir(cf.tokenFile), checkpointFile)}
	if a.anchor, a.anchorName, err = readAnchor(*against); err != nil {
		return err
	}
	if *keyFile != "" {
		if a.key, err = os.ReadFile(*keyFile); err != nil {
			return errs.Wrap(errs.Invalid, err, "reading the public keyset")
		}
	}
	if a.anchor != nil && len(a.anchorKey()) == 0 {
		return usagef("%s carries no public keyset: give the log's with --key", *against)
	}
	dial := func() error {
		c, err := cf.dial(env)
		a.c = c
		return err
	}
	switch sub {
	case "tail":
		if err := dial(); err != nil {
			return err
		}
		if _, err := a.checkServer(ctx); err != nil {
			return err
		}
		resp, err := a.c.audit.Tail(ctx, &contractualv1.TailRequest{Limit: uint32(*limit)})
		if err != nil {
			return err
		}
		if *asJSON {
			return printJSON(env, resp)
		}
		for _, e := range resp.GetEvents() {
			fmt.Fprintf(env.Stdout, "%6d %s %-8s %-18s %-10s %-18s %s %s\n", e.GetIndex(), e.GetTime().AsTime().Format("15:04:05.000"),
				e.GetService(), e.GetAction(), e.GetPrincipal(), e.GetOutcome(), e.GetTool(), e.GetDetail())
		}
		return nil
	case "checkpoint":
		if err := dial(); err != nil {
			return err
		}
		latest, err := a.checkServer(ctx)
		if err != nil {
			return err
		}
		if latest == nil {
			return errs.E(errs.NotFound, "the audit log is empty: there is no checkpoint to export yet")
		}
		b, err := audit.MarshalCheckpoint(latest)
		if err != nil {
			return err
		}
		_, err = env.Stdout.Write(b)
		return err
	case "verify":
		var resp *contractualv1.VerifyResponse
		var extended *contractualv1.Checkpoint
		if *online {
			if err := dial(); err != nil {
				return err
			}
			latest, err := a.checkServer(ctx)
			if err != nil {
				return err
			}
			if a.anchor != nil {
				err := audit.Extends(a.anchorKey(), a.anchor, latest, a.remoteEntries(ctx, a.anchor.GetIndex(), latest.GetIndex()))
				if err != nil {
					return a.tampering(err, nil)
				}
				extended = a.anchor
			}
			if resp, err = a.c.audit.Verify(ctx, &contractualv1.VerifyRequest{}); err != nil {
				return err
			}
		} else {
			if resp, extended, err = a.verifyFile(ctx, filepath.Join(*data, "audit")); err != nil {
				return err
			}
		}
		if *asJSON {
			if err := printJSON(env, resp); err != nil {
				return err
			}
		}
		if !resp.GetOk() {
			fmt.Fprintf(env.Stderr, "audit log NOT intact: first bad index %d: %s\n", resp.GetFirstBadIndex(), resp.GetProblem())
			return errReported
		}
		if !*asJSON {
			fmt.Fprintf(env.Stdout, "audit log intact: %d events, %d signed checkpoints\n", resp.GetEvents(), resp.GetCheckpoints())
			if extended != nil {
				fmt.Fprintf(env.Stdout, "it extends checkpoint %d (index %d) %s\n", extended.GetSeq(), extended.GetIndex(), a.anchorName)
			}
		}
		return nil
	}
	return usagef("unknown subcommand %q", sub)
}

// auditor runs the checks of one audit command.
type auditor struct {
	env    *Env
	c      *clients
	memory string // this device's checkpoint file

	anchor     *contractualv1.Checkpoint // --against's checkpoint, if given
	anchorName string                    // where it came from, for messages
	key        []byte                    // --key's public keyset, if given
}

// readAnchor reads the checkpoint file of --against, if one is named.
func readAnchor(path string) (*contractualv1.Checkpoint, string, error) {
	if path == "" {
		return nil, "", nil
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, "", errs.Wrap(errs.Invalid, err, "reading the checkpoint to check against")
	}
	c, err := audit.ParseCheckpoint(b)
	if err != nil {
		return nil, "", errs.Wrap(errs.Invalid, err, "%s", path)
	}
	return c, "in " + path, nil
}

// anchorKey is the key that --against's checkpoint is checked with: --key,
// else the keyset the exported checkpoint carries.
func (a *auditor) anchorKey() []byte {
	if a.key != nil {
		return a.key
	}
	return a.anchor.GetPublicKeyset()
}

// remembered returns the checkpoint this device remembers, or nil.
func (a *auditor) remembered() (*contractualv1.Checkpoint, error) {
	b, err := os.ReadFile(a.memory)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, errs.Wrap(errs.Internal, err, "reading the audit checkpoint this device remembers")
	}
	c, err := audit.ParseCheckpoint(b)
	if err != nil || len(c.GetPublicKeyset()) == 0 {
		return nil, a.tampering(errs.E(errs.FailedPrecondition, "%w: the checkpoint this device remembers (%s) is damaged", audit.ErrTampered, a.memory), nil)
	}
	return c, nil
}

// checkServer fetches the server's newest signed checkpoint, checks that
// it extends the one this device remembers (recomputing the chain between
// them from the server's entries), and remembers it. At first use the
// device pins the log's public keyset; a different key later is tampering,
// not silently accepted.
func (a *auditor) checkServer(ctx context.Context) (*contractualv1.Checkpoint, error) {
	seen, err := a.remembered()
	if err != nil {
		return nil, err
	}
	resp, err := a.c.audit.LatestCheckpoint(ctx, &contractualv1.LatestCheckpointRequest{})
	if err != nil {
		return nil, err
	}
	latest := resp.GetCheckpoint()
	key := seen.GetPublicKeyset()
	if seen == nil {
		key = latest.GetPublicKeyset()
	} else if latest != nil && !bytes.Equal(latest.GetPublicKeyset(), key) {
		return nil, a.tampering(errs.E(errs.FailedPrecondition,
			"%w: the server's audit log is signed with key %s, but this device pinned %s: the key was replaced (if the server was reset on purpose, remove %s to trust the new key)",
			audit.ErrTampered, audit.KeyID(latest.GetPublicKeyset()), audit.KeyID(key), a.memory), seen)
	}
	if latest == nil && seen == nil {
		return nil, nil
	}
	if err := audit.Extends(key, seen, latest, a.remoteEntries(ctx, seen.GetIndex(), latest.GetIndex())); err != nil {
		return nil, a.tampering(err, seen)
	}
	if seen == nil || latest.GetSeq() > seen.GetSeq() {
		if err := os.MkdirAll(filepath.Dir(a.memory), 0o700); err != nil {
			return nil, errs.Wrap(errs.Internal, err, "creating %s", filepath.Dir(a.memory))
		}
		if err := audit.WriteCheckpointFile(a.memory, latest); err != nil {
			return nil, err
		}
		if seen == nil {
			fmt.Fprintf(a.env.Stderr, "audit: this device now pins the log's key %s and remembers checkpoint %d (index %d) in %s\n",
				audit.KeyID(key), latest.GetSeq(), latest.GetIndex(), a.memory)
		}
	}
	return latest, nil
}

// remoteEntries yields the server's stored encodings of the events
// after+1 .. through, page by page.
func (a *auditor) remoteEntries(ctx context.Context, after, through uint64) iter.Seq2[[]byte, error] {
	return func(yield func([]byte, error) bool) {
		for after < through {
			resp, err := a.c.audit.Entries(ctx, &contractualv1.EntriesRequest{After: after, Limit: uint32(min(through-after, audit.MaxEntries))})
			if err != nil {
				yield(nil, err)
				return
			}
			if len(resp.GetEntries()) == 0 {
				return // the log ends early; Extends says so
			}
			for _, e := range resp.GetEntries() {
				if !yield(e, nil) {
					return
				}
			}
			after += uint64(len(resp.GetEntries()))
		}
	}
}

// verifyFile verifies the log in dir offline: its chain and checkpoints
// (with --key, else with the key the checkpoint it is checked against
// carries, else with dir's own keyset), then that it extends the checkpoint
// in --against or, without one, the checkpoint this device remembers. It
// returns the verification and the checkpoint the log extends, if any.
func (a *auditor) verifyFile(ctx context.Context, dir string) (*contractualv1.VerifyResponse, *contractualv1.Checkpoint, error) {
	anchor, key := a.anchor, a.key
	if anchor == nil && key == nil {
		seen, err := a.remembered()
		if err != nil {
			return nil, nil, err
		}
		if seen != nil {
			anchor, a.anchorName = seen, "that this device saw"
			// Another server's log, or this one's with its keys replaced:
			// say which, rather than "bad signature".
			if own, err := os.ReadFile(filepath.Join(dir, audit.VerifyKeysetFile)); err == nil && !bytes.Equal(own, seen.GetPublicKeyset()) {
				return nil, nil, a.tampering(errs.E(errs.FailedPrecondition,
					"%w: the log in %s is signed with key %s, but this device pinned %s for its server: the keys were replaced, or it is another server's log (check that one with --against a checkpoint exported from it, or --key)",
					audit.ErrTampered, dir, audit.KeyID(own), audit.KeyID(seen.GetPublicKeyset())), nil)
			}
		}
	}
	if key == nil && anchor != nil {
		key = anchor.GetPublicKeyset()
	}
	var resp *contractualv1.VerifyResponse
	var err error
	if key != nil {
		resp, err = audit.VerifyFileWithKey(ctx, dir, key)
	} else {
		resp, err = audit.VerifyFile(ctx, dir)
	}
	if err != nil || !resp.GetOk() || anchor == nil {
		return resp, nil, err
	}
	if _, err := audit.CheckFileConsistency(ctx, dir, key, anchor); err != nil {
		return nil, nil, a.tampering(err, nil)
	}
	return resp, anchor, nil
}

// tampering prints a failed consistency check as tampering and returns
// errReported; any other error is returned as it is. seen, if set, is the
// checkpoint this device keeps.
func (a *auditor) tampering(err error, seen *contractualv1.Checkpoint) error {
	if !errors.Is(err, audit.ErrTampered) {
		return err
	}
	fmt.Fprintf(a.env.Stderr, "contractual audit: TAMPERING: %s\n", strings.TrimPrefix(err.Error(), audit.ErrTampered.Error()+": "))
	if seen != nil {
		fmt.Fprintf(a.env.Stderr, "this device keeps the checkpoint it saw: %d (index %d), in %s\n", seen.GetSeq(), seen.GetIndex(), a.memory)
	}
	return errReported
}
