package tailnet

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	contractualv1 "github.com/contractual/contractual/contracts/gen/contractual/v1"
	"github.com/contractual/contractual/internal/errs"
)

var (
	phone  = &Peer{NodeID: "nA1CNTRL", NodeName: "phone.tail1234.ts.net", Addr: netip.MustParseAddr("100.64.0.2"), User: "alice@example.com"}
	agent  = &Peer{NodeID: "nB2CNTRL", NodeName: "agent.tail1234.ts.net", Addr: netip.MustParseAddr("fd7a:115c:a1e0::2"), Tags: []string{"tag:agent", "tag:ci"}}
	served = &Peer{Addr: netip.MustParseAddr("100.64.0.3")}
)

// TestKey: a node is bound by its stable id when the tailnet gives one,
// else by its address (IPv4-mapped or not); no peer has no key.
func TestKey(t *testing.T) {
	for _, c := range []struct {
		p    *Peer
		want string
	}{
		{nil, ""},
		{phone, "node:nA1CNTRL"},
		{&Peer{NodeID: "nA1CNTRL", Addr: netip.MustParseAddr("100.64.9.9")}, "node:nA1CNTRL"},
		{served, "addr:100.64.0.3"},
		{&Peer{Addr: netip.MustParseAddr("::ffff:100.64.0.3")}, "addr:100.64.0.3"},
		{&Peer{}, ""},
	} {
		if got := c.p.Key(); got != c.want {
			t.Errorf("%#v: key %q, want %q", c.p, got, c.want)
		}
	}
}

// TestString names peers for logs.
func TestString(t *testing.T) {
	for _, c := range []struct {
		p    *Peer
		want string
	}{
		{nil, "local"},
		{phone, "phone.tail1234.ts.net (alice@example.com)"},
		{agent, "agent.tail1234.ts.net (tag:agent,tag:ci)"},
		{served, "100.64.0.3"},
		{&Peer{NodeID: "nX"}, "nX"},
	} {
		if got := c.p.String(); got != c.want {
			t.Errorf("%q, want %q", got, c.want)
		}
	}
}

// TestContext: With and From carry a peer; With(nil) carries none.
func TestContext(t *testing.T) {
	ctx := context.Background()
	if From(ctx) != nil || From(With(ctx, nil)) != nil {
		t.Error("a context without a peer has one")
	}
	if From(With(ctx, phone)) != phone {
		t.Error("With/From lost the peer")
	}
}

// TestHeaderRoundTrip: a peer survives Encode and Decode, without its
// capabilities (they grant, and the header grants nothing).
func TestHeaderRoundTrip(t *testing.T) {
	withCaps := *agent
	withCaps.Caps = map[string][]json.RawMessage{DefaultCap: {json.RawMessage(`{"scopes":["owner"]}`)}}
	for _, p := range []*Peer{phone, &withCaps, served} {
		got, err := Decode(Encode(p))
		if err != nil {
			t.Fatalf("%v: %v", p, err)
		}
		if got.Key() != p.Key() || got.NodeName != p.NodeName || got.User != p.User || !slices.Equal(got.Tags, p.Tags) || got.Addr != p.Addr {
			t.Errorf("round trip of %v: %v", p, got)
		}
		if got.Caps != nil {
			t.Errorf("round trip of %v kept capabilities %v", p, got.Caps)
		}
	}
}

