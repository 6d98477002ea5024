package egress

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"

	"github.com/contractual/contractual/internal/errs"
	"github.com/contractual/contractual/runtime/secretscan"
)

// hop is one request on the wire: the module's request or a redirect.
type hop struct {
	method string
	t      *target
	header http.Header // the module's headers; secrets are added per send
	body   []byte
	n      int // 0 for the module's request, n for the n-th redirect
}

// Do checks req against the session's rules and limits, sends it, follows
// redirects (each one checked again) and returns the final response. A
// refused request is a PermissionDenied error; a malformed one is Invalid;
// a limit is ResourceExhausted; a timeout is DeadlineExceeded; a network
// failure is Unavailable. Every attempt is recorded, whatever the outcome.
func (s *Session) Do(ctx context.Context, req Request) (*Response, error) {
	n, err := s.admit(req)
	if err != nil {
		return nil, err
	}
	h, err := s.prepare(req)
	if err == nil && s.limits.IdempotencyKey != nil {
		err = s.idempotent(h, n)
	}
	if err != nil {
		s.record(Record{Method: recordMethod(req.Method), URL: redactRaw(req.URL), Rule: -1, Reason: err.Error()})
		return nil, errs.E(errs.KindOf(err), "egress: %s %s: %w", recordMethod(req.Method), s.scrub(redactRaw(req.URL)), err)
	}
	ctx, cancel := context.WithTimeout(ctx, s.limits.Timeout)
	defer cancel()
	return s.follow(ctx, h)
}

// admit counts req against MaxRequests and returns its sequence number,
// from 1.
func (s *Session) admit(req Request) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.started < s.limits.MaxRequests {
		s.started++
		return s.started, nil
	}
	err := errs.E(errs.ResourceExhausted, "egress: limit of %d requests per call reached", s.limits.MaxRequests)
	if !s.capNoted {
		s.capNoted = true
		s.records = append(s.records, Record{Method: recordMethod(req.Method), URL: s.scrubLocked(redactRaw(req.URL)), Rule: -1, Reason: err.Error()})
	}
	return 0, err
}

// idempotent sets the Idempotency-Key of the n-th request on h: the
// module's headers, which every hop of the request carries.
func (s *Session) idempotent(h *hop, n int) error {
	key := s.limits.IdempotencyKey(n)
	if key == "" || !validValue(key) {
		return errs.E(errs.Internal, "egress: idempotency key of request %d is empty or not a valid header value", n)
	}
	h.header.Set(HeaderIdempotencyKey, key)
	return nil
}

// prepare checks everything about req that does not depend on the rules.
func (s *Session) prepare(req Request) (*hop, error) {
	method, err := parseMethod(req.Method)
	if err != nil {
		return nil, err
	}
	t, err := parseTarget(req.URL)
	if err != nil {
		return nil, err
	}
	if int64(len(req.Body)) > s.limits.MaxRequestBytes {
		return nil, errs.E(errs.ResourceExhausted, "request body exceeds %d bytes", s.limits.MaxRequestBytes)
	}
	header, err := s.moduleHeader(req.Header)
	if err != nil {
		return nil, err
	}
	return &hop{method: method, t: t, header: header, body: bytes.Clone(req.Body)}, nil
}

func parseMethod(m string) (string, error) {
	if m == "" {
		return "GET", nil
	}
	up := strings.ToUpper(m)
	if !slices.Contains(allMethods, up) {
		return "", errs.E(errs.Invalid, "method %.20q not supported", m)
	}
	return up, nil
}

// recordMethod renders a method the module asked for, even a bad one.
func recordMethod(m string) string {
	if up, err := parseMethod(m); err == nil {
		return up
	}
	return "(invalid)"
}

// follow sends h and the redirects that follow it.
func (s *Session) follow(ctx context.Context, h *hop) (*Response, error) {
	for {
		ri, why := match(s.rules, h.method, h.t)
		if ri < 0 {
			return nil, s.fail(h, Record{Rule: -1}, errs.PermissionDenied, errors.New(s.scrub(why)))
		}
		req, err := s.build(ctx, h, &s.rules[ri])
		if err != nil {
			return nil, s.fail(h, Record{Rule: ri}, errs.KindOf(err), err)
		}
		resp, err := s.transport.RoundTrip(req)
		if err != nil {
			kind := classify(ctx, err)
			rec := Record{Rule: ri, Allowed: kind != errs.PermissionDenied}
			return nil, s.fail(h, rec, kind, err)
		}
		if !isRedirect(resp) {
			return s.finish(ctx, h, ri, resp)
		}
		discard(resp)
		s.record(Record{Method: h.method, URL: redact(h.t.u), Status: resp.StatusCode, Allowed: true, Rule: ri, Redirect: h.n})
		if h, err = s.next(h, resp); err != nil {
			return nil, err
		}
	}
}

// build makes the request for h with the secrets of rule r for h's audience.
func (s *Session) build(ctx context.Context, h *hop, r *compiled) (*http.Request, error) {
	var body io.Reader = http.NoBody
	if len(h.body) > 0 {
		body = bytes.NewReader(h.body)
	}
	req, err := http.NewRequestWithContext(ctx, h.method, h.t.u.String(), body)
	if err != nil {
		return nil, errs.E(errs.Invalid, "cannot build request: %v", err)
	}
	req.Header = h.header.Clone()
	if err := s.inject(ctx, req.Header, r, h.t); err != nil {
		return nil, err
	}
	if err := s.guard(ctx, h); err != nil {
		return nil, err
	}
	return req, nil
}

