package egress_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/contractual/contractual/internal/errs"
	"github.com/contractual/contractual/runtime/egress"
	"github.com/contractual/contractual/runtime/egress/egresstest"
)

// world is a fake internet: named TLS (and plain) servers behind an
// egresstest dialer, and a log of what reached them.
type world struct {
	t      *testing.T
	dialer *egresstest.Dialer
	cfg    egress.Config

	mu   sync.Mutex
	hits []*http.Request // clones of the requests that reached a server
	body map[*http.Request][]byte
}

// newWorld starts one TLS server answering for api.example.com and
// other.example.com on 443, and one plain server answering for
// plain.example.com on 80, all with handler h.
func newWorld(t *testing.T, h http.HandlerFunc) *world {
	t.Helper()
	w := &world{t: t, body: map[*http.Request][]byte{}}
	logging := http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		r.Body = io.NopCloser(bytes.NewReader(b))
		c := r.Clone(context.Background())
		w.mu.Lock()
		w.hits = append(w.hits, c)
		w.body[c] = b
		w.mu.Unlock()
		h(rw, r)
	})
	tlsSrv := httptest.NewTLSServer(logging)
	plain := httptest.NewServer(logging)
	t.Cleanup(tlsSrv.Close)
	t.Cleanup(plain.Close)
	var roots = map[string]*httptest.Server{
		"api.example.com":   tlsSrv,
		"other.example.com": tlsSrv,
		"plain.example.com": plain,
	}
	d, pool := egresstest.New(roots)
	w.dialer = d
	w.cfg = egress.Config{Dialer: d, RootCAs: pool}
	return w
}

// session makes a session with the world's dialer and the given rules.
func (w *world) session(rules ...egress.Rule) *egress.Session {
	cfg := w.cfg
	cfg.Rules = rules
	return w.sessionCfg(cfg)
}

func (w *world) sessionCfg(cfg egress.Config) *egress.Session {
	w.t.Helper()
	if cfg.Dialer == nil {
		cfg.Dialer, cfg.RootCAs = w.cfg.Dialer, w.cfg.RootCAs
	}
	s, err := egress.NewSession(cfg)
	if err != nil {
		w.t.Fatal(err)
	}
	w.t.Cleanup(s.Close)
	return s
}

func (w *world) requests() []*http.Request {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]*http.Request(nil), w.hits...)
}

func (w *world) bodyOf(r *http.Request) []byte {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.body[r]
}

// fakeSecrets hands out fixed values and logs every release.
type fakeSecrets struct {
	mu     sync.Mutex
	values map[string]string
	err    error
	calls  []string
}

func (f *fakeSecrets) Secret(_ context.Context, name string, aud egress.Audience) ([]byte, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, name+"@"+aud.String())
	if f.err != nil {
		return nil, f.err
	}
	v, ok := f.values[name]
	if !ok {
		return nil, errs.E(errs.NotFound, "no secret %q", name)
	}
	return []byte(v), nil
}

func ok(rw http.ResponseWriter, r *http.Request) {
	rw.Header().Set("X-Served", r.Host+r.URL.Path)
	fmt.Fprintf(rw, "%s %s", r.Method, r.URL.Path)
}

var apiV1 = egress.Rule{Scheme: "https", Host: "api.example.com", PathPrefix: "/v1/"}

func TestDoAllowed(t *testing.T) {
	w := newWorld(t, ok)
	s := w.session(apiV1)
	resp, err := s.Do(context.Background(), egress.Request{URL: "https://API.example.com./v1/items?q=secret-query#frag"})
	if err != nil {
		t.Fatal(err)
	}
	if resp.Status != 200 || string(resp.Body) != "GET /v1/items" || resp.Header.Get("X-Served") != "api.example.com/v1/items" {
		t.Fatalf("response = %d %q %v", resp.Status, resp.Body, resp.Header)
	}
	got := w.requests()
	if len(got) != 1 || got[0].URL.RawQuery != "q=secret-query" || got[0].Host != "api.example.com" {
		t.Fatalf("server saw %v", got)
	}
	want := []egress.Record{{Method: "GET", URL: "https://api.example.com/v1/items?q=", Status: 200, Bytes: 13, Allowed: true, Rule: 0}}
	if recs := s.Records(); fmt.Sprint(recs) != fmt.Sprint(want) {
		t.Fatalf("records = %+v, want %+v", recs, want)
	}
	if d := w.dialer.Dialed(); len(d) != 1 || d[0] != "api.example.com:443" {
		t.Fatalf("dialled %v", d)
	}
}

func TestDoMethods(t *testing.T) {
	w := newWorld(t, ok)
	s := w.session(egress.Rule{Scheme: "https", Host: "api.example.com", Methods: []string{"post", "HEAD"}})
	for _, m := range []string{"post", "POST", "head"} {
		resp, err := s.Do(context.Background(), egress.Request{Method: m, URL: "https://api.example.com/x", Body: []byte("b")})
		if err != nil || resp.Status != 200 {
			t.Fatalf("%s: %v", m, err)
		}
	}
	for _, m := range []string{"", "GET", "DELETE", "CONNECT", "TRACE", "G\nET"} {
		_, err := s.Do(context.Background(), egress.Request{Method: m, URL: "https://api.example.com/x"})
		if err == nil {
			t.Fatalf("%q allowed", m)
		}
	}
}

