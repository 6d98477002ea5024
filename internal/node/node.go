// Package node runs one of Contractual's services as its own process, as
// the compose deployment does: its certificate and trust bundle from
// --tls-dir (package pki, reloaded when renewed), its Connect handlers over
// mutual TLS on --listen behind authz, its clients of the others over
// mutual TLS, and metrics on every call. Each service's binary is
// daemon.Main of a Service built on it (see the services' Daemon funcs).
package node

import (
	"context"
	"flag"
	"net"
	"time"

	"connectrpc.com/connect"

	"github.com/contractual/contractual/internal/authz"
	"github.com/contractual/contractual/internal/daemon"
	"github.com/contractual/contractual/internal/errs"
	"github.com/contractual/contractual/internal/mesh"
	"github.com/contractual/contractual/internal/pki"
)

// Peers are the base URLs of the services a process calls, set by flags
// (--policy-url and so on).
type Peers map[authz.Service]*string

// Flags registers a --<peer>-url flag for each of peers on fs.
func Flags(fs *flag.FlagSet, peers ...authz.Service) Peers {
	p := Peers{}
	for _, s := range peers {
		p[s] = fs.String(string(s)+"-url", "https://"+string(s)+":8443", "the "+string(s)+" service's base URL (mutual TLS)")
	}
	return p
}

// Node is one service's process: its identity, network and clients.
type Node struct {
	Self    authz.Service
	Env     *daemon.Env
	Source  *pki.Source
	Network *mesh.TLS
	Clients mesh.Clients
}

// New loads the certificate in env.TLSDir, which must name self, and
// builds the clients of peers.
func New(env *daemon.Env, self authz.Service, peers Peers) (*Node, error) {
	src, err := pki.NewSource(env.TLSDir, pki.SourceOptions{Logger: env.Log})
	if err != nil {
		return nil, err
	}
	if src.Service() != string(self) {
		return nil, errs.E(errs.Invalid, "the certificate in %s names %s, not %s", env.TLSDir, pki.ID(src.Service()), self.ID())
	}
	n := &Node{Self: self, Env: env, Source: src, Network: &mesh.TLS{Source: src, URLs: map[authz.Service]string{}}}
	for s, u := range peers {
		n.Network.URLs[s] = *u
	}
	n.Clients = mesh.NewClients(n.Network, self, env.Metrics.Interceptor())
	// Healthy while the certificate is: an expired one (the renewer
	// stopped) makes every call fail, so say so.
	env.Health("certificate", func(context.Context) error {
		if leaf := src.Leaf(); time.Now().After(leaf.NotAfter) {
			return errs.E(errs.Unavailable, "the certificate expired at %s", leaf.NotAfter.UTC().Format(time.RFC3339))
		}
		return nil
	})
	return n, nil
}

// HandlerOptions are the options of the service's handlers: metrics, then
// mesh.HandlerOptions (errors, authz).
func (n *Node) HandlerOptions() connect.HandlerOption {
	return mesh.HandlerOptions(n.Env.Log, n.Env.Metrics.Interceptor())
}

// Serve serves h over mutual TLS on env.Listen, says it is ready, and
// serves until ctx ends.
func (n *Node) Serve(ctx context.Context, h mesh.Handlers) error {
	ln, err := net.Listen("tcp", n.Env.Listen)
	if err != nil {
		return errs.Wrap(errs.Unavailable, err, "listen on %s", n.Env.Listen)
	}
	n.Env.Log.Info("serving", "listen", ln.Addr().String(), "id", n.Self.ID())
	n.Env.Ready()
	return mesh.ServeTLS(ctx, ln, n.Source, h.Mux(), 5*time.Second)
}
