package scheduler

import (
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	contractualv1 "github.com/contractual/contractual/contracts/gen/contractual/v1"
)

// TestCronAcrossDSTOverAYear runs three daily jobs in two zones through a
// simulated 2026, moving the clock from fire time to fire time: each fires
// once per local day, at its wall time, and on the days of the DST changes
// at the exact instants the schedule package's rules give — a time in the
// spring-forward gap at the end of the gap, a time repeated by the
// fall-back at its first occurrence only.
func TestCronAcrossDSTOverAYear(t *testing.T) {
	e := newEnv(t, mustTime(t, "2025-12-31T12:00:00Z"))
	e.synced()
	for _, c := range []struct{ name, expr, zone string }{
		{"berlin", "30 2 * * *", "Europe/Berlin"},
		{"ny-gap", "30 2 * * *", "America/New_York"},
		{"ny-back", "30 1 * * *", "America/New_York"},
	} {
		e.approve(jobYAML(c.name, `{cron: {expression: "`+c.expr+`", time_zone: `+c.zone+`}}`, ""))
	}
	e.runUntil(mustTime(t, "2027-01-01T00:00:00Z"))

	special := map[string]map[string]time.Time{
		// 2026-03-29: Berlin springs from 02:00 to 03:00; 10-25: falls
		// from 03:00 back to 02:00.
		"berlin": {"2026-03-29": mustTime(t, "2026-03-29T01:00:00Z"), "2026-10-25": mustTime(t, "2026-10-25T00:30:00Z")},
		// 2026-03-08: New York springs from 02:00 to 03:00; 11-01: falls
		// from 02:00 back to 01:00.
		"ny-gap":  {"2026-03-08": mustTime(t, "2026-03-08T07:00:00Z"), "2026-11-01": mustTime(t, "2026-11-01T07:30:00Z")},
		"ny-back": {"2026-03-08": mustTime(t, "2026-03-08T06:30:00Z"), "2026-11-01": mustTime(t, "2026-11-01T05:30:00Z")},
	}
	wall := map[string]string{"berlin": "02:30", "ny-gap": "02:30", "ny-back": "01:30"}
	zone := map[string]string{"berlin": "Europe/Berlin", "ny-gap": "America/New_York", "ny-back": "America/New_York"}
	for name, days := range special {
		loc, err := time.LoadLocation(zone[name])
		if err != nil {
			t.Fatal(err)
		}
		fired := e.queue.fired(name)
		if len(fired) != 365 {
			t.Errorf("%s fired %d times in 2026, want 365", name, len(fired))
		}
		seen := map[string]bool{}
		for _, f := range fired {
			local := f.In(loc)
			day := local.Format("2006-01-02")
			if seen[day] {
				t.Errorf("%s fired twice on %s (again at %s)", name, day, f)
			}
			seen[day] = true
			if want, ok := days[day]; ok {
				if !f.Equal(want) {
					t.Errorf("%s on %s fired at %s, want %s", name, day, f, want)
				}
				delete(days, day)
			} else if got := local.Format("15:04"); got != wall[name] || !strings.HasPrefix(day, "2026-") {
				t.Errorf("%s fired at %s (%s local), want %s local in 2026", name, f, local, wall[name])
			}
		}
		if len(days) > 0 {
			t.Errorf("%s never fired on %v", name, days)
		}
	}
	// Every firing was enqueued at its time, none was late or missed.
	fired := e.audit.with(actionFired, "")
	if len(fired) != 3*365 {
		t.Errorf("%d trigger.fired events, want %d", len(fired), 3*365)
	}
	for _, ev := range fired {
		if !strings.Contains(ev.GetDetail(), "enqueued 0s late") || ev.GetOutcome() != outcomeOK {
			t.Fatalf("a firing was late: %s %s", ev.GetOutcome(), ev.GetDetail())
		}
	}
	if n := len(e.audit.with(actionSkipped, "")) + len(e.audit.with(actionDropped, "")); n != 0 {
		t.Errorf("%d misfires in a run without downtime", n)
	}
	for _, c := range e.queue.calls {
		if c.GetTrigger() != kindCron || c.GetPayload().GetStructValue() == nil || c.GetJobDigest() == "" {
			t.Fatalf("enqueued %v", c)
		}
	}
}

