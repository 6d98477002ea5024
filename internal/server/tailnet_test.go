package server_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"testing"

	"connectrpc.com/connect"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
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

// call sends a Connect JSON request for procedure to base from node n,
// with token tok if any, and returns the status and body.
func call(t *testing.T, base string, n tsNode, tok, procedure, body string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, base+procedure, strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	if tok != "" {
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	resp, err := n.client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestTokenBoundToNodeOverHTTP (way 2): a device paired from alice's node
// invokes from there, and its token is refused from bob's node and from
// the server's own machine; the owner's local token is refused from
// alice's node. The audit log records the refusal with bob's node.
func TestTokenBoundToNodeOverHTTP(t *testing.T) {
	s := startWith(t, func(c *server.Config) { c.PublicURL = "https://box.tail1234.ts.net" })
	ownerTok, _ := owner(t, s)
	publishApproved(t, s, ownerTok)
	tok := pairFrom(t, s, s.URL, alice, "invoke")
	invoke := contractualv1connect.ToolServiceInvokeProcedure
	body := `{"tool": "textkit.slugify", "input": {"text": "Bound"}}`

	if code, b := call(t, s.URL, alice, tok, invoke, body); code != http.StatusOK {
		t.Fatalf("alice's token from alice: %d %s", code, b)
	}
	for _, c := range []struct {
		who  string
		n    tsNode
		tok  string
		code int
	}{
		{"alice's token from bob", bob, tok, http.StatusForbidden},
		{"alice's token from the server's machine", tsNode{}, tok, http.StatusForbidden},
		{"alice's token from alice's address as another user", tsNode{addr: alice.addr, user: "mallory@example.com"}, tok, http.StatusOK},
		{"the local owner token from alice", alice, ownerTok, http.StatusForbidden},
	} {
		code, b := call(t, s.URL, c.n, c.tok, invoke, body)
		if code != c.code {
			t.Errorf("%s: %d %s, want %d", c.who, code, b, c.code)
		}
		if code == http.StatusForbidden && !strings.Contains(b, "bound to the tailnet node") {
			t.Errorf("%s: refusal %s does not say why", c.who, b)
		}
	}
	var refused bool
	for _, ev := range events(t, s) {
		refused = refused || ev.GetAction() == pairing.ActionAuthenticate && ev.GetOutcome() == "permission_denied" && ev.GetTailnet().GetAddress() == bob.addr
	}
	if !refused {
		t.Error("no audit event of alice's token refused from bob's node")
	}
}

// TestTailnetCapCapsScopes: the app capability the tailnet grants a node
// caps what an owner device paired there may do, on the API and in the
// Control UI: ["invoke"] allows Invoke and refuses Publish and Approve; a
// malformed grant refuses everything; no grant, or ["owner"], caps
// nothing.
func TestTailnetCapCapsScopes(t *testing.T) {
	s := startWith(t, func(c *server.Config) { c.PublicURL = "https://box.tail1234.ts.net" })
	ownerTok, _ := owner(t, s)
	publishApproved(t, s, ownerTok)
	tok := pairFrom(t, s, s.URL, alice, "owner")
	withCap := func(v string) tsNode {
		n := alice
		if v != "" {
			n.caps = `{"` + tailnet.DefaultCap + `":` + v + `}`
		}
		return n
	}
	invoke := func(n tsNode) int {
		code, _ := call(t, s.URL, n, tok, contractualv1connect.ToolServiceInvokeProcedure, `{"tool": "textkit.slugify", "input": {"text": "x"}}`)
		return code
	}
	// Approve of a contract that does not exist: authorized, it is "not
	// found"; refused, "permission denied".
	approve := func(n tsNode) int {
		code, _ := call(t, s.URL, n, tok, contractualv1connect.PolicyServiceApproveProcedure, `{"digest": "sha256:`+strings.Repeat("0", 64)+`"}`)
		return code
	}
	publish := func(n tsNode) int {
		code, _ := call(t, s.URL, n, tok, contractualv1connect.PolicyServicePublishProcedure, `{}`)
		return code
	}
	ui := func(n tsNode) int {
		req, _ := http.NewRequest(http.MethodGet, s.URL+"/ui/devices", nil)
		req.AddCookie(&http.Cookie{Name: "__Host-contractual_session", Value: tok})
		c := n.client()
		c.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	const ok, denied = http.StatusOK, http.StatusForbidden
	for _, c := range []struct {
		name                         string
		grant                        string
		invoke, approve, publish, ui int
	}{
		{"no grant", "", ok, http.StatusNotFound, http.StatusBadRequest, ok},
		{"invoke only", `[{"scopes": ["invoke"]}]`, ok, denied, denied, denied},
		{"read and invoke over two grants", `[{"scopes": ["read"]}, {"scopes": ["invoke"]}]`, ok, denied, denied, ok},
		{"owner", `[{"scopes": ["owner"]}]`, ok, http.StatusNotFound, http.StatusBadRequest, ok},
		{"no scopes", `[{"scopes": []}]`, denied, denied, denied, denied},
		{"malformed: a string", `[{"scopes": "invoke"}]`, denied, denied, denied, denied},
		{"malformed: an unknown field", `[{"scopes": ["invoke"], "admin": true}]`, denied, denied, denied, denied},
		{"malformed: an unknown scope", `[{"scopes": ["invoke", "root"]}]`, denied, denied, denied, denied},
	} {
		n := withCap(c.grant)
		if got := invoke(n); got != c.invoke {
			t.Errorf("%s: Invoke %d, want %d", c.name, got, c.invoke)
		}
		if got := approve(n); got != c.approve {
			t.Errorf("%s: Approve %d, want %d", c.name, got, c.approve)
		}
		if got := publish(n); got != c.publish {
			t.Errorf("%s: Publish %d, want %d", c.name, got, c.publish)
		}
		if got := ui(n); got != c.ui {
			t.Errorf("%s: the Control UI's devices page %d, want %d", c.name, got, c.ui)
		}
	}
}

// TestUnpairedNodeOnlyPairs: a tailnet node without a paired device gets
// the pairing procedures, the pairing page and its assets, and nothing
// else: not reflection or health (which the server's own machine still
// gets), not any other page (redirected to pairing) or form.
func TestUnpairedNodeOnlyPairs(t *testing.T) {
	s := startWith(t, func(c *server.Config) { c.PublicURL = "https://box.tail1234.ts.net" })
	health := "/grpc.health.v1.Health/Check"
	if code, b := call(t, s.URL, tsNode{}, "", health, `{}`); code != http.StatusOK {
		t.Errorf("health from the server's machine: %d %s", code, b)
	}
	if code, b := call(t, s.URL, alice, "", health, `{}`); code != http.StatusUnauthorized {
		t.Errorf("health from an unpaired node: %d %s", code, b)
	}
	// Reflection, over gRPC as grpcurl speaks it: the headers that
	// `tailscale serve` would set travel as metadata.
	cc, err := grpc.NewClient("passthrough:///"+addr(s), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), patience)
	defer cancel()
	fromAlice := metadata.AppendToOutgoingContext(ctx, "x-forwarded-for", alice.addr, "tailscale-user-login", alice.user)
	for _, r := range reflectionClients(cc) {
		if _, err := r.list(ctx); err != nil {
			t.Errorf("reflection %s from the server's machine: %v", r.name, err)
		}
		if _, err := r.list(fromAlice); status.Code(err) != codes.Unauthenticated {
			t.Errorf("reflection %s from an unpaired node: %v", r.name, err)
		}
	}

	// Pairing works: begin, and complete (awaiting approval).
	pub, priv, _ := ed25519.GenerateKey(rand.Reader)
	pc := contractualv1connect.NewPairingServiceClient(alice.client(), s.URL)
	begin, err := pc.BeginPairing(ctx, &contractualv1.BeginPairingRequest{PublicKey: pub, Name: "phone"})
	if err != nil {
		t.Fatalf("beginning pairing from an unpaired node: %v", err)
	}
	_, err = pc.CompletePairing(ctx, &contractualv1.CompletePairingRequest{
		DeviceId: begin.GetDeviceId(), Nonce: begin.GetNonce(),
		Signature: ed25519.Sign(priv, pairing.SignedMessage(begin.GetDeviceId(), begin.GetNonce())),
	})
	if connect.CodeOf(err) != connect.CodeFailedPrecondition {
		t.Errorf("completing pairing (unapproved) from an unpaired node: %v", err)
	}

	// The Control UI: the pairing page and its assets; every other page
	// is redirected to pairing, any other form refused.
	c := alice.client()
	c.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	get := func(path string) (int, string) {
		resp, err := c.Get(s.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode, resp.Header.Get("Location")
	}
	for _, path := range []string{"/ui/pair", "/ui/static/app.js", "/ui/static/app.css"} {
		if code, _ := get(path); code != http.StatusOK {
			t.Errorf("GET %s from an unpaired node: %d", path, code)
		}
	}
	for _, path := range []string{"/", "/ui/", "/ui/devices", "/ui/contracts", "/ui/nope", "/favicon.ico"} {
		if code, loc := get(path); code != http.StatusSeeOther || loc != "/ui/pair" {
			t.Errorf("GET %s from an unpaired node: %d to %q, want a redirect to /ui/pair", path, code, loc)
		}
	}
	resp, err := c.Post(s.URL+"/ui/secrets", "application/x-www-form-urlencoded", strings.NewReader("name=X&value=y"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("POST /ui/secrets from an unpaired node: %d", resp.StatusCode)
	}
	resp, err = c.Post(s.URL+"/ui/pair/begin", "application/json", strings.NewReader(`{"name": "browser", "public_key": "`+base64.StdEncoding.EncodeToString(pub)+`"}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("POST /ui/pair/begin from an unpaired node: %d", resp.StatusCode)
	}
}

// TestServeHeadersOnlyFromTheProxy: on a listener added with Serve, serve's
// identity headers are believed only from the proxy (here 127.0.0.2).
// With ProxyOnly (the sidecar), anyone else is refused, as is a proxied
// request that names no node or comes from Funnel; without it, anyone else
// is a local caller whatever headers it sends.
func TestServeHeadersOnlyFromTheProxy(t *testing.T) {
	s := startWith(t, func(*server.Config) {})
	proxy := netip.MustParseAddr("127.0.0.2")
	fromProxy := func(a netip.Addr) bool { return a == proxy }
	listen := func(id tailnet.Identifier) string {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		base := "http://" + ln.Addr().String()
		if err := s.Serve(ln, id, base); err != nil {
			t.Fatal(err)
		}
		return base
	}
	only := listen(tailnet.ServeHeaders{FromProxy: fromProxy, ProxyOnly: true})
	also := listen(tailnet.ServeHeaders{FromProxy: fromProxy})
	viaProxy := alice
	viaProxy.from = proxy.String()
	health := "/grpc.health.v1.Health/Check"
	begin := contractualv1connect.PairingServiceBeginPairingProcedure
	beginBody := func(name string) string {
		pub, _, _ := ed25519.GenerateKey(rand.Reader)
		return `{"name": "` + name + `", "publicKey": "` + base64.StdEncoding.EncodeToString(pub) + `"}`
	}

	for _, c := range []struct {
		what, base string
		n          tsNode
		proc, body string
		code       int
	}{
		{"proxy only: alice's headers from elsewhere", only, alice, health, `{}`, http.StatusForbidden},
		{"proxy only: no headers from elsewhere", only, tsNode{}, health, `{}`, http.StatusForbidden},
		{"proxy only: the proxy naming no node", only, tsNode{from: proxy.String(), user: alice.user}, begin, beginBody("x"), http.StatusForbidden},
		{"proxy only: the proxy naming a non-tailnet address", only, tsNode{from: proxy.String(), addr: "203.0.113.9"}, begin, beginBody("x"), http.StatusForbidden},
		{"proxy only: alice through the proxy", only, viaProxy, begin, beginBody("via proxy"), http.StatusOK},
		{"alice through the proxy, unpaired: no health", only, viaProxy, health, `{}`, http.StatusUnauthorized},
		{"also local: alice's headers from elsewhere", also, alice, health, `{}`, http.StatusOK},
		{"also local: alice's headers from elsewhere, pairing", also, alice, begin, beginBody("forged headers"), http.StatusOK},
	} {
		if code, b := call(t, c.base, c.n, "", c.proc, c.body); code != c.code {
			t.Errorf("%s: %d %s, want %d", c.what, code, b, c.code)
		}
	}
	// Funnel: serve marks a request from the internet; it is refused.
	req, _ := http.NewRequest(http.MethodPost, only+begin, strings.NewReader(beginBody("funnel")))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Tailscale-Funnel-Request", "?1")
	resp, err := viaProxy.client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden {
		t.Errorf("a Funnel request: %d", resp.StatusCode)
	}

	// The audit log: the request through the proxy records alice's node;
	// the one with forged headers from elsewhere records none, and its
	// source is its own address.
	var proxied, forged bool
	for _, ev := range events(t, s) {
		if ev.GetAction() != pairing.ActionRequest {
			continue
		}
		switch {
		case strings.Contains(ev.GetDetail(), `"via proxy"`):
			proxied = true
			if ev.GetTailnet().GetAddress() != alice.addr || !strings.Contains(ev.GetDetail(), `from "tailnet:addr:100.64.0.2"`) {
				t.Errorf("the request through the proxy: tailnet %v, %s", ev.GetTailnet(), ev.GetDetail())
			}
		case strings.Contains(ev.GetDetail(), `"forged headers"`):
			forged = true
			if ev.GetTailnet() != nil || !strings.Contains(ev.GetDetail(), `from "127.0.0.1"`) {
				t.Errorf("the request with forged headers: tailnet %v, %s", ev.GetTailnet(), ev.GetDetail())
			}
		}
	}
	if !proxied || !forged {
		t.Errorf("pairing requests in the audit log: through the proxy %v, forged %v", proxied, forged)
	}
}

// TestServeOrigins: a listener added with an https:// URL (TLS terminated
// in front of it) gives Secure cookies, the main plain-HTTP one does not;
// the Control UI accepts a form posted from the added URL's origin and
// refuses one from any other site.
func TestServeOrigins(t *testing.T) {
	s := startWith(t, func(*server.Config) {})
	tok, _ := owner(t, s)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	const public = "https://contractual.tail1234.ts.net"
	if err := s.Serve(ln, nil, public); err != nil {
		t.Fatal(err)
	}
	added := "http://" + ln.Addr().String()
	cookie := func(base string) *http.Cookie {
		req, _ := http.NewRequest(http.MethodGet, base+"/ui/devices", nil)
		req.AddCookie(&http.Cookie{Name: "contractual_session", Value: tok})
		resp, err := http.DefaultTransport.RoundTrip(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		for _, c := range resp.Cookies() {
			if c.Name == "contractual_session" {
				return c
			}
		}
		t.Fatalf("GET %s/ui/devices: %d without a session cookie", base, resp.StatusCode)
		return nil
	}
	if c := cookie(s.URL); c.Secure {
		t.Error("the plain HTTP listener's cookie is Secure")
	}
	if c := cookie(added); !c.Secure {
		t.Error("the https listener's cookie is not Secure")
	}
	post := func(origin string) int {
		req, _ := http.NewRequest(http.MethodPost, added+"/ui/logout", strings.NewReader("csrf=x"))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.Header.Set("Origin", origin)
		req.Header.Set("Sec-Fetch-Site", "cross-site")
		resp, err := http.DefaultTransport.RoundTrip(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	// Not signed in: past the cross-origin check, the UI answers 401;
	// refused by it, 403.
	if code := post(public); code != http.StatusUnauthorized {
		t.Errorf("a form from %s: %d, want it past the cross-origin check (401)", public, code)
	}
	if code := post("https://evil.example"); code != http.StatusForbidden {
		t.Errorf("a form from another site: %d, want 403", code)
	}
}
