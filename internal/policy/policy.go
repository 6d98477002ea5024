// Package policy is Contractual's PolicyService: it owns the modules
// (content-addressed), the contracts and their approvals, and it decides
// every tool call.
//
// A contract is published with its module and starts pending; the owner
// approves or rejects it; an approved contract can be revoked. Approval
// binds the contract's digest, which covers the module's digest: any
// changed byte is a new pending contract, shown as a diff against the
// approved one. At most one contract per name is approved: approving
// another one of the same name supersedes (revokes) the one before.
//
// Evaluate turns one call (tool "<contract name>.<export>", JSON input,
// principal) into a signed, short-lived Decision bound to the hash of the
// canonical input: allow, deny (no approved contract), or approval required
// (a high-risk tool). The runner verifies it with the public keyset that
// GetVerifier returns.
//
// WatchContracts is the change feed of the approved contracts, a long poll
// by revision: the runner follows it to compile a module when its contract
// is approved and to drop it when the contract is revoked or superseded.
//
// Jobs (JobService, jobs.go) are the reusable contracts: versions of job
// definitions that the owner approves, pinned to the contract digests they
// use. Policy decides a job's calls (principal job:<id>, with its run)
// against its bounds and budgets, and pauses the job on any other answer
// (jobeval.go), and when a contract it pins is replaced or revoked, in
// that change's own transaction (drift.go). WatchJobs is the scheduler's
// feed of the jobs that may run (jobwatch.go).
//
// Every state change and every decision is recorded in the audit log
// before it takes effect; when the log cannot record it, nothing happens
// (errs.Unavailable). Policy's store is one SQLite file, policy.db, that
// nothing else writes; it also holds the decision signing keyset.
package policy

import (
	"context"
	"database/sql"
	"regexp"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	contractualv1 "github.com/contractual/contractual/contracts/gen/contractual/v1"
	"github.com/contractual/contractual/contracts/gen/contractual/v1/contractualv1connect"
	"github.com/contractual/contractual/internal/decision"
	"github.com/contractual/contractual/internal/errs"
	"github.com/contractual/contractual/internal/principal"
)

// Auditor is what policy needs from the audit service: the in-process
// service and the Connect client both satisfy it. Append must return only
// once the events are durable.
type Auditor interface {
	Append(context.Context, *contractualv1.AppendRequest) (*contractualv1.AppendResponse, error)
}

var (
	_ contractualv1connect.PolicyServiceHandler         = (*Service)(nil)
	_ contractualv1connect.PolicyInternalServiceHandler = (*Service)(nil)
	_ contractualv1connect.JobServiceHandler            = (*Service)(nil)
	_ contractualv1connect.JobInternalServiceHandler    = (*Service)(nil)
	_ Auditor                                           = contractualv1connect.AuditInternalServiceClient(nil)
)

// Defaults of Config.
const (
	// DefaultDecisionTTL is how long a decision is valid.
	DefaultDecisionTTL = 30 * time.Second
	// DefaultAuditTimeout bounds one audit append.
	DefaultAuditTimeout = 10 * time.Second
)

// Config configures a Service. Only Dir is required; zero values of the
// others take the production defaults.
type Config struct {
	// Dir holds policy's store.
	Dir string
	// DecisionTTL is how long a decision stays valid after it is issued
	// (default DefaultDecisionTTL).
	DecisionTTL time.Duration
	// AuditTimeout bounds each audit append (default DefaultAuditTimeout).
	AuditTimeout time.Duration
	// Now returns the current time (default time.Now); tests set it.
	Now func() time.Time
	// WatchWait is how long WatchContracts waits for a change (default
	// DefaultWatchWait).
	WatchWait time.Duration
	// CallApprovalTTL is how long a one-shot call approval stays pending,
	// and an approved one usable (default DefaultCallApprovalTTL).
	CallApprovalTTL time.Duration
	// CallWait caps how long WaitCallApproval waits (default
	// DefaultCallWait).
	CallWait time.Duration
}

// Deps are the services policy calls; each is required.
type Deps struct {
	// Audit records every decision and change.
	Audit Auditor
}