// TestMisfireAfterDowntime stops the scheduler for five hours and starts
// another on the same store: the skip job fires none of the missed times
// (audited as skipped), the catch-up job the two most recent, each with
// its own scheduled time (the rest audited as dropped); the one-shot
// trigger missed fires once late under catch-up and not at all under skip;
// then every job fires on time again, and nothing fires twice across
// another restart. A clock that jumps while the scheduler runs (a process
// paused) is treated the same way.
func TestMisfireAfterDowntime(t *testing.T) {
	e := newEnv(t, mustTime(t, "2026-06-01T00:00:00Z"))
	e.synced()
	const hourly = `{cron: {expression: "0 * * * *", time_zone: UTC}}`
	e.approve(jobYAML("skip", hourly, ""))
	e.approve(jobYAML("catchup", hourly, "misfire: {policy: catch_up, max_catch_up: 2}\n"))
	e.approve(jobYAML("once-late", `{once: {at: "2026-06-01T03:30:00Z"}}`, "misfire: {policy: catch_up, max_catch_up: 1}\n"))
	e.approve(jobYAML("once-skip", `{once: {at: "2026-06-01T03:30:00Z"}}`, ""))
	e.approve(jobYAML("once-ahead", `{once: {at: "2026-06-01T10:00:00Z"}}`, ""))
	e.runUntil(mustTime(t, "2026-06-01T01:00:00Z"))

	// Down from 01:00 to 06:20.
	if err := e.svc.Close(t.Context()); err != nil {
		t.Fatal(err)
	}
	e.clock.Set(mustTime(t, "2026-06-01T06:20:00Z"))
	e.open()
	e.synced()
	want := map[string][]time.Time{
		"skip":       times(t, "2026-06-01T01:00:00Z"),
		"catchup":    times(t, "2026-06-01T01:00:00Z", "2026-06-01T05:00:00Z", "2026-06-01T06:00:00Z"),
		"once-late":  times(t, "2026-06-01T03:30:00Z"),
		"once-skip":  nil,
		"once-ahead": nil,
	}
	check := func(when string) {
		t.Helper()
		for job, w := range want {
			if got := e.queue.fired(job); !sameTimes(got, w) {
				t.Errorf("%s: %s fired %v, want %v", when, job, got, w)
			}
		}
	}
	check("after the downtime")
	if ev := e.audit.with(actionSkipped, "skip"); len(ev) != 1 || !strings.Contains(ev[0].GetDetail(), "from 2026-06-01T02:00:00Z to 2026-06-01T06:20:00Z") {
		t.Errorf("skip's skipped events: %s", details(ev))
	}
	if ev := e.audit.with(actionDropped, "catchup"); len(ev) != 1 || !strings.Contains(ev[0].GetDetail(), "from 2026-06-01T02:00:00Z until before 2026-06-01T05:00:00Z") {
		t.Errorf("catchup's dropped events: %s", details(ev))
	}
	if ev := e.audit.with(actionSkipped, "once-skip"); len(ev) != 1 {
		t.Errorf("once-skip's skipped events: %s", details(ev))
	}
	if ev := e.audit.with(actionFired, "once-late"); len(ev) != 1 || !strings.Contains(ev[0].GetDetail(), "enqueued 2h50m0s late") {
		t.Errorf("once-late's fired events: %s", details(ev))
	}

	// Back on time.
	e.runUntil(mustTime(t, "2026-06-01T10:00:00Z"))
	for _, h := range []string{"07", "08", "09", "10"} {
		at := mustTime(t, "2026-06-01T"+h+":00:00Z")
		want["skip"] = append(want["skip"], at)
		want["catchup"] = append(want["catchup"], at)
	}
	want["once-ahead"] = times(t, "2026-06-01T10:00:00Z")
	check("back on time")

	// A restart without downtime fires nothing again.
	e.clock.Set(mustTime(t, "2026-06-01T10:00:30Z"))
	e.restart()
	check("after a restart")

	// The clock jumps three hours while the scheduler runs.
	e.clock.Set(mustTime(t, "2026-06-01T13:10:00Z"))
	e.flush()
	want["catchup"] = append(want["catchup"], times(t, "2026-06-01T12:00:00Z", "2026-06-01T13:00:00Z")...)
	check("after the clock jumped")
	if ev := e.audit.with(actionSkipped, "skip"); len(ev) != 2 || !strings.Contains(ev[1].GetDetail(), "from 2026-06-01T11:00:00Z to 2026-06-01T13:10:00Z") {
		t.Errorf("skip's skipped events: %s", details(ev))
	}
}