func TestDoRefused(t *testing.T) {
	rules := []egress.Rule{
		apiV1,
		{Scheme: "http", Host: "plain.example.com"},
	}
	tests := []struct {
		name   string
		req    egress.Request
		kind   errs.Kind
		reason string
	}{
		{"other host", egress.Request{URL: "https://evil.example.com/v1/x"}, errs.PermissionDenied, "host evil.example.com not allowed"},
		{"suffix trick", egress.Request{URL: "https://api.example.com.evil.example/v1/x"}, errs.PermissionDenied, "host"},
		{"path outside prefix", egress.Request{URL: "https://api.example.com/admin"}, errs.PermissionDenied, "path /admin not allowed"},
		{"dot-dot escape", egress.Request{URL: "https://api.example.com/v1/../admin"}, errs.PermissionDenied, "dot segment"},
		{"encoded escape", egress.Request{URL: "https://api.example.com/v1/%2e%2e/admin"}, errs.PermissionDenied, "encoded"},
		{"encoded slash", egress.Request{URL: "https://api.example.com/v1%2f..%2fadmin"}, errs.PermissionDenied, "encoded"},
		{"prefix without slash", egress.Request{URL: "https://api.example.com/v1x"}, errs.PermissionDenied, "path"},
		{"wrong scheme", egress.Request{URL: "http://api.example.com/v1/x"}, errs.PermissionDenied, "scheme http"},
		{"wrong port", egress.Request{URL: "https://api.example.com:8443/v1/x"}, errs.PermissionDenied, "port 8443"},
		{"wrong method", egress.Request{Method: "DELETE", URL: "https://api.example.com/v1/x"}, errs.PermissionDenied, "method DELETE"},
		{"userinfo", egress.Request{URL: "https://user:pw@api.example.com/v1/x"}, errs.PermissionDenied, "userinfo"},
		{"file scheme", egress.Request{URL: "file:///etc/passwd"}, errs.PermissionDenied, "scheme"},
		{"relative", egress.Request{URL: "/v1/x"}, errs.PermissionDenied, "scheme"},
		{"loopback literal", egress.Request{URL: "http://127.0.0.1/"}, errs.PermissionDenied, "loopback"},
		{"decimal IPv4", egress.Request{URL: "http://2130706433/"}, errs.PermissionDenied, "non-canonical"},
		{"hex IPv4", egress.Request{URL: "http://0x7f000001/"}, errs.PermissionDenied, "non-canonical"},
		{"octal IPv4", egress.Request{URL: "http://017700000001/"}, errs.PermissionDenied, "non-canonical"},
		{"short IPv4", egress.Request{URL: "http://127.1/"}, errs.PermissionDenied, "non-canonical"},
		{"octal dotted", egress.Request{URL: "http://0177.0.0.1/"}, errs.PermissionDenied, "non-canonical"},
		{"mapped dotted", egress.Request{URL: "http://[::ffff:127.0.0.1]/"}, errs.PermissionDenied, "IPv4-mapped"},
		{"mapped hex", egress.Request{URL: "http://[::ffff:7f00:1]/"}, errs.PermissionDenied, "IPv4-mapped"},
		{"metadata IP", egress.Request{URL: "http://169.254.169.254/latest/meta-data/"}, errs.PermissionDenied, "metadata"},
		{"metadata name", egress.Request{URL: "http://metadata.google.internal/computeMetadata/v1/"}, errs.PermissionDenied, "internal"},
		{"public literal, no rule", egress.Request{URL: "http://8.8.8.8/"}, errs.PermissionDenied, "host 8.8.8.8 not allowed"},
		{"malformed", egress.Request{URL: "https://api.example.com/%zz"}, errs.Invalid, "malformed"},
		{"bad method", egress.Request{Method: "TRACE", URL: "https://api.example.com/v1/x"}, errs.Invalid, "method"},
		{"Host header", egress.Request{URL: "https://api.example.com/v1/x", Header: http.Header{"Host": {"evil.example.com"}}}, errs.PermissionDenied, "Host may not be set"},
		{"hop-by-hop header", egress.Request{URL: "https://api.example.com/v1/x", Header: http.Header{"connection": {"close"}}}, errs.PermissionDenied, "Connection"},
		{"transfer-encoding", egress.Request{URL: "https://api.example.com/v1/x", Header: http.Header{"Transfer-Encoding": {"chunked"}}}, errs.PermissionDenied, "Transfer-Encoding"},
		{"content-length", egress.Request{URL: "https://api.example.com/v1/x", Header: http.Header{"Content-Length": {"5"}}}, errs.PermissionDenied, "Content-Length"},
		{"accept-encoding", egress.Request{URL: "https://api.example.com/v1/x", Header: http.Header{"Accept-Encoding": {"br"}}}, errs.PermissionDenied, "Accept-Encoding"},
		{"header injection", egress.Request{URL: "https://api.example.com/v1/x", Header: http.Header{"X-A": {"1\r\nX-B: 2"}}}, errs.Invalid, "invalid value"},
		{"bad header name", egress.Request{URL: "https://api.example.com/v1/x", Header: http.Header{"X A": {"1"}}}, errs.Invalid, "invalid header name"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := newWorld(t, ok)
			s := w.session(rules...)
			_, err := s.Do(context.Background(), tt.req)
			if errs.KindOf(err) != tt.kind || !strings.Contains(err.Error(), tt.reason) {
				t.Fatalf("Do = %v, want a %v error mentioning %q", err, tt.kind, tt.reason)
			}
			recs := s.Records()
			if len(recs) != 1 || recs[0].Allowed || !strings.Contains(recs[0].Reason, tt.reason) {
				t.Fatalf("records = %+v", recs)
			}
			if len(w.requests()) != 0 || len(w.dialer.Dialed()) != 0 {
				t.Fatalf("refused request reached the network: %v", w.dialer.Dialed())
			}
		})
	}
}

