// Package mcpserver serves the approved tools to the owner's paired agents
// over the Model Context Protocol (Streamable HTTP, on the official Go
// SDK). It is domain-level: it follows policy's approved contracts and
// calls tools through the ToolService's Invoke, given as interfaces, and
// knows nothing of HTTP authentication. The gateway mounts it at /mcp
// behind its gate, which authenticates each request by device token before
// its body is read and names the caller (WithCaller).
//
// tools/list is the exports of the approved contracts, named as Invoke
// names them, "<contract>.<export>", with the contract's description and
// input (and output) schema; nothing else, and nothing a tool produced. It
// changes as contracts are approved and revoked, and the connected clients
// are told (notifications/tools/list_changed). tools/call is one Invoke for
// the caller's principal: policy decides, the runner runs (secrets released
// to the call are already redacted from its output there), audit records.
// A refusal or failure is a tool error saying why; a call that needs the
// owner's one-shot approval says where to approve it and waits, with
// progress notifications, until it is decided or the call's time is up.
// Results are capped (MaxResultBytes), a longer one truncated and marked.
package mcpserver

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/modelcontextprotocol/go-sdk/auth"
	"github.com/modelcontextprotocol/go-sdk/mcp"

	contractualv1 "github.com/contractual/contractual/contracts/gen/contractual/v1"
	"github.com/contractual/contractual/internal/errs"
)

// Contracts is what the server reads of policy: the change feed of the
// approved contracts and each contract's document.
type Contracts interface {
	WatchContracts(context.Context, *contractualv1.WatchContractsRequest) (*contractualv1.WatchContractsResponse, error)
	GetContract(context.Context, *contractualv1.GetContractRequest) (*contractualv1.GetContractResponse, error)
}

// Tools calls tools: the ToolService (internal/invoke), which reads the
// caller's principal from the context (principal.With).
type Tools interface {
	Invoke(context.Context, *contractualv1.InvokeRequest) (*contractualv1.InvokeResponse, error)
}

// Defaults of Config's zero fields.
const (
	DefaultMaxResultBytes = 64 << 10
	DefaultCallTimeout    = 6 * time.Minute
	DefaultProgressEvery  = 5 * time.Second
	DefaultSessionTimeout = 30 * time.Minute
)

// Config configures a Server.
type Config struct {
	Contracts Contracts
	Tools     Tools
	// Log receives the server's logs; nil discards them.
	Log *slog.Logger
	// MaxResultBytes caps the text of a result given to the agent (default
	// 64 KiB); a longer one is truncated and says so.
	MaxResultBytes int
	// CallTimeout bounds one tools/call, waiting for an approval included
	// (default 6 min, the gateway's InvokeTimeout).
	CallTimeout time.Duration
	// ProgressEvery is how often a call waiting for the owner's approval
	// reports progress to a client that asked for it (default 5 s).
	ProgressEvery time.Duration
	// MaxRequestBytes caps a request's body (default: the SDK's).
	MaxRequestBytes int64
	// SessionTimeout closes a session idle this long (default 30 min).
	SessionTimeout time.Duration
}

// Caller is who a request comes from, as the gateway authenticated it.
type Caller struct {
	// Principal is the device's principal ("device:<id>"): every call runs
	// as it, and a session is bound to it.
	Principal string
	// BaseURL is where the caller reaches the gateway (its Control UI),
	// for the links to approval pages.
	BaseURL string
	// Bind puts back into a call's context what the gateway put into the
	// request's (the principal, the tailnet node, the source): a tool call
	// runs in the session's context, not the HTTP request's. Nil: only the
	// principal is set (principal.With).
	Bind func(context.Context) context.Context
}

type callerKey struct{}

// WithCaller returns ctx carrying the request's caller.
func WithCaller(ctx context.Context, c Caller) context.Context {
	return context.WithValue(ctx, callerKey{}, c)
}

// callerExtra is the key of the Caller in auth.TokenInfo.Extra.
const callerExtra = "contractual.caller"

// Server is the MCP server: an http.Handler.
type Server struct {
	cfg     Config
	log     *slog.Logger
	mcp     *mcp.Server
	handler http.Handler
	cat     *catalog

	mu       sync.Mutex
	sessions map[*mcp.ServerSession]string // → principal
	calls    map[*call]struct{}
}

// call is one tools/call in progress.
type call struct {
	principal string
	cancel    context.CancelFunc
}

