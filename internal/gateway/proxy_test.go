package gateway

import (
	"context"
	"errors"
	"net/netip"
	"sync"
	"testing"
	"time"
)

// TestProxyHosts: the proxy's addresses are resolved at start and again on
// a miss, at most every reresolve; an address literal needs no lookup; a
// sidecar that comes up late, or restarts with a new address, is followed.
func TestProxyHosts(t *testing.T) {
	var (
		mu      sync.Mutex
		answer  = map[string][]netip.Addr{}
		lookups int
		now     = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	)
	set := func(host string, addrs ...string) {
		mu.Lock()
		defer mu.Unlock()
		answer[host] = nil
		for _, a := range addrs {
			answer[host] = append(answer[host], netip.MustParseAddr(a))
		}
	}
	p := &proxyHosts{
		hosts: []string{"tailscale", "10.0.0.9"},
		now:   func() time.Time { return now },
		log:   func(string, ...any) {},
		lookup: func(_ context.Context, host string) ([]netip.Addr, error) {
			mu.Lock()
			defer mu.Unlock()
			lookups++
			if a, ok := answer[host]; ok && len(a) > 0 {
				return a, nil
			}
			return nil, errors.New("no such host")
		},
	}
	p.resolve() // the sidecar is not up yet
	want := func(addr string, in bool, wantLookups int) {
		t.Helper()
		if got := p.contains(netip.MustParseAddr(addr)); got != in {
			t.Errorf("contains(%s) = %v, want %v", addr, got, in)
		}
		if lookups != wantLookups {
			t.Errorf("after contains(%s): %d lookups, want %d", addr, lookups, wantLookups)
		}
	}
	want("10.0.0.9", true, 1)      // the literal, without a lookup
	want("172.18.0.5", false, 1)   // a miss within reresolve: no lookup
	set("tailscale", "172.18.0.5") // the sidecar comes up
	want("172.18.0.5", false, 1)   // still within reresolve
	now = now.Add(reresolve)
	want("172.18.0.5", true, 2)        // resolved again on the miss
	want("::ffff:172.18.0.5", true, 2) // IPv4-mapped: the same address
	set("tailscale", "172.18.0.7")     // the sidecar restarts elsewhere
	now = now.Add(reresolve)
	want("172.18.0.7", true, 3)
	want("172.18.0.5", false, 3) // its old address is no longer the proxy
	want("10.0.0.9", true, 3)
}
