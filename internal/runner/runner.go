// Package runner is the RunnerService: it runs one tool call, and only one
// that policy decided. Execute takes a signed decision and the input it
// decided; it verifies the decision (signature, verdict, expiry, the input's
// hash), spends it (a decision runs at most once), checks that the contract
// it names is still approved and is the one the decision names, runs the
// module in the sandbox under that contract's grants, and audits the outcome
// before it answers. If the audit log cannot take the event, the caller gets
// an error and never the output: nothing runs unrecorded.
//
// The runner persists nothing. It keeps in memory the decision verification
// keys (fetched from policy on first use), the ids of spent decisions until
// they expire, and a bounded cache of compiled modules keyed by contract
// digest, so that a call of a cached tool asks policy for nothing but the
// contract's current state. The cache is bounded by bytes (each module
// counts an estimate of what it keeps resident) and follows policy's
// change feed: the module of a newly approved contract is compiled in the
// background before its first call, and that of a revoked or superseded
// one is dropped, its compiled code deleted from disk.
package runner

import (
	"context"
	"log/slog"
	"sync"
	"time"

	contractualv1 "github.com/contractual/contractual/contracts/gen/contractual/v1"
	"github.com/contractual/contractual/contracts/gen/contractual/v1/contractualv1connect"
	"github.com/contractual/contractual/internal/errs"
	"github.com/contractual/contractual/internal/metrics"
	"github.com/contractual/contractual/runtime/fairq"
	"github.com/contractual/contractual/runtime/sandbox"
)

// Policy is what the runner needs from the policy service: contracts (for
// their state and grants), modules, the decision verification keys and the
// change feed of the approved contracts. The in-process policy service and
// the generated Connect client both satisfy it.
type Policy interface {
	GetModule(context.Context, *contractualv1.GetModuleRequest) (*contractualv1.GetModuleResponse, error)
	GetContract(context.Context, *contractualv1.GetContractRequest) (*contractualv1.GetContractResponse, error)
	GetVerifier(context.Context, *contractualv1.GetVerifierRequest) (*contractualv1.GetVerifierResponse, error)
	WatchContracts(context.Context, *contractualv1.WatchContractsRequest) (*contractualv1.WatchContractsResponse, error)
}

// Auditor is what the runner needs from the audit service. Append must
// return only once the events are durable.
type Auditor interface {
	Append(context.Context, *contractualv1.AppendRequest) (*contractualv1.AppendResponse, error)
}

var (
	_ contractualv1connect.RunnerServiceHandler = (*Service)(nil)
	_ Policy                                    = struct {
		contractualv1connect.PolicyServiceClient
		contractualv1connect.PolicyInternalServiceClient
	}{}
	_ Auditor = contractualv1connect.AuditInternalServiceClient(nil)
	_ Broker  = contractualv1connect.BrokerInternalServiceClient(nil)
)

// Defaults of Config.
const (
	DefaultMaxConcurrent    = 64
	DefaultMaxQueue         = 256
	DefaultQueueTimeout     = time.Second
	DefaultModuleCacheBytes = 256 << 20
	DefaultMaxSpent         = 1 << 20
	DefaultAuditTimeout     = 10 * time.Second
	DefaultKeyRefetchPeriod = 5 * time.Second
)