// New returns a Server; Run follows policy's contracts, until then it
// lists no tool.
func New(cfg Config) (*Server, error) {
	if cfg.Contracts == nil || cfg.Tools == nil {
		return nil, errs.E(errs.Invalid, "mcpserver: no contracts or no tools")
	}
	if cfg.MaxResultBytes <= 0 {
		cfg.MaxResultBytes = DefaultMaxResultBytes
	}
	if cfg.CallTimeout <= 0 {
		cfg.CallTimeout = DefaultCallTimeout
	}
	if cfg.ProgressEvery <= 0 {
		cfg.ProgressEvery = DefaultProgressEvery
	}
	if cfg.SessionTimeout <= 0 {
		cfg.SessionTimeout = DefaultSessionTimeout
	}
	s := &Server{cfg: cfg, log: cfg.Log, sessions: map[*mcp.ServerSession]string{}, calls: map[*call]struct{}{}}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	s.mcp = mcp.NewServer(&mcp.Implementation{Name: "contractual", Title: "Contractual", Version: "1"}, &mcp.ServerOptions{
		Instructions: instructions,
		Logger:       s.log,
		// Tools only (list_changed), no logging: nothing but approved
		// contracts and results reaches the agent.
		Capabilities:       &mcp.ServerCapabilities{Tools: &mcp.ToolCapabilities{ListChanged: true}},
		InitializedHandler: s.initialized,
	})
	s.cat = newCatalog(s)
	sdk := mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return s.mcp }, &mcp.StreamableHTTPOptions{
		Logger:              s.log,
		SessionTimeout:      cfg.SessionTimeout,
		MaxRequestBodyBytes: cfg.MaxRequestBytes,
		// The gateway checks Origin and Host itself, against its own
		// origins (a `tailscale serve` name included, which reaches it on
		// loopback with a name that is not loopback's).
		DisableLocalhostProtection: true,
	})
	// The SDK binds a session to the TokenInfo's UserID: a session id
	// used by another device is refused (403).
	s.handler = auth.RequireBearerToken(verify, &auth.RequireBearerTokenOptions{AllowMissingExpiration: true})(sdk)
	return s, nil
}

// instructions are the server's instructions to agents: fixed text, never
// anything a tool or a publisher wrote.
const instructions = "Contractual runs the owner's approved tools, each in a WebAssembly sandbox under its approved contract; " +
	"every call is decided by policy and recorded in an audit log. A refused call says why. " +
	"A high-risk tool waits for the owner's one-shot approval of the exact call, given on another device; the result says where."

// verify turns the caller the gateway authenticated into the SDK's
// TokenInfo; a request without one (the handler mounted without the
// gateway's gate) is refused.
func verify(ctx context.Context, _ string, _ *http.Request) (*auth.TokenInfo, error) {
	c, ok := ctx.Value(callerKey{}).(Caller)
	if !ok || c.Principal == "" {
		return nil, fmt.Errorf("%w: no authenticated device", auth.ErrInvalidToken)
	}
	return &auth.TokenInfo{UserID: c.Principal, Extra: map[string]any{callerExtra: c}}, nil
}

// ServeHTTP serves one MCP request of an authenticated caller (WithCaller).
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.handler.ServeHTTP(w, r) }

// Run follows policy's approved contracts until ctx ends, keeping the
// tool list in step.
func (s *Server) Run(ctx context.Context) { s.cat.run(ctx) }

// Drop ends everything of principal: its sessions close (their streams
// end) and its calls in progress are canceled. The gateway calls it when
// a device is revoked.
func (s *Server) Drop(principal string) {
	s.mu.Lock()
	var closing []*mcp.ServerSession
	for ss, p := range s.sessions {
		if p == principal {
			closing = append(closing, ss)
			delete(s.sessions, ss)
		}
	}
	for c := range s.calls {
		if c.principal == principal {
			c.cancel()
		}
	}
	s.mu.Unlock()
	for _, ss := range closing {
		_ = ss.Close()
	}
	if len(closing) > 0 {
		s.log.Info("mcp: closed the sessions of a device", "principal", principal, "sessions", len(closing))
	}
}

// Close closes every session.
func (s *Server) Close() {
	s.mu.Lock()
	all := make([]*mcp.ServerSession, 0, len(s.sessions))
	for ss := range s.sessions {
		all = append(all, ss)
	}
	clear(s.sessions)
	for c := range s.calls {
		c.cancel()
	}
	s.mu.Unlock()
	for _, ss := range all {
		_ = ss.Close()
	}
}

// initialized records which principal a new session belongs to.
func (s *Server) initialized(_ context.Context, req *mcp.InitializedRequest) {
	c, ok := callerOf(req.Extra)
	if !ok || req.Session == nil {
		return
	}
	s.track(req.Session, c.Principal)
}

// track binds session ss to principal, until it ends.
func (s *Server) track(ss *mcp.ServerSession, principal string) {
	s.mu.Lock()
	_, known := s.sessions[ss]
	s.sessions[ss] = principal
	s.mu.Unlock()
	if !known {
		go func() {
			_ = ss.Wait()
			s.mu.Lock()
			delete(s.sessions, ss)
			s.mu.Unlock()
		}()
	}
}

// callerOf returns the caller of a request.
func callerOf(extra *mcp.RequestExtra) (Caller, bool) {
	if extra == nil || extra.TokenInfo == nil {
		return Caller{}, false
	}
	c, ok := extra.TokenInfo.Extra[callerExtra].(Caller)
	return c, ok && c.Principal != ""
}

// rawJSON is a JSON document the SDK passes through as it is.
type rawJSON = json.RawMessage