func TestRecordsRedactURL(t *testing.T) {
	w := newWorld(t, ok)
	s := w.session(apiV1)
	for _, u := range []string{
		"https://api.example.com/v1/x?token=abc&flag&b=2#frag",
		"https://user:pw@api.example.com/v1/x?token=abc",
		"https://evil.example.com/v1/?token=abc",
	} {
		_, _ = s.Do(context.Background(), egress.Request{URL: u})
	}
	want := []string{
		"https://api.example.com/v1/x?token=&flag=&b=",
		"https://api.example.com/v1/x?token=",
		"https://evil.example.com/v1/?token=",
	}
	recs := s.Records()
	for i, r := range recs {
		if r.URL != want[i] {
			t.Errorf("record %d URL = %q, want %q", i, r.URL, want[i])
		}
		if strings.Contains(fmt.Sprint(r), "abc") || strings.Contains(fmt.Sprint(r), "pw") {
			t.Errorf("record %d leaks: %+v", i, r)
		}
	}
}

// redirector serves redirects described in the path: /r/<code>/<escaped
// location>, and echoes everything else.
func redirector(rw http.ResponseWriter, r *http.Request) {
	if rest, found := strings.CutPrefix(r.URL.Path, "/v1/r/"); found {
		code, loc, _ := strings.Cut(rest, "/")
		var n int
		fmt.Sscan(code, &n)
		rw.Header().Set("Location", strings.ReplaceAll(loc, "!", "/"))
		rw.Header().Set("Set-Cookie", "session=abc")
		rw.WriteHeader(n)
		return
	}
	if r.URL.Path == "/v1/loop" {
		http.Redirect(rw, r, "/v1/loop", http.StatusFound)
		return
	}
	ok(rw, r)
}

