package gateway

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"

	"github.com/contractual/contractual/contracts/gen/contractual/v1/contractualv1connect"
	"github.com/contractual/contractual/internal/errs"
	"github.com/contractual/contractual/internal/mcpserver"
	"github.com/contractual/contractual/internal/pairing"
	"github.com/contractual/contractual/internal/rpc"
	"github.com/contractual/contractual/internal/tailnet"
	"github.com/contractual/contractual/ui"
)

// gate is the gateway's HTTP layer, in front of every handler. Before any
// byte of a request's body is read, it identifies the request's tailnet
// node (each listener has its tailnet.Identifier), names its source, answers
// what it must not pass on (a procedure that is not public, a missing or
// bad credential) in the caller's protocol, and authenticates the bearer
// token or the Control UI's session cookie. What it passes on is bounded:
// an authenticated request by deadlines for its procedure, any other one
// that has a body by a slot among Limits.MaxUnauthenticated, a body cap,
// the short UnauthenticatedReadTimeout and, for the API, no compression.
type gate struct {
	next    http.Handler // the API and the Control UI
	auth    Authenticator
	uiToken func(*http.Request) string // the UI's session token, if any
	limits  Limits
	public  map[string]bool // procedures served here
	slots   chan struct{}   // one per unauthenticated request in progress
	errw    *connect.ErrorWriter
	log     *slog.Logger
	hooks   hooks             // webhook deliveries, for the scheduler
	mcp     *mcpserver.Server // the MCP endpoint (mcpPath)
	origins origins           // the gateway's own origins, for /mcp
}

// listener is the gate as one listener serves it: with the listener's
// Identifier (nil: no request on it is from the tailnet), and whether
// devices reach it over https.
type listener struct {
	gate  *gate
	id    tailnet.Identifier
	https bool
	url   string // the base URL devices use on it
}

func (l listener) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if l.https {
		r = r.WithContext(ui.WithHTTPS(r.Context()))
	}
	l.gate.serve(w, r, l.id, l.url)
}

// openAPI are the public procedures anyone may call without a token:
// pairing's first steps, server reflection and health.
var openAPI = func() map[string]bool {
	m := map[string]bool{
		"/grpc.reflection.v1.ServerReflection/ServerReflectionInfo":      true,
		"/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo": true,
		"/grpc.health.v1.Health/Check":                                   true,
		"/grpc.health.v1.Health/Watch":                                   true,
	}
	for p := range openProcedures {
		m[p] = true
	}
	return m
}()

// serve identifies r's tailnet node with id, refusing the request if it
// cannot, and puts the node (tailnet.With) and the request's source
// (pairing.WithSource) in its context, then serves it. base is the
// listener's base URL.
func (g *gate) serve(w http.ResponseWriter, r *http.Request, id tailnet.Identifier, base string) {
	var peer *tailnet.Peer
	if id != nil {
		var err error
		if peer, err = id.Identify(r); err != nil {
			g.refuse(w, r, err)
			return
		}
	}
	ctx := tailnet.With(r.Context(), peer)
	r = r.WithContext(pairing.WithSource(ctx, source(r, peer)))
	if r.URL.Path == mcpPath {
		g.serveMCP(w, r, base)
		return
	}
	if job, ok := hookJob(r.URL.Path); ok {
		g.serveHook(w, r, job)
		return
	}
	if proc, ok := procedure(r.URL.Path); ok {
		g.serveAPI(w, r, proc)
		return
	}
	g.serveUI(w, r)
}

