package policy

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	contractualv1 "github.com/contractual/contractual/contracts/gen/contractual/v1"
)

// watchJobs calls WatchJobs after resp (nil: the first call).
func (f *fixture) watchJobs(after *contractualv1.WatchJobsResponse) *contractualv1.WatchJobsResponse {
	f.t.Helper()
	resp, err := f.s.WatchJobs(context.Background(), &contractualv1.WatchJobsRequest{Epoch: after.GetEpoch(), Revision: after.GetRevision()})
	if err != nil {
		f.t.Fatal(err)
	}
	return resp
}

// jobsOf renders job records as "state id digest-prefix" lines.
func jobsOf(recs []*contractualv1.JobRecord) string {
	var b strings.Builder
	for _, r := range recs {
		fmt.Fprintf(&b, "%s %s %s\n", jobStateName(r.GetState()), r.GetId(), r.GetDigest()[7:15])
	}
	return b.String()
}

// TestWatchJobs: the first answer is every running job; then approvals,
// supersessions, pauses (by the owner and by drift), resumes and
// deletions come once each, in order, and pending or rejected versions
// not at all. A waiting watcher wakes at a change. A restart starts a new
// epoch, whose snapshot has the same running jobs.
func TestWatchJobs(t *testing.T) {
	f := newJobFixture(t)
	named := func(name, extra string) []byte {
		return bytes.Replace(jobFile(f.textkit, f.meter, extra), []byte("name: nightly"), []byte("name: "+name), 1)
	}
	a := f.approveJob(f.createJob(named("a", "")).GetRecord().GetDigest())
	f.now = fixed.Add(time.Minute)
	b := f.approveJob(f.createJob(named("b", "")).GetRecord().GetDigest())
	f.createJob(named("c", "")) // pending only

	first := f.watchJobs(nil)
	want := "approved b " + b.GetDigest()[7:15] + "\napproved a " + a.GetDigest()[7:15] + "\n"
	if !first.GetSnapshot() || jobsOf(first.GetJobs()) != want {
		t.Fatalf("first answer (snapshot %v):\n%s\nwant:\n%s", first.GetSnapshot(), jobsOf(first.GetJobs()), want)
	}

	a2 := f.createJob(named("a", "budgets: {runs_per_day: 3}\n")).GetRecord()
	f.approveJob(a2.GetDigest())
	rej := f.createJob(named("b", "budgets: {runs_per_day: 9}\n")).GetRecord()
	if _, err := f.s.RejectJob(asOwner, &contractualv1.RejectJobRequest{Digest: rej.GetDigest()}); err != nil {
		t.Fatal(err)
	}
	if _, err := f.s.PauseJob(asOwner, &contractualv1.PauseJobRequest{Id: "b"}); err != nil {
		t.Fatal(err)
	}
	f.resumeJob("b")
	next := f.watchJobs(first)
	want = "superseded a " + a.GetDigest()[7:15] + "\napproved a " + a2.GetDigest()[7:15] + "\n" +
		"paused b " + b.GetDigest()[7:15] + "\napproved b " + b.GetDigest()[7:15] + "\n"
	if next.GetSnapshot() || next.GetEpoch() != first.GetEpoch() || next.GetRevision() != first.GetRevision()+4 || jobsOf(next.GetJobs()) != want {
		t.Fatalf("changes (snapshot %v, revision %d after %d):\n%s\nwant:\n%s", next.GetSnapshot(), next.GetRevision(), first.GetRevision(), jobsOf(next.GetJobs()), want)
	}

	// A watcher that is up to date waits, and wakes at the drift of a
	// contract the jobs pin.
	got := make(chan *contractualv1.WatchJobsResponse, 1)
	go func() {
		resp, err := f.s.WatchJobs(context.Background(), &contractualv1.WatchJobsRequest{Epoch: next.GetEpoch(), Revision: next.GetRevision()})
		if err != nil {
			t.Error(err)
		}
		got <- resp
	}()
	f.approve(f.publish(f.count, meter(f.count, "2.0.0", "low")).GetRecord().GetDigest())
	// Both jobs pin meter, and both pauses commit with the approval: they
	// come together.
	woke := <-got
	if lines := jobsOf(woke.GetJobs()); lines != "paused b "+b.GetDigest()[7:15]+"\npaused a "+a2.GetDigest()[7:15]+"\n" ||
		woke.GetJobs()[0].GetPause().GetKind() != contractualv1.PauseKind_PAUSE_KIND_CONTRACT_CHANGED {
		t.Fatalf("woke with:\n%s", lines)
	}
	rest := woke

	if _, err := f.s.DeleteJob(asOwner, &contractualv1.DeleteJobRequest{Id: "a"}); err != nil {
		t.Fatal(err)
	}
	if got := jobsOf(f.watchJobs(rest).GetJobs()); got != "deleted a "+a2.GetDigest()[7:15]+"\n" {
		t.Fatalf("after delete:\n%s", got)
	}

	f.resumeJob("b")
	f.reopen()
	again := f.watchJobs(rest)
	b2 := f.getJob("b").GetRecord()
	if !again.GetSnapshot() || again.GetEpoch() == first.GetEpoch() || jobsOf(again.GetJobs()) != "approved b "+b2.GetDigest()[7:15]+"\n" {
		t.Fatalf("after a restart (snapshot %v):\n%s", again.GetSnapshot(), jobsOf(again.GetJobs()))
	}
}
