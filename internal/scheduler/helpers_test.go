package scheduler

import (
	"github.com/contractual/contractual/internal/scheduler/schedulertest"

	"context"
	"crypto/hmac"
	"crypto/sha256"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	contractualv1 "github.com/contractual/contractual/contracts/gen/contractual/v1"
	"github.com/contractual/contractual/contracts/job"
	"github.com/contractual/contractual/internal/errs"
)

// wait bounds every wait on an event in these tests: far above need.
const wait = 2 * time.Minute

// jobSource is policy's feed of approved jobs, fed by the test with
// records of real job files.
type jobSource struct {
	mu      sync.Mutex
	epoch   string
	rev     uint64
	current map[string]*contractualv1.JobRecord // approved, by id
	log     []*contractualv1.JobRecord          // log[i] has revision i+1
	wake    chan struct{}
	asked   chan uint64 // the revision of each request
	fail    int         // answer this many requests with an error
}

func newJobSource() *jobSource {
	return &jobSource{epoch: "e1", current: map[string]*contractualv1.JobRecord{}, wake: make(chan struct{}), asked: make(chan uint64, 1024)}
}

func (j *jobSource) WatchJobs(ctx context.Context, req *contractualv1.WatchJobsRequest) (*contractualv1.WatchJobsResponse, error) {
	if req.GetEpoch() == j.epoch {
		select {
		case j.asked <- req.GetRevision():
		default:
		}
	}
	for {
		j.mu.Lock()
		if j.fail > 0 {
			j.fail--
			j.mu.Unlock()
			return nil, errs.E(errs.Unavailable, "policy is restarting")
		}
		resp := &contractualv1.WatchJobsResponse{Epoch: j.epoch, Revision: j.rev}
		wake := j.wake
		switch {
		case req.GetEpoch() != j.epoch || req.GetRevision() > j.rev:
			resp.Snapshot = true
			for _, r := range j.current {
				resp.Jobs = append(resp.Jobs, proto.CloneOf(r))
			}
		case req.GetRevision() < j.rev:
			for _, r := range j.log[req.GetRevision():] {
				resp.Jobs = append(resp.Jobs, proto.CloneOf(r))
			}
		default:
			resp = nil
		}
		j.mu.Unlock()
		if resp != nil {
			return resp, nil
		}
		select {
		case <-wake:
		case <-ctx.Done():
			return nil, errs.Wrap(errs.Unavailable, ctx.Err(), "canceled")
		}
	}
}

// restart is policy restarting: a new epoch, whose first answers fail
// fails times; the feed starts over with the approved set.
func (j *jobSource) restart(fails int, remove ...string) {
	j.mu.Lock()
	defer j.mu.Unlock()
	j.epoch += "'"
	j.fail = fails
	for _, id := range remove {
		delete(j.current, id)
	}
	j.rev, j.log = 0, nil
	close(j.wake)
	j.wake = make(chan struct{})
}

// publish records a change and returns its revision.
func (j *jobSource) publish(rec *contractualv1.JobRecord) uint64 {
	j.mu.Lock()
	defer j.mu.Unlock()
	if rec.GetState() == contractualv1.JobState_JOB_STATE_APPROVED {
		j.current[rec.GetId()] = rec
	} else if cur := j.current[rec.GetId()]; cur != nil && cur.GetDigest() == rec.GetDigest() {
		delete(j.current, rec.GetId())
	}
	j.log = append(j.log, rec)
	j.rev++
	close(j.wake)
	j.wake = make(chan struct{})
	return j.rev
}

// applied waits until the scheduler asks for changes after rev, of the
// current epoch: it has applied everything up to it.
func (j *jobSource) applied(t testing.TB, rev uint64) {
	t.Helper()
	timeout := time.After(wait)
	for {
		select {
		case r := <-j.asked:
			if r >= rev {
				return
			}
		case <-timeout:
			t.Fatalf("the scheduler never applied revision %d", rev)
		}
	}
}