// serveAPI serves a request for procedure proc.
func (g *gate) serveAPI(w http.ResponseWriter, r *http.Request, proc string) {
	if !g.public[proc] {
		if internal(proc) {
			g.refuse(w, r, errs.E(errs.PermissionDenied, "%s is for services, not for devices", proc))
		} else {
			g.refuse(w, r, errs.E(errs.Unimplemented, "no procedure %s here", proc))
		}
		return
	}
	tok, hasToken := bearer(r.Header)
	if !hasToken {
		if !openAPI[proc] {
			g.refuse(w, r, errs.E(errs.Unauthenticated, "missing bearer token: send Authorization: Bearer <token> of a paired device (`contractual pair`)"))
			return
		}
		// A tailnet node without a paired device may only pair: server
		// reflection and health are for paired devices and the server's
		// own machine.
		if !openProcedures[proc] && tailnet.From(r.Context()) != nil {
			g.refuse(w, r, errs.E(errs.Unauthenticated, "%s needs a paired device from the tailnet: send Authorization: Bearer <token> (`contractual pair`)", proc))
			return
		}
		if compressed(r.Header) {
			g.refuse(w, r, errs.E(errs.Invalid, "compressed request bodies are refused before authentication: send this request uncompressed"))
			return
		}
		g.serveUnauthenticated(w, r)
		return
	}
	// A token, even on an open procedure, must be good: a bad credential
	// is never ignored.
	id, err := g.auth.Authenticate(r.Context(), tok, pairing.SourceFrom(r.Context()))
	if err != nil {
		g.refuse(w, r, err)
		return
	}
	markAuthenticated(r.Context())
	// The interceptor authorizes this identity rather than look the
	// token up again.
	r = r.WithContext(pairing.WithIdentity(r.Context(), id))
	read, write := g.limits.ReadTimeout, g.limits.WriteTimeout
	switch proc {
	case contractualv1connect.PolicyServicePublishProcedure:
		read, write = g.limits.PublishTimeout, g.limits.PublishTimeout
	case contractualv1connect.ToolServiceInvokeProcedure,
		// A turn's stream lasts as long as its tool calls and model
		// requests; the turn itself goes on if the stream is cut.
		contractualv1connect.SessionServiceSendProcedure,
		contractualv1connect.SessionServiceWatchSessionProcedure:
		write = g.limits.InvokeTimeout
	}
	g.serveWithin(w, r, read, write)
}

// serveUI serves a request for the Control UI (or anything else that is
// not a procedure): its session cookie, if it authenticates, makes it an
// authenticated request; otherwise a request with a body is bounded like
// an open procedure's, and one from the tailnet gets only the pairing page
// (a page is redirected there, anything else refused). The UI
// authenticates the cookie again itself.
func (g *gate) serveUI(w http.ResponseWriter, r *http.Request) {
	// Signed out: no session, or one that is not valid (here). Any other
	// failure (a tailnet policy not understood, a rate limit) the UI
	// shows.
	signedOut := true
	if tok := g.uiToken(r); tok != "" {
		_, err := g.auth.Authenticate(r.Context(), tok, pairing.SourceFrom(r.Context()))
		if err == nil {
			markAuthenticated(r.Context())
			g.serveWithin(w, r, g.limits.ReadTimeout, g.limits.WriteTimeout)
			return
		}
		signedOut = errs.Is(err, errs.Unauthenticated) || errors.Is(err, pairing.ErrOtherNode)
	}
	if signedOut && tailnet.From(r.Context()) != nil && !pairingPage(r.URL.Path) {
		if r.Method == http.MethodGet || r.Method == http.MethodHead {
			http.Redirect(w, r, "/ui/pair", http.StatusSeeOther)
			return
		}
		g.refuse(w, r, errs.E(errs.Unauthenticated, "this browser is not signed in: pair it on /ui/pair"))
		return
	}
	if r.Body == nil || r.Body == http.NoBody {
		g.next.ServeHTTP(w, r) // nothing to read: the server's deadlines suffice
		return
	}
	g.serveUnauthenticated(w, r)
}

// serveUnauthenticated passes on a request that has not authenticated,
// within a slot, under the body cap; the server's ReadTimeout (set to
// UnauthenticatedReadTimeout) bounds its reading.
func (g *gate) serveUnauthenticated(w http.ResponseWriter, r *http.Request) {
	select {
	case g.slots <- struct{}{}:
		defer func() { <-g.slots }()
	default:
		g.refuse(w, r, errs.E(errs.ResourceExhausted, "too many unauthenticated requests in progress; try again later"))
		return
	}
	r.Body = http.MaxBytesReader(w, r.Body, g.limits.UnauthenticatedBytes)
	ctx, cancel := context.WithTimeout(r.Context(), g.limits.WriteTimeout)
	defer cancel()
	g.next.ServeHTTP(w, r.WithContext(ctx))
}

