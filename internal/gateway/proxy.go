package gateway

import (
	"context"
	"net"
	"net/netip"
	"slices"
	"sync"
	"time"
)

// proxyHosts is the set of addresses of the hosts that run `tailscale
// serve` in front of the gateway (the compose sidecar): the FromProxy of
// its tailnet.ServeHeaders. Names are resolved when the set is made, and
// again on an address that is not in the set, at most every reresolve, so
// that a sidecar that restarts with a new address is followed without
// letting every stranger's request cost a lookup.
type proxyHosts struct {
	hosts  []string
	lookup func(ctx context.Context, host string) ([]netip.Addr, error)
	now    func() time.Time
	log    func(msg string, args ...any)

	mu    sync.Mutex
	addrs []netip.Addr
	at    time.Time // of the last resolution
}

// reresolve is the least time between two resolutions of proxyHosts.
const reresolve = 10 * time.Second

// resolveTimeout bounds one resolution of every host.
const resolveTimeout = 5 * time.Second

// newProxyHosts resolves hosts (names or IP addresses) and returns their
// set; a name that does not resolve yet (the sidecar is not up) is
// resolved again on a miss, reresolve later.
func newProxyHosts(hosts []string, log func(string, ...any)) *proxyHosts {
	p := &proxyHosts{
		hosts: hosts, now: time.Now, log: log,
		lookup: func(ctx context.Context, host string) ([]netip.Addr, error) {
			return net.DefaultResolver.LookupNetIP(ctx, "ip", host)
		},
	}
	p.resolve()
	return p
}

// contains reports whether a is an address of the proxy hosts.
func (p *proxyHosts) contains(a netip.Addr) bool {
	a = a.Unmap()
	p.mu.Lock()
	defer p.mu.Unlock()
	if slices.Contains(p.addrs, a) {
		return true
	}
	if p.now().Sub(p.at) < reresolve {
		return false
	}
	p.resolveLocked()
	return slices.Contains(p.addrs, a)
}

func (p *proxyHosts) resolve() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.resolveLocked()
}

// resolveLocked replaces the set with the hosts' current addresses; a
// host that fails to resolve keeps none.
func (p *proxyHosts) resolveLocked() {
	ctx, cancel := context.WithTimeout(context.Background(), resolveTimeout)
	defer cancel()
	var addrs []netip.Addr
	for _, h := range p.hosts {
		if a, err := netip.ParseAddr(h); err == nil {
			addrs = append(addrs, a.Unmap())
			continue
		}
		as, err := p.lookup(ctx, h)
		if err != nil {
			p.log("resolving the tailscale serve host", "host", h, "err", err)
			continue
		}
		for _, a := range as {
			addrs = append(addrs, a.Unmap())
		}
	}
	p.addrs, p.at = addrs, p.now()
}
