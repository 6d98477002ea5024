// Package worker is Contractual's worker service: it owns the queue of job
// runs, runs their steps through policy and the runner as the job's
// principal ("job:<id>"), retries them with backoff, accounts their
// budgets and records every run, step, output and outcome.
//
// Runs enter the queue by WorkerInternalService.Enqueue (the scheduler's
// firings) or JobRunService.RunJob (the owner's "run now"). A run's id is
// derived from its job, trigger, scheduled time and delivery id, so that
// enqueueing the same firing twice is a no-op.
//
// Workers (goroutines, Config.Workers of them, or processes sharing one
// store) claim runs with a lease: one atomic UPDATE takes a due queued run,
// or a running one whose lease expired, and gives it an owner, an expiry
// and a new lease generation, the fencing token. The holder renews the
// lease while it runs, and every write it makes for the run is
// conditioned on that generation: a worker that lost its lease records
// nothing more, and stops.
//
// Each step is an outbox entry. Before the call, its row goes to RUNNING
// with its idempotency key, "<run id>.<action hash>" (decision.ActionKey:
// the step, the tool and the canonical input's hash, as policy signed
// them), and the runner sends every HTTP request of the call with an
// Idempotency-Key derived from it; after the
// call the row goes to DONE with the output. A run claimed again after a
// crash skips DONE steps and runs a RUNNING one again, with the same key,
// so that a receiver that honours the key applies the side effect once.
//
// An agent step (agent.go) is run by the engine (RunAgentStep), whose
// every call policy decides for the job like a step's, with the run and
// the step; the step's output is the model's answer.
//
// A decision other than allow stops the run (policy pauses the job
// itself). A budget exceeded (run time, egress requests and bytes, output
// bytes) stops the run and pauses the job (JobService.PauseJob, kind
// BUDGET). Every run and step is in the audit log, with input hashes,
// never input values. The store is one SQLite file, worker.db, that
// nothing else writes.
package worker

import (
	"context"
	"database/sql"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"

	contractualv1 "github.com/contractual/contractual/contracts/gen/contractual/v1"
	"github.com/contractual/contractual/contracts/gen/contractual/v1/contractualv1connect"
	"github.com/contractual/contractual/internal/errs"
)

// Policy decides the calls of a job's steps.
type Policy interface {
	Evaluate(context.Context, *contractualv1.EvaluateRequest) (*contractualv1.EvaluateResponse, error)
}

// Runner runs a decided call.
type Runner interface {
	Execute(context.Context, *contractualv1.ExecuteRequest) (*contractualv1.ExecuteResponse, error)
}

// Jobs is policy's job store: the job versions runs execute, and the pause
// of a job whose run exceeded a budget.
type Jobs interface {
	GetJob(context.Context, *contractualv1.GetJobRequest) (*contractualv1.GetJobResponse, error)
	PauseJob(context.Context, *contractualv1.PauseJobRequest) (*contractualv1.PauseJobResponse, error)
}

// Auditor records runs and steps. Append must return only once the events
// are durable.
type Auditor interface {
	Append(context.Context, *contractualv1.AppendRequest) (*contractualv1.AppendResponse, error)
}

var (
	_ contractualv1connect.JobRunServiceHandler         = (*Service)(nil)
	_ contractualv1connect.WorkerInternalServiceHandler = (*Service)(nil)
	_ Policy                                            = contractualv1connect.PolicyInternalServiceClient(nil)
	_ Runner                                            = contractualv1connect.RunnerServiceClient(nil)
	_ Jobs                                              = contractualv1connect.JobServiceClient(nil)
	_ Auditor                                           = contractualv1connect.AuditInternalServiceClient(nil)
	_ Engine                                            = contractualv1connect.EngineInternalServiceClient(nil)
)

// Defaults of Config.
const (
	DefaultWorkers      = 1
	DefaultLease        = 30 * time.Second
	DefaultPoll         = time.Second
	DefaultMaxBackoff   = time.Hour
	DefaultAuditTimeout = 10 * time.Second
)

// Config configures a Service. Only Dir is required; zero values of the
// others take the defaults above.
type Config struct {
	// Dir holds the worker's store.
	Dir string
	// ID names this process's workers in the leases they hold (default
	// "<host name>-<pid>"); worker n is "<ID>/<n>".
	ID string
	// Workers is how many runs this process runs at once.
	Workers int
	// Lease is how long a claimed run stays claimed without a renewal: a
	// run whose worker died is claimed again this long after its last
	// renewal. Renew is how often the holder renews it (default Lease/3).
	Lease, Renew time.Duration
	// Poll is how often an idle worker looks for due runs (an Enqueue
	// wakes one at once).
	Poll time.Duration
	// MaxBackoff caps the wait before a retry.
	MaxBackoff time.Duration
	// AuditTimeout bounds one audit append.
	AuditTimeout time.Duration
	// Now returns the current time (default time.Now): leases, backoff and
	// the run-time budget follow it. Tests set it.
	Now func() time.Time
	// Logger receives the worker's diagnostics; nil discards them.
	Logger *slog.Logger
}

