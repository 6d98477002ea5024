// Package egresstest lets tests send egress sessions to local httptest
// servers. It is for tests only: its Dialer connects to loopback, which the
// production egress.PublicDialer never does.
//
// HTTPS works for host names that the httptest certificate covers:
// example.com and one label below it (api.example.com); NewTLSServer starts
// one with a certificate for any names. Plain HTTP works for any name.
//
// Echo is a handler that writes an injected header back in one of
// Spellings, the encodings real servers use, for tests of the leak guard
// and of redaction.
package egresstest

import (
	"context"
	"crypto/x509"
	"fmt"
	"net"
	"net/http/httptest"
	"strings"
	"sync"

	"github.com/contractual/contractual/runtime/egress"
)

// Dialer sends each "host:port" it knows to a local server and refuses
// everything else. It records what it was asked to dial.
type Dialer struct {
	routes map[string]string // "host:port" → listener address

	mu     sync.Mutex
	dialed []string
}

var _ egress.Dialer = (*Dialer)(nil)

// New returns a Dialer for routes and a pool trusting every TLS server among
// them, to be used as egress.Config.Dialer and egress.Config.RootCAs. A route
// key is "host:port", or "host" alone, which means port 443 for a TLS server
// and 80 otherwise.
func New(routes map[string]*httptest.Server) (*Dialer, *x509.CertPool) {
	d := &Dialer{routes: make(map[string]string, len(routes))}
	pool := x509.NewCertPool()
	for key, srv := range routes {
		if _, _, err := net.SplitHostPort(key); err != nil {
			port := "80"
			if srv.TLS != nil {
				port = "443"
			}
			key = net.JoinHostPort(key, port)
		}
		d.routes[strings.ToLower(key)] = srv.Listener.Addr().String()
		if c := srv.Certificate(); c != nil {
			pool.AddCert(c)
		}
	}
	return d, pool
}

// DialContext implements egress.Dialer.
func (d *Dialer) DialContext(ctx context.Context, network, address string) (net.Conn, error) {
	d.mu.Lock()
	d.dialed = append(d.dialed, address)
	d.mu.Unlock()
	to, ok := d.routes[strings.ToLower(address)]
	if !ok {
		return nil, fmt.Errorf("egresstest: no route to %s", address)
	}
	var nd net.Dialer
	return nd.DialContext(ctx, network, to)
}

// Dialed returns the addresses the Dialer was asked for, in order.
func (d *Dialer) Dialed() []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]string(nil), d.dialed...)
}