func TestRedirects(t *testing.T) {
	rules := []egress.Rule{
		0: {Scheme: "https", Host: "api.example.com", PathPrefix: "/v1/", Methods: []string{"GET", "POST"}},
		1: {Scheme: "https", Host: "other.example.com", PathPrefix: "/v1/", Methods: []string{"POST"}},
		2: {Scheme: "http", Host: "plain.example.com"},
	}
	type hop struct {
		method, url string
		status      int
		allowed     bool
		rule        int
	}
	tests := []struct {
		name   string
		method string
		url    string
		kind   errs.Kind // 0: success
		errHas string
		hops   []hop
		final  string // body of the final response
	}{
		{
			name: "relative same host", url: "https://api.example.com/v1/r/302/!v1!done",
			hops: []hop{
				{"GET", "https://api.example.com/v1/r/302/!v1!done", 302, true, 0},
				{"GET", "https://api.example.com/v1/done", 200, true, 0},
			},
			final: "GET /v1/done",
		},
		{
			name: "absolute to plain host", url: "https://api.example.com/v1/r/301/http:!!plain.example.com!x",
			hops: []hop{
				{"GET", "https://api.example.com/v1/r/301/http:!!plain.example.com!x", 301, true, 0},
				{"GET", "http://plain.example.com/x", 200, true, 2},
			},
			final: "GET /x",
		},
		{
			name: "disallowed host", url: "https://api.example.com/v1/r/302/https:!!evil.example.com!steal%3Ftoken=abc",
			kind: errs.PermissionDenied, errHas: "redirect 1 to GET https://evil.example.com/steal?token=: host evil.example.com not allowed",
			hops: []hop{
				{"GET", "https://api.example.com/v1/r/302/https:!!evil.example.com!steal%3Ftoken=abc", 302, true, 0},
				{"GET", "https://evil.example.com/steal?token=", 0, false, -1},
			},
		},
		{
			name: "to loopback literal", url: "https://api.example.com/v1/r/307/http:!!127.0.0.1:8080!",
			kind: errs.PermissionDenied, errHas: "loopback",
			hops: []hop{
				{"GET", "https://api.example.com/v1/r/307/http:!!127.0.0.1:8080!", 307, true, 0},
				{"GET", "http://127.0.0.1:8080/", 0, false, -1},
			},
		},
		{
			name: "to metadata", url: "https://api.example.com/v1/r/302/http:!!169.254.169.254!latest",
			kind: errs.PermissionDenied, errHas: "metadata",
		},
		{
			name: "to odd notation", url: "https://api.example.com/v1/r/302/http:!!0x7f000001!",
			kind: errs.PermissionDenied, errHas: "non-canonical",
		},
		{
			name: "to mapped IPv6", url: "https://api.example.com/v1/r/302/http:!![::ffff:7f00:1]!",
			kind: errs.PermissionDenied, errHas: "IPv4-mapped",
		},
		{
			name: "out of prefix", url: "https://api.example.com/v1/r/302/!admin",
			kind: errs.PermissionDenied, errHas: "path /admin not allowed",
		},
		{
			// Location is resolved (RFC 3986 removes the dot segments), then checked.
			name: "dot segments", url: "https://api.example.com/v1/r/302/!v1!..!admin",
			kind: errs.PermissionDenied, errHas: "path /admin not allowed",
		},
		{
			name: "userinfo", url: "https://api.example.com/v1/r/302/https:!!u:p@api.example.com!v1!x",
			kind: errs.PermissionDenied, errHas: "userinfo",
		},
		{
			name: "scheme downgrade", url: "https://api.example.com/v1/r/302/http:!!api.example.com!v1!x",
			kind: errs.PermissionDenied, errHas: "scheme http not allowed",
		},
		{
			name: "303 turns POST into GET, which rule 1 refuses", method: "POST",
			url:  "https://api.example.com/v1/r/303/https:!!other.example.com!v1!x",
			kind: errs.PermissionDenied, errHas: "method GET not allowed",
			hops: []hop{
				{"POST", "https://api.example.com/v1/r/303/https:!!other.example.com!v1!x", 303, true, 0},
				{"GET", "https://other.example.com/v1/x", 0, false, -1},
			},
		},
		{
			name: "302 turns POST into GET", method: "POST", url: "https://api.example.com/v1/r/302/!v1!x",
			hops: []hop{
				{"POST", "https://api.example.com/v1/r/302/!v1!x", 302, true, 0},
				{"GET", "https://api.example.com/v1/x", 200, true, 0},
			},
			final: "GET /v1/x",
		},
		{
			name: "307 keeps POST", method: "POST", url: "https://api.example.com/v1/r/307/https:!!other.example.com!v1!x",
			hops: []hop{
				{"POST", "https://api.example.com/v1/r/307/https:!!other.example.com!v1!x", 307, true, 0},
				{"POST", "https://other.example.com/v1/x", 200, true, 1},
			},
			final: "POST /v1/x",
		},
		{
			name: "too many", url: "https://api.example.com/v1/loop",
			kind: errs.ResourceExhausted, errHas: "more than 5 redirects",
		},
		{
			name: "300 is not followed", url: "https://api.example.com/v1/r/300/!v1!x",
			hops:  []hop{{"GET", "https://api.example.com/v1/r/300/!v1!x", 300, true, 0}},
			final: "",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := newWorld(t, redirector)
			s := w.session(rules...)
			resp, err := s.Do(context.Background(), egress.Request{Method: tt.method, URL: tt.url, Body: []byte("payload")})
			if tt.kind == 0 {
				if err != nil {
					t.Fatal(err)
				}
				if string(resp.Body) != tt.final {
					t.Fatalf("final body %q, want %q", resp.Body, tt.final)
				}
			} else if errs.KindOf(err) != tt.kind || !strings.Contains(err.Error(), tt.errHas) {
				t.Fatalf("Do = %v, want a %v error mentioning %q", err, tt.kind, tt.errHas)
			}
			recs := s.Records()
			if tt.hops != nil && len(recs) != len(tt.hops) {
				t.Fatalf("records = %+v, want %d hops", recs, len(tt.hops))
			}
			for i, h := range tt.hops {
				r := recs[i]
				if r.Method != h.method || r.URL != h.url || r.Status != h.status || r.Allowed != h.allowed || r.Rule != h.rule || r.Redirect != i {
					t.Errorf("record %d = %+v, want %+v", i, r, h)
				}
			}
			for _, r := range w.requests() {
				if r.Header.Get("Cookie") != "" {
					t.Errorf("cookie carried: %v", r.Header)
				}
			}
		})
	}
}

func TestRedirectLimitRecords(t *testing.T) {
	w := newWorld(t, redirector)
	s := w.session(apiV1)
	_, err := s.Do(context.Background(), egress.Request{URL: "https://api.example.com/v1/loop"})
	if !errs.Is(err, errs.ResourceExhausted) {
		t.Fatal(err)
	}
	recs := s.Records()
	if len(recs) != egress.MaxRedirects+1 || len(w.requests()) != egress.MaxRedirects+1 {
		t.Fatalf("%d records, %d requests; want %d each", len(recs), len(w.requests()), egress.MaxRedirects+1)
	}
	for i, r := range recs {
		if r.Redirect != i || r.Status != 302 {
			t.Errorf("record %d = %+v", i, r)
		}
	}
}