// jobYAML is a job file with the given trigger and misfire lines, in the
// form of jobs/nightly-stars.yaml.
func jobYAML(name, trigger, misfire string) string {
	return fmt.Sprintf(`name: %s
trigger: %s
steps:
  - id: stars
    tool: ghstars.repo_stars
    contract: sha256:414ccfbaa56bb89322cc847d110a4af65b4d20dd72465785d8bb00fdc66ba019
    input: {owner: contractual, repo: contractual}
%s`, name, trigger, misfire)
}

// record loads a job file and returns it approved at decided.
func record(t testing.TB, yaml string, state contractualv1.JobState, decided time.Time) *contractualv1.JobRecord {
	t.Helper()
	j, err := job.Load([]byte(yaml), "job.yaml")
	if err != nil {
		t.Fatal(err)
	}
	d, err := job.Digest(j)
	if err != nil {
		t.Fatal(err)
	}
	return &contractualv1.JobRecord{Id: j.GetName(), Digest: d, Job: j, State: state, DecidedAt: timestamppb.New(decided)}
}

// firingKey is what makes a firing's run id.
type firingKey struct {
	job, trigger string
	at           time.Time
	delivery     string
}

// queue is the worker's queue as the scheduler sees it: it records each
// Enqueue, answers existed for a firing it has, and can hold an Enqueue
// until the caller gives up (hold).
type queue struct {
	mu      sync.Mutex
	calls   []*contractualv1.EnqueueRequest
	runs    map[firingKey]string
	hold    bool
	arrived chan *contractualv1.EnqueueRequest
	// realAt is the real time of each call, for the benchmark.
	realAt []time.Time
}

func newQueue() *queue {
	return &queue{runs: map[firingKey]string{}, arrived: make(chan *contractualv1.EnqueueRequest, 1<<16)}
}

func (q *queue) Enqueue(ctx context.Context, req *contractualv1.EnqueueRequest) (*contractualv1.EnqueueResponse, error) {
	q.mu.Lock()
	q.calls = append(q.calls, proto.CloneOf(req))
	q.realAt = append(q.realAt, time.Now())
	k := firingKey{req.GetJobId(), req.GetTrigger(), req.GetScheduledAt().AsTime(), req.GetDeliveryId()}
	id, existed := q.runs[k]
	if !existed {
		id = fmt.Sprintf("run-%d", len(q.runs)+1)
		q.runs[k] = id
	}
	hold := q.hold
	q.mu.Unlock()
	q.arrived <- req
	if hold {
		<-ctx.Done()
		return nil, errs.Wrap(errs.Unavailable, ctx.Err(), "canceled")
	}
	return &contractualv1.EnqueueResponse{Run: &contractualv1.JobRun{Id: id, JobId: req.GetJobId()}, Existed: existed}, nil
}

// fired returns the scheduled times enqueued for job, in call order.
func (q *queue) fired(job string) []time.Time {
	q.mu.Lock()
	defer q.mu.Unlock()
	var out []time.Time
	for _, c := range q.calls {
		if c.GetJobId() == job {
			out = append(out, c.GetScheduledAt().AsTime())
		}
	}
	return out
}

func (q *queue) count() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return len(q.calls)
}

// macBroker checks MACs under its keys, as the broker does (the broker's
// own tests cover the real one; the server test uses it).
type macBroker struct{ keys map[string]string }

func (b macBroker) VerifyMac(_ context.Context, req *contractualv1.VerifyMacRequest) (*contractualv1.VerifyMacResponse, error) {
	k, ok := b.keys[req.GetSecret()]
	if !ok {
		return nil, errs.E(errs.NotFound, "no secret %s", req.GetSecret())
	}
	m := hmac.New(sha256.New, []byte(k))
	m.Write(req.GetMessage())
	return &contractualv1.VerifyMacResponse{Valid: hmac.Equal(m.Sum(nil), req.GetMac())}, nil
}

// auditLog keeps the events appended.
type auditLog struct {
	mu     sync.Mutex
	events []*contractualv1.AuditEvent
}

func (a *auditLog) Append(_ context.Context, req *contractualv1.AppendRequest) (*contractualv1.AppendResponse, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, ev := range req.GetEvents() {
		a.events = append(a.events, proto.CloneOf(ev))
	}
	return &contractualv1.AppendResponse{}, nil
}

