package gateway

import (
	"container/list"
	"context"
	"net"
	"sync"
)

// connLimit is a listener that holds at most max connections open. At the
// cap, accepting a connection first closes the oldest one that has not yet
// carried an authenticated request (an attacker's, since it cannot
// authenticate); when every open connection has authenticated, the new one
// is closed instead. So connections that never authenticate cannot keep a
// paired device out: each new connection pushes the oldest of them out.
type connLimit struct {
	net.Listener
	max int

	mu     sync.Mutex
	open   int        // connections counted against max
	unauth *list.List // of *limitedConn, oldest first: the evictable ones
}

func newConnLimit(ln net.Listener, max int) *connLimit {
	return &connLimit{Listener: ln, max: max, unauth: list.New()}
}

// Accept returns the next connection, making room for it as described on
// connLimit. It never fails for the cap: a connection that finds no room
// is closed and Accept waits for the next.
func (l *connLimit) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		if lc := l.admit(c); lc != nil {
			return lc, nil
		}
		c.Close()
	}
}

// admit counts c in, evicting the oldest unauthenticated connection if
// needed; it returns nil if there is no room.
func (l *connLimit) admit(c net.Conn) *limitedConn {
	l.mu.Lock()
	var evict *limitedConn
	if l.open >= l.max && l.unauth.Len() > 0 {
		evict = l.unauth.Remove(l.unauth.Front()).(*limitedConn)
		evict.elem, evict.counted = nil, false
		l.open--
	}
	if l.open >= l.max {
		l.mu.Unlock()
		return nil
	}
	lc := &limitedConn{Conn: c, l: l, counted: true}
	lc.elem = l.unauth.PushBack(lc)
	l.open++
	l.mu.Unlock()
	if evict != nil {
		evict.Conn.Close()
	}
	return lc
}

// limitedConn is a connection accepted by a connLimit.
type limitedConn struct {
	net.Conn
	l *connLimit
	// Guarded by l.mu: elem is the connection's place in l.unauth while it
	// is unauthenticated and counted; counted is whether it is in l.open.
	elem    *list.Element
	counted bool
}

// authenticated marks the connection as having carried an authenticated
// request: it is no longer evicted to make room.
func (c *limitedConn) authenticated() {
	c.l.mu.Lock()
	defer c.l.mu.Unlock()
	if c.elem != nil {
		c.l.unauth.Remove(c.elem)
		c.elem = nil
	}
}

func (c *limitedConn) Close() error {
	c.l.mu.Lock()
	if c.counted {
		c.counted = false
		c.l.open--
		if c.elem != nil {
			c.l.unauth.Remove(c.elem)
			c.elem = nil
		}
	}
	c.l.mu.Unlock()
	return c.Conn.Close()
}

// connKey is the context key of a request's *limitedConn (set by the
// http.Server's ConnContext).
type connKey struct{}

// markAuthenticated marks the connection that carried ctx's request as
// authenticated (see connLimit).
func markAuthenticated(ctx context.Context) {
	if c, ok := ctx.Value(connKey{}).(*limitedConn); ok {
		c.authenticated()
	}
}
