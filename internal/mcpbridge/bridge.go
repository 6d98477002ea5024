// Package mcpbridge is `contractual mcp`: a transparent pump that relays an
// MCP session between a client that launches a command and speaks MCP over
// stdio (Claude Desktop, editors) and the gateway's MCP endpoint (/mcp,
// Streamable HTTP), authenticating as this device with its bearer token.
//
// It is not a second MCP server: it decides nothing and rewrites nothing.
// Every JSON-RPC message (requests, responses, notifications such as
// tools/list_changed and progress, and the server's own requests to the
// client) goes through unchanged, so the gateway alone decides what the agent
// sees. Its own words are only errors: a call the gateway could not be asked
// is answered with a JSON-RPC error that says why, and a refusal of the
// device's token (401, 403) or a lost session ends the bridge with an
// *errs.Error that the CLI prints on stderr with a non-zero exit status.
//
// Both sides are the official Go SDK's transports: mcp.IOTransport on stdio
// and mcp.StreamableClientTransport towards the gateway. The SDK's client
// connection opens the standalone SSE stream (server-initiated messages
// outside a request) only for its own mcp.Client
// (modelcontextprotocol/go-sdk#657), so the bridge opens that GET stream
// itself once the session is initialized; see listen.
package mcpbridge

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/contractual/contractual/internal/errs"
)

// Path is where the gateway serves MCP.
const Path = "/mcp"

// Endpoint returns the MCP endpoint of the server at serverURL.
func Endpoint(serverURL string) string { return strings.TrimRight(serverURL, "/") + Path }

// Config is what a bridge needs.
type Config struct {
	// Endpoint is the gateway's MCP endpoint, e.g. http://127.0.0.1:7700/mcp.
	Endpoint string
	// Token is this device's bearer token. It is sent only in the
	// Authorization header of requests to Endpoint, and never logged.
	Token string
	// HTTPClient carries the requests to the gateway; its Transport (nil:
	// http.DefaultTransport) is wrapped to add the token. Nil means
	// http.DefaultClient. Its Timeout is not used: a call's stream, and
	// the session's, last as long as they last.
	HTTPClient *http.Client
	// Logger gets what the bridge has to say (stderr in the CLI: stdout
	// carries nothing but the protocol). Nil discards.
	Logger *slog.Logger
}

// JSON-RPC error codes of the errors the bridge answers calls with, in the
// range JSON-RPC leaves to implementations; the error's data holds the
// project's kind, {"kind": "unauthenticated"}.
const (
	CodeUnavailable      = -32000 // the gateway could not be asked, or the session is lost
	CodeUnauthenticated  = -32001 // the gateway refused the device's token (401)
	CodePermissionDenied = -32003 // the gateway refused the device (403)
)