func TestRedirectBodySemantics(t *testing.T) {
	w := newWorld(t, redirector)
	s := w.session(egress.Rule{Scheme: "https", Host: "*.example.com", Methods: []string{"GET", "POST", "PUT"}})
	for _, tt := range []struct {
		method, code, wantMethod, wantBody string
	}{
		{"POST", "301", "GET", ""},
		{"POST", "302", "GET", ""},
		{"PUT", "303", "GET", ""},
		{"POST", "307", "POST", "payload"},
		{"PUT", "308", "PUT", "payload"},
	} {
		before := len(w.requests())
		_, err := s.Do(context.Background(), egress.Request{
			Method: tt.method, URL: "https://api.example.com/v1/r/" + tt.code + "/!v1!x",
			Header: http.Header{"Content-Type": {"text/plain"}}, Body: []byte("payload"),
		})
		if err != nil {
			t.Fatal(err)
		}
		got := w.requests()[before+1]
		if got.Method != tt.wantMethod || string(w.bodyOf(got)) != tt.wantBody {
			t.Errorf("%s after %s: server saw %s %q, want %s %q", tt.method, tt.code, got.Method, w.bodyOf(got), tt.wantMethod, tt.wantBody)
		}
		if tt.wantBody == "" && got.Header.Get("Content-Type") != "" {
			t.Errorf("%s after %s: Content-Type kept without a body", tt.method, tt.code)
		}
	}
}

func TestSecretInjection(t *testing.T) {
	const key, other = "s3cr3t-api-key", "0th3r-t0k3n"
	rules := []egress.Rule{
		0: {Scheme: "https", Host: "api.example.com", PathPrefix: "/v1/", Secrets: []egress.SecretSpec{{Name: "api", Header: "authorization", Format: "Bearer {{secret}}"}}},
		1: {Scheme: "https", Host: "other.example.com", Secrets: []egress.SecretSpec{{Name: "other", Header: "X-Api-Key"}}},
		2: {Scheme: "http", Host: "plain.example.com"},
	}
	src := &fakeSecrets{values: map[string]string{"api": key, "other": other}}
	w := newWorld(t, redirector)
	cfg := w.cfg
	cfg.Rules, cfg.Secrets = rules, src
	s := w.sessionCfg(cfg)

	// Direct request: the secret is injected for rule 0's audience.
	if _, err := s.Do(context.Background(), egress.Request{URL: "https://api.example.com/v1/x"}); err != nil {
		t.Fatal(err)
	}
	// Redirect chain api → other → plain: each hop gets its own secrets only.
	_, err := s.Do(context.Background(), egress.Request{
		URL: "https://api.example.com/v1/r/302/https:!!other.example.com!v1!r!302!http:!!plain.example.com!end",
	})
	if err != nil {
		t.Fatal(err)
	}
	reqs := w.requests()
	want := []struct{ host, auth, apiKey string }{
		{"api.example.com", "Bearer " + key, ""},
		{"api.example.com", "Bearer " + key, ""},
		{"other.example.com", "", other},
		{"plain.example.com", "", ""},
	}
	if len(reqs) != len(want) {
		t.Fatalf("%d requests, want %d", len(reqs), len(want))
	}
	for i, r := range reqs {
		if r.Host != want[i].host || r.Header.Get("Authorization") != want[i].auth || r.Header.Get("X-Api-Key") != want[i].apiKey {
			t.Errorf("request %d to %s: Authorization=%q X-Api-Key=%q; want %+v", i, r.Host, r.Header.Get("Authorization"), r.Header.Get("X-Api-Key"), want[i])
		}
	}
	calls := strings.Join(src.calls, " ")
	if calls != "api@https://api.example.com api@https://api.example.com other@https://other.example.com" {
		t.Errorf("secret calls = %s", calls)
	}
	released := s.Released()
	if len(released) != 2 || string(released[0]) != key || string(released[1]) != other {
		t.Errorf("Released = %q", released)
	}
	released[0][0] = 'X' // a copy: the caller cannot change the session's
	if string(s.Released()[0]) != key {
		t.Error("Released returned the session's own slice")
	}
	for _, r := range s.Records() {
		if strings.Contains(fmt.Sprint(r), key) || strings.Contains(fmt.Sprint(r), other) {
			t.Errorf("record leaks a secret: %+v", r)
		}
	}
}