// TestDecodeRefuses: a malformed header is an error (errs.Invalid), never
// a peer.
func TestDecodeRefuses(t *testing.T) {
	enc := func(m *contractualv1.TailnetPeer) string {
		b, _ := proto.Marshal(m)
		return base64.RawURLEncoding.EncodeToString(b)
	}
	unknown := protowire.AppendTag(nil, 99, protowire.VarintType)
	unknown = protowire.AppendVarint(unknown, 1)
	known, _ := proto.Marshal(phone.Proto())
	for name, v := range map[string]string{
		"not base64":       "!!!",
		"padded base64":    base64.URLEncoding.EncodeToString(known),
		"not protobuf":     base64.RawURLEncoding.EncodeToString([]byte{0xff, 0xff, 0xff}),
		"unknown field":    base64.RawURLEncoding.EncodeToString(append(known, unknown...)),
		"no node":          enc(&contractualv1.TailnetPeer{User: "alice@example.com"}),
		"bad address":      enc(&contractualv1.TailnetPeer{Address: "100.64.0.300"}),
		"control in name":  enc(&contractualv1.TailnetPeer{NodeId: "n1", NodeName: "a\x1bb"}),
		"invalid UTF-8":    enc(&contractualv1.TailnetPeer{NodeId: "n1", User: "\xff"}),
		"long user":        enc(&contractualv1.TailnetPeer{NodeId: "n1", User: strings.Repeat("a", maxFieldLen+1)}),
		"too many tags":    enc(&contractualv1.TailnetPeer{NodeId: "n1", Tags: slices.Repeat([]string{"tag:x"}, maxTags+1)}),
		"oversized header": strings.Repeat("A", maxHeaderLen+1),
	} {
		if p, err := Decode(v); !errs.Is(err, errs.Invalid) {
			t.Errorf("%s: %v, %v; want invalid", name, p, err)
		}
	}
}

// TestIsTailnetAddr: Tailscale's CGNAT and ULA ranges, and nothing else.
func TestIsTailnetAddr(t *testing.T) {
	for a, want := range map[string]bool{
		"100.64.0.1": true, "100.127.255.254": true, "::ffff:100.100.100.100": true, "fd7a:115c:a1e0::1": true,
		"100.63.255.255": false, "100.128.0.1": false, "127.0.0.1": false, "10.0.0.1": false, "fd7a:115c:a1e1::1": false, "::1": false,
	} {
		if got := isTailnetAddr(netip.MustParseAddr(a)); got != want {
			t.Errorf("%s: %v", a, got)
		}
	}
}

// TestServeHeaders: what `tailscale serve`'s headers say, believed only
// from the proxy.
func TestServeHeaders(t *testing.T) {
	loopback := func(a netip.Addr) bool { return a.IsLoopback() }
	shared := ServeHeaders{FromProxy: loopback}
	only := ServeHeaders{FromProxy: loopback, ProxyOnly: true}
	caps := `{"` + DefaultCap + `":[{"scopes":["invoke"]}]}`
	for _, c := range []struct {
		name   string
		id     ServeHeaders
		remote string
		hdr    map[string]string
		want   *Peer // nil: local
		refuse bool
	}{
		{"a user's node", shared, "127.0.0.1:1", map[string]string{"X-Forwarded-For": "100.64.0.2", "Tailscale-User-Login": "alice@example.com"},
			&Peer{Addr: netip.MustParseAddr("100.64.0.2"), User: "alice@example.com"}, false},
		{"a tagged node", shared, "[::1]:1", map[string]string{"X-Forwarded-For": "fd7a:115c:a1e0::5"}, &Peer{Addr: netip.MustParseAddr("fd7a:115c:a1e0::5")}, false},
		{"an encoded login", shared, "127.0.0.1:1", map[string]string{"X-Forwarded-For": "100.64.0.2", "Tailscale-User-Login": "=?utf-8?q?j=C3=B6rg@example.com?="},
			&Peer{Addr: netip.MustParseAddr("100.64.0.2"), User: "jörg@example.com"}, false},
		{"capabilities", shared, "127.0.0.1:1", map[string]string{"X-Forwarded-For": "100.64.0.2", "Tailscale-App-Capabilities": caps},
			&Peer{Addr: netip.MustParseAddr("100.64.0.2"), Caps: map[string][]json.RawMessage{DefaultCap: {json.RawMessage(`{"scopes":["invoke"]}`)}}}, false},
		{"a local caller", shared, "127.0.0.1:1", nil, nil, false},
		{"forged, from elsewhere", shared, "100.64.0.9:1", map[string]string{"X-Forwarded-For": "100.64.0.2", "Tailscale-User-Login": "alice@example.com"}, nil, false},
		{"forged, from elsewhere, proxy only", only, "100.64.0.9:1", map[string]string{"X-Forwarded-For": "100.64.0.2"}, nil, true},
		{"no node from the proxy, proxy only", only, "127.0.0.1:1", map[string]string{"Tailscale-User-Login": "alice@example.com"}, nil, true},
		{"two forwarded addresses", shared, "127.0.0.1:1", map[string]string{"X-Forwarded-For": "100.64.0.2, 100.64.0.3"}, nil, false},
		{"two forwarded addresses, proxy only", only, "127.0.0.1:1", map[string]string{"X-Forwarded-For": "100.64.0.2, 100.64.0.3"}, nil, true},
		{"not a tailnet address", shared, "127.0.0.1:1", map[string]string{"X-Forwarded-For": "203.0.113.7"}, nil, true},
		{"funnel", shared, "127.0.0.1:1", map[string]string{"X-Forwarded-For": "100.64.0.2", "Tailscale-Funnel-Request": "?1"}, nil, true},
		{"malformed capabilities", shared, "127.0.0.1:1", map[string]string{"X-Forwarded-For": "100.64.0.2", "Tailscale-App-Capabilities": "[1]"}, nil, true},
		{"a control character in the login", shared, "127.0.0.1:1", map[string]string{"X-Forwarded-For": "100.64.0.2", "Tailscale-User-Login": "eve\x01@example.com"}, nil, true},
		{"no proxy configured", ServeHeaders{}, "127.0.0.1:1", map[string]string{"X-Forwarded-For": "100.64.0.2"}, nil, false},
	} {
		r := httptest.NewRequest(http.MethodPost, "/", nil)
		r.RemoteAddr = c.remote
		for k, v := range c.hdr {
			r.Header.Set(k, v)
		}
		got, err := c.id.Identify(r)
		switch {
		case c.refuse:
			if !errs.Is(err, errs.PermissionDenied) {
				t.Errorf("%s: %v, %v; want permission denied", c.name, got, err)
			}
		case err != nil:
			t.Errorf("%s: %v", c.name, err)
		case (got == nil) != (c.want == nil):
			t.Errorf("%s: %v, want %v", c.name, got, c.want)
		case got != nil && (got.Key() != c.want.Key() || got.User != c.want.User || len(got.Caps) != len(c.want.Caps)):
			t.Errorf("%s: %v, want %v", c.name, got, c.want)
		}
	}
}

