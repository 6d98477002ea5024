package pairing

import (
	"context"
	"encoding/json"
	"errors"
	"net/netip"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	contractualv1 "github.com/contractual/contractual/contracts/gen/contractual/v1"
	"github.com/contractual/contractual/internal/errs"
	"github.com/contractual/contractual/internal/tailnet"
)

// Tailnet nodes for the tests: A and B by stable id, C by address only
// (behind `tailscale serve`).
var (
	nodeA = &tailnet.Peer{NodeID: "nA1CNTRL", NodeName: "phone.tail1234.ts.net", Addr: netip.MustParseAddr("100.64.0.2"), User: "alice@example.com"}
	nodeB = &tailnet.Peer{NodeID: "nB2CNTRL", NodeName: "laptop.tail1234.ts.net", Addr: netip.MustParseAddr("100.64.0.3"), Tags: []string{"tag:agent"}}
	nodeC = &tailnet.Peer{Addr: netip.MustParseAddr("100.64.0.4"), User: "carol@example.com"}
)

// on returns f's context as a request from node p (nil: outside the
// tailnet).
func (f *fixture) on(p *tailnet.Peer) context.Context { return tailnet.With(f.ctx, p) }

// pairOn pairs a new device whose request and completion come from node p,
// approved by owner (from wherever), and returns it and its token.
func (f *fixture) pairOn(p *tailnet.Peer, owner device, scopes Scopes) (device, string) {
	f.t.Helper()
	d := newDevice(f.t)
	r, err := f.s.Begin(f.on(p), d.pub, "device on "+p.String(), scopes, KindClient)
	if err != nil {
		f.t.Fatalf("Begin on %v: %v", p, err)
	}
	if err := f.s.Approve(f.on(nodeC), r.Code, Principal(owner.id)); err != nil {
		f.t.Fatalf("Approve: %v", err)
	}
	tok, _, err := f.s.Complete(f.on(p), d.id, r.Nonce, d.sign(r.Nonce))
	if err != nil {
		f.t.Fatalf("Complete on %v: %v", p, err)
	}
	return d, tok
}

// TestTokenBoundToNode: a token is accepted from the node its device paired
// from, by id or by address, and refused (permission denied, without
// naming the node) from every other node and from outside the tailnet; a
// token paired outside the tailnet is refused from every node. Each
// refusal is audited with the node it came from.
func TestTokenBoundToNode(t *testing.T) {
	f := newFixture(t, Config{})
	owner, ownerTok := f.pairFirst() // outside the tailnet
	a, tokA := f.pairOn(nodeA, owner, ScopeInvoke)
	_, tokC := f.pairOn(nodeC, owner, ScopeRead)

	accept := func(ctx context.Context, tok, who string) {
		t.Helper()
		if _, err := f.s.Authenticate(ctx, tok, "src"); err != nil {
			t.Errorf("%s: %v", who, err)
		}
	}
	refuse := func(ctx context.Context, tok, who string) {
		t.Helper()
		_, err := f.s.Authenticate(ctx, tok, who)
		if !errs.Is(err, errs.PermissionDenied) || !errors.Is(err, ErrOtherNode) {
			t.Errorf("%s: %v, want permission denied: another node", who, err)
			return
		}
		for _, leak := range []string{nodeA.NodeID, nodeA.NodeName, nodeA.User, "100.64"} {
			if strings.Contains(err.Error(), leak) {
				t.Errorf("%s: the refusal %q names the bound node (%s)", who, err, leak)
			}
		}
	}
	accept(f.on(nodeA), tokA, "A's token from A")
	// The same node seen again, renamed: its stable id is what counts.
	accept(f.on(&tailnet.Peer{NodeID: nodeA.NodeID, Addr: netip.MustParseAddr("100.64.9.9")}), tokA, "A's token from A, renamed")
	accept(f.on(nodeC), tokC, "C's token from C")
	accept(f.ctx, ownerTok, "the local token locally")

	refuse(f.on(nodeB), tokA, "A's token from B")
	refuse(f.ctx, tokA, "A's token from outside the tailnet")
	refuse(f.on(&tailnet.Peer{Addr: nodeA.Addr}), tokA, "A's token from A's address but without its id")
	refuse(f.on(&tailnet.Peer{Addr: netip.MustParseAddr("100.64.0.5")}), tokC, "C's token from another address")
	refuse(f.on(nodeA), ownerTok, "the local token from A")
	refuse(f.on(nodeB), ownerTok, "the local token from B")

	resp, err := f.log.Tail(f.ctx, &contractualv1.TailRequest{Limit: 1000})
	if err != nil {
		t.Fatal(err)
	}
	var fromB int
	for _, ev := range resp.GetEvents() {
		if ev.GetAction() != ActionAuthenticate {
			continue
		}
		if ev.GetOutcome() != "permission_denied" {
			t.Errorf("refusal event outcome %q", ev.GetOutcome())
		}
		if ev.GetPrincipal() == Principal(a.id) && ev.GetTailnet().GetNodeId() == nodeB.NodeID {
			fromB++
		}
	}
	if fromB != 1 {
		t.Errorf("%d audit events of A's token refused from B, want 1", fromB)
	}
}