// withDefaults fills in what c leaves unset.
func (c Config) withDefaults() Config {
	if c.ID == "" {
		host, _ := os.Hostname()
		c.ID = fmt.Sprintf("%s-%d", host, os.Getpid())
	}
	if c.Workers <= 0 {
		c.Workers = DefaultWorkers
	}
	if c.Lease <= 0 {
		c.Lease = DefaultLease
	}
	if c.Renew <= 0 {
		c.Renew = c.Lease / 3
	}
	if c.Poll <= 0 {
		c.Poll = DefaultPoll
	}
	if c.MaxBackoff <= 0 {
		c.MaxBackoff = DefaultMaxBackoff
	}
	if c.AuditTimeout <= 0 {
		c.AuditTimeout = DefaultAuditTimeout
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c
}

// Engine runs a job's agent steps (agent.go).
type Engine interface {
	RunAgentStep(context.Context, *contractualv1.RunAgentStepRequest) (*contractualv1.RunAgentStepResponse, error)
}

// Deps are the services the worker calls; each is required but Engine:
// without it, an agent step fails, saying why.
type Deps struct {
	Policy Policy
	Runner Runner
	Jobs   Jobs
	Audit  Auditor
	Engine Engine
}

// Service implements JobRunService and WorkerInternalService and runs the
// queue. It is safe for concurrent use.
type Service struct {
	cfg  Config
	deps Deps
	db   *sql.DB
	log  *slog.Logger

	// wake tells an idle worker that a run was enqueued.
	wake chan struct{}
	// stop ends the workers; workers counts them.
	stop      context.CancelFunc
	workers   sync.WaitGroup
	closeOnce sync.Once

	// testHookFinished, if set, is called with the id of each run a worker
	// of loop ended (finished, retried or stopped).
	testHookFinished func(run string)
}

// Open opens (or creates) the worker's store in cfg.Dir and starts
// cfg.Workers workers, until Close.
func Open(ctx context.Context, cfg Config, deps Deps) (*Service, error) {
	s, err := open(ctx, cfg, deps)
	if err != nil {
		return nil, err
	}
	s.start()
	return s, nil
}

// open opens the store without starting workers.
func open(ctx context.Context, cfg Config, deps Deps) (*Service, error) {
	if deps.Policy == nil || deps.Runner == nil || deps.Jobs == nil || deps.Audit == nil {
		return nil, errs.E(errs.Invalid, "worker: policy, runner, jobs and audit are all required")
	}
	if cfg.Dir == "" {
		return nil, errs.E(errs.Invalid, "worker: no store directory")
	}
	db, err := openDB(ctx, cfg.Dir)
	if err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	return &Service{cfg: cfg, deps: deps, db: db, log: cfg.Logger, wake: make(chan struct{}, 1), stop: func() {}}, nil
}

// start starts the workers.
func (s *Service) start() {
	ctx, stop := context.WithCancel(context.Background())
	s.stop = stop
	for i := range s.cfg.Workers {
		id := fmt.Sprintf("%s/%d", s.cfg.ID, i)
		s.workers.Add(1)
		go func() {
			defer s.workers.Done()
			s.loop(ctx, id)
		}()
	}
}

// Close stops the workers (a run in progress is abandoned where it is and
// released, for the next claim to take over, or claimed again when its
// lease expires), waits for them until ctx ends, and closes the store.
func (s *Service) Close(ctx context.Context) error {
	var err error
	s.closeOnce.Do(func() {
		s.stop()
		done := make(chan struct{})
		go func() {
			s.workers.Wait()
			close(done)
		}()
		select {
		case <-done:
		case <-ctx.Done():
			err = errs.Wrap(errs.Unavailable, ctx.Err(), "worker: runs still in progress")
		}
		if cerr := s.db.Close(); cerr != nil && err == nil {
			err = errs.Wrap(errs.Unavailable, cerr, "worker: closing the store")
		}
	})
	return err
}

// loop is one worker: it runs due runs, one at a time, until ctx ends.
func (s *Service) loop(ctx context.Context, id string) {
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		run, err := s.work(ctx, id)
		if err != nil && ctx.Err() == nil {
			s.log.Error("worker: run failed to record", "worker", id, "run", run, "err", err)
		}
		ran := run != ""
		if ran && err == nil && s.testHookFinished != nil {
			s.testHookFinished(run)
		}
		if ran && err == nil {
			continue
		}
		t.Reset(s.cfg.Poll)
		select {
		case <-ctx.Done():
			return
		case <-s.wake:
		case <-t.C:
		}
	}
}

// notify wakes an idle worker.
func (s *Service) notify() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}
