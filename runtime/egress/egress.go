// Package egress is the only way a tool module's HTTP request leaves the
// host.
//
// The sandbox creates one Session per tool call from the contract's egress
// rules and limits, passes every HTTP request of the module to Session.Do,
// and reads Session.Records and Session.Released when the call is over.
//
// A request goes out only if it is an absolute http(s) URL that a rule
// allows (scheme, host, port, path prefix, method), and only to public
// addresses: the PublicDialer resolves the host at dial time, refuses the
// whole answer if any address is loopback, private, link-local, metadata,
// CGNAT, reserved or otherwise not public, and dials the checked address
// itself. Redirects are followed by this package, hop by hop, each hop
// checked like a new request. Secrets named by the matching rule are
// fetched for the hop's audience (scheme and host) just before sending and
// set as headers; the module never sees them and cannot set those headers
// itself. Every attempt, allowed or not, becomes a Record.
//
// A session with an IdempotencyKey (a job's call) sends every request with
// an Idempotency-Key header the host derives from the request's sequence
// number in the call; the module cannot set that header.
package egress

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"net/http"
	"slices"
	"sync"
	"time"

	"github.com/contractual/contractual/internal/errs"
	"github.com/contractual/contractual/runtime/secretscan"
)

// Defaults for the zero values of Config's limits, and the redirect bound.
const (
	DefaultMaxRequests      = 16
	DefaultMaxRequestBytes  = 1 << 20
	DefaultMaxResponseBytes = 4 << 20
	DefaultTimeout          = 10 * time.Second
	// MaxRedirects is how many redirects one request may follow.
	MaxRedirects = 5
)

// Audience is whom a secret is released to: the scheme and host (canonical:
// lower case, no trailing dot, no port) of the request that carries it.
type Audience struct {
	// Scheme is "https" (secrets are never sent over plain http).
	Scheme string
	// Host is the canonical host name or IP literal.
	Host string
}

// String returns "scheme://host".
func (a Audience) String() string { return a.Scheme + "://" + a.Host }

// SecretSource hands out secret values at send time. Secret is called once
// for every request hop that needs the secret, with the hop's audience; it
// must refuse a secret whose grant does not cover that audience. Errors
// must not contain the value.
type SecretSource interface {
	Secret(ctx context.Context, name string, audience Audience) ([]byte, error)
}

// Config sets up a Session. Zero limits take the Default values.
type Config struct {
	// Rules are the contract's egress rules; nothing else is allowed.
	Rules []Rule
	// MaxRequests bounds the requests the module may start in the session,
	// allowed or not; redirects followed do not count (MaxRedirects bounds
	// them).
	MaxRequests int
	// MaxRequestBytes bounds one request body.
	MaxRequestBytes int64
	// MaxResponseBytes bounds one response body, after content decoding.
	MaxResponseBytes int64
	// Timeout bounds one request, with all its redirects and its body.
	Timeout time.Duration
	// Secrets fetches secret values; a request whose rule needs a secret
	// fails with FailedPrecondition when it is nil.
	Secrets SecretSource
	// Dialer opens connections; nil means PublicDialer{} (the production
	// dialer). Only tests set it.
	Dialer Dialer
	// RootCAs are the roots TLS servers are verified against; nil means the
	// system roots. Only tests set it.
	RootCAs *x509.CertPool
	// IdempotencyKey, if set, gives the Idempotency-Key header of the n-th
	// request the module makes (n from 1, in the order the module starts
	// them; its redirects carry the same key). It must be deterministic, so
	// that the same call made again sends the same keys. With it, the
	// module may not set Idempotency-Key itself.
	IdempotencyKey func(n int) string
}

// HeaderIdempotencyKey is the header that carries a request's idempotency
// key.
const HeaderIdempotencyKey = "Idempotency-Key"

// Request is one HTTP request of the module.
type Request struct {
	// Method is the HTTP method, any case; empty means GET.
	Method string
	// URL is an absolute http or https URL.
	URL string
	// Header holds the module's headers.
	Header http.Header
	// Body is the request body, if any.
	Body []byte
}

// Response is what the module gets back: the final response after redirects.
type Response struct {
	// Status is the HTTP status code.
	Status int
	// Header holds the response headers.
	Header http.Header
	// Body is the whole response body, at most Config.MaxResponseBytes.
	Body []byte
}

