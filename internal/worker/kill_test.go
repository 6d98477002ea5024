package worker

import (
	"bytes"
	"context"
	"crypto/x509"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	contractualv1 "github.com/contractual/contractual/contracts/gen/contractual/v1"
	"github.com/contractual/contractual/runtime/egress"
)

// The environment of the worker process TestKilledWorker starts: its data
// directory, the sink's address and the sink's certificate (PEM file).
const (
	envChildDir = "CONTRACTUAL_TEST_WORKER_DIR"
	envSinkAddr = "CONTRACTUAL_TEST_WORKER_SINK"
	envSinkCA   = "CONTRACTUAL_TEST_WORKER_SINK_CA"
)

// TestKilledWorker is the crash test: a worker process is
// SIGKILLed while step two's request is held open at the counting sink
// (the sink applied it; the answer never came). A fresh worker on the same
// store, its clock past the dead one's lease, takes the run over: step one
// is done and not sent again, step two is sent again with the same
// Idempotency-Key (the sink applies it once), step three once. Every side
// effect is applied exactly once.
func TestKilledWorker(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a worker process")
	}
	dir := t.TempDir()
	sk := newSink(t)
	sk.chained()
	release := make(chan struct{})
	sk.hold["two"] = release
	t.Cleanup(func() { close(release) })
	yaml := chainJob(t, "nightly", "budgets: {tool_calls_per_run: 4}\n") // step two is called again
	ca := filepath.Join(dir, "sink.pem")
	if err := os.WriteFile(filepath.Join(dir, "job.yaml"), []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(ca, sk.pem, 0o600); err != nil {
		t.Fatal(err)
	}
	// The worker process approves the job in policy (the store in dir).
	rec := &contractualv1.JobRecord{Id: "nightly", Digest: jobDigest(t, yaml)}
	db, err := openDB(context.Background(), filepath.Join(dir, "worker"))
	if err != nil {
		t.Fatal(err)
	}
	id := RunID(rec.GetId(), "cron", t0.UnixNano(), "")
	if _, err := insertRun(context.Background(), db, newRun{id: id, job: rec.GetId(), digest: rec.GetDigest(), trigger: "cron",
		scheduled: t0, now: time.Now(), payload: []byte(`{"repo":"one"}`)}); err != nil {
		t.Fatal(err)
	}
	db.Close()

	var out bytes.Buffer
	cmd := exec.Command(os.Args[0], "-test.run=^TestKilledWorkerChild$", "-test.v")
	cmd.Env = append(os.Environ(), envChildDir+"="+dir, envSinkAddr+"="+sk.url, envSinkCA+"="+ca)
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	killed := false
	t.Cleanup(func() {
		if !killed {
			cmd.Process.Kill()
			cmd.Wait()
			t.Logf("worker process:\n%s", out.String())
		}
	})
	sk.wait(t, "two")
	if err := cmd.Process.Kill(); err != nil { // SIGKILL
		t.Fatal(err)
	}
	cmd.Wait()
	killed = true
	if _, seen, applied := sk.counts("two"); seen != 1 || applied != 1 {
		t.Fatalf("before the kill the sink saw two %d times, applied %d\n%s", seen, applied, out.String())
	}

	st := newStack(t, dir, sk.egress())
	clk := newClock(time.Now().Add(2 * time.Minute)) // past the dead worker's lease
	s := openWorker(t, dir, st, Config{ID: "fresh", Now: clk.now, Lease: time.Minute})
	drain(t, s, "fresh")

	r := run(t, s, id)
	if r.GetState() != succeeded || stepSummary(r) != "one:done:1 two:done:2 three:done:1" {
		t.Fatalf("run %v: %s: %s", r.GetState(), stepSummary(r), r.GetError())
	}
	for i, tt := range []struct {
		repo          string
		seen, applied int
	}{{"one", 1, 1}, {"two", 2, 1}, {"three", 1, 1}} {
		key, seen, applied := sk.counts(tt.repo)
		if seen != tt.seen || applied != tt.applied || key != r.GetSteps()[i].GetIdempotencyKey()+".1" {
			t.Errorf("%s: key %s sent %d times (want %d), applied %d times (want %d)", tt.repo, key, seen, tt.seen, applied, tt.applied)
		}
	}
	if n := sk.total.Load(); n != 4 {
		t.Errorf("the sink saw %d requests, want 4", n)
	}
}

// TestKilledWorkerChild is the worker process of TestKilledWorker: it runs
// the queue in the directory it is given until it is killed.
func TestKilledWorkerChild(t *testing.T) {
	dir := os.Getenv(envChildDir)
	if dir == "" {
		t.Skip("the worker process of TestKilledWorker")
	}
	pem, err := os.ReadFile(os.Getenv(envSinkCA))
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(pem)
	st := newStack(t, dir, egress.Config{Dialer: routeDialer(os.Getenv(envSinkAddr)), RootCAs: roots})
	st.approveJob(t, string(repoFileAbs(t, filepath.Join(dir, "job.yaml"))))
	s, err := Open(context.Background(), Config{Dir: filepath.Join(dir, "worker"), ID: "doomed", Lease: time.Minute},
		Deps{Policy: st.policy, Runner: st.runner, Jobs: st.jobs(), Audit: st.audit})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close(context.Background())
	<-time.After(5 * time.Minute)
	t.Fatal("the worker process was not killed")
}

func repoFileAbs(t testing.TB, p string) []byte {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
