// Package engine is Contractual's engine service: chat sessions with an LLM
// that can only propose tool calls, never make them.
//
// A session is a principal ("session:<id>") opened by a paired device, with
// the tools the model may propose (fixed at open, each an approved
// contract's export, with its input schema) and budgets: tool calls,
// tokens, cost and wall time. One turn runs the loop
//
//	owner's message → model → proposals → policy → runner → sanitized results → model → … → answer
//
// The model answers through strict structured output only (package model):
// a response that does not validate against the session's tools is
// discarded and retried a bounded number of times. Each validated proposal
// is decided by policy for the session's principal and, when allowed, run
// by the runner with policy's signed decision; the engine never runs a
// tool, and never holds a secret or a handle. A call that needs the owner's
// one-shot approval waits for it (WaitCallApproval) until the owner decides
// in the Control UI; nothing said in the chat approves anything. What goes
// back to the model is the runner's output (released secrets already
// redacted), capped: a larger one is kept as a content-addressed artifact of
// the session, with a retention time, and the model gets its beginning and
// reference. Tool output is marked untrusted in the prompt.
//
// The engine reaches the model provider without a network of its own: its
// requests are calls of the relay tool (Config.Model.Relay, tools/llm)
// under a contract the owner approved, so they leave through the runner's
// egress path, which injects the provider's API key (a broker secret) for
// the provider's host only. A keyless provider on this machine's loopback
// (Ollama, llama.cpp's server) may instead be reached directly.
//
// Every step is in the audit log: the session's opening, each proposal
// (tool and input hash), each result (output hash), each turn's end; policy
// records the decisions and the runner the runs. The store is one SQLite
// file, engine.db, that nothing else writes.
package engine

import (
	"context"
	"database/sql"
	"log/slog"
	"net/http"
	"sync"
	"time"

	contractualv1 "github.com/contractual/contractual/contracts/gen/contractual/v1"
	"github.com/contractual/contractual/contracts/gen/contractual/v1/contractualv1connect"
	"github.com/contractual/contractual/internal/engine/model"
	"github.com/contractual/contractual/internal/errs"
)

// Policy decides the sessions' calls and lists the approved tools.
type Policy interface {
	Evaluate(context.Context, *contractualv1.EvaluateRequest) (*contractualv1.EvaluateResponse, error)
	WaitCallApproval(context.Context, *contractualv1.WaitCallApprovalRequest) (*contractualv1.WaitCallApprovalResponse, error)
}

// Contracts lists the approved contracts, whose tools a session may use.
type Contracts interface {
	ListContracts(context.Context, *contractualv1.ListContractsRequest) (*contractualv1.ListContractsResponse, error)
}

// Runner runs a decided call.
type Runner interface {
	Execute(context.Context, *contractualv1.ExecuteRequest) (*contractualv1.ExecuteResponse, error)
}

// Auditor records the sessions' steps. Append returns once they are
// durable.
type Auditor interface {
	Append(context.Context, *contractualv1.AppendRequest) (*contractualv1.AppendResponse, error)
}

var (
	_ contractualv1connect.SessionServiceHandler = (*Service)(nil)
	_ Policy                                     = contractualv1connect.PolicyInternalServiceClient(nil)
	_ Contracts                                  = contractualv1connect.PolicyServiceClient(nil)
	_ Runner                                     = contractualv1connect.RunnerServiceClient(nil)
	_ Auditor                                    = contractualv1connect.AuditInternalServiceClient(nil)
)

// Defaults and bounds.
const (
	DefaultToolCalls = 50
	DefaultTokens    = 200_000
	DefaultWallTime  = 30 * time.Minute
	MaxToolCalls     = 10_000
	MaxTokens        = 100_000_000
	MaxWallTime      = 24 * time.Hour

	// DefaultResultBytes caps the result text the model is given; a larger
	// result becomes an artifact.
	DefaultResultBytes = 16 << 10
	// DefaultArtifactTTL is how long an artifact is kept.
	DefaultArtifactTTL = 7 * 24 * time.Hour
	// DefaultMaxSteps bounds the model requests of one turn.
	DefaultMaxSteps = 16
	// DefaultMaxCallsPerStep bounds the calls one proposal may carry; the
	// calls beyond it are refused, not run.
	DefaultMaxCallsPerStep = 8
	// MaxMessageBytes bounds the owner's message.
	MaxMessageBytes = 32 << 10
	// DefaultAuditTimeout bounds one audit append.
	DefaultAuditTimeout = 10 * time.Second
)

// ModelConfig says which model the engine talks to, and how.
type ModelConfig struct {
	// Model is the model's name ("gpt-4.1-mini", "llama3.2").
	Model string
	// Relay is the tool that carries the engine's requests to the
	// provider, "<contract>.<export>" (the example is tools/llm: "llm.chat"):
	// its contract names the provider's URL and the secret the host
	// injects. Either Relay or BaseURL is required.
	Relay string
	// BaseURL, without Relay, is a keyless provider on this machine's
	// loopback ("http://127.0.0.1:11434/v1"), reached directly. Anything
	// else goes through Relay.
	BaseURL string
	// Stream asks the provider for streamed responses.
	Stream bool
	// Retries bounds how many invalid responses are retried per request
	// (0: model.DefaultRetries; negative: none).
	Retries int
	// InputPriceMicros and OutputPriceMicros are the price of a million
	// prompt and completion tokens, in millionths of the provider's
	// currency unit (OpenAI's $0.40 per million is 400000); zero leaves
	// cost at zero and the cost budget unbounded.
	InputPriceMicros, OutputPriceMicros int64
	// Timeout bounds one model request (default 2 minutes).
	Timeout time.Duration
}

