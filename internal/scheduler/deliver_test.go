package scheduler

import (
	"context"
	"strconv"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	contractualv1 "github.com/contractual/contractual/contracts/gen/contractual/v1"
	"github.com/contractual/contractual/internal/errs"
)

// failingQueue fails every Enqueue while failing is set.
type failingQueue struct {
	*queue
	failing bool
}

func (q *failingQueue) Enqueue(ctx context.Context, req *contractualv1.EnqueueRequest) (*contractualv1.EnqueueResponse, error) {
	if q.failing {
		return nil, errs.E(errs.Unavailable, "the worker is down")
	}
	return q.queue.Enqueue(ctx, req)
}

// TestDeliverWindow: a delivery whose run could not be enqueued may be sent
// again; a delivery id is remembered for the replay window and forgotten
// after it; the window is the trigger's; a paused job takes no delivery.
func TestDeliverWindow(t *testing.T) {
	e := newEnv(t, mustTime(t, "2026-07-01T12:00:00Z"))
	e.keys["HOOK_KEY"] = "k1"
	fq := &failingQueue{queue: e.queue, failing: true}
	e.svc.Close(t.Context())
	svc, err := Open(t.Context(), Config{Dir: e.dir, Clock: e.clock}, Deps{Jobs: e.jobs, Queue: fq, Broker: macBroker{e.keys}, Audit: e.audit})
	if err != nil {
		t.Fatal(err)
	}
	e.svc = svc
	e.synced()
	rec := e.approve(jobYAML("hook", `{webhook: {secret: HOOK_KEY, replay_window_seconds: 60}}`, ""))
	deliver := func(id string) error {
		ts := strconv.FormatInt(e.clock.Now().Unix(), 10)
		_, err := e.svc.Deliver(t.Context(), &contractualv1.DeliverRequest{
			JobId: "hook", Timestamp: ts, DeliveryId: id, Signature: Sign([]byte("k1"), ts, id, []byte(`[1]`)), Body: []byte(`[1]`),
		})
		return err
	}
	if err := deliver("a"); !errs.Is(err, errs.Unavailable) {
		t.Fatalf("with the worker down: %v", err)
	}
	fq.failing = false
	if err := deliver("a"); err != nil {
		t.Fatalf("sent again once the worker is back: %v", err)
	}
	e.clock.Advance(59 * time.Second)
	if err := deliver("a"); !errs.Is(err, errs.PermissionDenied) {
		t.Fatalf("a replay within the window: %v", err)
	}
	e.clock.Advance(2 * time.Second)
	if err := deliver("a"); err != nil {
		t.Fatalf("the same id after the window: %v", err)
	}
	if n := len(e.queue.fired("hook")); n != 2 {
		t.Fatalf("enqueued %d runs, want 2", n)
	}
	paused := proto.CloneOf(rec)
	paused.State = contractualv1.JobState_JOB_STATE_PAUSED
	e.jobs.applied(t, e.jobs.publish(paused))
	if err := deliver("b"); !errs.Is(err, errs.Unauthenticated) {
		t.Fatalf("a paused job: %v", err)
	}
	var n int
	e.svc.db.QueryRow(`SELECT COUNT(*) FROM deliveries`).Scan(&n)
	if n != 1 {
		t.Errorf("%d deliveries remembered, want 1 (the expired ones pruned)", n)
	}
}

// TestSign pins the signature scheme the README documents: HMAC-SHA256
// over "<timestamp>.<delivery>.<body>", hex, after "sha256=" (the value
// `openssl dgst -sha256 -hmac k1` gives for that message).
func TestSign(t *testing.T) {
	const want = "sha256=84d2d94dc4f6a542093b2bff3005749bf34e97505f016e7a7fbe4ffed9af8f92"
	if got := Sign([]byte("k1"), "1767225600", "d-1", []byte(`{"owner":"octo"}`)); got != want {
		t.Fatalf("Sign = %s, want %s", got, want)
	}
}