// Config configures a Service. Zero fields take the defaults above.
type Config struct {
	// MaxConcurrent bounds the calls inside Execute at once (fetching,
	// running, auditing). A call waits for a place in a fair queue (package
	// fairq) keyed by its verified decision's principal and tool: the
	// principals with waiting calls take turns, and so do a principal's
	// tools. The sandbox engine separately shares the CPUs among the calls
	// that run guest code, by the same key.
	MaxConcurrent int
	// MaxPerPrincipal and MaxPerTool cap the places that one principal,
	// resp. one principal's calls of one tool, hold at once, even when more
	// are free: a place cannot be taken back from a running call, so no
	// principal or tool may take them all and keep them for as long as its
	// calls last. Zero: three quarters, resp. half, of MaxConcurrent.
	MaxPerPrincipal, MaxPerTool int
	// MaxQueue bounds the calls waiting for a place, MaxQueuePerFlow those
	// of one principal and tool; beyond them a call is refused at once.
	// Zero: DefaultMaxQueue, resp. half of MaxQueue.
	MaxQueue, MaxQueuePerFlow int
	// QueueTimeout bounds how long a call waits for a place before it is
	// refused with errs.ResourceExhausted. Negative: do not wait at all.
	QueueTimeout time.Duration
	// ModuleCacheBytes bounds the compiled modules kept in memory, by the
	// estimate of what each keeps resident (sandbox.Footprint: about
	// 190 KiB for a tiny module, 20 MiB for a 3 MB Go-built one); the least
	// recently used go first.
	ModuleCacheBytes int64
	// MaxSpent bounds the ids of spent, unexpired decisions kept to refuse a
	// replay. When it is reached, new calls are refused (fail closed) until
	// some expire: forgetting a spent id would let it run again.
	MaxSpent int
	// AuditTimeout bounds the audit append of a call. The append does not
	// end with the caller's context: a call that ran is recorded even if
	// the caller has gone.
	AuditTimeout time.Duration
	// KeyRefetchPeriod is the least time between two fetches of the
	// verification keys prompted by a decision that only fails its
	// signature check (policy may have rotated its key).
	KeyRefetchPeriod time.Duration
	// Logger receives the runner's diagnostics; nil discards them.
	Logger *slog.Logger
}

// Deps are what the runner calls and runs on; each is required.
type Deps struct {
	// Policy has the contracts, modules and decision keys, and reports
	// their changes.
	Policy Policy
	// Broker releases the secrets that contracts inject, for one decided
	// call at a time.
	Broker Broker
	// Audit records every call.
	Audit Auditor
	// Engine runs the modules.
	Engine *sandbox.Engine
	// Metrics counts and times the calls, by tool and outcome.
	Metrics *metrics.Tools
}

// withDefaults returns o with every zero field set to its default.
func (o Config) withDefaults() Config {
	orDefault(&o.MaxConcurrent, DefaultMaxConcurrent)
	orDefault(&o.MaxPerPrincipal, max(o.MaxConcurrent*3/4, 1))
	orDefault(&o.MaxPerTool, max(o.MaxConcurrent/2, 1))
	orDefault(&o.MaxQueue, DefaultMaxQueue)
	orDefault(&o.MaxQueuePerFlow, max(o.MaxQueue/2, 1))
	orDefault(&o.QueueTimeout, DefaultQueueTimeout)
	orDefault(&o.ModuleCacheBytes, DefaultModuleCacheBytes)
	orDefault(&o.MaxSpent, DefaultMaxSpent)
	orDefault(&o.AuditTimeout, DefaultAuditTimeout)
	orDefault(&o.KeyRefetchPeriod, DefaultKeyRefetchPeriod)
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	return o
}

func orDefault[T int | int64 | time.Duration](v *T, d T) {
	if *v == 0 {
		*v = d
	}
}

// Service implements contractualv1connect.RunnerServiceHandler. It is safe
// for concurrent use.
type Service struct {
	opts    Config
	log     *slog.Logger
	policy  Policy
	audit   Auditor
	broker  Broker
	metrics *metrics.Tools
	keys    *keys
	spent   *spentSet
	modules *moduleCache
	// now is the clock; tests replace it (and started).
	now func() time.Time
	// started is when the runner started: decisions issued before it are
	// refused, since the ids it spent before a restart are forgotten.
	started time.Time

	// places admits the calls inside Execute.
	places *fairq.Queue

	// follower follows policy's change feed; stopFollow ends it, and
	// followed is closed when it has.
	follower   *follower
	stopFollow context.CancelFunc
	followed   chan struct{}
	closeOnce  sync.Once
}

