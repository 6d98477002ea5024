package cli

import (
	"bytes"
	"context"
	"database/sql"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	contractualv1 "github.com/contractual/contractual/contracts/gen/contractual/v1"
	"github.com/contractual/contractual/internal/audit"
	"github.com/contractual/contractual/internal/decision"
	"github.com/contractual/contractual/internal/server"
)

// device is this CLI on one paired device, talking to servers that are
// started one after another over the same data directory.
type device struct {
	t      *testing.T
	config string // $CONTRACTUAL_CONFIG: the token, the key, the remembered checkpoint
	url    string // the server it talks to now
}

// run runs the CLI in-process as d against its server.
func (d *device) run(stdin string, args ...string) (int, string, string) {
	d.t.Helper()
	var out, errOut bytes.Buffer
	env := &Env{
		Stdin: strings.NewReader(stdin), Stdout: &out, Stderr: &errOut,
		Getenv: func(k string) string {
			if k == "CONTRACTUAL_CONFIG" {
				return d.config
			}
			return ""
		},
	}
	code := Main(context.Background(), append(args, "--server", d.url), env)
	return code, out.String(), errOut.String()
}

// must runs the CLI and fails the test unless it succeeds.
func (d *device) must(stdin string, args ...string) (string, string) {
	d.t.Helper()
	code, out, errOut := d.run(stdin, args...)
	if code != 0 {
		d.t.Fatalf("contractual %s: exit %d\n%s%s", strings.Join(args, " "), code, out, errOut)
	}
	return out, errOut
}

// tampered runs the CLI and fails the test unless it reports tampering
// that says msg.
func (d *device) tampered(msg string, args ...string) {
	d.t.Helper()
	code, out, errOut := d.run("", args...)
	if code != exitFailure || !strings.Contains(errOut, "TAMPERING") || !strings.Contains(errOut, msg) {
		d.t.Fatalf("contractual %s: exit %d, want tampering that says %q\n%s%s", strings.Join(args, " "), code, msg, out, errOut)
	}
}

// memory is the checkpoint file the device remembers.
func (d *device) memory() []byte {
	b, err := os.ReadFile(filepath.Join(d.config, checkpointFile))
	if err != nil {
		d.t.Fatal(err)
	}
	return b
}

// serve starts the all-in-one server over dir on a free loopback port;
// the caller closes it (a close seals the log with a checkpoint).
func serve(t *testing.T, dir string) *server.Server {
	t.Helper()
	s, err := server.Start(context.Background(), server.Config{DataDir: dir, Addr: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close(context.Background()) })
	return s
}

// closeServer stops s, sealing its log.
func closeServer(t *testing.T, s *server.Server) {
	t.Helper()
	if err := s.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
}

// writeSecrets appends n events to the log (secret writes are audited).
func (d *device) writeSecrets(n int) {
	d.t.Helper()
	for range n {
		d.must("value\n", "secrets", "put", "SOME_TOKEN")
	}
}

// withDB opens the audit log in dataDir as an attacker with the file would
// (no key), drops the guard triggers and runs f.
func withDB(t *testing.T, dataDir string, f func(db *sql.DB)) {
	t.Helper()
	db, err := sql.Open("sqlite", filepath.Join(dataDir, "audit", audit.DBFile))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	for _, tr := range []string{"events_no_update", "events_no_delete", "checkpoints_no_update", "checkpoints_no_delete"} {
		exec(t, db, `DROP TRIGGER IF EXISTS `+tr)
	}
	f(db)
}

func exec(t *testing.T, db *sql.DB, q string, args ...any) {
	t.Helper()
	if _, err := db.Exec(q, args...); err != nil {
		t.Fatalf("%s: %v", q, err)
	}
}

// pairedDevice starts a server over a fresh data directory and pairs a
// CLI device with it.
func pairedDevice(t *testing.T) (*device, string, *server.Server) {
	dir := t.TempDir()
	s := serve(t, dir)
	d := &device{t: t, config: t.TempDir(), url: s.URL}
	d.must("", "pair", "--setup-code", s.SetupCode, "--name", "laptop")
	return d, dir, s
}