// with returns the events of action about job ("" for any job).
func (a *auditLog) with(action, job string) []*contractualv1.AuditEvent {
	a.mu.Lock()
	defer a.mu.Unlock()
	var out []*contractualv1.AuditEvent
	for _, ev := range a.events {
		if ev.GetAction() == action && (job == "" || ev.GetPrincipal() == "job:"+job) {
			out = append(out, ev)
		}
	}
	return out
}

// env is a scheduler under test and what it calls.
type env struct {
	t     testing.TB
	dir   string
	clock *schedulertest.Clock
	jobs  *jobSource
	queue *queue
	audit *auditLog
	keys  map[string]string
	svc   *Service
}

func newEnv(t testing.TB, start time.Time) *env {
	t.Helper()
	e := &env{t: t, dir: t.TempDir(), clock: schedulertest.NewClock(start), jobs: newJobSource(), queue: newQueue(), audit: &auditLog{}, keys: map[string]string{}}
	e.open()
	t.Cleanup(func() {
		if e.svc != nil {
			e.svc.Close(context.Background())
		}
	})
	return e
}

// open starts a scheduler on e's store.
func (e *env) open() {
	e.t.Helper()
	// Forget the requests of the scheduler before, now closed.
	for len(e.jobs.asked) > 0 {
		<-e.jobs.asked
	}
	svc, err := Open(context.Background(), Config{Dir: e.dir, Clock: e.clock}, Deps{
		Jobs: e.jobs, Queue: e.queue, Broker: macBroker{e.keys}, Audit: e.audit,
	})
	if err != nil {
		e.t.Fatal(err)
	}
	e.svc = svc
}

// restart closes the scheduler (a crash, as far as its store goes: only
// what it recorded stays) and opens another on the same store, which
// applies the feed's snapshot.
func (e *env) restart() {
	e.t.Helper()
	if err := e.svc.Close(context.Background()); err != nil {
		e.t.Fatal(err)
	}
	e.svc = nil
	e.open()
	e.synced()
}

// synced waits for the scheduler to apply the feed up to now, then fires
// what is due.
func (e *env) synced() {
	e.t.Helper()
	e.jobs.mu.Lock()
	rev := e.jobs.rev
	e.jobs.mu.Unlock()
	e.jobs.applied(e.t, rev)
	e.flush()
}

// flush has the scheduler fire everything due at the clock's time.
func (e *env) flush() {
	e.t.Helper()
	done := make(chan struct{})
	select {
	case e.svc.flush <- done:
	case <-time.After(wait):
		e.t.Fatal("the fire loop does not answer")
	}
	select {
	case <-done:
	case <-time.After(wait):
		e.t.Fatal("the fire loop did not finish")
	}
}

// approve publishes a job file approved now and waits for it to apply.
func (e *env) approve(yaml string) *contractualv1.JobRecord {
	e.t.Helper()
	rec := record(e.t, yaml, contractualv1.JobState_JOB_STATE_APPROVED, e.clock.Now())
	e.jobs.applied(e.t, e.jobs.publish(rec))
	e.flush()
	return rec
}

// runUntil moves the clock from fire time to fire time, exactly, until
// end, firing what is due at each.
func (e *env) runUntil(end time.Time) {
	e.t.Helper()
	for {
		e.flush()
		at, ok := e.clock.NextWaiter()
		if !ok || at.After(end) {
			e.clock.Set(end)
			e.flush()
			return
		}
		e.clock.Set(at)
	}
}

func mustTime(t testing.TB, s string) time.Time {
	t.Helper()
	v, err := time.Parse(time.RFC3339, s)
	if err != nil {
		t.Fatal(err)
	}
	return v.UTC()
}

func times(t testing.TB, ss ...string) []time.Time {
	out := make([]time.Time, len(ss))
	for i, s := range ss {
		out[i] = mustTime(t, s)
	}
	return out
}

func sameTimes(a, b []time.Time) bool { return slices.EqualFunc(a, b, time.Time.Equal) }

// details joins events' details, for messages.
func details(evs []*contractualv1.AuditEvent) string {
	var b strings.Builder
	for _, ev := range evs {
		fmt.Fprintf(&b, "\n  %s %s %s", ev.GetAction(), ev.GetOutcome(), ev.GetDetail())
	}
	return b.String()
}