// TestOneShotFiresOnce: a one-shot trigger fires at its time, once, and
// not again after restarts, however the clock moves on.
func TestOneShotFiresOnce(t *testing.T) {
	e := newEnv(t, mustTime(t, "2026-12-24T12:00:00Z"))
	e.synced()
	e.approve(jobYAML("xmas", `{once: {at: "2026-12-24T18:00:00+01:00"}}`, "misfire: {policy: catch_up, max_catch_up: 1}\n"))
	e.runUntil(mustTime(t, "2026-12-25T00:00:00Z"))
	want := times(t, "2026-12-24T17:00:00Z")
	if got := e.queue.fired("xmas"); !sameTimes(got, want) {
		t.Fatalf("fired %v, want %v", got, want)
	}
	e.restart()
	e.clock.Set(mustTime(t, "2027-06-01T00:00:00Z"))
	e.restart()
	e.runUntil(mustTime(t, "2028-01-01T00:00:00Z"))
	if got := e.queue.fired("xmas"); !sameTimes(got, want) {
		t.Fatalf("after restarts fired %v, want %v", got, want)
	}
	if _, ok := e.clock.NextWaiter(); ok {
		t.Error("the scheduler still waits for a fire time")
	}
}

// TestCrashBetweenEnqueueAndRecord: the scheduler stops after the worker
// received a firing and before the scheduler recorded it; the next
// scheduler enqueues the same firing again (the same scheduled time, so
// the same run), and then records it.
func TestCrashBetweenEnqueueAndRecord(t *testing.T) {
	e := newEnv(t, mustTime(t, "2026-03-01T01:59:00Z"))
	e.synced()
	e.approve(jobYAML("nightly", `{cron: {expression: "0 2 * * *", time_zone: UTC}}`, ""))
	e.queue.mu.Lock()
	e.queue.hold = true
	e.queue.mu.Unlock()
	e.clock.Set(mustTime(t, "2026-03-01T02:00:00Z"))
	var first *contractualv1.EnqueueRequest
	select {
	case first = <-e.queue.arrived:
	case <-time.After(wait):
		t.Fatal("nothing enqueued")
	}
	// The worker has it; the scheduler dies before recording it.
	if err := e.svc.Close(t.Context()); err != nil {
		t.Fatal(err)
	}
	e.queue.mu.Lock()
	e.queue.hold = false
	e.queue.mu.Unlock()
	e.clock.Set(mustTime(t, "2026-03-01T02:00:20Z"))
	e.open()
	e.synced()
	want := times(t, "2026-03-01T02:00:00Z", "2026-03-01T02:00:00Z")
	if got := e.queue.fired("nightly"); !sameTimes(got, want) {
		t.Fatalf("enqueued %v, want the same firing twice %v", got, want)
	}
	if first.GetJobDigest() != e.queue.calls[1].GetJobDigest() {
		t.Fatal("enqueued another version")
	}
	if ev := e.audit.with(actionFired, "nightly"); len(ev) != 1 || ev[0].GetOutcome() != outcomeExisted {
		t.Errorf("fired events: %s", details(ev))
	}
	// Recorded now: a third scheduler does not enqueue it again.
	e.restart()
	if got := e.queue.fired("nightly"); len(got) != 2 {
		t.Fatalf("enqueued %v after it was recorded", got)
	}
}