func TestSecretHeadersRefusedFromModule(t *testing.T) {
	rules := []egress.Rule{
		{Scheme: "https", Host: "api.example.com", Secrets: []egress.SecretSpec{{Name: "api", Header: "Authorization"}}},
		{Scheme: "https", Host: "other.example.com", Secrets: []egress.SecretSpec{{Name: "other", Header: "X-Api-Key"}}},
	}
	src := &fakeSecrets{values: map[string]string{"api": "k1", "other": "k2"}}
	for _, tt := range []struct{ url, header string }{
		{"https://api.example.com/", "authorization"},
		{"https://api.example.com/", "x-api-key"}, // injected by another rule
		{"https://other.example.com/", "Authorization"},
	} {
		w := newWorld(t, ok)
		cfg := w.cfg
		cfg.Rules, cfg.Secrets = rules, src
		s := w.sessionCfg(cfg)
		_, err := s.Do(context.Background(), egress.Request{URL: tt.url, Header: http.Header{tt.header: {"module-value"}}})
		if !errs.Is(err, errs.PermissionDenied) || !strings.Contains(err.Error(), "injects it") {
			t.Errorf("%s with %s: %v, want PermissionDenied", tt.url, tt.header, err)
		}
		if len(w.requests()) != 0 {
			t.Errorf("%s with %s reached the server", tt.url, tt.header)
		}
	}
}

func TestSecretFailures(t *testing.T) {
	rule := egress.Rule{Scheme: "https", Host: "api.example.com", Secrets: []egress.SecretSpec{{Name: "api", Header: "Authorization", Format: "Bearer {{secret}}"}}}
	tests := []struct {
		name string
		src  egress.SecretSource
		kind errs.Kind
		has  string
	}{
		{"no source", nil, errs.FailedPrecondition, "no secret source"},
		{"unknown secret", &fakeSecrets{values: map[string]string{}}, errs.NotFound, `secret "api" for https://api.example.com`},
		{"source fails", &fakeSecrets{err: errs.E(errs.PermissionDenied, "handle expired")}, errs.PermissionDenied, "handle expired"},
		{"newline in value", &fakeSecrets{values: map[string]string{"api": "abc\r\nX-Evil: 1"}}, errs.FailedPrecondition, "not a valid header value"},
		{"empty value", &fakeSecrets{values: map[string]string{"api": ""}}, errs.FailedPrecondition, "empty"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := newWorld(t, ok)
			cfg := w.cfg
			cfg.Rules, cfg.Secrets = []egress.Rule{rule}, tt.src
			s := w.sessionCfg(cfg)
			_, err := s.Do(context.Background(), egress.Request{URL: "https://api.example.com/x"})
			if errs.KindOf(err) != tt.kind || !strings.Contains(err.Error(), tt.has) {
				t.Fatalf("Do = %v, want a %v error mentioning %q", err, tt.kind, tt.has)
			}
			if strings.Contains(err.Error(), "X-Evil") {
				t.Fatalf("error leaks the secret value: %v", err)
			}
			recs := s.Records()
			if len(recs) != 1 || recs[0].Allowed || recs[0].Rule != 0 || recs[0].Reason == "" {
				t.Fatalf("records = %+v", recs)
			}
			if len(w.requests()) != 0 || len(w.dialer.Dialed()) != 0 {
				t.Fatal("request sent without its secret")
			}
		})
	}
}

func TestSecretReflectedIntoRedirectIsScrubbed(t *testing.T) {
	const key = "reflected-key-123"
	rule := egress.Rule{Scheme: "https", Host: "api.example.com", Secrets: []egress.SecretSpec{{Name: "api", Header: "X-Key"}}}
	w := newWorld(t, func(rw http.ResponseWriter, r *http.Request) {
		http.Redirect(rw, r, "https://evil.example.com/"+r.Header.Get("X-Key")+"?k="+r.Header.Get("X-Key"), http.StatusFound)
	})
	cfg := w.cfg
	cfg.Rules, cfg.Secrets = []egress.Rule{rule}, &fakeSecrets{values: map[string]string{"api": key}}
	s := w.sessionCfg(cfg)
	_, err := s.Do(context.Background(), egress.Request{URL: "https://api.example.com/"})
	if !errs.Is(err, errs.PermissionDenied) {
		t.Fatal(err)
	}
	if strings.Contains(err.Error(), key) {
		t.Fatalf("error leaks the secret: %v", err)
	}
	for _, r := range s.Records() {
		if strings.Contains(fmt.Sprint(r), key) {
			t.Fatalf("record leaks the secret: %+v", r)
		}
	}
}

func TestMaxRequests(t *testing.T) {
	w := newWorld(t, ok)
	cfg := w.cfg
	cfg.Rules, cfg.MaxRequests = []egress.Rule{apiV1}, 2
	s := w.sessionCfg(cfg)
	results := []error{}
	for _, u := range []string{
		"https://api.example.com/v1/a",
		"https://evil.example.com/", // refused, but counts
		"https://api.example.com/v1/b",
		"https://api.example.com/v1/c",
	} {
		_, err := s.Do(context.Background(), egress.Request{URL: u})
		results = append(results, err)
	}
	if results[0] != nil || !errs.Is(results[1], errs.PermissionDenied) ||
		!errs.Is(results[2], errs.ResourceExhausted) || !errs.Is(results[3], errs.ResourceExhausted) {
		t.Fatalf("results = %v", results)
	}
	recs := s.Records()
	if len(recs) != 3 || recs[2].Allowed || !strings.Contains(recs[2].Reason, "limit of 2 requests") {
		t.Fatalf("records = %+v", recs)
	}
	if len(w.requests()) != 1 {
		t.Fatalf("%d requests reached the server", len(w.requests()))
	}
}