// serveWithin passes r on with its body's read deadline and its response's
// write deadline (and its context's) set from now.
func (g *gate) serveWithin(w http.ResponseWriter, r *http.Request, read, write time.Duration) {
	g.serveWith(g.next, w, r, read, write)
}

// serveWith is serveWithin with handler h rather than the API's and the
// Control UI's.
func (g *gate) serveWith(h http.Handler, w http.ResponseWriter, r *http.Request, read, write time.Duration) {
	now := time.Now()
	rc := http.NewResponseController(w)
	rc.SetReadDeadline(now.Add(read))
	// The handler's context ends first, so that it can still answer.
	rc.SetWriteDeadline(now.Add(write + writeGrace))
	ctx, cancel := context.WithDeadline(r.Context(), now.Add(write))
	defer cancel()
	h.ServeHTTP(w, r.WithContext(ctx))
}

// writeGrace is the time a handler whose context has ended has left to
// write its answer.
const writeGrace = 10 * time.Second

// refuse answers r with err in the caller's protocol (Connect, gRPC,
// gRPC-Web; Connect JSON for anything else, the Control UI's pages
// included), without reading its body: nothing more is read from the
// request, and an HTTP/1 connection is closed after the answer, since the
// rest of the body would still be on it.
func (g *gate) refuse(w http.ResponseWriter, r *http.Request, err error) {
	http.NewResponseController(w).SetReadDeadline(time.Unix(1, 0))
	if r.ProtoMajor < 2 {
		w.Header().Set("Connection", "close")
	}
	if werr := g.errw.Write(w, r, rpc.ToConnect(err, g.log)); werr != nil {
		g.log.Debug("writing a refusal", "err", werr)
	}
}

// pairingPage reports whether path is the Control UI's pairing page, one
// of its endpoints or a static asset: all a tailnet node without a paired
// device may reach.
func pairingPage(path string) bool {
	switch path {
	case "/ui/pair", "/ui/pair/begin", "/ui/pair/setup", "/ui/pair/complete":
		return true
	}
	return strings.HasPrefix(path, "/ui/static/")
}

// procedure returns the procedure named by an RPC path, "/pkg.Service/Method".
func procedure(path string) (string, bool) {
	svc, method, ok := strings.Cut(strings.TrimPrefix(path, "/"), "/")
	if !ok || !strings.HasPrefix(path, "/") || !strings.Contains(svc, ".") || method == "" || strings.Contains(method, "/") {
		return "", false
	}
	return path, true
}

// internal reports whether proc is a procedure of one of Contractual's own
// services (one that this port does not serve to devices).
func internal(proc string) bool {
	svc, method, _ := strings.Cut(strings.TrimPrefix(proc, "/"), "/")
	d, err := protoregistry.GlobalFiles.FindDescriptorByName(protoreflect.FullName(svc))
	if err != nil || !strings.HasPrefix(svc, "contractual.") {
		return false
	}
	sd, ok := d.(protoreflect.ServiceDescriptor)
	return ok && sd.Methods().ByName(protoreflect.Name(method)) != nil
}

// bearer returns the token of an "Authorization: Bearer <token>" header.
func bearer(h http.Header) (string, bool) {
	tok, ok := strings.CutPrefix(h.Get("Authorization"), "Bearer ")
	tok = strings.TrimSpace(tok)
	return tok, ok && tok != ""
}

// compressed reports whether a request says its body is compressed, in any
// of the protocols' headers.
func compressed(h http.Header) bool {
	for _, k := range []string{"Content-Encoding", "Connect-Content-Encoding", "Grpc-Encoding"} {
		for _, v := range h.Values(k) {
			for e := range strings.SplitSeq(v, ",") {
				if e = strings.TrimSpace(e); e != "" && !strings.EqualFold(e, "identity") {
					return true
				}
			}
		}
	}
	return false
}

// source names where a request from peer (nil: not from the tailnet)
// comes from, to key rate limits and to record in audit details; it never
// grants anything. It is the tailnet node ("tailnet:" + Peer.Key) or else
// the connection's IP address.
func source(r *http.Request, peer *tailnet.Peer) string {
	if peer != nil {
		return "tailnet:" + peer.Key()
	}
	if a, err := tailnet.RemoteAddr(r); err == nil {
		return a.String()
	}
	return r.RemoteAddr
}
