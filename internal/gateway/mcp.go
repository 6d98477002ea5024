package gateway

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/contractual/contractual/contracts/gen/contractual/v1/contractualv1connect"
	"github.com/contractual/contractual/internal/errs"
	"github.com/contractual/contractual/internal/mcpserver"
	"github.com/contractual/contractual/internal/pairing"
	"github.com/contractual/contractual/internal/principal"
	"github.com/contractual/contractual/internal/tailnet"
)

// mcpPath is the Model Context Protocol endpoint (Streamable HTTP): the
// approved tools for paired agents (package mcpserver).
const mcpPath = "/mcp"

// mcpRecheck is how often a request in progress on /mcp (a stream of
// server messages, a call waiting for an approval) authenticates its
// device again: a revoked device's streams end within it.
const mcpRecheck = 2 * time.Second

// origins are the gateway's own origins, scheme://host[:port]: each
// listener's base URL and the PublicURL. /mcp refuses a request whose
// Origin is another (DNS rebinding, a web page's fetch), and one that
// reached a loopback listener with a Host that is not loopback's nor one
// of these.
type origins struct {
	mu  sync.Mutex
	set map[string]bool
}

// add trusts the origin of base URL u.
func (o *origins) add(u string) error {
	p, err := url.Parse(u)
	if err != nil || p.Host == "" || (p.Scheme != "http" && p.Scheme != "https") {
		return errs.E(errs.Invalid, "gateway: base URL %q is not an http(s) origin", u)
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.set == nil {
		o.set = map[string]bool{}
	}
	o.set[strings.ToLower(p.Scheme+"://"+p.Host)] = true
	return nil
}

// has reports whether origin is one of the gateway's.
func (o *origins) has(origin string) bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.set[strings.ToLower(origin)]
}

// hasHost reports whether host (host[:port]) is the host of one of the
// gateway's origins.
func (o *origins) hasHost(host string) bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	for origin := range o.set {
		_, h, _ := strings.Cut(origin, "://")
		if strings.EqualFold(h, host) {
			return true
		}
	}
	return false
}

// loopbackHost reports whether host (host[:port]) names the loopback
// interface.
func loopbackHost(host string) bool {
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	host = strings.Trim(host, "[]")
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// serveMCP serves a request on /mcp, from the listener whose devices use
// base URL base: like an API call, its device token is checked before its
// body is read and it is bounded by deadlines, the InvokeTimeout's; the
// device needs scope invoke. Its Origin must be the gateway's own, if it
// has one. While it is in progress its device is authenticated again
// every mcpRecheck, and a revoked device's sessions are closed.
func (g *gate) serveMCP(w http.ResponseWriter, r *http.Request, base string) {
	if g.mcp == nil {
		g.refuse(w, r, errs.E(errs.Unimplemented, "this gateway serves no MCP"))
		return
	}
	if o := r.Header.Get("Origin"); o != "" && !g.origins.has(o) {
		g.refuse(w, r, errs.E(errs.PermissionDenied, "origin %q is not this server's: MCP requests from web pages of other origins are refused", o))
		return
	}
	if la, ok := r.Context().Value(http.LocalAddrContextKey).(net.Addr); ok && loopbackHost(la.String()) && !loopbackHost(r.Host) && !g.origins.hasHost(r.Host) {
		g.refuse(w, r, errs.E(errs.PermissionDenied, "host %q is not this server's", r.Host))
		return
	}
	tok, ok := bearer(r.Header)
	if !ok {
		g.refuse(w, r, errs.E(errs.Unauthenticated, "missing bearer token: send Authorization: Bearer <token> of a paired device with scope invoke (`contractual pair`)"))
		return
	}
	src := pairing.SourceFrom(r.Context())
	id, err := g.auth.Authenticate(r.Context(), tok, src)
	if err != nil {
		g.refuse(w, r, err)
		return
	}
	// The MCP endpoint calls tools: scope invoke, as for Invoke.
	if err := pairing.Authorize(id, contractualv1connect.ToolServiceInvokeProcedure); err != nil {
		g.refuse(w, r, err)
		return
	}
	markAuthenticated(r.Context())

	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	go g.recheck(ctx, cancel, tok, src, id.Principal)
	peer := tailnet.From(r.Context())
	ctx = mcpserver.WithCaller(pairing.WithIdentity(ctx, id), mcpserver.Caller{
		Principal: id.Principal,
		BaseURL:   base,
		Bind: func(c context.Context) context.Context {
			return pairing.WithSource(tailnet.With(pairing.WithIdentity(principal.With(c, id.Principal), id), peer), src)
		},
	})
	// A response may stream for as long as the request may take (a GET's
	// server messages, a call waiting for an approval), after the body
	// is read: then the read deadline is moved to the write deadline's.
	// When a read deadline passes, net/http ends the request's context,
	// which would end a GET's stream, and the recheck of a waiting call.
	read, write := g.limits.ReadTimeout, g.limits.InvokeTimeout
	if r.Body == nil || r.Body == http.NoBody {
		read = write
	} else {
		rc := http.NewResponseController(w)
		r.Body = &onEOF{ReadCloser: r.Body, done: func() { rc.SetReadDeadline(time.Now().Add(write)) }}
	}
	g.serveWith(g.mcp, w, r.WithContext(ctx), read, write)
}

// onEOF is a request body that calls done once it has been read to its
// end.
type onEOF struct {
	io.ReadCloser
	once sync.Once
	done func()
}

func (b *onEOF) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if err == io.EOF {
		b.once.Do(b.done)
	}
	return n, err
}

// recheck authenticates token again every mcpRecheck until ctx ends; once
// it is refused (the device was revoked, or expired), it closes the
// device's MCP sessions and ends the request (cancel).
func (g *gate) recheck(ctx context.Context, cancel context.CancelFunc, token, src, who string) {
	t := time.NewTicker(mcpRecheck)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		_, err := g.auth.Authenticate(ctx, token, src)
		if err == nil || ctx.Err() != nil || !(errs.Is(err, errs.Unauthenticated) || errs.Is(err, errs.PermissionDenied)) {
			continue
		}
		g.log.Info("mcp: device no longer authenticates; closing its sessions", "principal", who, "err", err)
		g.mcp.Drop(who)
		cancel()
		return
	}
}
