package gateway

import (
	"compress/gzip"
	"io"
	"time"

	"connectrpc.com/connect"

	"github.com/contractual/contractual/internal/errs"
)

// Limits bounds what callers can hold of the server: connections,
// requests that have not authenticated, and how long any request may take.
// Zero fields take the defaults.
type Limits struct {
	// MaxConns caps open connections (default 1024). At the cap a new
	// connection closes the oldest one that has not carried an
	// authenticated request, so a paired device still gets in.
	MaxConns int
	// MaxUnauthenticated caps the requests in progress that carry a body
	// and no valid credential: the open pairing procedures, reflection,
	// health and the Control UI's pairing endpoints (default 64). Past it
	// they are refused at once (resource_exhausted, 429).
	MaxUnauthenticated int
	// UnauthenticatedBytes caps the body of such a request (default
	// 64 KiB; pairing messages are a few hundred bytes).
	UnauthenticatedBytes int64
	// ReadHeaderTimeout bounds reading a request's headers (default 10 s).
	ReadHeaderTimeout time.Duration
	// UnauthenticatedReadTimeout bounds reading a request, headers and
	// body, until it has authenticated (default 10 s); an unauthenticated
	// request must have sent its whole body by then.
	UnauthenticatedReadTimeout time.Duration
	// ReadTimeout bounds reading an authenticated request's body (default
	// 1 min; PublishTimeout for a Publish).
	ReadTimeout time.Duration
	// WriteTimeout bounds a request from its headers to the end of its
	// response, handling included (default 2 min; InvokeTimeout for an
	// Invoke, PublishTimeout for a Publish). The handler's context ends
	// then too.
	WriteTimeout time.Duration
	// InvokeTimeout bounds an Invoke (default 6 min: the longest timeout a
	// contract may set, 5 min, plus a minute of waiting for a slot).
	InvokeTimeout time.Duration
	// PublishTimeout bounds a Publish, which uploads a module of up to
	// 64 MiB (default 10 min, enough at 1 Mbit/s).
	PublishTimeout time.Duration
	// IdleTimeout closes a connection idle this long between requests
	// (default 2 min).
	IdleTimeout time.Duration
	// MaxHeaderBytes caps a request's headers (default 64 KiB).
	MaxHeaderBytes int
	// WebhookBytes caps a webhook delivery's body (default 256 KiB).
	WebhookBytes int64
	// WebhooksPerMinute caps the webhook deliveries from one source (an IP
	// address or a tailnet node) per minute (default 120).
	WebhooksPerMinute int
}

// withDefaults fills the zero fields of l.
func (l Limits) withDefaults() Limits {
	set := func(v *time.Duration, d time.Duration) {
		if *v <= 0 {
			*v = d
		}
	}
	if l.MaxConns <= 0 {
		l.MaxConns = 1024
	}
	if l.MaxUnauthenticated <= 0 {
		l.MaxUnauthenticated = 64
	}
	if l.UnauthenticatedBytes <= 0 {
		l.UnauthenticatedBytes = 64 << 10
	}
	if l.MaxHeaderBytes <= 0 {
		l.MaxHeaderBytes = 64 << 10
	}
	if l.WebhookBytes <= 0 {
		l.WebhookBytes = 256 << 10
	}
	if l.WebhooksPerMinute <= 0 {
		l.WebhooksPerMinute = 120
	}
	set(&l.ReadHeaderTimeout, 10*time.Second)
	set(&l.UnauthenticatedReadTimeout, 10*time.Second)
	set(&l.ReadTimeout, time.Minute)
	set(&l.WriteTimeout, 2*time.Minute)
	set(&l.InvokeTimeout, 6*time.Minute)
	set(&l.PublishTimeout, 10*time.Minute)
	set(&l.IdleTimeout, 2*time.Minute)
	return l
}

// cappedGzip is the handlers' gzip decompressor: it fails once it has
// produced more than max bytes. connect-go caps a decompressed message at
// the handler's read limit, but to report the size it then inflates the
// rest of the stream into io.Discard, so a small gzip bomb would cost
// minutes of CPU; this stops it just past the largest limit.
type cappedGzip struct {
	gzip.Reader
	max, n int64
}

// withCappedGzip replaces connect-go's gzip decompressor with cappedGzip
// at max bytes per message.
func withCappedGzip(max int64) connect.HandlerOption {
	return connect.WithCompression("gzip",
		func() connect.Decompressor { return &cappedGzip{max: max} },
		func() connect.Compressor { return gzip.NewWriter(io.Discard) },
	)
}

func (g *cappedGzip) Read(p []byte) (int, error) {
	if g.n > g.max {
		return 0, errs.E(errs.ResourceExhausted, "decompressed message is larger than %d bytes", g.max)
	}
	n, err := g.Reader.Read(p)
	g.n += int64(n)
	return n, err
}

func (g *cappedGzip) Reset(r io.Reader) error {
	g.n = 0
	return g.Reader.Reset(r)
}
