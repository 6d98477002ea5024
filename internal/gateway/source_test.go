package gateway

import (
	"net/http"
	"net/http/httptest"
	"net/netip"
	"testing"

	"github.com/contractual/contractual/internal/tailnet"
)

// TestSource: a tailnet request's source is its node's key, whatever
// address its connection comes from (the proxy's); any other request's is
// its connection's address.
func TestSource(t *testing.T) {
	node := &tailnet.Peer{NodeID: "n1CNTRL", Addr: netip.MustParseAddr("100.64.0.2")}
	byAddr := &tailnet.Peer{Addr: netip.MustParseAddr("100.64.0.3")}
	tests := []struct {
		name, remote string
		peer         *tailnet.Peer
		want         string
	}{
		{"local", "127.0.0.1:4242", nil, "127.0.0.1"},
		{"IPv4-mapped", "[::ffff:203.0.113.7]:4242", nil, "203.0.113.7"},
		{"tailnet node", "127.0.0.1:4242", node, "tailnet:node:n1CNTRL"},
		{"tailnet address", "127.0.0.1:4242", byAddr, "tailnet:addr:100.64.0.3"},
	}
	for _, tt := range tests {
		r := httptest.NewRequest(http.MethodPost, "/contractual.v1.ToolService/Invoke", nil)
		r.RemoteAddr = tt.remote
		if got := source(r, tt.peer); got != tt.want {
			t.Errorf("%s: %q, want %q", tt.name, got, tt.want)
		}
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
