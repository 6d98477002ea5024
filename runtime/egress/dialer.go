package egress

import (
	"context"
	"net"
	"net/netip"
	"strconv"
	"syscall"

	"github.com/contractual/contractual/internal/errs"
)

// Dialer opens the TCP connections of a session. The transport calls it with
// the URL's host and port; it alone decides which IP address that means.
// Production code leaves Config.Dialer nil and gets a PublicDialer; other
// implementations are for tests (see package egresstest).
type Dialer interface {
	DialContext(ctx context.Context, network, address string) (net.Conn, error)
}

// Resolver resolves host names; *net.Resolver implements it.
type Resolver interface {
	LookupNetIP(ctx context.Context, network, host string) ([]netip.Addr, error)
}

// PublicDialer dials public addresses only. It resolves the name itself, at
// dial time, checks every address of the answer (one non-public address
// refuses the whole answer) and then dials the checked addresses themselves,
// so no second resolution can swap in another address. It has no exception
// for loopback or private networks, on purpose.
type PublicDialer struct {
	// Resolver resolves names; nil means net.DefaultResolver.
	Resolver Resolver

	// dial replaces the final connect in tests; nil means a net.Dialer whose
	// Control hook checks the address once more.
	dial func(ctx context.Context, network, address string) (net.Conn, error)
}

// DialContext implements Dialer.
func (d PublicDialer) DialContext(ctx context.Context, network, address string) (net.Conn, error) {
	if network != "tcp" && network != "tcp4" && network != "tcp6" {
		return nil, errs.E(errs.PermissionDenied, "egress: network %q is not allowed", network)
	}
	host, portText, err := net.SplitHostPort(address)
	if err != nil {
		return nil, errs.E(errs.Invalid, "egress: bad dial address %.100q", address)
	}
	port, err := strconv.ParseUint(portText, 10, 16)
	if err != nil || port == 0 {
		return nil, errs.E(errs.Invalid, "egress: bad port in %.100q", address)
	}
	addrs, err := d.resolve(ctx, network, host)
	if err != nil {
		return nil, err
	}
	return d.dialFirst(ctx, addrs, uint16(port))
}

// resolve returns the checked addresses for host: the literal itself, or
// every answer of the resolver, all public.
func (d PublicDialer) resolve(ctx context.Context, network, host string) ([]netip.Addr, error) {
	name, lit, err := canonicalHost(host)
	if err != nil {
		return nil, errs.Wrap(errs.KindOf(err), err, "egress: dial %.100s", host)
	}
	if lit.IsValid() {
		return []netip.Addr{lit}, nil
	}
	r := d.Resolver
	if r == nil {
		r = net.DefaultResolver
	}
	// The trailing dot makes the name absolute: no resolv.conf search
	// domain is tried first.
	answer, err := r.LookupNetIP(ctx, "ip", name+".")
	if err != nil {
		return nil, errs.Wrap(errs.Unavailable, err, "egress: resolve %s", name)
	}
	var out []netip.Addr
	for _, a := range answer {
		// Go's resolver reports some IPv4 answers (from /etc/hosts, say) as
		// IPv4-mapped; judge and dial the IPv4 address they hold.
		a = a.Unmap()
		if why := nonPublic(a); why != "" {
			return nil, errs.E(errs.PermissionDenied, "egress: %s resolves to %s, which is not public: %s", name, a, why)
		}
		if network == "tcp" || (network == "tcp4") == a.Is4() {
			out = append(out, a)
		}
	}
	if len(out) == 0 {
		return nil, errs.E(errs.Unavailable, "egress: %s has no %s address", name, network)
	}
	return out, nil
}

// dialFirst connects to the first address that answers.
func (d PublicDialer) dialFirst(ctx context.Context, addrs []netip.Addr, port uint16) (net.Conn, error) {
	dial := d.dial
	if dial == nil {
		nd := &net.Dialer{Control: controlPublic}
		dial = nd.DialContext
	}
	var last error
	for _, a := range addrs {
		c, err := dial(ctx, "tcp", netip.AddrPortFrom(a, port).String())
		if err == nil {
			return c, nil
		}
		last = err
		if ctx.Err() != nil {
			break
		}
	}
	kind := errs.Unavailable
	if errs.KindOf(last) == errs.PermissionDenied {
		kind = errs.PermissionDenied // refused by controlPublic
	}
	return nil, errs.Wrap(kind, last, "egress: connect")
}

// controlPublic re-checks the address just before the socket connects; it
// should never fire, since only checked addresses are dialled.
func controlPublic(_, address string, _ syscall.RawConn) error {
	ap, err := netip.ParseAddrPort(address)
	if err != nil {
		return errs.E(errs.PermissionDenied, "egress: unparsable socket address %q", address)
	}
	if why := nonPublic(ap.Addr().Unmap()); why != "" {
		return errs.E(errs.PermissionDenied, "egress: socket address %s is not public: %s", ap.Addr(), why)
	}
	return nil
}