func TestResponseCap(t *testing.T) {
	const max = 1000
	w := newWorld(t, func(rw http.ResponseWriter, r *http.Request) {
		var n int
		fmt.Sscan(strings.TrimPrefix(r.URL.Path, "/"), &n)
		if r.URL.Query().Has("chunked") {
			rw.(http.Flusher).Flush() // no Content-Length
		} else {
			rw.Header().Set("Content-Length", fmt.Sprint(n))
		}
		rw.Write(bytes.Repeat([]byte("x"), n))
	})
	cfg := w.cfg
	cfg.Rules, cfg.MaxResponseBytes = []egress.Rule{{Scheme: "https", Host: "api.example.com"}}, max
	s := w.sessionCfg(cfg)
	for _, tt := range []struct {
		url string
		ok  bool
	}{
		{"https://api.example.com/1000", true},
		{"https://api.example.com/1000?chunked", true},
		{"https://api.example.com/1001", false},
		{"https://api.example.com/1001?chunked", false},
		{"https://api.example.com/100000?chunked", false},
	} {
		resp, err := s.Do(context.Background(), egress.Request{URL: tt.url})
		if tt.ok {
			if err != nil || len(resp.Body) != max {
				t.Errorf("%s: %v", tt.url, err)
			}
			continue
		}
		if !errs.Is(err, errs.ResourceExhausted) || !strings.Contains(err.Error(), "exceeds the limit of 1000 bytes") {
			t.Errorf("%s: %v, want ResourceExhausted", tt.url, err)
		}
		recs := s.Records()
		if last := recs[len(recs)-1]; !last.Allowed || last.Status != 200 || last.Bytes > max+1 || last.Reason == "" {
			t.Errorf("%s: record %+v", tt.url, last)
		}
	}
}

func TestRequestCaps(t *testing.T) {
	w := newWorld(t, ok)
	cfg := w.cfg
	cfg.Rules, cfg.MaxRequestBytes = []egress.Rule{{Scheme: "https", Host: "api.example.com", Methods: []string{"POST"}}}, 10
	s := w.sessionCfg(cfg)
	if _, err := s.Do(context.Background(), egress.Request{Method: "POST", URL: "https://api.example.com/", Body: make([]byte, 10)}); err != nil {
		t.Fatal(err)
	}
	_, err := s.Do(context.Background(), egress.Request{Method: "POST", URL: "https://api.example.com/", Body: make([]byte, 11)})
	if !errs.Is(err, errs.ResourceExhausted) {
		t.Fatalf("big body: %v", err)
	}
	many := http.Header{}
	for i := range 101 {
		many.Set(fmt.Sprintf("X-H%d", i), "v")
	}
	_, err = s.Do(context.Background(), egress.Request{Method: "POST", URL: "https://api.example.com/", Header: many})
	if !errs.Is(err, errs.ResourceExhausted) {
		t.Fatalf("many headers: %v", err)
	}
}

func TestTimeoutAndCancel(t *testing.T) {
	// The server answers only when released, not even when a request is
	// cancelled (an empty 200 written as the client gives up could win
	// the client's race with its own deadline on a loaded machine).
	release := make(chan struct{})
	w := newWorld(t, func(rw http.ResponseWriter, r *http.Request) { <-release })
	defer close(release)
	cfg := w.cfg
	cfg.Rules, cfg.Timeout = []egress.Rule{{Scheme: "https", Host: "api.example.com"}}, 100*time.Millisecond
	s := w.sessionCfg(cfg)

	// The server answers only when released: the request can end only by
	// its timeout, whatever the machine's load.
	_, err := s.Do(context.Background(), egress.Request{URL: "https://api.example.com/slow"})
	if !errs.Is(err, errs.DeadlineExceeded) {
		t.Fatalf("timeout: %v", err)
	}
	if r := s.Records()[0]; !r.Allowed || r.Status != 0 || r.Reason == "" {
		t.Fatalf("record %+v", r)
	}

	cfg.Timeout = time.Minute
	s = w.sessionCfg(cfg)
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(50*time.Millisecond, cancel)
	_, err = s.Do(ctx, egress.Request{URL: "https://api.example.com/slow"})
	if !errors.Is(err, context.Canceled) || !errs.Is(err, errs.Unavailable) {
		t.Fatalf("cancel: %v", err)
	}

	ctx, cancel = context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	_, err = s.Do(ctx, egress.Request{URL: "https://api.example.com/slow"})
	if !errs.Is(err, errs.DeadlineExceeded) {
		t.Fatalf("parent deadline: %v", err)
	}
}

