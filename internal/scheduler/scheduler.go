// Package scheduler is Contractual's scheduler service: it fires the
// triggers of the jobs the owner approved and enqueues their runs with the
// worker. It follows policy's approved jobs (JobInternalService.WatchJobs),
// keeps each job's trigger state in its own SQLite store — the approved
// version's digest, the next fire time and the last one fired, in UTC — and
// fires cron and one-shot triggers through a Clock, so that tests move time
// without sleeping.
//
// Firing is durable and at least once, made exactly once by the worker: at
// a fire time the scheduler calls WorkerInternalService.Enqueue (whose run id
// is derived from the job, the trigger and the scheduled time, so a second
// Enqueue of the same firing returns the same run), audits the firing, and
// only then records it. A crash in between enqueues the same firing again
// on restart, which the worker answers with the existing run.
//
// Fire times missed while the scheduler was down, or while its process was
// stopped or its clock jumped (a fire time found more than MisfireThreshold
// late), go to the job's misfire policy (schedule.Catch): skip them all
// (audited as trigger.skipped), or run at most the N most recent late, each
// with its own scheduled time (those beyond N audited as trigger.dropped).
// A one-shot trigger fires once, or once late under catch-up, and never
// again. A new version of a job keeps its trigger state, so an edit never
// fires a time twice; a paused, deleted or superseded job stops firing.
//
// Webhook triggers arrive from the gateway (SchedulerInternalService.
// Deliver, see deliver.go for the signature scheme): the scheduler checks
// that the job is approved with a webhook trigger, has the broker verify
// the HMAC under the trigger's secret (the key never leaves the broker),
// refuses a timestamp outside the trigger's replay window and a delivery
// id seen within it, and enqueues a run with the JSON body as its payload.
package scheduler

import (
	"context"
	"database/sql"
	"log/slog"
	"sync"
	"time"

	"connectrpc.com/connect"

	contractualv1 "github.com/contractual/contractual/contracts/gen/contractual/v1"
	"github.com/contractual/contractual/contracts/gen/contractual/v1/contractualv1connect"
	"github.com/contractual/contractual/internal/errs"
	"github.com/contractual/contractual/internal/mesh"
)

// Jobs is what the scheduler needs from policy: the approved jobs and
// their changes. The generated Connect client satisfies it.
type Jobs interface {
	WatchJobs(context.Context, *contractualv1.WatchJobsRequest) (*contractualv1.WatchJobsResponse, error)
}

// Queue is what the scheduler needs from the worker: enqueueing a firing,
// idempotently. The generated Connect client satisfies it.
type Queue interface {
	Enqueue(context.Context, *contractualv1.EnqueueRequest) (*contractualv1.EnqueueResponse, error)
}

// Broker checks webhook signatures under keys it keeps. The generated
// Connect client satisfies it.
type Broker interface {
	VerifyMac(context.Context, *contractualv1.VerifyMacRequest) (*contractualv1.VerifyMacResponse, error)
}

// Auditor records the scheduler's events. Append must return only once
// they are durable.
type Auditor interface {
	Append(context.Context, *contractualv1.AppendRequest) (*contractualv1.AppendResponse, error)
}

var (
	_ contractualv1connect.SchedulerInternalServiceHandler = (*Service)(nil)
	_ Jobs                                                 = contractualv1connect.JobInternalServiceClient(nil)
	_ Queue                                                = contractualv1connect.WorkerInternalServiceClient(nil)
	_ Broker                                               = contractualv1connect.BrokerInternalServiceClient(nil)
	_ Auditor                                              = contractualv1connect.AuditInternalServiceClient(nil)
)

// Clock is the scheduler's time: Now, and a channel that receives once d
// has passed. Tests use one they advance by hand.
type Clock interface {
	Now() time.Time
	After(d time.Duration) <-chan time.Time
}

// realClock is the system's clock. Its After wakes within a minute at the
// latest: a timer runs on the monotonic clock, which a suspended machine or
// a corrected wall clock leaves behind, and the fire loop, woken early,
// just looks at the wall clock again.
type realClock struct{}

func (realClock) Now() time.Time                         { return time.Now() }
func (realClock) After(d time.Duration) <-chan time.Time { return time.After(min(d, time.Minute)) }

// Defaults of Config.
const (
	DefaultMisfireThreshold = time.Minute
	DefaultMaxWebhookBytes  = 256 << 10
	DefaultAuditTimeout     = 10 * time.Second
	DefaultParallel         = 8
	DefaultBatch            = 256
)

// Backoff of the job feed and of a failed firing.
const (
	retryMin = time.Second
	retryMax = time.Minute
)

