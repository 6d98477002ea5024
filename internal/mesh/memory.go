package mesh

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"sync"

	"github.com/contractual/contractual/internal/authz"
	"github.com/contractual/contractual/internal/errs"
)

// Memory is a Network inside one process: each service serves on a
// listener of its own that only Memory's dialer reaches, and each
// connection carries the identity of the service it was dialled for — the
// one Client was asked for, fixed by the code that wires the process, not
// by anything a caller sends. HTTP/2 runs over synchronous in-memory pipes
// (net.Pipe): no socket, no port, nothing another process can reach.
type Memory struct {
	log *slog.Logger

	mu      sync.Mutex
	servers map[authz.Service]*memServer
	closed  bool
}

var _ Network = (*Memory)(nil)

// NewMemory returns an empty in-memory network; log receives the servers'
// diagnostics (nil discards them).
func NewMemory(log *slog.Logger) *Memory {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Memory{log: log, servers: map[authz.Service]*memServer{}}
}

// memServer is one service's server on the network.
type memServer struct {
	ln   *memListener
	http *http.Server
}

// Serve serves h as service s until Close. Each request's context
// carries the calling service (authz.WithPeer).
func (m *Memory) Serve(s authz.Service, h http.Handler) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	switch {
	case m.closed:
		return errs.E(errs.Unavailable, "mesh: the in-memory network is closed")
	case m.servers[s] != nil:
		return errs.E(errs.AlreadyExists, "mesh: %s already serves", s)
	}
	ms := &memServer{ln: newMemListener(s)}
	ms.http = &http.Server{
		Handler: h,
		ConnContext: func(ctx context.Context, c net.Conn) context.Context {
			if pc, ok := c.(*peerConn); ok {
				return authz.WithPeer(ctx, pc.peer)
			}
			return ctx
		},
		ErrorLog:  slog.NewLogLogger(m.log.Handler(), slog.LevelDebug),
		Protocols: new(http.Protocols),
	}
	ms.http.Protocols.SetUnencryptedHTTP2(true)
	m.servers[s] = ms
	go func() {
		if err := ms.http.Serve(ms.ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			m.log.Error("in-memory server stopped", "service", s, "err", err)
		}
	}()
	return nil
}

// Client returns the client with which from calls to. The servers it
// reaches see from as their caller.
func (m *Memory) Client(from, to authz.Service) (*http.Client, string) {
	t := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return m.dial(ctx, from, to)
		},
		Protocols: new(http.Protocols),
		// The pipes are cheap; keep a few connections per pair, so that
		// one long poll or large answer does not hold up the rest.
		MaxIdleConnsPerHost: 4,
	}
	t.Protocols.SetUnencryptedHTTP2(true)
	return &http.Client{Transport: t}, "http://" + string(to) + ".mesh.internal"
}

// dial connects from to to's server.
func (m *Memory) dial(ctx context.Context, from, to authz.Service) (net.Conn, error) {
	m.mu.Lock()
	ms := m.servers[to]
	m.mu.Unlock()
	if ms == nil {
		return nil, errs.E(errs.Unavailable, "mesh: %s does not serve here", to)
	}
	client, server := net.Pipe()
	if err := ms.ln.deliver(ctx, &peerConn{Conn: server, peer: from}); err != nil {
		client.Close()
		server.Close()
		return nil, err
	}
	return client, nil
}

// Close stops every server, letting requests in flight finish until ctx
// ends.
func (m *Memory) Close(ctx context.Context) error {
	m.mu.Lock()
	m.closed = true
	servers := m.servers
	m.servers = map[authz.Service]*memServer{}
	m.mu.Unlock()
	var err error
	for _, ms := range servers {
		err = errors.Join(err, ms.http.Shutdown(ctx))
	}
	return err
}

// peerConn is the server's end of an in-memory connection, with the
// identity of the service that dialled it.
type peerConn struct {
	net.Conn
	peer authz.Service
}

// memListener hands a server the connections dialled to it.
type memListener struct {
	name  authz.Service
	conns chan net.Conn
	done  chan struct{}
	once  sync.Once
}

func newMemListener(name authz.Service) *memListener {
	return &memListener{name: name, conns: make(chan net.Conn), done: make(chan struct{})}
}

func (l *memListener) deliver(ctx context.Context, c net.Conn) error {
	select {
	case l.conns <- c:
		return nil
	case <-l.done:
		return errs.E(errs.Unavailable, "mesh: %s has stopped", l.name)
	case <-ctx.Done():
		return errs.Wrap(errs.Unavailable, ctx.Err(), "mesh: dialling %s", l.name)
	}
}

func (l *memListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *memListener) Close() error {
	l.once.Do(func() { close(l.done) })
	return nil
}

func (l *memListener) Addr() net.Addr { return memAddr(l.name) }

// memAddr is a service's address on the in-memory network.
type memAddr string

func (memAddr) Network() string  { return "mesh" }
func (a memAddr) String() string { return string(a) + ".mesh.internal" }