func TestProxyEnvironmentIgnored(t *testing.T) {
	t.Setenv("HTTP_PROXY", "http://proxy.example.com:3128")
	t.Setenv("HTTPS_PROXY", "http://proxy.example.com:3128")
	t.Setenv("ALL_PROXY", "http://proxy.example.com:3128")
	w := newWorld(t, ok)
	s := w.session(egress.Rule{Scheme: "https", Host: "api.example.com"}, egress.Rule{Scheme: "http", Host: "plain.example.com"})
	for _, u := range []string{"https://api.example.com/", "http://plain.example.com/"} {
		if _, err := s.Do(context.Background(), egress.Request{URL: u}); err != nil {
			t.Fatal(err)
		}
	}
	if d := w.dialer.Dialed(); strings.Join(d, ",") != "api.example.com:443,plain.example.com:80" {
		t.Fatalf("dialled %v", d)
	}
}

func TestTLSMinimumVersion(t *testing.T) {
	srv := httptest.NewUnstartedServer(http.HandlerFunc(ok))
	srv.TLS = &tls.Config{MaxVersion: tls.VersionTLS11}
	srv.StartTLS()
	defer srv.Close()
	d, pool := egresstest.New(map[string]*httptest.Server{"api.example.com": srv})
	s, err := egress.NewSession(egress.Config{Rules: []egress.Rule{{Scheme: "https", Host: "api.example.com"}}, Dialer: d, RootCAs: pool})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	_, err = s.Do(context.Background(), egress.Request{URL: "https://api.example.com/"})
	if !errs.Is(err, errs.Unavailable) {
		t.Fatalf("TLS 1.1 server: %v, want Unavailable", err)
	}
}

func TestUntrustedCertificate(t *testing.T) {
	w := newWorld(t, ok)
	cfg := w.cfg
	cfg.Rules, cfg.RootCAs = []egress.Rule{{Scheme: "https", Host: "api.example.com"}}, nil
	s, err := egress.NewSession(cfg) // system roots do not trust httptest
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, err := s.Do(context.Background(), egress.Request{URL: "https://api.example.com/"}); !errs.Is(err, errs.Unavailable) {
		t.Fatalf("%v, want Unavailable", err)
	}
}

// rebinding resolves every name to one address.
type rebinding netip.Addr

func (r rebinding) LookupNetIP(context.Context, string, string) ([]netip.Addr, error) {
	return []netip.Addr{netip.Addr(r)}, nil
}

// TestPublicDialerInSession checks the dial-time address policy through a
// whole session: a name that a rule allows but that resolves to a
// non-public address is refused, and the refusal is recorded.
func TestPublicDialerInSession(t *testing.T) {
	for _, a := range []string{"127.0.0.1", "10.0.0.1", "169.254.169.254", "::1", "::ffff:127.0.0.1", "fd00::1", "100.64.0.1"} {
		s, err := egress.NewSession(egress.Config{
			Rules:  []egress.Rule{{Scheme: "https", Host: "api.example.com"}},
			Dialer: egress.PublicDialer{Resolver: rebinding(netip.MustParseAddr(a))},
		})
		if err != nil {
			t.Fatal(err)
		}
		_, err = s.Do(context.Background(), egress.Request{URL: "https://api.example.com/"})
		if !errs.Is(err, errs.PermissionDenied) || !strings.Contains(err.Error(), "not public") {
			t.Errorf("%s: %v, want PermissionDenied", a, err)
		}
		if r := s.Records(); len(r) != 1 || r[0].Allowed || r[0].Rule != 0 {
			t.Errorf("%s: records %+v", a, r)
		}
		s.Close()
	}
}

func TestNewSessionInvalid(t *testing.T) {
	for name, cfg := range map[string]egress.Config{
		"bad rule":         {Rules: []egress.Rule{{Scheme: "ftp", Host: "a.example.com"}}},
		"negative cap":     {MaxRequests: -1},
		"negative timeout": {Timeout: -time.Second},
		"private rule":     {Rules: []egress.Rule{{Scheme: "http", Host: "192.168.0.1"}}},
	} {
		if _, err := egress.NewSession(cfg); !errs.Is(err, errs.Invalid) {
			t.Errorf("%s: %v, want Invalid", name, err)
		}
	}
}

func TestConcurrentDo(t *testing.T) {
	w := newWorld(t, ok)
	cfg := w.cfg
	cfg.Rules, cfg.MaxRequests = []egress.Rule{apiV1}, 20
	s := w.sessionCfg(cfg)
	var wg sync.WaitGroup
	for i := range 30 {
		wg.Go(func() {
			_, _ = s.Do(context.Background(), egress.Request{URL: fmt.Sprintf("https://api.example.com/v1/%d", i)})
			_ = s.Records()
		})
	}
	wg.Wait()
	if n := len(w.requests()); n != 20 {
		t.Fatalf("%d requests sent, want 20", n)
	}
	if n := len(s.Records()); n != 21 {
		t.Fatalf("%d records, want 21", n)
	}
}
