package cli

import (
	"bytes"
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"iter"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	contractualv1 "github.com/contractual/contractual/contracts/gen/contractual/v1"
	"github.com/contractual/contractual/internal/audit"
	"github.com/contractual/contractual/internal/errs"
)

// checkpointFile is where a device remembers the newest signed checkpoint
// of the audit log it has seen, with the log's public keyset it pinned at
// first use: beside its token.
const checkpointFile = "audit-checkpoint.json"

// auditCmd reads, verifies, exports and prunes the audit log. Every
// command that talks to the server first checks that the server's newest
// signed checkpoint extends the one this device remembers, and only then
// remembers the new one; a rollback is reported as tampering, a range
// pruned since the device last looked as that, with the exports that hold
// it.
func auditCmd(ctx context.Context, env *Env, args []string) error {
	var cf connectFlags
	fs := flag.NewFlagSet("audit", flag.ContinueOnError)
	cf.register(fs, env)
	data := fs.String("data", defaultDataDir(env), "the data directory (verify reads its audit log directly)")
	online := fs.Bool("online", false, "verify through the server, from the checkpoint this device verified last, instead of reading the data directory")
	full := fs.Bool("full", false, "with --online, also have the server recompute its whole live log")
	against := fs.String("against", "", "also check that the log extends the checkpoint in this file (from audit checkpoint)")
	keyFile := fs.String("key", "", "check signatures with this public keyset (a copy of audit-verify.keyset kept elsewhere; offline, for --against and --segment)")
	var segments []string
	fs.Func("segment", "a segment file: what export writes, what verify checks (offline), or, with verify --online, what bridges a pruned range (repeatable)",
		func(v string) error { segments = append(segments, v); return nil })
	from := fs.Uint64("from", 0, "export: the checkpoint the segment starts at (default: where recorded exports end)")
	through := fs.Uint64("through", 0, "export, prune: the checkpoint that seals the segment (export's default: the newest)")
	before := fs.String("before", "", "prune: cut at the newest checkpoint signed before this time (2006-01-02 or RFC 3339)")
	limit := fs.Uint("n", 20, "how many events (tail)")
	asJSON := fs.Bool("json", false, "print JSON")
	pos, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if len(pos) == 0 {
		return usagef("want a subcommand: tail, verify, checkpoint, segments, export, prune")
	}
	sub, pos := pos[0], pos[1:]
	if len(pos) != 0 {
		return usagef("unexpected argument %q", pos[0])
	}
	a := &auditor{env: env, memory: filepath.Join(filepath.Dir(cf.tokenFile), checkpointFile), segments: segments}
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
			line := fmt.Sprintf("%6d %s %-8s %-18s %-10s %-18s %s %s", e.GetIndex(), e.GetTime().AsTime().Format("15:04:05.000"),
				e.GetService(), e.GetAction(), e.GetPrincipal(), e.GetOutcome(), e.GetTool(), e.GetDetail())
			if t := e.GetTailnet(); t != nil {
				line += " [from " + tailnetNode(t) + "]"
			}
			fmt.Fprintln(env.Stdout, strings.TrimRight(line, " "))
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
	case "segments":
		if err := dial(); err != nil {
			return err
		}
		if _, err := a.checkServer(ctx); err != nil {
			return err
		}
		return a.printSegments(ctx, *asJSON)
	case "export":
		if len(segments) != 1 {
			return usagef("export writes one file: give --segment FILE")
		}
		if err := dial(); err != nil {
			return err
		}
		return a.export(ctx, segments[0], *from, *through)
	case "prune":
		req := &contractualv1.PruneRequest{Seq: *through}
		if *before != "" {
			t, err := parseTime(*before)
			if err != nil {
				return err
			}
			req.Before = timestamppb.New(t)
		}
		if (req.Seq == 0) == (req.Before == nil) {
			return usagef("prune: give --through SEQ or --before TIME")
		}
		if err := dial(); err != nil {
			return err
		}
		if _, err := a.checkServer(ctx); err != nil {
			return err
		}
		resp, err := a.c.audit.Prune(ctx, req)
		if err != nil {
			return err
		}
		fmt.Fprintf(env.Stdout, "pruned %d events; the live log starts at checkpoint %d (index %d)\n",
			resp.GetDropped(), resp.GetAnchor().GetSeq(), resp.GetAnchor().GetIndex())
		return nil
	case "verify":
		if !*online && len(segments) > 0 {
			return a.verifySegments()
		}
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
			if !*full {
				return a.printIncremental(latest, extended, *asJSON)
			}
			if resp, err = a.c.audit.Verify(ctx, &contractualv1.VerifyRequest{Full: true}); err != nil {
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
			fmt.Fprintf(env.Stdout, "audit log intact: %d events, %d signed checkpoints%s\n", resp.GetEvents(), resp.GetCheckpoints(), fromAnchor(resp))
			if extended != nil {
				fmt.Fprintf(env.Stdout, "it extends checkpoint %d (index %d) %s\n", extended.GetSeq(), extended.GetIndex(), a.anchorName)
			}
		}
		return nil
	}
	return usagef("unknown subcommand %q", sub)
}