// TestAuditRollbackCaught: a device saw a signed checkpoint; the data was
// then truncated (tail and last checkpoint removed) while the server was
// down. The copy verifies offline on its own, but the device reports
// tampering: offline with what it remembers, with --against an exported
// checkpoint, and online against the server restarted on the copy, even
// after that server has signed new checkpoints. What it remembers is never
// replaced by the older checkpoint.
func TestAuditRollbackCaught(t *testing.T) {
	d, dir, s := pairedDevice(t)
	d.writeSecrets(2)
	closeServer(t, s) // checkpoint 1

	s = serve(t, dir)
	d.url = s.URL
	_, errOut := d.must("", "audit", "tail")
	if !strings.Contains(errOut, "now pins the log's key sha256:") || !strings.Contains(errOut, "remembers checkpoint") {
		t.Fatalf("first use: %s", errOut)
	}
	first, err := audit.ParseCheckpoint(d.memory())
	if err != nil {
		t.Fatal(err)
	}
	d.writeSecrets(3)
	closeServer(t, s) // a newer checkpoint

	s = serve(t, dir)
	d.url = s.URL
	d.must("", "audit", "verify", "--online")
	exported, _ := d.must("", "audit", "checkpoint")
	file := filepath.Join(t.TempDir(), "checkpoint.json")
	os.WriteFile(file, []byte(exported), 0o600)
	seen := d.memory()
	last, err := audit.ParseCheckpoint(seen)
	if err != nil || last.GetSeq() <= first.GetSeq() || exported != string(seen) {
		t.Fatalf("remembered %v (%v) after %v; exported\n%s", last, err, first, exported)
	}
	if out, _ := d.must("", "audit", "verify", "--data", dir, "--against", file); !strings.Contains(out, fmt.Sprintf("it extends checkpoint %d", last.GetSeq())) {
		t.Fatalf("verify against the export, before tampering: %s", out)
	}
	// With a public keyset kept elsewhere: the log's own passes, another fails.
	pinned := filepath.Join(t.TempDir(), "pinned.keyset")
	os.WriteFile(pinned, mustRead(t, filepath.Join(dir, "audit", audit.VerifyKeysetFile)), 0o600)
	d.must("", "audit", "verify", "--data", dir, "--against", file, "--key", pinned)
	h, _ := decision.NewKeyset()
	otherKey, _ := decision.MarshalPublic(h)
	os.WriteFile(pinned, otherKey, 0o600)
	if code, _, errOut := d.run("", "audit", "verify", "--data", dir, "--against", file, "--key", pinned); code != exitFailure || !strings.Contains(errOut, "bad signature") {
		t.Fatalf("verify with another key: exit %d: %s", code, errOut)
	}
	closeServer(t, s)

	// Truncate the tail back to the first checkpoint seen, and delete the
	// later checkpoints.
	withDB(t, dir, func(db *sql.DB) {
		exec(t, db, `DELETE FROM events WHERE idx > ?`, first.GetIndex())
		exec(t, db, `DELETE FROM checkpoints WHERE idx > ?`, first.GetIndex())
	})
	if res, err := audit.VerifyFile(context.Background(), filepath.Join(dir, "audit")); err != nil || !res.GetOk() {
		t.Fatalf("the truncated copy on its own: %v %v", res, err)
	}
	rollback := fmt.Sprintf("rollback: the log's newest checkpoint is %d (index %d), but checkpoint %d (index %d) was seen",
		first.GetSeq(), first.GetIndex(), last.GetSeq(), last.GetIndex())
	d.tampered(rollback, "audit", "verify", "--data", dir)
	d.tampered(rollback, "audit", "verify", "--data", dir, "--against", file)

	s = serve(t, dir)
	d.url = s.URL
	for _, args := range [][]string{{"audit", "tail"}, {"audit", "verify", "--online"}, {"audit", "checkpoint"}} {
		d.tampered(rollback, args...)
	}
	// A device without memory, checking online against the export.
	other := &device{t: t, config: t.TempDir(), url: s.URL}
	os.WriteFile(filepath.Join(other.config, "device.token"), mustRead(t, filepath.Join(d.config, "device.token")), 0o600)
	other.tampered(rollback, "audit", "verify", "--online", "--against", file)

	// The server on the copy goes on, past where the log was, and signs
	// checkpoints of its own (normally one with the seq of the one seen:
	// "checkpoint N (index J) is not the checkpoint N (index I) that was
	// seen").
	d.writeSecrets(6)
	closeServer(t, s)
	s = serve(t, dir)
	d.url = s.URL
	was := fmt.Sprintf("checkpoint %d (index %d)", last.GetSeq(), last.GetIndex())
	d.tampered(was, "audit", "tail")
	d.tampered(was, "audit", "verify", "--data", dir, "--against", file)
	if !bytes.Equal(d.memory(), seen) {
		t.Fatalf("the remembered checkpoint changed:\n%s", d.memory())
	}
}