// TestVersionsAndStops: a new version of a job keeps its last fire time,
// so an edit approved (even with an earlier decision time) after a firing
// does not fire that time again; the new version's runs carry its digest;
// a paused job fires no more, and a deleted one neither.
func TestVersionsAndStops(t *testing.T) {
	e := newEnv(t, mustTime(t, "2026-05-01T01:00:00Z"))
	e.synced()
	const daily = `{cron: {expression: "0 2 * * *", time_zone: UTC}}`
	v1 := e.approve(jobYAML("daily", daily, ""))
	other := e.approve(jobYAML("other", daily, ""))
	e.runUntil(mustTime(t, "2026-05-01T02:00:10Z"))
	v2 := record(t, jobYAML("daily", daily, "misfire: {policy: catch_up, max_catch_up: 1}\n"), contractualv1.JobState_JOB_STATE_APPROVED,
		mustTime(t, "2026-05-01T01:59:00Z"))
	super := proto.CloneOf(v1)
	super.State = contractualv1.JobState_JOB_STATE_SUPERSEDED
	e.jobs.publish(v2)
	e.jobs.applied(t, e.jobs.publish(super))
	e.runUntil(mustTime(t, "2026-05-02T02:00:00Z"))
	if got, want := e.queue.fired("daily"), times(t, "2026-05-01T02:00:00Z", "2026-05-02T02:00:00Z"); !sameTimes(got, want) {
		t.Fatalf("daily fired %v, want %v", got, want)
	}
	var digests []string
	for _, c := range e.queue.calls {
		if c.GetJobId() == "daily" {
			digests = append(digests, c.GetJobDigest())
		}
	}
	if !slices.Equal(digests, []string{v1.GetDigest(), v2.GetDigest()}) {
		t.Fatalf("daily's runs are of versions %v, want %s then %s", digests, v1.GetDigest(), v2.GetDigest())
	}

	paused := proto.CloneOf(v2)
	paused.State = contractualv1.JobState_JOB_STATE_PAUSED
	deleted := proto.CloneOf(other)
	deleted.State = contractualv1.JobState_JOB_STATE_DELETED
	e.jobs.publish(paused)
	e.jobs.applied(t, e.jobs.publish(deleted))
	before := e.queue.count()
	e.runUntil(mustTime(t, "2026-05-05T00:00:00Z"))
	e.restart()
	e.runUntil(mustTime(t, "2026-05-06T00:00:00Z"))
	if n := e.queue.count(); n != before {
		t.Fatalf("a paused or deleted job fired: %v", e.queue.calls[before:])
	}
}

// TestFeedStartsOver: policy restarts (a new epoch) and fails the first
// requests; the scheduler backs off on its clock, takes the new snapshot,
// stops the job missing from it and keeps the others' state, so nothing
// fires twice.
func TestFeedStartsOver(t *testing.T) {
	e := newEnv(t, mustTime(t, "2026-02-01T00:00:00Z"))
	e.synced()
	const daily = `{cron: {expression: "0 6 * * *", time_zone: Europe/Berlin}}`
	e.approve(jobYAML("kept", daily, ""))
	e.approve(jobYAML("dropped", daily, ""))
	e.runUntil(mustTime(t, "2026-02-01T06:00:00Z"))
	e.jobs.restart(2, "dropped")
	for _, backoff := range []time.Duration{retryMin, 2 * retryMin} {
		// Wait for the follower to sleep on its backoff, then end it.
		e.clock.WaitFor(t, e.clock.Now().Add(backoff), wait)
		e.clock.Advance(backoff)
	}
	e.synced()
	e.runUntil(mustTime(t, "2026-02-03T00:00:00Z"))
	if got, want := e.queue.fired("kept"), times(t, "2026-02-01T05:00:00Z", "2026-02-02T05:00:00Z"); !sameTimes(got, want) {
		t.Errorf("kept fired %v, want %v", got, want)
	}
	if got, want := e.queue.fired("dropped"), times(t, "2026-02-01T05:00:00Z"); !sameTimes(got, want) {
		t.Errorf("dropped fired %v, want %v", got, want)
	}
}

// TestResumedWhileDown: a job paused and resumed while the scheduler was
// down fires nothing of its pause, even under catch-up: its resumption is
// a fresh approval, and its trigger starts there.
func TestResumedWhileDown(t *testing.T) {
	e := newEnv(t, mustTime(t, "2026-09-01T00:00:00Z"))
	e.synced()
	rec := e.approve(jobYAML("hourly", `{cron: {expression: "0 * * * *", time_zone: UTC}}`, "misfire: {policy: catch_up, max_catch_up: 5}\n"))
	e.runUntil(mustTime(t, "2026-09-01T01:00:00Z"))
	if err := e.svc.Close(t.Context()); err != nil {
		t.Fatal(err)
	}
	paused := proto.CloneOf(rec)
	paused.State = contractualv1.JobState_JOB_STATE_PAUSED
	e.jobs.publish(paused)
	resumed := proto.CloneOf(rec)
	resumed.DecidedAt = timestamppb.New(mustTime(t, "2026-09-01T04:30:00Z"))
	e.jobs.publish(resumed)
	e.clock.Set(mustTime(t, "2026-09-01T06:10:00Z"))
	e.open()
	e.synced()
	// 02:00 to 04:00 fell in the pause; 05:00 and 06:00 were missed after
	// the resumption and are caught up.
	want := times(t, "2026-09-01T01:00:00Z", "2026-09-01T05:00:00Z", "2026-09-01T06:00:00Z")
	if got := e.queue.fired("hourly"); !sameTimes(got, want) {
		t.Fatalf("fired %v, want %v", got, want)
	}
}
