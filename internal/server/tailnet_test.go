package server_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"testing"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/structpb"

	contractualv1 "github.com/contractual/contractual/contracts/gen/contractual/v1"
	"github.com/contractual/contractual/contracts/gen/contractual/v1/contractualv1connect"
	"github.com/contractual/contractual/internal/pairing"
	"github.com/contractual/contractual/internal/server"
	"github.com/contractual/contractual/internal/tailnet"
)

// The tests of this file run the ways in of plan "ways 1–2": a tailnet
// node's requests reach the gateway through `tailscale serve`, which the
// test plays itself: from loopback, it sets the identity headers serve
// sets (the node's address in X-Forwarded-For, its user's login, its app
// capabilities).

// tsNode is a tailnet node as `tailscale serve` presents it.
type tsNode struct {
	addr string // the node's tailnet address
	user string // its user's login; "" for a tagged node
	caps string // the Tailscale-App-Capabilities header, if any
	// from is the local address the proxy connects from (default
	// 127.0.0.1).
	from string
}

var (
	alice = tsNode{addr: "100.64.0.2", user: "alice@example.com"}
	bob   = tsNode{addr: "100.64.0.3", user: "bob@example.com"}
)

// client is an HTTP client whose requests carry n's identity headers.
func (n tsNode) client() *http.Client {
	d := &net.Dialer{}
	if n.from != "" {
		d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(n.from)}
	}
	return &http.Client{Transport: serveHeaders{n: n, next: &http.Transport{DialContext: d.DialContext}}}
}

type serveHeaders struct {
	n    tsNode
	next http.RoundTripper
}

func (s serveHeaders) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	if s.n.addr != "" {
		r.Header.Set("X-Forwarded-For", s.n.addr)
	}
	if s.n.user != "" {
		r.Header.Set("Tailscale-User-Login", s.n.user)
	}
	if s.n.caps != "" {
		r.Header.Set("Tailscale-App-Capabilities", s.n.caps)
	}
	return s.next.RoundTrip(r)
}

// pairFrom pairs a device on node n at base, asking for scopes, approved
// by the local owner device of s, and returns its token.
func pairFrom(t *testing.T, s *server.Server, base string, n tsNode, scopes ...string) string {
	t.Helper()
	ownerTok, _ := owner(t, s)
	pub, priv, _ := ed25519.GenerateKey(rand.Reader)
	pc := contractualv1connect.NewPairingServiceClient(n.client(), base)
	ctx := context.Background()
	begin, err := pc.BeginPairing(ctx, &contractualv1.BeginPairingRequest{PublicKey: pub, Name: "node " + n.addr, Scopes: scopes})
	if err != nil {
		t.Fatalf("beginning pairing from %s: %v", n.addr, err)
	}
	local := contractualv1connect.NewPairingServiceClient(http.DefaultClient, s.URL, connect.WithInterceptors(bearer(ownerTok)))
	if _, err := local.ApprovePairing(ctx, &contractualv1.ApprovePairingRequest{Code: begin.GetCode()}); err != nil {
		t.Fatalf("approving %s's request: %v", n.addr, err)
	}
	done, err := pc.CompletePairing(ctx, &contractualv1.CompletePairingRequest{
		DeviceId: begin.GetDeviceId(), Nonce: begin.GetNonce(),
		Signature: ed25519.Sign(priv, pairing.SignedMessage(begin.GetDeviceId(), begin.GetNonce())),
	})
	if err != nil {
		t.Fatalf("completing pairing from %s: %v", n.addr, err)
	}
	return done.GetToken()
}

// invokeFrom calls textkit.slugify at base from node n as the device with
// token tok, with extra request headers.
func invokeFrom(base string, n tsNode, tok string, kv ...string) error {
	c := contractualv1connect.NewToolServiceClient(n.client(), base, connect.WithInterceptors(bearer(tok), headers(kv...)))
	in, _ := structpb.NewValue(map[string]any{"text": "From The Tailnet"})
	_, err := c.Invoke(context.Background(), &contractualv1.InvokeRequest{Tool: "textkit.slugify", Input: in})
	return err
}

