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
	// A server's context: the caller's cancellation and deadline, none of
	// its values; the caller is the one this transport was made for.
	ctx, cancelCtx := context.WithCancel(context.Background())
	stop := context.AfterFunc(req.Context(), cancelCtx)
	cancelDL := context.CancelFunc(func() {})
	if dl, ok := req.Context().Deadline(); ok {
		ctx, cancelDL = context.WithDeadline(ctx, dl)
	}
	cancel := func() { stop(); cancelDL(); cancelCtx() }
	ctx = authz.WithPeer(ctx, t.from)

	in := req.Clone(ctx)
	in.RequestURI = req.URL.RequestURI()
	in.RemoteAddr = string(t.from) + ".mesh.internal:0"
	in.Proto, in.ProtoMajor, in.ProtoMinor = "HTTP/2.0", 2, 0
	if in.Body == nil {
		in.Body = http.NoBody
	}
	in.Header = req.Header.Clone()
	if streaming(req) {
		return t.stream(h, in, req, cancel) // it ends the call itself
	}
	defer t.m.inflight.Done()
	defer cancel()
	w := &memResponse{header: http.Header{}}
	h.ServeHTTP(w, in)
	if in.Body != nil {
		in.Body.Close()
	}
	w.WriteHeader(http.StatusOK) // if the handler wrote nothing
	body := w.body.Bytes()
	return &http.Response{
		Status:        strconv.Itoa(w.status) + " " + http.StatusText(w.status),
		StatusCode:    w.status,
		Proto:         "HTTP/2.0",
		ProtoMajor:    2,
		Header:        w.sent,
		Trailer:       w.trailer(),
		Body:          io.NopCloser(bytes.NewReader(body)),
		ContentLength: int64(len(body)),
		Request:       req,
	}, nil
}

// streaming reports whether req is a streaming call (Connect's streaming
// content types, or gRPC's): its answer is read while the handler writes
// it.
func streaming(req *http.Request) bool {
	ct := req.Header.Get("Content-Type")
	return strings.HasPrefix(ct, "application/connect+") || strings.HasPrefix(ct, "application/grpc")
}

// stream serves a streaming call: the handler runs on, writing into a pipe
// the caller reads as the response's body, which it gets as soon as the
// handler has written its header. The call is in flight, and its context
// alive, until the handler returns; closing the body early ends it.
func (t *memTransport) stream(h http.Handler, in, req *http.Request, cancel context.CancelFunc) (*http.Response, error) {
	pr, pw := io.Pipe()
	w := &memStream{header: http.Header{}, pw: pw, ready: make(chan struct{})}
	resp := &http.Response{
		Proto: "HTTP/2.0", ProtoMajor: 2, ContentLength: -1, Request: req,
		Trailer: http.Header{},
		Body:    &streamBody{PipeReader: pr, cancel: cancel},
	}
	go func() {
		defer t.m.inflight.Done()
		defer cancel()
		defer func() {
			if p := recover(); p != nil {
				t.m.log.Error("mesh: a streaming handler panicked", "service", t.to, "panic", p)
				w.WriteHeader(http.StatusInternalServerError)
				pw.CloseWithError(errs.E(errs.Internal, "mesh: %s failed", t.to))
			}
		}()
		h.ServeHTTP(w, in)
		in.Body.Close()
		w.WriteHeader(http.StatusOK) // if the handler wrote nothing
		for k, v := range w.header {
			if name, ok := strings.CutPrefix(k, http.TrailerPrefix); ok {
				resp.Trailer[http.CanonicalHeaderKey(name)] = v
			}
		}
		pw.Close()
	}()
	select {
	case <-w.ready:
	case <-in.Context().Done():
		pr.Close()
		<-w.ready // the handler ends soon, writing its header at the latest then
	}
	resp.StatusCode = w.status
	resp.Status = strconv.Itoa(w.status) + " " + http.StatusText(w.status)
	resp.Header = w.sent
	return resp, nil
}

// streamBody is a streaming call's body: closing it ends the call.
type streamBody struct {
	*io.PipeReader
	cancel context.CancelFunc
}

func (b *streamBody) Close() error {
	b.cancel()
	return b.PipeReader.Close()
}

// memStream is a streaming handler's answer, handed over as it is written.
type memStream struct {
	header      http.Header
	sent        http.Header
	status      int
	wroteHeader bool
	pw          *io.PipeWriter
	ready       chan struct{} // closed once the header is written
}

func (w *memStream) Header() http.Header { return w.header }

func (w *memStream) WriteHeader(code int) {
	if !w.wroteHeader {
		w.status, w.wroteHeader = code, true
		w.sent = w.header.Clone()
		close(w.ready)
	}
}

func (w *memStream) Write(p []byte) (int, error) {
	w.WriteHeader(http.StatusOK)
	return w.pw.Write(p)
}

// Flush does nothing: every Write is handed over as it is made.
func (w *memStream) Flush() {}

// memResponse is a unary handler's answer, kept whole: nothing reads it
// before it ends.
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

// trailer returns the trailers the handler set after its body.
func (w *memResponse) trailer() http.Header {
	var trailer http.Header
	for k, v := range w.header { // the handler's own map: set after the body
		if name, ok := strings.CutPrefix(k, http.TrailerPrefix); ok {
			if trailer == nil {
				trailer = http.Header{}
			}
			trailer[http.CanonicalHeaderKey(name)] = v
		}
	}
	return trailer
}