// TestOtherNodeIsAFailure: refusals for another node count against the
// source's failures like bad tokens: past the limit they are answered
// "back off", while the token still works from its own node.
func TestOtherNodeIsAFailure(t *testing.T) {
	f := newFixture(t, Config{AuthFailuresPerMinute: 3})
	owner, _ := f.pairFirst()
	_, tokA := f.pairOn(nodeA, owner, ScopeInvoke)
	for range 3 {
		if _, err := f.s.Authenticate(f.on(nodeB), tokA, "tailnet:"+nodeB.Key()); !errors.Is(err, ErrOtherNode) {
			t.Fatalf("A's token from B: %v", err)
		}
	}
	if _, err := f.s.Authenticate(f.on(nodeB), tokA, "tailnet:"+nodeB.Key()); !errs.Is(err, errs.ResourceExhausted) {
		t.Errorf("A's token from B past the limit: %v, want resource exhausted", err)
	}
	if _, err := f.s.Authenticate(f.on(nodeA), tokA, "tailnet:"+nodeA.Key()); err != nil {
		t.Errorf("A's token from A: %v", err)
	}
}

// TestCompleteFromTheBeginningNode: a request begun on node A is not
// completed from node B or from outside the tailnet (and that is audited),
// and still is from A; approving it may come from anywhere.
func TestCompleteFromTheBeginningNode(t *testing.T) {
	f := newFixture(t, Config{})
	owner, _ := f.pairFirst()
	d := newDevice(t)
	r, err := f.s.Begin(f.on(nodeA), d.pub, "phone", ScopeInvoke, KindClient)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.s.Approve(f.on(nodeB), r.Code, Principal(owner.id)); err != nil {
		t.Fatalf("approving from another node: %v", err)
	}
	for _, ctx := range []context.Context{f.on(nodeB), f.ctx, f.on(&tailnet.Peer{Addr: nodeA.Addr})} {
		_, _, err := f.s.Complete(ctx, d.id, r.Nonce, d.sign(r.Nonce))
		if !errs.Is(err, errs.PermissionDenied) || !strings.Contains(err.Error(), "another tailnet node") {
			t.Errorf("completing from %v: %v", tailnet.From(ctx), err)
		}
	}
	tok, id, err := f.s.Complete(f.on(nodeA), d.id, r.Nonce, d.sign(r.Nonce))
	if err != nil {
		t.Fatalf("completing from A: %v", err)
	}
	if _, err := f.s.Authenticate(f.on(nodeA), tok, "src"); err != nil {
		t.Errorf("the new token from A: %v", err)
	}
	var refused bool
	for _, a := range actions(t, f.log) {
		refused = refused || a == ActionPair+" "+id.Principal+" permission_denied"
	}
	if !refused {
		t.Error("no audit event of the completion refused from another node")
	}
}

// TestDevicesShowTheirNode: the device list shows each device's node, as
// the tailnet described it at pairing (no capabilities); none for a device
// paired outside the tailnet.
func TestDevicesShowTheirNode(t *testing.T) {
	f := newFixture(t, Config{})
	owner, _ := f.pairFirst()
	withCaps := *nodeB
	withCaps.Caps = map[string][]json.RawMessage{tailnet.DefaultCap: {json.RawMessage(`{"scopes":["invoke"]}`)}}
	b, _ := f.pairOn(&withCaps, owner, ScopeInvoke)
	resp, err := NewService(f.s).ListDevices(f.ctx, &contractualv1.ListDevicesRequest{})
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]*contractualv1.TailnetPeer{}
	for _, d := range resp.GetDevices() {
		got[d.GetId()] = d.GetTailnet()
	}
	if got[owner.id] != nil {
		t.Errorf("the local owner device shows node %v", got[owner.id])
	}
	if want := nodeB.Proto(); !proto.Equal(got[b.id], want) {
		t.Errorf("B's device shows node %v, want %v", got[b.id], want)
	}
}

// TestCappedApprover: an owner device whose node's app capability caps it
// to approve may approve what approve grants, not a request for owner.
func TestCappedApprover(t *testing.T) {
	f := newFixture(t, Config{})
	owner, _ := f.pairFirst()
	capped := WithIdentity(f.ctx, Identity{Principal: Principal(owner.id), Scopes: ScopeOwner.Cap(ScopeApprove)})
	want := newDevice(t)
	r := f.beginScopes(want, "wants owner", ScopeOwner)
	err := f.s.Approve(capped, r.Code, Principal(owner.id))
	if !errs.Is(err, errs.PermissionDenied) {
		t.Errorf("a capped approver approving owner: %v", err)
	}
	r = f.beginScopes(newDevice(t), "wants read", ScopeRead)
	if err := f.s.Approve(capped, r.Code, Principal(owner.id)); err != nil {
		t.Errorf("a capped approver approving read: %v", err)
	}
}