// events returns every audit event of s, read locally by its owner.
func events(t *testing.T, s *server.Server) []*contractualv1.AuditEvent {
	t.Helper()
	tok, _ := owner(t, s)
	c := contractualv1connect.NewAuditServiceClient(http.DefaultClient, s.URL, connect.WithInterceptors(bearer(tok)))
	tail, err := c.Tail(context.Background(), &contractualv1.TailRequest{Limit: 1000})
	if err != nil {
		t.Fatal(err)
	}
	return tail.GetEvents()
}

// since returns the events of evs after index.
func since(evs []*contractualv1.AuditEvent, index uint64) []*contractualv1.AuditEvent {
	var out []*contractualv1.AuditEvent
	for _, ev := range evs {
		if ev.GetIndex() > index {
			out = append(out, ev)
		}
	}
	return out
}

// last is the index of the newest event of evs.
func last(evs []*contractualv1.AuditEvent) uint64 {
	if len(evs) == 0 {
		return 0
	}
	return evs[len(evs)-1].GetIndex()
}

// TestTailnetPeerAudited (way 2: tailscale serve on the server's machine,
// --public-url): a device paired from a tailnet node invokes a tool; the
// pairing request, the call's decision and its run are all recorded with
// that node; a forged Contractual-Tailnet-Peer header, from that node or
// from a local device, changes nothing.
func TestTailnetPeerAudited(t *testing.T) {
	s := startWith(t, func(c *server.Config) { c.PublicURL = "https://box.tail1234.ts.net" })
	ownerTok, _ := owner(t, s)
	publishApproved(t, s, ownerTok)
	tok := pairFrom(t, s, s.URL, alice, "invoke")
	forged := tailnet.Encode(&tailnet.Peer{NodeID: "nFORGED", Addr: netip.MustParseAddr("100.100.100.100"), User: "mallory@example.com"})

	checkPeer := func(what string, evs []*contractualv1.AuditEvent, want *tailnet.Peer) {
		t.Helper()
		for _, action := range []string{"call.decision", "call.run"} {
			found := false
			for _, ev := range evs {
				if ev.GetAction() != action {
					continue
				}
				found = true
				got, err := tailnet.FromProto(ev.GetTailnet())
				if err != nil || got.Key() != want.Key() || (want != nil && got.User != want.User) {
					t.Errorf("%s: %s event's tailnet peer is %v (%v), want %v", what, action, got, err, want)
				}
			}
			if !found {
				t.Errorf("%s: no %s event", what, action)
			}
		}
	}

	mark := last(events(t, s))
	if err := invokeFrom(s.URL, alice, tok, tailnet.Header, forged); err != nil {
		t.Fatalf("invoking from alice's node: %v", err)
	}
	aliceP := &tailnet.Peer{Addr: netip.MustParseAddr(alice.addr), User: alice.user}
	checkPeer("alice's invoke", since(events(t, s), mark), aliceP)

	mark = last(events(t, s))
	if err := invokeFrom(s.URL, tsNode{}, ownerTok, tailnet.Header, forged); err != nil {
		t.Fatalf("invoking locally: %v", err)
	}
	checkPeer("a local invoke", since(events(t, s), mark), nil)

	var pairingSeen bool
	for _, ev := range events(t, s) {
		if ev.GetAction() == pairing.ActionRequest && strings.Contains(ev.GetDetail(), `"node 100.64.0.2"`) {
			pairingSeen = true
			if got := ev.GetTailnet(); got.GetAddress() != alice.addr || got.GetUser() != alice.user {
				t.Errorf("alice's pairing request records tailnet peer %v", got)
			}
		}
	}
	if !pairingSeen {
		t.Error("no pairing request of alice's device in the audit log")
	}
}