// Run relays one MCP session between the client on in/out (newline-delimited
// JSON-RPC, as over stdio) and the gateway, until either side ends it.
//
// It returns nil when the client closes its side (EOF on in) or ctx is
// cancelled; an error of kind Unauthenticated or PermissionDenied when the
// gateway refuses the token; Unavailable when the gateway cannot be reached
// to initialize, or the session with it is lost; Invalid when the client
// sends what is not JSON-RPC.
func Run(ctx context.Context, cfg Config, in io.Reader, out io.Writer) error {
	if cfg.Endpoint == "" {
		return errs.E(errs.Invalid, "mcpbridge: no endpoint")
	}
	if cfg.Token == "" {
		return errs.E(errs.Unauthenticated, "mcpbridge: no device token")
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	base := http.DefaultClient
	if cfg.HTTPClient != nil {
		base = cfg.HTTPClient
	}
	auth := &authTransport{base: base.Transport, token: cfg.Token}
	if auth.base == nil {
		auth.base = http.DefaultTransport
	}
	hc := &http.Client{Transport: auth, Jar: base.Jar, CheckRedirect: base.CheckRedirect}

	local, err := (&mcp.IOTransport{Reader: io.NopCloser(in), Writer: nopWriteCloser{out}}).Connect(ctx)
	if err != nil {
		return errs.Wrap(errs.Internal, err, "mcpbridge: opening stdio")
	}
	remote, err := (&mcp.StreamableClientTransport{Endpoint: cfg.Endpoint, HTTPClient: hc}).Connect(ctx)
	if err != nil {
		local.Close()
		return errs.Wrap(errs.Internal, err, "mcpbridge: opening %s", cfg.Endpoint)
	}

	runCtx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	b := &bridge{
		endpoint: cfg.Endpoint,
		log:      log,
		local:    local,
		remote:   remote,
		auth:     auth,
		hc:       hc,
		stop:     cancel,
		pending:  map[jsonrpc.ID]call{},
	}
	log.Info("contractual mcp: relaying stdio to the gateway", "endpoint", cfg.Endpoint)
	var wg sync.WaitGroup
	wg.Go(func() { b.up(runCtx) })
	wg.Go(func() { b.down(runCtx) })
	<-runCtx.Done()
	cause := context.Cause(runCtx)
	if errors.Is(cause, errClientClosed) || ctx.Err() != nil {
		cause = nil
	}
	if cause != nil {
		// Calls in flight get the reason rather than silence.
		b.failPending(cause)
	}
	remote.Close() // ends the session on the gateway (DELETE)
	local.Close()
	// up and down return once their connections are closed (the reader
	// of stdin below the SDK's connection may stay blocked in a Read that
	// nothing interrupts; the process ends it), then the calls being
	// written and the standalone stream end with runCtx.
	wg.Wait()
	b.wg.Wait()
	return cause
}

// errClientClosed is the cause of a bridge ended by its client.
var errClientClosed = errors.New("the MCP client closed its side")

// bridge is one relayed session.
type bridge struct {
	endpoint      string
	log           *slog.Logger
	local, remote mcp.Connection
	auth          *authTransport
	hc            *http.Client
	stop          context.CancelCauseFunc
	wg            sync.WaitGroup // calls being written, the standalone stream

	mu      sync.Mutex
	pending map[jsonrpc.ID]call // calls sent to the gateway, not yet answered
	stopped bool                // no more answers to the client after failPending

	listenOnce sync.Once // the standalone stream was opened
}

// up relays the client's messages to the gateway.
func (b *bridge) up(ctx context.Context) {
	for {
		msg, err := b.local.Read(ctx)
		if err != nil {
			switch {
			case ctx.Err() != nil:
			case errors.Is(err, io.EOF):
				b.stop(errClientClosed)
			default:
				// Not JSON-RPC: the stream cannot be read on from here.
				b.stop(errs.Wrap(errs.Invalid, err, "reading the MCP client's messages"))
			}
			return
		}
		req, isReq := msg.(*jsonrpc.Request)
		if !isReq || !req.IsCall() {
			// Responses and notifications are quick POSTs (202), and
			// their order matters (a cancellation after its call).
			b.forward(ctx, msg, "")
			if isReq && req.Method == "notifications/cancelled" {
				b.cancelled(req.Params)
			}
			continue
		}
		// The call's context holds its POST, and the stream of its answer,
		// open until it is answered or the client cancels it.
		callCtx, cancel := context.WithCancel(ctx)
		b.track(req.ID, call{method: req.Method, cancel: cancel})
		if req.Method == "initialize" {
			// Everything after it needs the session the answer opens.
			b.forward(callCtx, msg, req.Method)
			continue
		}
		// A call's POST may not answer before the call is done: one slow
		// tool must not hold up the others, nor a ping.
		b.wg.Go(func() { b.forward(callCtx, msg, req.Method) })
	}
}

// cancelled stops waiting for the answer to the call a client's
// notifications/cancelled names (the gateway, told, sends none), as the
// SDK's own client does.
func (b *bridge) cancelled(params json.RawMessage) {
	var p struct {
		RequestID any `json:"requestId"`
	}
	if json.Unmarshal(params, &p) != nil {
		return
	}
	id, err := jsonrpc.MakeID(p.RequestID)
	if err != nil || !id.IsValid() {
		return
	}
	b.untrack(id)
}

// forward sends msg to the gateway. A call that could not be sent is
// answered with the reason; a refusal of the device ends the bridge.
func (b *bridge) forward(ctx context.Context, msg jsonrpc.Message, method string) {
	err := b.remote.Write(ctx, msg)
	if err == nil || ctx.Err() != nil {
		return
	}
	fatal := b.auth.refusal(b.endpoint)
	if fatal == nil && method == "initialize" {
		fatal = errs.Wrap(errs.Unavailable, err, "starting an MCP session with the gateway at %s", b.endpoint)
	}
	if fatal == nil && errors.Is(err, mcp.ErrSessionMissing) {
		fatal = errs.Wrap(errs.Unavailable, err, "the gateway at %s ended this MCP session", b.endpoint)
	}
	reason := fatal
	if reason == nil {
		what := "a message"
		if method != "" {
			what = method
		}
		reason = errs.Wrap(errs.Unavailable, err, "forwarding %s to the gateway at %s", what, b.endpoint)
	}
	if req, ok := msg.(*jsonrpc.Request); ok && req.IsCall() {
		b.answer(req.ID, reason)
	}
	if fatal != nil {
		b.stop(fatal)
		return
	}
	b.log.Warn("contractual mcp: forwarding to the gateway", "err", reason)
}

// down relays the gateway's messages (answers, and what comes on the
// calls' streams) to the client.
func (b *bridge) down(ctx context.Context) {
	for {
		msg, err := b.remote.Read(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			if r := b.auth.refusal(b.endpoint); r != nil {
				b.stop(r)
				return
			}
			if errors.Is(err, io.EOF) {
				b.stop(errs.E(errs.Unavailable, "the connection to the gateway at %s closed", b.endpoint))
				return
			}
			b.stop(errs.Wrap(errs.Unavailable, err, "the connection to the gateway at %s failed", b.endpoint))
			return
		}
		b.deliver(ctx, msg)
	}
}

// deliver writes a message of the gateway to the client. The answer to
// initialize also sets the protocol version of every later request (before
// the client, answered, can send one) and then opens the standalone stream.
func (b *bridge) deliver(ctx context.Context, msg jsonrpc.Message) {
	resp, isResp := msg.(*jsonrpc.Response)
	var version string
	if isResp {
		method, ok := b.untrack(resp.ID)
		if !ok {
			// Answered already, by the bridge as it stops.
			return
		}
		if method == "initialize" && resp.Error == nil {
			version = b.initialized(resp.Result)
		}
	}
	if err := b.local.Write(ctx, msg); err != nil {
		if ctx.Err() == nil {
			b.log.Warn("contractual mcp: writing to the client", "err", err)
			b.stop(errClientClosed)
		}
		return
	}
	// From protocol version 2026-07-28 on (SEP-2575) there is no
	// standalone stream; the versions are dates, so they compare as strings.
	if version != "" && version < "2026-07-28" {
		b.listenOnce.Do(func() {
			sessionID := b.remote.SessionID()
			b.wg.Go(func() { b.listen(ctx, sessionID) })
		})
	}
}

// initialized notes the protocol version the session speaks, which every
// later request to the gateway carries in a header, and returns it.
func (b *bridge) initialized(result json.RawMessage) string {
	var r struct {
		ProtocolVersion string `json:"protocolVersion"`
	}
	if err := json.Unmarshal(result, &r); err != nil || r.ProtocolVersion == "" {
		b.log.Warn("contractual mcp: the gateway's initialize result names no protocol version")
		return ""
	}
	b.auth.setVersion(r.ProtocolVersion)
	return r.ProtocolVersion
}

// call is a call sent to the gateway, not yet answered.
type call struct {
	method string
	cancel context.CancelFunc // ends its POST and the stream of its answer
}

// track records a call sent to the gateway.
func (b *bridge) track(id jsonrpc.ID, c call) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.pending[id] = c
}