// TestAuditKeyChangeCaught: the checkpoints and keys were wiped, so the
// server signs with a new key; the device pinned the old one and says so.
func TestAuditKeyChangeCaught(t *testing.T) {
	d, dir, s := pairedDevice(t)
	closeServer(t, s)
	s = serve(t, dir)
	d.url = s.URL
	d.must("", "audit", "tail")
	seen := d.memory()
	closeServer(t, s)

	withDB(t, dir, func(db *sql.DB) { exec(t, db, `DELETE FROM checkpoints`) })
	for _, f := range []string{audit.SigningKeysetFile, audit.VerifyKeysetFile} {
		os.Remove(filepath.Join(dir, "audit", f))
	}
	s = serve(t, dir)
	closeServer(t, s) // a checkpoint under the new key
	d.tampered("is signed with key sha256:", "audit", "verify", "--data", dir)

	s = serve(t, dir)
	d.url = s.URL
	d.tampered("is signed with key sha256:", "audit", "tail")
	if !bytes.Equal(d.memory(), seen) {
		t.Fatal("the remembered checkpoint changed")
	}
}

// TestAuditRemembersWhatItShowed: every audit command leaves the device
// remembering a signed checkpoint that covers every event it was shown,
// so cutting off even the newest events it showed is caught; the
// remembered file is 0600 and moves forward with the log.
func TestAuditRemembersWhatItShowed(t *testing.T) {
	d, dir, s := pairedDevice(t)
	var seqs []uint64
	var shown uint64
	for range 3 {
		d.writeSecrets(2)
		out, _ := d.must("", "audit", "tail")
		lines := strings.Split(strings.TrimSpace(out), "\n")
		last, err := strconv.ParseUint(strings.Fields(lines[len(lines)-1])[0], 10, 64)
		if err != nil {
			t.Fatalf("tail: %s", out)
		}
		c, err := audit.ParseCheckpoint(d.memory())
		if err != nil || c.GetIndex() != last || len(seqs) > 0 && c.GetSeq() <= seqs[len(seqs)-1] {
			t.Fatalf("remembered %v (%v) after a tail that showed up to index %d (earlier checkpoints %v)", c, err, last, seqs)
		}
		if fi, _ := os.Stat(filepath.Join(d.config, checkpointFile)); fi.Mode().Perm() != 0o600 {
			t.Fatalf("mode %v", fi.Mode())
		}
		seqs, shown = append(seqs, c.GetSeq()), last
	}
	if out, _ := d.must("", "audit", "verify", "--data", dir); !strings.Contains(out, fmt.Sprintf("it extends checkpoint %d (index %d) that this device saw", seqs[2], shown)) {
		t.Fatalf("offline verify: %s", out)
	}
	closeServer(t, s)

	// Cut off the two events the last tail showed, and their checkpoint.
	withDB(t, dir, func(db *sql.DB) {
		exec(t, db, `DELETE FROM events WHERE idx > ?`, shown-2)
		exec(t, db, `DELETE FROM checkpoints WHERE idx > ?`, shown-2)
	})
	d.tampered(fmt.Sprintf("but checkpoint %d (index %d) was seen", seqs[2], shown), "audit", "verify", "--data", dir)
}