// guard blocks a hop whose module-made parts (URL, the module's headers,
// body) carry, in any common spelling, a secret released to this call: a
// module that got a secret echoed back must not send it anywhere, not even
// to the audience it was released for, outside the header it is injected
// into.
func (s *Session) guard(ctx context.Context, h *hop) error {
	s.mu.Lock()
	set := secretscan.New(s.released)
	s.mu.Unlock()
	if set.Empty() {
		return nil
	}
	where := ""
	switch {
	case set.ContainsContext(ctx, []byte(h.t.u.String())):
		where = "its URL"
	case set.ContainsContext(ctx, h.body):
		where = "its body"
	default:
		for name, values := range h.header {
			if set.ContainsContext(ctx, []byte(name)) || set.ContainsContext(ctx, []byte(strings.Join(values, "\n"))) {
				where = "header " + name
				break
			}
		}
	}
	switch {
	case where == "":
		return nil
	case ctx.Err() != nil:
		// The scan stopped early and failed closed: say why.
		return errs.Wrap(classify(ctx, ctx.Err()), ctx.Err(), "egress: the call ended while its request was scanned for secrets")
	}
	return errs.E(errs.PermissionDenied, "blocked: %s carries a secret released to this call", where)
}

// fail records a hop that was refused or failed and returns its error.
func (s *Session) fail(h *hop, rec Record, kind errs.Kind, cause error) error {
	rec.Method, rec.URL, rec.Redirect, rec.Reason = h.method, redact(h.t.u), h.n, cause.Error()
	s.record(rec)
	return errs.E(kind, "egress: %s: %w", s.describe(h), cause)
}

// describe names a hop for an error message.
func (s *Session) describe(h *hop) string {
	d := h.method + " " + s.scrub(redact(h.t.u))
	if h.n > 0 {
		d = fmt.Sprintf("redirect %d to %s", h.n, d)
	}
	return d
}

// classify maps a transport error to an error kind.
func classify(ctx context.Context, err error) errs.Kind {
	switch {
	case errs.KindOf(err) == errs.PermissionDenied:
		return errs.PermissionDenied
	case errors.Is(ctx.Err(), context.DeadlineExceeded), errors.Is(err, context.DeadlineExceeded):
		return errs.DeadlineExceeded
	}
	return errs.Unavailable
}

// isRedirect reports whether resp is a redirect this package follows; other
// 3xx responses (300, 304, a redirect without Location) go to the module.
func isRedirect(resp *http.Response) bool {
	switch resp.StatusCode {
	case 301, 302, 303, 307, 308:
		return resp.Header.Get("Location") != ""
	}
	return false
}

// next returns the hop that resp redirects h to. As in net/http, 301, 302
// and 303 turn any method but GET and HEAD into a GET without a body; 307
// and 308 keep method and body. The module's headers go along; secrets are
// never carried, but computed again for the new hop's rule and audience.
func (s *Session) next(h *hop, resp *http.Response) (*hop, error) {
	n := &hop{method: h.method, header: h.header, body: h.body, n: h.n + 1}
	if n.n > MaxRedirects {
		return nil, errs.E(errs.ResourceExhausted, "egress: %s: more than %d redirects", s.describe(h), MaxRedirects)
	}
	loc, err := h.t.u.Parse(resp.Header.Get("Location"))
	if err == nil {
		n.t, err = parseTarget(loc.String())
	}
	if err != nil {
		target := "(malformed Location)"
		if loc != nil {
			target = redactRaw(loc.String())
		}
		s.record(Record{Method: n.method, URL: target, Rule: -1, Reason: err.Error(), Redirect: n.n})
		return nil, errs.E(errs.PermissionDenied, "egress: redirect %d to %s: %s", n.n, s.scrub(target), s.scrub(err.Error()))
	}
	if resp.StatusCode <= 303 && n.method != "GET" && n.method != "HEAD" {
		n.method, n.body = "GET", nil
		n.header = h.header.Clone()
		n.header.Del("Content-Type")
	}
	return n, nil
}

// finish reads the final response, at most MaxResponseBytes of it.
func (s *Session) finish(ctx context.Context, h *hop, ri int, resp *http.Response) (*Response, error) {
	defer resp.Body.Close()
	rec := Record{Status: resp.StatusCode, Allowed: true, Rule: ri}
	body, err := s.readBody(resp)
	rec.Bytes = int64(len(body))
	if err != nil {
		kind := errs.KindOf(err)
		if kind != errs.ResourceExhausted {
			kind = classify(ctx, err)
		}
		return nil, s.fail(h, rec, kind, err)
	}
	rec.Method, rec.URL, rec.Redirect = h.method, redact(h.t.u), h.n
	s.record(rec)
	return &Response{Status: resp.StatusCode, Header: resp.Header.Clone(), Body: body}, nil
}

// readBody reads the body, failing rather than truncating when it is larger
// than the limit.
func (s *Session) readBody(resp *http.Response) ([]byte, error) {
	max := s.limits.MaxResponseBytes
	if resp.ContentLength > max {
		return nil, errs.E(errs.ResourceExhausted, "response body of %d bytes exceeds the limit of %d bytes", resp.ContentLength, max)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, max+1))
	if err != nil {
		return body, fmt.Errorf("reading response body: %w", err)
	}
	if int64(len(body)) > max {
		return body, errs.E(errs.ResourceExhausted, "response body exceeds the limit of %d bytes", max)
	}
	return body, nil
}

// discard drains a little of a redirect's body, so the connection can be
// reused, and closes it.
func discard(resp *http.Response) {
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 4<<10))
	resp.Body.Close()
}
