package gateway

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// TestSource: behind tailscale serve (trusted, from loopback) the source is
// the tailnet user or the forwarded address; the same headers from any
// other peer, or when the server was not told it is behind a proxy, are
// ignored.
func TestSource(t *testing.T) {
	tests := []struct {
		name, peer string
		trust      bool
		headers    map[string]string
		want       string
	}{
		{"plain peer", "203.0.113.7:4242", true, nil, "203.0.113.7"},
		{"tailnet user", "127.0.0.1:4242", true, map[string]string{"Tailscale-User-Login": "alice@example.com", "X-Forwarded-For": "100.64.0.2"}, "tailscale:alice@example.com"},
		{"tailnet user over IPv6 loopback", "[::1]:4242", true, map[string]string{"Tailscale-User-Login": "bob@example.com"}, "tailscale:bob@example.com"},
		{"encoded login", "127.0.0.1:4242", true, map[string]string{"Tailscale-User-Login": "=?utf-8?q?j=C3=B6rg@example.com?="}, "tailscale:jörg@example.com"},
		{"tagged device: forwarded address", "127.0.0.1:4242", true, map[string]string{"X-Forwarded-For": "100.64.0.9"}, "100.64.0.9"},
		{"nearest proxy's address", "127.0.0.1:4242", true, map[string]string{"X-Forwarded-For": "198.51.100.1, 100.64.0.9"}, "100.64.0.9"},
		{"bad forwarded address", "127.0.0.1:4242", true, map[string]string{"X-Forwarded-For": "not-an-ip"}, "127.0.0.1"},
		{"local caller without headers", "127.0.0.1:4242", true, nil, "127.0.0.1"},
		{"control characters dropped", "127.0.0.1:4242", true, map[string]string{"Tailscale-User-Login": "eve\x00\x1b@example.com"}, "tailscale:eve@example.com"},
		// Forged headers from a peer that is not on loopback.
		{"forged user, remote peer", "203.0.113.7:4242", true, map[string]string{"Tailscale-User-Login": "alice@example.com"}, "203.0.113.7"},
		{"forged address, remote peer", "100.64.0.5:4242", true, map[string]string{"X-Forwarded-For": "100.64.0.2"}, "100.64.0.5"},
		{"forged, IPv4-mapped remote", "[::ffff:203.0.113.7]:4242", true, map[string]string{"Tailscale-User-Login": "alice@example.com"}, "203.0.113.7"},
		// Not behind a proxy: loopback callers are only themselves.
		{"untrusted loopback", "127.0.0.1:4242", false, map[string]string{"Tailscale-User-Login": "alice@example.com", "X-Forwarded-For": "100.64.0.2"}, "127.0.0.1"},
	}
	for _, tt := range tests {
		r := httptest.NewRequest(http.MethodPost, "/contractual.v1.ToolService/Invoke", nil)
		r.RemoteAddr = tt.peer
		for k, v := range tt.headers {
			r.Header.Set(k, v)
		}
		if got := source(r, tt.trust); got != tt.want {
			t.Errorf("%s: %q, want %q", tt.name, got, tt.want)
		}
	}
	r := httptest.NewRequest(http.MethodGet, "/", nil)
	r.RemoteAddr = "127.0.0.1:1"
	r.Header.Set("Tailscale-User-Login", strings.Repeat("a", 10000))
	if got := source(r, true); len(got) > len("tailscale:")+maxSourceLen {
		t.Errorf("an oversized login gives a %d-byte source", len(got))
	}
}

// TestProcedure: what counts as an RPC path.
func TestProcedure(t *testing.T) {
	for path, want := range map[string]bool{
		"/contractual.v1.ToolService/Invoke": true,
		"/grpc.health.v1.Health/Check":       true,
		"/x.Y/Z":                             true,
		"/ui/pair":                           false,
		"/":                                  false,
		"/favicon.ico":                       false,
		"/contractual.v1.ToolService/":       false,
		"/contractual.v1.ToolService/a/b":    false,
		"/contractual.v1.ToolService":        false,
	} {
		if _, got := procedure(path); got != want {
			t.Errorf("%s: %v", path, got)
		}
	}
}