// Config configures a Service. Dir and Model are required.
type Config struct {
	// Dir holds the engine's store.
	Dir   string
	Model ModelConfig
	// DefaultBudget fills the zero fields of a session's budget.
	DefaultBudget *contractualv1.SessionBudget
	// ResultBytes caps the result text given to the model
	// (DefaultResultBytes).
	ResultBytes int
	// ArtifactTTL is how long an artifact is kept (DefaultArtifactTTL).
	ArtifactTTL time.Duration
	// MaxSteps bounds one turn's model requests (DefaultMaxSteps).
	MaxSteps int
	// MaxCallsPerStep bounds one proposal's calls (DefaultMaxCallsPerStep).
	MaxCallsPerStep int
	// ApprovalPoll bounds one wait for an approval; the engine waits again
	// until the approval is decided or a budget ends (default 20 s).
	ApprovalPoll time.Duration
	// AuditTimeout bounds one audit append (DefaultAuditTimeout).
	AuditTimeout time.Duration
	// HTTPClient, with BaseURL, carries the direct requests; nil means a
	// client that dials loopback addresses only. Tests set it.
	HTTPClient *http.Client
	// Now returns the current time (default time.Now).
	Now func() time.Time
	// Logger receives the engine's diagnostics; nil discards them.
	Logger *slog.Logger
}

func (c Config) withDefaults() Config {
	if c.ResultBytes <= 0 {
		c.ResultBytes = DefaultResultBytes
	}
	if c.ArtifactTTL <= 0 {
		c.ArtifactTTL = DefaultArtifactTTL
	}
	if c.MaxSteps <= 0 {
		c.MaxSteps = DefaultMaxSteps
	}
	if c.MaxCallsPerStep <= 0 {
		c.MaxCallsPerStep = DefaultMaxCallsPerStep
	}
	if c.ApprovalPoll <= 0 {
		c.ApprovalPoll = 20 * time.Second
	}
	if c.AuditTimeout <= 0 {
		c.AuditTimeout = DefaultAuditTimeout
	}
	if c.Model.Timeout <= 0 {
		c.Model.Timeout = 2 * time.Minute
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c
}

// Deps are the services the engine calls; each is required.
type Deps struct {
	Policy    Policy
	Contracts Contracts
	Runner    Runner
	Audit     Auditor
}

// Service implements SessionService and runs the sessions' turns. It is
// safe for concurrent use.
type Service struct {
	cfg   Config
	deps  Deps
	db    *sql.DB
	log   *slog.Logger
	model *model.Client

	// ctx ends when the service closes; every turn runs under it.
	ctx    context.Context
	cancel context.CancelFunc
	turns  sync.WaitGroup

	mu      sync.Mutex
	running map[string]*turn         // session id → its running turn
	watch   map[string]chan struct{} // session id → closed on its next event
	locks   map[string]*sessionLock  // session id → the lock on its record
	closed  bool
}

// sessionLock serializes the changes of one session's record; users counts
// who holds or waits for it.
type sessionLock struct {
	mu    sync.Mutex
	users int
}

// Open opens (or creates) the engine's store in cfg.Dir. Turns that were
// running when the engine last stopped are recorded as failed.
func Open(ctx context.Context, cfg Config, deps Deps) (*Service, error) {
	if deps.Policy == nil || deps.Contracts == nil || deps.Runner == nil || deps.Audit == nil {
		return nil, errs.E(errs.Invalid, "engine: policy, contracts, runner and audit are all required")
	}
	if cfg.Dir == "" {
		return nil, errs.E(errs.Invalid, "engine: no store directory")
	}
	cfg = cfg.withDefaults()
	s := &Service{cfg: cfg, deps: deps, log: cfg.Logger.With("service", "engine"), running: map[string]*turn{}}
	hc, base, err := s.providerClient()
	if err != nil {
		return nil, err
	}
	if base != "" { // else no model: sessions are refused (needModel)
		if s.model, err = model.New(model.Config{
			BaseURL: base, Model: cfg.Model.Model, HTTPClient: hc,
			Retries: cfg.Model.Retries, Stream: cfg.Model.Stream, Logger: s.log,
		}); err != nil {
			return nil, err
		}
	}
	if s.db, err = openDB(ctx, cfg.Dir); err != nil {
		return nil, err
	}
	if err := s.recover(ctx); err != nil {
		s.db.Close()
		return nil, err
	}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	return s, nil
}

// Close stops the running turns (each is recorded as failed) and closes
// the store.
func (s *Service) Close(context.Context) error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	s.mu.Unlock()
	s.cancel()
	s.turns.Wait()
	return s.db.Close()
}