// untrack forgets an answered (or cancelled) call and returns its method
// ("" if it was not pending); ok is false once the bridge has stopped (and
// answered every pending call itself).
func (b *bridge) untrack(id jsonrpc.ID) (method string, ok bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.stopped {
		return "", false
	}
	c, pending := b.pending[id]
	if !pending {
		return "", true
	}
	delete(b.pending, id)
	c.cancel()
	return c.method, true
}

// answer answers the client's call id with err, unless it was answered.
func (b *bridge) answer(id jsonrpc.ID, err error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	c, ok := b.pending[id]
	if !ok || b.stopped {
		return
	}
	delete(b.pending, id)
	c.cancel()
	// The bridge's context may be done; the client's side is still open.
	if werr := b.local.Write(context.Background(), &jsonrpc.Response{ID: id, Error: wireError(err)}); werr != nil {
		b.log.Warn("contractual mcp: answering the client", "err", werr)
	}
}

// failPending answers every call still waiting for the gateway with err:
// the bridge is ending, and answers nothing more.
func (b *bridge) failPending(err error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.stopped = true
	w := wireError(err)
	for id, c := range b.pending {
		c.cancel()
		if werr := b.local.Write(context.Background(), &jsonrpc.Response{ID: id, Error: w}); werr != nil {
			b.log.Warn("contractual mcp: answering the client", "err", werr)
			break
		}
	}
	clear(b.pending)
}

// wireError is err as a JSON-RPC error: one of the codes above, the
// message, and the kind.
func wireError(err error) *jsonrpc.Error {
	k := errs.KindOf(err)
	code := int64(CodeUnavailable)
	switch k {
	case errs.Unauthenticated:
		code = CodeUnauthenticated
	case errs.PermissionDenied:
		code = CodePermissionDenied
	}
	data, _ := json.Marshal(map[string]string{"kind": k.String()})
	return &jsonrpc.Error{Code: code, Message: "contractual mcp: " + err.Error(), Data: data}
}

type nopWriteCloser struct{ io.Writer }

func (nopWriteCloser) Close() error { return nil }

// describe is an HTTP status, and the start of its body, in words.
func describe(status int, body string) string {
	s := fmt.Sprintf("%d %s", status, http.StatusText(status))
	if body != "" {
		s += ": " + body
	}
	return s
}