// TestCapScopes: the union of a capability's grants; no grant caps
// nothing; a grant that is not {"scopes": [...]} is refused.
func TestCapScopes(t *testing.T) {
	grants := func(vs ...string) *Peer {
		p := &Peer{Addr: netip.MustParseAddr("100.64.0.2"), Caps: map[string][]json.RawMessage{}}
		for _, v := range vs {
			p.Caps[DefaultCap] = append(p.Caps[DefaultCap], json.RawMessage(v))
		}
		return p
	}
	for _, c := range []struct {
		name    string
		p       *Peer
		want    []string
		granted bool
		refuse  bool
	}{
		{"no peer", nil, nil, false, false},
		{"no grant", grants(), nil, false, false},
		{"another capability", &Peer{Caps: map[string][]json.RawMessage{"example.com/cap/other": {json.RawMessage(`1`)}}}, nil, false, false},
		{"one grant", grants(`{"scopes":["invoke"]}`), []string{"invoke"}, true, false},
		{"two grants", grants(`{"scopes":["invoke","read"]}`, `{"scopes":["read","publish"]}`), []string{"invoke", "read", "publish"}, true, false},
		{"empty", grants(`{"scopes":[]}`), nil, true, false},
		{"a string", grants(`{"scopes":"invoke"}`), nil, true, true},
		{"an unknown field", grants(`{"scopes":["invoke"],"admin":true}`), nil, true, true},
		{"not an object", grants(`["invoke"]`), nil, true, true},
		{"one bad grant among good", grants(`{"scopes":["invoke"]}`, `7`), nil, true, true},
	} {
		got, granted, err := CapScopes(c.p, DefaultCap)
		if c.refuse != (err != nil) || (err != nil && !errs.Is(err, errs.PermissionDenied)) || granted != c.granted || (!c.refuse && !slices.Equal(got, c.want)) {
			t.Errorf("%s: %v %v %v; want %v %v refuse=%v", c.name, got, granted, err, c.want, c.granted, c.refuse)
		}
	}
}