// Config configures a Service. Dir is required; zero fields take the
// defaults.
type Config struct {
	// Dir holds the scheduler's store.
	Dir string
	// Clock is the time (default the system's).
	Clock Clock
	// MisfireThreshold is how late a fire time may be found and still fire
	// as usual; a later one is a misfire, handled by the job's misfire
	// policy (default DefaultMisfireThreshold).
	MisfireThreshold time.Duration
	// MaxWebhookBytes caps a webhook's body (default
	// DefaultMaxWebhookBytes).
	MaxWebhookBytes int
	// Parallel bounds the Enqueue calls in flight at once (default
	// DefaultParallel); Batch the fire times handled, and recorded in one
	// transaction, at a time (default DefaultBatch).
	Parallel, Batch int
	// AuditTimeout bounds an audit append (default DefaultAuditTimeout).
	AuditTimeout time.Duration
	// Log receives diagnostics; nil discards them.
	Log *slog.Logger
}

func (c Config) withDefaults() Config {
	if c.Clock == nil {
		c.Clock = realClock{}
	}
	if c.MisfireThreshold <= 0 {
		c.MisfireThreshold = DefaultMisfireThreshold
	}
	if c.MaxWebhookBytes <= 0 {
		c.MaxWebhookBytes = DefaultMaxWebhookBytes
	}
	if c.Parallel <= 0 {
		c.Parallel = DefaultParallel
	}
	if c.Batch <= 0 {
		c.Batch = DefaultBatch
	}
	if c.AuditTimeout <= 0 {
		c.AuditTimeout = DefaultAuditTimeout
	}
	if c.Log == nil {
		c.Log = slog.New(slog.DiscardHandler)
	}
	return c
}

// Deps are the services the scheduler calls; each is required.
type Deps struct {
	Jobs   Jobs
	Queue  Queue
	Broker Broker
	Audit  Auditor
}

// Service is the scheduler. It is safe for concurrent use.
type Service struct {
	opts  Config
	clock Clock
	log   *slog.Logger
	db    *sql.DB
	deps  Deps

	// fireMu serializes applying the feed's answers and firing, so that a
	// job changed while it fires is recorded consistently.
	fireMu sync.Mutex
	// mu guards jobs and due.
	mu   sync.RWMutex
	jobs map[string]*entry // the approved jobs, by id
	due  dueHeap           // the entries with a fire time, soonest first
	// stored are the trigger states read at Open, until the first
	// snapshot of the feed says which jobs are still approved.
	stored map[string]*entry
	synced bool // a snapshot was applied

	kick  chan struct{}      // wakes the fire loop: the jobs changed
	flush chan chan struct{} // asks the fire loop to fire what is due now

	cancel context.CancelFunc
	done   sync.WaitGroup
}

// Open opens (or creates) the scheduler's store in cfg.Dir and starts
// following the jobs and firing their triggers until Close.
func Open(ctx context.Context, cfg Config, deps Deps) (*Service, error) {
	switch {
	case deps.Jobs == nil:
		return nil, errs.E(errs.Invalid, "scheduler: no jobs source (policy)")
	case deps.Queue == nil:
		return nil, errs.E(errs.Invalid, "scheduler: no queue (worker)")
	case deps.Broker == nil:
		return nil, errs.E(errs.Invalid, "scheduler: no broker")
	case deps.Audit == nil:
		return nil, errs.E(errs.Invalid, "scheduler: no audit service")
	}
	cfg = cfg.withDefaults()
	db, err := openDB(ctx, cfg.Dir)
	if err != nil {
		return nil, err
	}
	s := &Service{
		opts: cfg, clock: cfg.Clock, log: cfg.Log, db: db, deps: deps,
		jobs: map[string]*entry{}, kick: make(chan struct{}, 1), flush: make(chan chan struct{}),
	}
	if s.stored, err = loadTriggers(ctx, db); err != nil {
		db.Close()
		return nil, err
	}
	run, cancel := context.WithCancel(context.WithoutCancel(ctx))
	s.cancel = cancel
	s.done.Go(func() { s.follow(run) })
	s.done.Go(func() { s.fireLoop(run) })
	return s, nil
}

// Handlers returns the scheduler's Connect handlers with opts
// (mesh.HandlerOptions).
func (s *Service) Handlers(opts ...connect.HandlerOption) mesh.Handlers {
	h := mesh.Handlers{}
	h.Add(contractualv1connect.NewSchedulerInternalServiceHandler(s, opts...))
	return h
}

// Close stops following and firing, waits for a firing in progress to be
// recorded or abandoned, and closes the store.
func (s *Service) Close(context.Context) error {
	s.cancel()
	s.done.Wait()
	if err := s.db.Close(); err != nil {
		return errs.Wrap(errs.Unavailable, err, "scheduler: closing the store")
	}
	return nil
}

// wake tells the fire loop that the jobs changed.
func (s *Service) wake() {
	select {
	case s.kick <- struct{}{}:
	default:
	}
}
