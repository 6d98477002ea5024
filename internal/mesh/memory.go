package mesh

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"sync"

	"github.com/contractual/contractual/internal/authz"
	"github.com/contractual/contractual/internal/errs"
)

// Memory is a Network inside one process. Each service's handler is
// reachable only through the clients Memory hands out, and each call
// carries the identity of the service its client was made for — fixed by
// the code that wires the process, never by anything the caller sends. A
// call is a real Connect request and response (the same codecs,
// interceptors, headers and errors as over the network), handed from
// client to handler in memory: no socket, no port, no framing, nothing
// another process can reach.
//
// The handler runs in a context of its own, as behind a server: nothing
// the caller's context carries (its principal, its device, its own caller)
// crosses, only its cancellation and deadline.
type Memory struct {
	log *slog.Logger

	mu       sync.Mutex
	handlers map[authz.Service]http.Handler
	closed   bool
	inflight sync.WaitGroup
}

var _ Network = (*Memory)(nil)

// NewMemory returns an empty in-memory network; log receives its
// diagnostics (nil discards them).
func NewMemory(log *slog.Logger) *Memory {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Memory{log: log, handlers: map[authz.Service]http.Handler{}}
}

// Serve serves h as service s until Close. Each request's context carries
// the calling service (authz.WithPeer).
func (m *Memory) Serve(s authz.Service, h http.Handler) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	switch {
	case m.closed:
		return errs.E(errs.Unavailable, "mesh: the in-memory network is closed")
	case m.handlers[s] != nil:
		return errs.E(errs.AlreadyExists, "mesh: %s already serves", s)
	}
	m.handlers[s] = h
	return nil
}

// Client returns the client with which from calls to. The handler it
// reaches sees from as its caller.
func (m *Memory) Client(from, to authz.Service) (*http.Client, string) {
	return &http.Client{Transport: &memTransport{m: m, from: from, to: to}}, "http://" + string(to) + ".mesh.internal"
}

// Close refuses new calls and waits, until ctx ends, for those in flight.
func (m *Memory) Close(ctx context.Context) error {
	m.mu.Lock()
	m.closed = true
	m.mu.Unlock()
	done := make(chan struct{})
	go func() {
		m.inflight.Wait()
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return errs.Wrap(errs.Unavailable, ctx.Err(), "mesh: calls still in flight")
	}
}

// handler returns to's handler and counts a call in flight.
func (m *Memory) handler(to authz.Service) (http.Handler, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	switch h := m.handlers[to]; {
	case m.closed:
		return nil, errs.E(errs.Unavailable, "mesh: the in-memory network is closed")
	case h == nil:
		return nil, errs.E(errs.Unavailable, "mesh: %s does not serve here", to)
	default:
		m.inflight.Add(1)
		return h, nil
	}
}

// memTransport carries from's requests to to's handler.
type memTransport struct {
	m        *Memory
	from, to authz.Service
}

func (t *memTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	h, err := t.m.handler(t.to)
	if err != nil {
		if req.Body != nil {
			req.Body.Close()
		}
		return nil, err
	}
	defer t.m.inflight.Done()
	// A server's context: the caller's cancellation and deadline, none of
	// its values; the caller is the one this transport was made for.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	defer context.AfterFunc(req.Context(), cancel)()
	if dl, ok := req.Context().Deadline(); ok {
		var cancelDL context.CancelFunc
		ctx, cancelDL = context.WithDeadline(ctx, dl)
		defer cancelDL()
	}
	ctx = authz.WithPeer(ctx, t.from)

	in := req.Clone(ctx)
	in.RequestURI = req.URL.RequestURI()
	in.RemoteAddr = string(t.from) + ".mesh.internal:0"
	in.Proto, in.ProtoMajor, in.ProtoMinor = "HTTP/2.0", 2, 0
	if in.Body == nil {
		in.Body = http.NoBody
	}
	in.Header = req.Header.Clone()
	w := &memResponse{header: http.Header{}}
	h.ServeHTTP(w, in)
	if in.Body != nil {
		in.Body.Close()
	}
	w.WriteHeader(http.StatusOK) // if the handler wrote nothing
	body := w.body.Bytes()
	var trailer http.Header
	for k, v := range w.header { // the handler's own map: set after the body
		if name, ok := strings.CutPrefix(k, http.TrailerPrefix); ok {
			if trailer == nil {
				trailer = http.Header{}
			}
			trailer[http.CanonicalHeaderKey(name)] = v
		}
	}
	return &http.Response{
		Status:        strconv.Itoa(w.status) + " " + http.StatusText(w.status),
		StatusCode:    w.status,
		Proto:         "HTTP/2.0",
		ProtoMajor:    2,
		Header:        w.sent,
		Trailer:       trailer,
		Body:          io.NopCloser(bytes.NewReader(body)),
		ContentLength: int64(len(body)),
		Request:       req,
	}, nil
}

// memResponse is a handler's answer, kept whole: every procedure between
// the services is unary, so nothing reads an answer before it ends.
type memResponse struct {
	header      http.Header // the handler's
	sent        http.Header // header as it was when the status was written
	status      int
	wroteHeader bool
	body        bytes.Buffer
}

func (w *memResponse) Header() http.Header { return w.header }

func (w *memResponse) WriteHeader(code int) {
	if !w.wroteHeader {
		w.status, w.wroteHeader = code, true
		w.sent = w.header.Clone() // later changes are trailers or lost, as over HTTP
	}
}

func (w *memResponse) Write(p []byte) (int, error) {
	w.WriteHeader(http.StatusOK)
	return w.body.Write(p)
}

// Flush does nothing: the answer is handed over whole.
func (w *memResponse) Flush() {}