func mustRead(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestAuditIncrementalExportPrune: `verify --online` recomputes only the
// events after the checkpoint the device verified last, and catches a
// change among them; a segment exported by the CLI verifies offline and
// a changed one does not; the server prunes only what was exported; a
// device whose checkpoint is older than the prune is told so (not
// "tampering") and bridges the gap with the exported segment.
func TestAuditIncrementalExportPrune(t *testing.T) {
	d, dir, s := pairedDevice(t)
	d.writeSecrets(2)
	if out, _ := d.must("", "audit", "verify", "--online"); !strings.Contains(out, "this device now trusts checkpoint") {
		t.Fatalf("first verify: %s", out)
	}
	early := d.memory()
	old := &device{t: t, config: t.TempDir(), url: s.URL} // a device that looked only then
	os.WriteFile(filepath.Join(old.config, "device.token"), mustRead(t, filepath.Join(d.config, "device.token")), 0o600)
	os.WriteFile(filepath.Join(old.config, checkpointFile), early, 0o600)
	from := mustCheckpoint(t, early)

	d.writeSecrets(3)
	out, _ := d.must("", "audit", "verify", "--online")
	to := mustCheckpoint(t, d.memory())
	want := fmt.Sprintf("intact from checkpoint %d (index %d) to checkpoint %d (index %d): %d new events recomputed",
		from.GetSeq(), from.GetIndex(), to.GetSeq(), to.GetIndex(), to.GetIndex()-from.GetIndex())
	if !strings.Contains(out, want) || to.GetIndex()-from.GetIndex() >= to.GetIndex() {
		t.Fatalf("incremental verify: %s\nwant %q", out, want)
	}
	if out, _ := d.must("", "audit", "verify", "--online", "--full"); !strings.Contains(out, "audit log intact") {
		t.Fatalf("full verify: %s", out)
	}

	// Export everything so far; it verifies offline, a changed copy does not.
	file := filepath.Join(t.TempDir(), "seg.bin")
	out, _ = d.must("", "audit", "export", "--segment", file)
	if !strings.Contains(out, fmt.Sprintf("exported segment 0..%d", to.GetSeq())) || !strings.Contains(out, "recorded on the server") {
		t.Fatalf("export: %s", out)
	}
	if out, _ := d.must("", "audit", "verify", "--segment", file); !strings.Contains(out, "intact") || !strings.Contains(out, "the key this device pinned") {
		t.Fatalf("verify the segment: %s", out)
	}
	b := mustRead(t, file)
	i := bytes.LastIndex(b, []byte("SOME_TOKEN"))
	b[i] ^= 1
	changed := filepath.Join(t.TempDir(), "changed.bin")
	os.WriteFile(changed, b, 0o600)
	d.tampered("does not reach the hash of its seal", "audit", "verify", "--segment", changed)

	// Newer events are not exported: pruning them is refused.
	d.writeSecrets(2)
	newest, _ := d.must("", "audit", "checkpoint")
	next := mustCheckpoint(t, []byte(newest))
	code, _, errOut := d.run("", "audit", "prune", "--through", strconv.FormatUint(next.GetSeq(), 10))
	if code == 0 || !strings.Contains(errOut, "are not exported") {
		t.Fatalf("prune past the export: exit %d: %s", code, errOut)
	}
	out, _ = d.must("", "audit", "prune", "--through", strconv.FormatUint(to.GetSeq(), 10))
	if !strings.Contains(out, fmt.Sprintf("the live log starts at checkpoint %d (index %d)", to.GetSeq(), to.GetIndex())) {
		t.Fatalf("prune: %s", out)
	}
	if out, _ := d.must("", "audit", "verify", "--online", "--full"); !strings.Contains(out, fmt.Sprintf("(from index %d, where the live log starts)", to.GetIndex())) {
		t.Fatalf("full verify after the prune: %s", out)
	}
	d.must("", "audit", "verify", "--online")

	// The device that looked long ago: pruned, not tampering, until it
	// brings the export.
	code, _, errOut = old.run("", "audit", "tail")
	if code != exitFailure || strings.Contains(errOut, "TAMPERING") || !strings.Contains(errOut, "PRUNED") ||
		!strings.Contains(errOut, fmt.Sprintf("events %d..%d", from.GetIndex()+1, to.GetIndex())) || !strings.Contains(errOut, "seg.bin: segment 0..") {
		t.Fatalf("old device: exit %d: %s", code, errOut)
	}
	if !bytes.Equal(old.memory(), early) {
		t.Fatal("the old device's checkpoint moved")
	}
	old.tampered("the log does not extend checkpoint", "audit", "verify", "--online", "--segment", changed)
	out, errOut = old.must("", "audit", "verify", "--online", "--segment", file)
	if !strings.Contains(errOut, fmt.Sprintf("extends checkpoint %d (index %d) to checkpoint %d", from.GetSeq(), from.GetIndex(), to.GetSeq())) ||
		!strings.Contains(out, fmt.Sprintf("intact from checkpoint %d", to.GetSeq())) {
		t.Fatalf("old device with the export: %s%s", out, errOut)
	}
	if c := mustCheckpoint(t, old.memory()); c.GetSeq() <= to.GetSeq() {
		t.Fatalf("the old device remembers %v", c)
	}

	// A change among new events is caught by the incremental check.
	d.writeSecrets(2)
	closeServer(t, s)
	last := mustCheckpoint(t, d.memory())
	withDB(t, dir, func(db *sql.DB) {
		var enc []byte
		if err := db.QueryRow(`SELECT enc FROM events WHERE idx = ?`, last.GetIndex()+1).Scan(&enc); err != nil {
			t.Fatal(err)
		}
		enc[len(enc)-1] ^= 1
		exec(t, db, `UPDATE events SET enc = ? WHERE idx = ?`, enc, last.GetIndex()+1)
	})
	s = serve(t, dir)
	d.url = s.URL
	d.tampered("the log does not extend checkpoint", "audit", "verify", "--online")
}

// mustCheckpoint parses a checkpoint file.
func mustCheckpoint(t *testing.T, b []byte) *contractualv1.Checkpoint {
	t.Helper()
	c, err := audit.ParseCheckpoint(b)
	if err != nil {
		t.Fatal(err)
	}
	return c
}
