package egress

import (
	"bytes"
	"context"
	"net/http"
	"strings"

	"github.com/contractual/contractual/internal/errs"
)

// Bounds on the headers a module may send.
const (
	maxHeaderCount = 100
	maxHeaderBytes = 64 << 10
)

// forbiddenHeaders may never be set by a module, nor carry a secret. Each
// maps to the reason given when a module tries.
var forbiddenHeaders = map[string]string{
	"Host":                "the host comes from the URL",
	"Connection":          "hop-by-hop header",
	"Keep-Alive":          "hop-by-hop header",
	"Proxy-Connection":    "hop-by-hop header",
	"Proxy-Authenticate":  "hop-by-hop header",
	"Proxy-Authorization": "hop-by-hop header",
	"Te":                  "hop-by-hop header",
	"Trailer":             "hop-by-hop header",
	"Transfer-Encoding":   "hop-by-hop header",
	"Upgrade":             "hop-by-hop header",
	"Content-Length":      "the host computes the length",
	"Accept-Encoding":     "the host negotiates content coding so that responses can be scanned",
}

// moduleHeader validates the headers a module asked for and returns them
// with canonical names. A forbidden header, or one that any rule of the
// session injects a secret into, is refused rather than silently dropped, so
// that the module learns why its request differs from what it meant.
func (s *Session) moduleHeader(h http.Header) (http.Header, error) {
	out := make(http.Header, len(h))
	n, size := 0, 0
	for k, vs := range h {
		if !validToken(k) {
			return nil, errs.E(errs.Invalid, "invalid header name %.64q", k)
		}
		ck := http.CanonicalHeaderKey(k)
		if why := s.forbidden[ck]; why != "" {
			return nil, errs.E(errs.PermissionDenied, "header %s may not be set by the module: %s", ck, why)
		}
		for _, v := range vs {
			if !validValue(v) {
				return nil, errs.E(errs.Invalid, "invalid value for header %s", ck)
			}
			n, size = n+1, size+len(k)+len(v)
		}
		out[ck] = append(out[ck], vs...)
	}
	if n > maxHeaderCount || size > maxHeaderBytes {
		return nil, errs.E(errs.ResourceExhausted, "request headers exceed %d fields or %d bytes", maxHeaderCount, maxHeaderBytes)
	}
	return out, nil
}

// inject sets the secret headers of rule r for target t on h, fetching each
// secret for the target's audience at this moment. Secret values are kept
// for Released and never appear in an error.
func (s *Session) inject(ctx context.Context, h http.Header, r *compiled, t *target) error {
	if len(r.Secrets) > 0 && s.secrets == nil {
		return errs.E(errs.FailedPrecondition, "rule needs secret %q but no secret source is configured", r.Secrets[0].Name)
	}
	aud := Audience{Scheme: t.scheme, Host: t.host}
	for _, spec := range r.Secrets {
		v, err := s.secrets.Secret(ctx, spec.Name, aud)
		if err != nil {
			return errs.Wrap(errs.KindOf(err), err, "secret %q for %s", spec.Name, aud)
		}
		s.release(v)
		format := spec.Format
		if format == "" {
			format = Placeholder
		}
		value := strings.Replace(format, Placeholder, string(v), 1)
		if len(v) == 0 || !validValue(value) {
			return errs.E(errs.FailedPrecondition, "secret %q for %s is empty or not a valid header value", spec.Name, aud)
		}
		h.Set(spec.Header, value)
	}
	return nil
}

// validToken reports whether s is an RFC 9110 token (a header name).
func validToken(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' ||
			strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0) {
			return false
		}
	}
	return true
}

// validValue reports whether s is a header value without control characters
// (tab allowed), so that nothing can be smuggled into another header.
func validValue(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 && c != '\t' || c == 0x7f {
			return false
		}
	}
	return true
}

// release keeps v for Released, once.
func (s *Session) release(v []byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, r := range s.released {
		if bytes.Equal(r, v) {
			return
		}
	}
	if len(v) > 0 {
		s.released = append(s.released, bytes.Clone(v))
	}
}