// New returns a Service that fetches from deps.Policy, records to
// deps.Audit, asks deps.Broker for secrets and runs modules on deps.Engine.
// The verification keys are fetched when a call first needs them; the
// modules of approved contracts are compiled in the background, as policy's
// change feed reports them, until Close.
func New(_ context.Context, cfg Config, deps Deps) (*Service, error) {
	if deps.Policy == nil || deps.Broker == nil || deps.Audit == nil || deps.Engine == nil || deps.Metrics == nil {
		return nil, errs.E(errs.Invalid, "runner: policy, broker, audit, sandbox engine and metrics are all required")
	}
	opts := cfg.withDefaults()
	policy, engine := deps.Policy, deps.Engine
	if min(opts.MaxConcurrent, opts.MaxPerPrincipal, opts.MaxPerTool, opts.MaxQueue, opts.MaxQueuePerFlow, opts.MaxSpent) < 0 || opts.ModuleCacheBytes < 0 {
		return nil, errs.E(errs.Invalid, "runner: MaxConcurrent, MaxPerPrincipal, MaxPerTool, MaxQueue, MaxQueuePerFlow, ModuleCacheBytes and MaxSpent must not be negative")
	}
	s := &Service{
		opts:    opts,
		log:     opts.Logger,
		policy:  policy,
		audit:   deps.Audit,
		broker:  deps.Broker,
		metrics: deps.Metrics,
		spent:   newSpentSet(opts.MaxSpent),
		modules: newModuleCache(engine, policy, opts.ModuleCacheBytes, opts.Logger),
		now:     time.Now,
		started: time.Now(),
		places: fairq.New(fairq.Options{
			Name:             "runner",
			Slots:            opts.MaxConcurrent,
			MaxWait:          opts.QueueTimeout,
			MaxWaiting:       opts.MaxQueue,
			MaxFlowWaiting:   opts.MaxQueuePerFlow,
			MaxPrincipalHeld: opts.MaxPerPrincipal,
			MaxFlowHeld:      opts.MaxPerTool,
		}),
	}
	s.keys = &keys{policy: policy, period: opts.KeyRefetchPeriod, now: s.clock, log: opts.Logger, sem: make(chan struct{}, 1)}
	ctx, stop := context.WithCancel(context.Background())
	s.follower, s.stopFollow, s.followed = newFollower(s), stop, make(chan struct{})
	go func() {
		defer close(s.followed)
		s.follower.run(ctx)
	}()
	return s, nil
}

// clock returns the current time from s.now.
func (s *Service) clock() time.Time { return s.now() }

// Close stops following policy and releases the compiled modules, once the
// calls using them are done, after waiting (until ctx ends) for module
// loads in progress. Calls made after Close fail with errs.Unavailable.
func (s *Service) Close(ctx context.Context) error {
	var err error
	s.closeOnce.Do(func() {
		s.stopFollow()
		select {
		case <-s.followed:
		case <-ctx.Done():
		}
		err = s.modules.close(ctx)
	})
	return err
}

// Execute runs the call req decides. See the package comment for the steps.
// A call refused for want of a place is not audited (nothing was done),
// and its decision stays unspent.
func (s *Service) Execute(ctx context.Context, req *contractualv1.ExecuteRequest) (_ *contractualv1.ExecuteResponse, err error) {
	c := newCall(ctx)
	start := time.Now()
	defer func() { s.metrics.Observe(c.toolLabel(), err, time.Since(start)) }()
	v, verr := s.verify(ctx, req, c)
	leave, err := s.admit(ctx, flow(ctx, v))
	if err != nil {
		return nil, err
	}
	defer leave()
	var resp *contractualv1.ExecuteResponse
	if err = verr; err == nil {
		resp, err = s.execute(ctx, req, c, v)
	}
	return s.finish(ctx, c, resp, err)
}
