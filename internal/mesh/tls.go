package mesh

import (
	"context"
	"errors"
	"net"
	"net/http"
	"time"

	"github.com/contractual/contractual/internal/authz"
	"github.com/contractual/contractual/internal/errs"
	"github.com/contractual/contractual/internal/pki"
)

// TLS is the Network of the compose deployment: every service has a
// certificate naming it (its SPIFFE ID, from package pki), serves over
// mutual TLS, and dials the others over mutual TLS, accepting only the
// service it meant to reach.
type TLS struct {
	// Source is this service's certificate, key and trust bundle, reloaded
	// when the ca service renews them.
	Source *pki.Source
	// URLs are the other services' base URLs; a service without one is
	// https://<service>:8443, its name on the compose network.
	URLs map[authz.Service]string
}

var _ Network = (*TLS)(nil)

// Client returns a client that reaches to over mutual TLS. The caller is
// whoever Source's certificate names, whatever from says.
//
// It speaks HTTP/1.1, with up to MaxConnsIdle connections kept per
// service: every call between services is unary, and Go serves an HTTP/1.1
// request on its connection's goroutine, where HTTP/2 hands each one
// between a frame reader, a serve loop and a stream goroutine, on each
// side. On two busy cores those handoffs made a hop twice as slow
// (docs/performance.md).
func (n *TLS) Client(_, to authz.Service) (*http.Client, string) {
	u := n.URLs[to]
	if u == "" {
		u = "https://" + string(to) + ":8443"
	}
	tr := n.Source.Transport(string(to))
	tr.Protocols = new(http.Protocols)
	tr.Protocols.SetHTTP1(true)
	tr.TLSClientConfig.NextProtos = []string{"http/1.1"}
	tr.MaxIdleConnsPerHost = MaxConnsIdle
	return &http.Client{Transport: tr}, u
}

// MaxConnsIdle is how many connections a service keeps open to another
// between calls.
const MaxConnsIdle = 64

// ServeTLS serves h over mutual TLS from src on ln until ctx ends, then
// stops, letting requests in flight finish for up to grace. Each request's
// context carries the caller that its verified certificate names
// (authz.WithPeer); the handshake refuses a client without a certificate
// of the trust bundle's CA, an expired one, or one without a service's
// SPIFFE ID.
func ServeTLS(ctx context.Context, ln net.Listener, src *pki.Source, h http.Handler, grace time.Duration) error {
	srv := src.Server(PeerFromTLS(h))
	done := make(chan error, 1)
	go func() { done <- srv.ServeTLS(ln, "", "") }()
	select {
	case err := <-done:
		return errs.Wrap(errs.Unavailable, err, "mesh: serving")
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), grace)
	defer cancel()
	err := srv.Shutdown(sctx)
	if serr := <-done; !errors.Is(serr, http.ErrServerClosed) {
		err = errors.Join(err, serr)
	}
	return err
}

// PeerFromTLS passes requests on to h with the service their verified
// client certificate names in the context (authz.WithPeer). A request
// without one (not over mutual TLS) passes on without a peer, and authz
// refuses it.
func PeerFromTLS(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if name, err := pki.PeerID(r.TLS); err == nil {
			if s, ok := authz.ParseService(pki.ID(name)); ok {
				r = r.WithContext(authz.WithPeer(r.Context(), s))
			}
		}
		h.ServeHTTP(w, r)
	})
}