// fromAnchor says where a verification of a pruned log started.
func fromAnchor(r *contractualv1.VerifyResponse) string {
	if r.GetFromIndex() == 0 {
		return ""
	}
	return fmt.Sprintf(" (from index %d, where the live log starts)", r.GetFromIndex())
}

// parseTime reads a date (2006-01-02, UTC) or an RFC 3339 time.
func parseTime(v string) (time.Time, error) {
	if t, err := time.Parse(time.DateOnly, v); err == nil {
		return t, nil
	}
	t, err := time.Parse(time.RFC3339, v)
	if err != nil {
		return time.Time{}, usagef("%q is not a date (2006-01-02) or an RFC 3339 time", v)
	}
	return t, nil
}

// auditor runs the checks of one audit command.
type auditor struct {
	env    *Env
	c      *clients
	memory string // this device's checkpoint file

	anchor     *contractualv1.Checkpoint // --against's checkpoint, if given
	anchorName string                    // where it came from, for messages
	key        []byte                    // --key's public keyset, if given
	segments   []string                  // --segment files

	// What the last checkServer checked: the checkpoint it started from,
	// and how many events it fetched and recomputed.
	checkedFrom *contractualv1.Checkpoint
	fetched     uint64
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
	from := seen
	if anchor := resp.GetAnchor(); seen != nil && anchor != nil && seen.GetIndex() < anchor.GetIndex() {
		if from, err = a.bridge(ctx, key, seen, anchor); err != nil {
			return nil, err
		}
	}
	a.checkedFrom = from
	entries := func(yield func([]byte, error) bool) {
		for e, err := range a.remoteEntries(ctx, from.GetIndex(), latest.GetIndex()) {
			if err == nil {
				a.fetched++
			}
			if !yield(e, err) {
				return
			}
		}
	}
	if err := audit.Extends(key, from, latest, entries); err != nil {
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

// bridge checks, over the --segment files, that the log extended seen,
// the checkpoint this device remembers, up to the live log's anchor (or
// past it), the events in between having been pruned from the server; it
// returns the checkpoint the live log is then checked from. Without
// segment files it reports the pruned range and the exports that hold it.
func (a *auditor) bridge(ctx context.Context, key []byte, seen, anchor *contractualv1.Checkpoint) (*contractualv1.Checkpoint, error) {
	if len(a.segments) == 0 {
		return nil, a.pruned(ctx, seen, anchor)
	}
	type file struct {
		path string
		hdr  *contractualv1.SegmentHeader
	}
	var files []file
	for _, p := range a.segments {
		f, err := os.Open(p)
		if err != nil {
			return nil, errs.Wrap(errs.Invalid, err, "reading a segment")
		}
		hdr, _, err := audit.ReadSegment(f)
		f.Close()
		if err != nil {
			return nil, errs.Wrap(errs.Invalid, err, "%s", p)
		}
		files = append(files, file{p, hdr})
	}
	slices.SortFunc(files, func(x, y file) int { return cmp.Compare(x.hdr.GetStart().GetIndex(), y.hdr.GetStart().GetIndex()) })
	cur := seen
	for _, fl := range files {
		start, seal := fl.hdr.GetStart().GetIndex(), fl.hdr.GetSeal().GetIndex()
		if start > cur.GetIndex() || seal <= cur.GetIndex() {
			continue
		}
		f, err := os.Open(fl.path)
		if err != nil {
			return nil, errs.Wrap(errs.Invalid, err, "reading a segment")
		}
		_, entries, err := audit.ReadSegment(f)
		if err == nil {
			err = audit.Extends(key, cur, fl.hdr.GetSeal(), audit.SegmentEntriesAfter(entries, start, cur.GetIndex()))
		}
		f.Close()
		if err != nil {
			return nil, a.tampering(err, seen)
		}
		fmt.Fprintf(a.env.Stderr, "audit: %s extends checkpoint %d (index %d) to checkpoint %d (index %d)\n",
			fl.path, cur.GetSeq(), cur.GetIndex(), fl.hdr.GetSeal().GetSeq(), seal)
		cur = fl.hdr.GetSeal()
	}
	if cur.GetIndex() < anchor.GetIndex() {
		return nil, errs.E(errs.FailedPrecondition,
			"the segments given reach index %d, but the live log starts at index %d: give the segments that hold events %d..%d",
			cur.GetIndex(), anchor.GetIndex(), cur.GetIndex()+1, anchor.GetIndex())
	}
	return cur, nil
}

// pruned reports that the events after seen, up to the anchor, were pruned
// from the server, and which recorded exports hold them: not tampering,
// but nothing this device has verified either.
func (a *auditor) pruned(ctx context.Context, seen, anchor *contractualv1.Checkpoint) error {
	w := a.env.Stderr
	fmt.Fprintf(w, "contractual audit: PRUNED: the server pruned events %d..%d since this device last checked the log (checkpoint %d, index %d); its live log starts at checkpoint %d (index %d).\n",
		seen.GetIndex()+1, anchor.GetIndex(), seen.GetSeq(), seen.GetIndex(), anchor.GetSeq(), anchor.GetIndex())
	seg, err := a.c.audit.Segments(ctx, &contractualv1.SegmentsRequest{})
	if err != nil {
		return err
	}
	n := 0
	for _, x := range seg.GetExports() {
		if x.GetSealIndex() > seen.GetIndex() && x.GetStartIndex() < anchor.GetIndex() {
			fmt.Fprintf(w, "  they are in %s\n", describeExport(x))
			n++
		}
	}
	if n == 0 {
		fmt.Fprintln(w, "  no recorded export holds them")
	}
	fmt.Fprintf(w, "Check them with: contractual audit verify --online --segment FILE ...\n(or, to trust the live log from its anchor unchecked, remove %s)\n", a.memory)
	return errReported
}

// describeExport describes a recorded export in one line.
func describeExport(x *contractualv1.Export) string {
	return fmt.Sprintf("%s: segment %d..%d, events %d..%d, %s, exported by %s at %s",
		x.GetName(), x.GetStartSeq(), x.GetSealSeq(), x.GetStartIndex()+1, x.GetSealIndex(), x.GetSha256(),
		x.GetPrincipal(), x.GetTime().AsTime().UTC().Format(time.RFC3339))
}

// printIncremental reports a verification from the checkpoint this device
// verified last (checkServer) to the newest.
func (a *auditor) printIncremental(latest, extended *contractualv1.Checkpoint, asJSON bool) error {
	from := a.checkedFrom
	if asJSON {
		return printJSON(a.env, &contractualv1.VerifyResponse{
			Ok: true, Events: latest.GetIndex(), FromIndex: from.GetIndex(), Checked: a.fetched,
		})
	}
	w := a.env.Stdout
	switch {
	case latest == nil:
		fmt.Fprintln(w, "the audit log is empty")
	case from == nil:
		fmt.Fprintf(w, "audit log: this device now trusts checkpoint %d (index %d), signed by key %s; later runs verify from it (--full has the server recompute the whole log)\n",
			latest.GetSeq(), latest.GetIndex(), audit.KeyID(latest.GetPublicKeyset()))
	default:
		fmt.Fprintf(w, "audit log intact from checkpoint %d (index %d) to checkpoint %d (index %d): %d new events recomputed, the new checkpoint's signature checked\n",
			from.GetSeq(), from.GetIndex(), latest.GetSeq(), latest.GetIndex(), a.fetched)
	}
	if extended != nil {
		fmt.Fprintf(w, "it extends checkpoint %d (index %d) %s\n", extended.GetSeq(), extended.GetIndex(), a.anchorName)
	}
	return nil
}

// printSegments prints the server's retention state.
func (a *auditor) printSegments(ctx context.Context, asJSON bool) error {
	resp, err := a.c.audit.Segments(ctx, &contractualv1.SegmentsRequest{})
	if err != nil || asJSON {
		if err == nil {
			err = printJSON(a.env, resp)
		}
		return err
	}
	w := a.env.Stdout
	if an := resp.GetAnchor(); an != nil {
		fmt.Fprintf(w, "live log: from checkpoint %d (index %d), pruned before it\n", an.GetSeq(), an.GetIndex())
	} else {
		fmt.Fprintln(w, "live log: from the first event, never pruned")
	}
	fmt.Fprintf(w, "newest checkpoint: %d (index %d)\nexported, from the start of the live log, through index %d\n",
		resp.GetLatest().GetSeq(), resp.GetLatest().GetIndex(), resp.GetExportedThrough())
	for _, x := range resp.GetExports() {
		fmt.Fprintf(w, "  %s\n", describeExport(x))
	}
	return nil
}

// export writes the segment from checkpoint from (default: where recorded
// exports end) to checkpoint through (default: the newest) to path, from
// the server's entries, checks it with the key this device pinned, and has
// the server record it.
func (a *auditor) export(ctx context.Context, path string, from, through uint64) error {
	latest, err := a.checkServer(ctx)
	if err != nil {
		return err
	}
	if latest == nil {
		return errs.E(errs.NotFound, "the audit log is empty: there is nothing to export")
	}
	key := a.key
	if key == nil {
		key = latest.GetPublicKeyset() // checkServer checked it is the pinned one
	}
	if from == 0 {
		seg, err := a.c.audit.Segments(ctx, &contractualv1.SegmentsRequest{})
		if err != nil {
			return err
		}
		from = exportedSeal(seg)
	}
	if through == 0 {
		through = latest.GetSeq()
	}
	if through <= from {
		return errs.E(errs.FailedPrecondition, "nothing to export: the segment would end at checkpoint %d and start at %d (recorded exports reach that far)", through, from)
	}
	var start *contractualv1.Checkpoint
	if from != 0 {
		if start, err = a.getCheckpoint(ctx, from); err != nil {
			return err
		}
	}
	seal, err := a.getCheckpoint(ctx, through)
	if err != nil {
		return err
	}
	digest, err := writeSegmentFile(path, key, start, seal, a.remoteEntries(ctx, start.GetIndex(), seal.GetIndex()))
	if err != nil {
		return a.tampering(err, nil)
	}
	fmt.Fprintf(a.env.Stdout, "exported segment %d..%d (events %d..%d) to %s, %s; it verifies with key %s\n",
		from, through, start.GetIndex()+1, seal.GetIndex(), path, digest, audit.KeyID(key))
	_, err = a.c.audit.RecordExport(ctx, &contractualv1.RecordExportRequest{StartSeq: from, SealSeq: through, Sha256: digest, Name: filepath.Base(path)})
	if errs.Is(err, errs.PermissionDenied) {
		fmt.Fprintf(a.env.Stdout, "not recorded on the server (that needs the owner scope): retention will not prune it on this export's account\n")
		return nil
	}
	if err != nil {
		return err
	}
	fmt.Fprintln(a.env.Stdout, "recorded on the server: retention may now prune these events")
	return nil
}

// exportedSeal is the checkpoint where the recorded exports of a log end:
// the seal of the export that reaches ExportedThrough, else the anchor,
// else 0 (the start of the log).
func exportedSeal(seg *contractualv1.SegmentsResponse) uint64 {
	for _, x := range seg.GetExports() {
		if x.GetSealIndex() == seg.GetExportedThrough() && x.GetSealIndex() > seg.GetAnchor().GetIndex() {
			return x.GetSealSeq()
		}
	}
	return seg.GetAnchor().GetSeq()
}

// getCheckpoint fetches checkpoint seq.
func (a *auditor) getCheckpoint(ctx context.Context, seq uint64) (*contractualv1.Checkpoint, error) {
	resp, err := a.c.audit.GetCheckpoint(ctx, &contractualv1.GetCheckpointRequest{Seq: seq})
	if err != nil {
		return nil, err
	}
	return resp.GetCheckpoint(), nil
}

// writeSegmentFile writes the segment start..seal of entries to path
// (through a temporary file, synced, renamed into place) once it verifies
// with key, and returns its digest.
func writeSegmentFile(path string, key []byte, start, seal *contractualv1.Checkpoint, entries iter.Seq2[[]byte, error]) (string, error) {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return "", errs.Wrap(errs.Invalid, err, "writing the segment")
	}
	tmp := f.Name()
	defer os.Remove(tmp)
	h := sha256.New()
	err = audit.WriteSegment(io.MultiWriter(f, h), start, seal, entries)
	if err == nil {
		_, err = f.Seek(0, io.SeekStart)
	}
	if err == nil {
		_, err = audit.VerifySegment(f, key)
	}
	if err = errors.Join(err, f.Sync(), f.Close()); err != nil {
		return "", err
	}
	if err := os.Rename(tmp, path); err != nil {
		return "", errs.Wrap(errs.Invalid, err, "writing the segment")
	}
	return "sha256:" + hex.EncodeToString(h.Sum(nil)), nil
}

// verifySegments checks each --segment file offline, with --key, else the
// key this device pinned, else the key the file carries (said so).
func (a *auditor) verifySegments() error {
	key, whose := a.key, "the key given with --key"
	if key == nil {
		seen, err := a.remembered()
		if err != nil {
			return err
		}
		key, whose = seen.GetPublicKeyset(), "the key this device pinned"
	}
	for _, p := range a.segments {
		f, err := os.Open(p)
		if err != nil {
			return errs.Wrap(errs.Invalid, err, "reading a segment")
		}
		k, w := key, whose
		if k == nil {
			hdr, _, err := audit.ReadSegment(f)
			if err != nil {
				f.Close()
				return errs.Wrap(errs.Invalid, err, "%s", p)
			}
			k, w = hdr.GetSeal().GetPublicKeyset(), "the key the file carries (pin one: --key)"
			f.Seek(0, io.SeekStart)
		}
		hdr, err := audit.VerifySegment(f, k)
		f.Close()
		if err != nil {
			return a.tampering(errs.Wrap(errs.KindOf(err), err, "%s", p), nil)
		}
		st, se := hdr.GetStart(), hdr.GetSeal()
		fmt.Fprintf(a.env.Stdout, "segment %s intact: checkpoints %d..%d, events %d..%d, checked with %s %s\n",
			p, st.GetSeq(), se.GetSeq(), st.GetIndex()+1, se.GetIndex(), w, audit.KeyID(k))
	}
	return nil
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