// Record describes one attempt: a request of the module or a redirect hop.
// It never holds a secret value, userinfo, a fragment or query values.
type Record struct {
	// Method is the hop's method.
	Method string `json:"method"`
	// URL is scheme://host[:port]/path?key=&key= with query values removed.
	URL string `json:"url"`
	// Status is the HTTP status, or 0 if no response arrived.
	Status int `json:"status"`
	// Bytes is the number of response body bytes read.
	Bytes int64 `json:"bytes"`
	// Allowed reports whether the hop passed every check and was sent.
	Allowed bool `json:"allowed"`
	// Rule is the index of the rule that matched, or -1.
	Rule int `json:"rule"`
	// Reason says why the hop was refused or failed; empty on success.
	Reason string `json:"reason,omitempty"`
	// Redirect is the hop number: 0 for the module's request, n for the
	// n-th redirect followed.
	Redirect int `json:"redirect"`
}

// Session is the egress of one tool call. It is safe for concurrent use.
type Session struct {
	rules     []compiled
	forbidden map[string]string // header → why a module may not set it
	secrets   SecretSource
	limits    Config
	transport *http.Transport

	mu       sync.Mutex
	started  int
	capNoted bool
	records  []Record
	released [][]byte
}

// NewSession validates cfg and returns a session. An invalid rule or limit is
// an Invalid error.
func NewSession(cfg Config) (*Session, error) {
	if err := fillLimits(&cfg); err != nil {
		return nil, err
	}
	rules, err := compileAll(cfg.Rules)
	if err != nil {
		return nil, err
	}
	s := &Session{rules: rules, secrets: cfg.Secrets, limits: cfg, forbidden: forbiddenFor(rules)}
	if cfg.IdempotencyKey != nil {
		s.forbidden[HeaderIdempotencyKey] = "the host sets it for a job's call"
	}
	d := cfg.Dialer
	if d == nil {
		d = PublicDialer{}
	}
	s.transport = newTransport(d, cfg.RootCAs)
	return s, nil
}

func fillLimits(cfg *Config) error {
	if cfg.MaxRequests < 0 || cfg.MaxRequestBytes < 0 || cfg.MaxResponseBytes < 0 || cfg.Timeout < 0 {
		return errs.E(errs.Invalid, "egress: negative limit")
	}
	if cfg.MaxRequests == 0 {
		cfg.MaxRequests = DefaultMaxRequests
	}
	if cfg.MaxRequestBytes == 0 {
		cfg.MaxRequestBytes = DefaultMaxRequestBytes
	}
	if cfg.MaxResponseBytes == 0 {
		cfg.MaxResponseBytes = DefaultMaxResponseBytes
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = DefaultTimeout
	}
	return nil
}

// forbiddenFor returns the headers a module may not set: the fixed list plus
// every header that any rule injects a secret into.
func forbiddenFor(rules []compiled) map[string]string {
	out := make(map[string]string, len(forbiddenHeaders))
	for k, v := range forbiddenHeaders {
		out[k] = v
	}
	for _, r := range rules {
		for _, s := range r.Secrets {
			out[s.Header] = "the host injects it"
		}
	}
	return out
}

// newTransport returns a transport that dials only through d, never uses a
// proxy (HTTP_PROXY and friends are ignored), keeps no cookies (it has no
// jar) and speaks TLS 1.2 or later. Each session has its own, so no
// connection outlives the tool call or is shared with another one.
func newTransport(d Dialer, roots *x509.CertPool) *http.Transport {
	return &http.Transport{
		Proxy:                  nil,
		DialContext:            d.DialContext,
		TLSClientConfig:        &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: roots},
		ForceAttemptHTTP2:      true,
		TLSHandshakeTimeout:    DefaultTimeout,
		MaxResponseHeaderBytes: 64 << 10,
		MaxIdleConnsPerHost:    2,
		IdleConnTimeout:        30 * time.Second,
	}
}

// Close releases the session's idle connections. Call it when the tool call
// ends.
func (s *Session) Close() { s.transport.CloseIdleConnections() }

// Records returns every attempt so far, in order. Once the request limit is
// hit, only the first refused request is recorded.
func (s *Session) Records() []Record {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.records)
}

// Released returns a copy of every distinct secret value fetched in this
// session, for the output sanitizer to redact.
func (s *Session) Released() [][]byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([][]byte, len(s.released))
	for i, v := range s.released {
		out[i] = bytes.Clone(v)
	}
	return out
}

// record appends r with any released secret scrubbed from its texts.
func (s *Session) record(r Record) {
	s.mu.Lock()
	defer s.mu.Unlock()
	r.URL, r.Reason = s.scrubLocked(r.URL), s.scrubLocked(r.Reason)
	s.records = append(s.records, r)
}

// scrub removes released secret values, in any spelling secretscan sees,
// from text taken from a URL (a server may echo a secret into a redirect
// target, percent-encoded in its path).
func (s *Session) scrub(text string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.scrubLocked(text)
}

func (s *Session) scrubLocked(text string) string {
	if len(s.released) == 0 {
		return text
	}
	return string(secretscan.New(s.released).Redact([]byte(text)))
}
