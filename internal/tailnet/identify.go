package tailnet

import (
	"encoding/json"
	"mime"
	"net"
	"net/http"
	"net/netip"
	"strings"

	"github.com/contractual/contractual/internal/errs"
)

// Identifier tells which tailnet node a request came from. Each of the
// gateway's listeners has one: WhoIs for the embedded tsnet node (package
// tailnet/tsnode), ServeHeaders behind `tailscale serve`, none on a
// loopback listener of its own.
type Identifier interface {
	// Identify returns r's peer, or nil for a request that did not come
	// over the tailnet but that the listener serves anyway (one from the
	// server's own machine). An error refuses the request.
	Identify(r *http.Request) (*Peer, error)
}

// The headers `tailscale serve` sets on what it proxies, replacing any the
// client sent (ipnlocal.addTailscaleIdentityHeaders).
const (
	headerUserLogin    = "Tailscale-User-Login"
	headerAppCaps      = "Tailscale-App-Capabilities"
	headerFunnel       = "Tailscale-Funnel-Request"
	headerForwardedFor = "X-Forwarded-For"
)

// Tailscale's address ranges: the CGNAT range for IPv4 and the ULA prefix
// for IPv6 that every tailnet address is in.
var (
	cgnat     = netip.MustParsePrefix("100.64.0.0/10")
	tailnetV6 = netip.MustParsePrefix("fd7a:115c:a1e0::/48")
)

// isTailnetAddr reports whether a is in Tailscale's address ranges.
func isTailnetAddr(a netip.Addr) bool {
	a = a.Unmap()
	return cgnat.Contains(a) || tailnetV6.Contains(a)
}

// ServeHeaders identifies the requests that `tailscale serve` proxies, by
// the headers it sets: the node's address (X-Forwarded-For), its user's
// login (none for a tagged node) and the app capabilities named in the
// serve config's AcceptAppCaps. Headers are believed only on a request
// whose connection comes from the proxy (FromProxy); serve replaces any
// the client sent.
type ServeHeaders struct {
	// FromProxy reports whether a connection from addr is the proxy's.
	FromProxy func(addr netip.Addr) bool
	// ProxyOnly refuses every request that does not come from the proxy:
	// the sidecar deployment, whose gateway serves only the sidecar.
	// Without it, any other request is one from outside the tailnet (the
	// server's own machine, on a loopback listener).
	ProxyOnly bool
}

// Identify implements Identifier.
func (s ServeHeaders) Identify(r *http.Request) (*Peer, error) {
	remote, err := RemoteAddr(r)
	if err != nil || s.FromProxy == nil || !s.FromProxy(remote) {
		if s.ProxyOnly {
			return nil, errs.E(errs.PermissionDenied, "this gateway serves only its tailnet proxy, and %s is not it", remote)
		}
		return nil, nil
	}
	if r.Header.Get(headerFunnel) != "" {
		return nil, errs.E(errs.PermissionDenied, "requests from the internet (Tailscale Funnel) are refused: Contractual serves the tailnet only")
	}
	fwd := r.Header.Values(headerForwardedFor)
	if len(fwd) != 1 || strings.Contains(fwd[0], ",") {
		if s.ProxyOnly {
			return nil, errs.E(errs.PermissionDenied, "the proxy did not name the tailnet node (one %s address)", headerForwardedFor)
		}
		return nil, nil // a local client talking to the server directly
	}
	addr, err := netip.ParseAddr(strings.TrimSpace(fwd[0]))
	if err != nil || !isTailnetAddr(addr) {
		return nil, errs.E(errs.PermissionDenied, "the proxy named %q, which is not a tailnet address", clip(fwd[0]))
	}
	p := &Peer{Addr: addr.Unmap()}
	if login := r.Header.Get(headerUserLogin); login != "" {
		p.User = decodeHeader(login)
	}
	if v := r.Header.Get(headerAppCaps); v != "" {
		caps := map[string][]json.RawMessage{}
		if err := json.Unmarshal([]byte(decodeHeader(v)), &caps); err != nil {
			return nil, errs.E(errs.PermissionDenied, "the proxy's %s header is not a capability map: %v", headerAppCaps, err)
		}
		p.Caps = caps
	}
	if err := p.check(); err != nil {
		return nil, errs.Wrap(errs.PermissionDenied, err, "the proxy's identity headers")
	}
	return p, nil
}

// decodeHeader undoes the RFC 2047 encoding serve uses for non-ASCII
// values.
func decodeHeader(v string) string {
	if dec, err := new(mime.WordDecoder).DecodeHeader(v); err == nil {
		return dec
	}
	return v
}

// RemoteAddr returns the address of r's connection.
func RemoteAddr(r *http.Request) (netip.Addr, error) {
	ap, err := netip.ParseAddrPort(r.RemoteAddr)
	if err == nil {
		return ap.Addr().Unmap(), nil
	}
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		host = r.RemoteAddr
	}
	a, err := netip.ParseAddr(host)
	if err != nil {
		return netip.Addr{}, errs.E(errs.Invalid, "remote address %q: %v", clip(r.RemoteAddr), err)
	}
	return a.Unmap(), nil
}

// CapValue is one grant's value of Contractual's app capability in the
// tailnet policy file:
//
//	"grants": [{
//	  "src": ["tag:agent"], "dst": ["tag:contractual"],
//	  "app": {"contractual.example/cap/contractual": [{"scopes": ["invoke"]}]}
//	}]
type CapValue struct {
	// Scopes are the most a device on the node may do (pairing's scope
	// names: owner, approve, publish, invoke, read, secrets, ...).
	Scopes []string `json:"scopes"`
}

// DefaultCap is the app capability Contractual reads unless configured
// otherwise.
const DefaultCap = "contractual.example/cap/contractual"

// CapScopes returns the scope names the grants of capability name give p:
// the union over its grants. granted is false if the tailnet policy grants
// p no such capability (then the capability caps nothing). A grant that is
// not a CapValue is an error: the tailnet policy says something this
// server does not understand, and the request is refused rather than let
// through uncapped.
func CapScopes(p *Peer, name string) (scopes []string, granted bool, err error) {
	if p == nil {
		return nil, false, nil
	}
	vals, ok := p.Caps[name]
	if !ok {
		return nil, false, nil
	}
	seen := map[string]bool{}
	for i, raw := range vals {
		var v CapValue
		dec := json.NewDecoder(strings.NewReader(string(raw)))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&v); err != nil {
			return nil, true, errs.E(errs.PermissionDenied, "tailnet policy: grant %d of %s is not {\"scopes\": [...]}: %v", i, name, err)
		}
		for _, s := range v.Scopes {
			if !seen[s] {
				seen[s] = true
				scopes = append(scopes, s)
			}
		}
	}
	return scopes, true, nil
}