// withDefaults fills in what o leaves unset.
func (o Config) withDefaults() Config {
	if o.DecisionTTL <= 0 {
		o.DecisionTTL = DefaultDecisionTTL
	}
	if o.AuditTimeout <= 0 {
		o.AuditTimeout = DefaultAuditTimeout
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.WatchWait <= 0 {
		o.WatchWait = DefaultWatchWait
	}
	if o.CallApprovalTTL <= 0 {
		o.CallApprovalTTL = DefaultCallApprovalTTL
	}
	if o.CallWait <= 0 {
		o.CallWait = DefaultCallWait
	}
	return o
}

// Service implements contractualv1connect.PolicyServiceHandler. It is safe
// for concurrent use.
type Service struct {
	opts    Config
	db      *sql.DB
	auditor Auditor
	signer  *decision.Signer
	public  []byte

	// mu serializes state changes, so that the store and the approved
	// cache change together.
	mu sync.Mutex
	// approved is read without locks on the hot path; it changes with
	// feed (setApproved).
	approved atomic.Pointer[approvedSet]
	feed     *feed
	// jobs is the feed of the jobs that may run (WatchJobs).
	jobs *jobFeed
	// callWait wakes the waiters for call approvals.
	callWait callWaiters
}

// Open opens (or creates) policy's store in cfg.Dir, loads or creates the
// decision signing keyset, and loads the approved contracts.
func Open(ctx context.Context, cfg Config, deps Deps) (*Service, error) {
	if deps.Audit == nil {
		return nil, errs.E(errs.Invalid, "policy: no audit service")
	}
	if cfg.Dir == "" {
		return nil, errs.E(errs.Invalid, "policy: no store directory")
	}
	db, err := openDB(ctx, cfg.Dir)
	if err != nil {
		return nil, err
	}
	s := &Service{opts: cfg.withDefaults(), db: db, auditor: deps.Audit, feed: newFeed()}
	if err := s.init(ctx); err != nil {
		db.Close()
		return nil, err
	}
	return s, nil
}

// init loads the keys and the approved contracts.
func (s *Service) init(ctx context.Context) error {
	var err error
	if s.signer, s.public, err = loadKeys(ctx, s.db); err != nil {
		return err
	}
	recs, err := listRecords(ctx, s.db, "", contractualv1.ContractState_CONTRACT_STATE_APPROVED)
	if err != nil {
		return err
	}
	a := &approvedSet{byName: make(map[string]*entry, len(recs)), byDigest: make(map[string]*entry, len(recs))}
	for _, rec := range recs {
		if err := checkStored(rec); err != nil {
			return err
		}
		e := newEntry(rec)
		a.byName[rec.GetContract().GetName()], a.byDigest[rec.GetDigest()] = e, e
	}
	s.setApproved(a)
	pend, _, _, err := pageRecords(ctx, s.db, listFilter{state: pending}, 0, feedLength)
	if err != nil {
		return err
	}
	s.feed.mu.Lock()
	for _, rec := range slices.Backward(pend) {
		s.feed.pending = append(s.feed.pending, approvalChange(rec, pending))
	}
	s.feed.mu.Unlock()
	running, err := approvedJobs(ctx, s.db)
	if err != nil {
		return err
	}
	s.jobs = newJobFeed(running)
	return nil
}

// Close closes the store.
func (s *Service) Close(context.Context) error {
	if err := s.db.Close(); err != nil {
		return errs.Wrap(errs.Unavailable, err, "policy: closing the store")
	}
	return nil
}

// GetVerifier returns the public keyset that verifies decisions.
func (s *Service) GetVerifier(context.Context, *contractualv1.GetVerifierRequest) (*contractualv1.GetVerifierResponse, error) {
	return &contractualv1.GetVerifierResponse{PublicKeyset: append([]byte(nil), s.public...)}, nil
}

// GetModule returns a module's bytes by digest.
func (s *Service) GetModule(ctx context.Context, req *contractualv1.GetModuleRequest) (*contractualv1.GetModuleResponse, error) {
	if err := checkDigest("module", req.GetDigest()); err != nil {
		return nil, err
	}
	wasm, err := getModule(ctx, s.db, req.GetDigest())
	if err != nil {
		return nil, err
	}
	return &contractualv1.GetModuleResponse{Module: wasm}, nil
}

// digestRE is what a module or contract digest looks like.
var digestRE = regexp.MustCompile(`^sha256:[0-9a-f]{64}$`)

// checkDigest refuses a malformed digest (errs.Invalid).
func checkDigest(what, d string) error {
	switch {
	case d == "":
		return errs.E(errs.Invalid, "%s digest is required", what)
	case !digestRE.MatchString(d):
		return errs.E(errs.Invalid, `%s digest %q is malformed: want "sha256:" and 64 lowercase hex digits`, what, clip(d, 100))
	}
	return nil
}

// owner returns the principal of ctx if it may publish and decide
// contracts: the owner, or one of the owner's paired devices. A chat
// session or a job never may, so that an agent cannot approve its own
// tools.
func owner(ctx context.Context) (string, error) {
	who := principal.From(ctx)
	switch {
	case who == "":
		return "", errs.E(errs.Unauthenticated, "no principal: contracts are published and decided by the owner")
	case !principal.Valid(who):
		return "", errs.E(errs.Unauthenticated, "principal %q is malformed", clip(who, 100))
	case !strings.HasPrefix(who, "device:"):
		return "", errs.E(errs.PermissionDenied, "%s may not publish or decide contracts: only the owner's paired devices may", who)
	}
	return who, nil
}

// stateName is a state as a word: "pending", "approved"...
func stateName(st contractualv1.ContractState) string {
	return strings.ToLower(strings.TrimPrefix(st.String(), "CONTRACT_STATE_"))
}
