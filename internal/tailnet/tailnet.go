// Package tailnet is who a request came from on the owner's tailnet: the
// node (its stable id, its MagicDNS name, its address), the node's user or
// tags, and the app capabilities the tailnet policy grants it.
//
// The gateway learns a request's Peer from the tailnet itself, never from
// the request: from tsnet's WhoIs for the embedded node (package
// tailnet/tsnode), or from the identity headers `tailscale serve` sets, and
// only when the request comes from the proxy the gateway was told to trust
// (ServeHeaders). A device token is bound to the Peer it paired from
// (Peer.Key), app capabilities cap a device's scopes (Caps), and every
// audit event a request causes records its Peer. Between services the Peer
// travels in one header (Header), as an annotation for the audit log: it
// grants nothing.
//
// This package links no Tailscale code, so that the gateway's own binary,
// behind the sidecar, does not either.
package tailnet

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"net/netip"
	"slices"
	"strings"
	"unicode/utf8"

	"google.golang.org/protobuf/proto"

	contractualv1 "github.com/contractual/contractual/contracts/gen/contractual/v1"
	"github.com/contractual/contractual/internal/errs"
)

// Peer is a tailnet node that a request came from.
type Peer struct {
	// NodeID is the node's stable id ("nXXXXCNTRL"); empty behind
	// `tailscale serve`, which names the node only by its address.
	NodeID string
	// NodeName is the node's MagicDNS name, without the final dot.
	NodeName string
	// Addr is the node's tailnet address.
	Addr netip.Addr
	// User is the login name of the node's user; empty for a tagged node.
	User string
	// Tags are the node's ACL tags ("tag:agent").
	Tags []string
	// Caps are the app capabilities the tailnet policy grants this node on
	// the server, by capability name: each a list of JSON values, one per
	// grant.
	Caps map[string][]json.RawMessage
}

// Key is what a device token is bound to: the node's stable id when the
// tailnet gave it ("node:<id>"), else its tailnet address ("addr:<ip>"),
// which the tailnet keeps for the node's lifetime. Behind `tailscale
// serve` only the address is known; a deployment uses one way in, so a
// device paired through one is refused through the other, which fails
// closed.
func (p *Peer) Key() string {
	if p == nil {
		return ""
	}
	if p.NodeID != "" {
		return "node:" + p.NodeID
	}
	if p.Addr.IsValid() {
		return "addr:" + p.Addr.Unmap().String()
	}
	return ""
}

// String names the peer for logs and error messages: its name, or address,
// and its user or tags.
func (p *Peer) String() string {
	if p == nil {
		return "local"
	}
	name := p.NodeName
	if name == "" && p.Addr.IsValid() {
		name = p.Addr.Unmap().String()
	}
	if name == "" {
		name = p.NodeID
	}
	switch {
	case p.User != "":
		return name + " (" + p.User + ")"
	case len(p.Tags) > 0:
		return name + " (" + strings.Join(p.Tags, ",") + ")"
	}
	return name
}

// Proto returns p as recorded in audit events and device records (nil for
// nil). Capabilities are not recorded.
func (p *Peer) Proto() *contractualv1.TailnetPeer {
	if p == nil {
		return nil
	}
	m := &contractualv1.TailnetPeer{NodeId: p.NodeID, NodeName: p.NodeName, User: p.User, Tags: slices.Clone(p.Tags)}
	if p.Addr.IsValid() {
		m.Address = p.Addr.Unmap().String()
	}
	return m
}

// FromProto returns the peer m describes, without capabilities, checking
// its fields (errs.Invalid).
func FromProto(m *contractualv1.TailnetPeer) (*Peer, error) {
	if m == nil {
		return nil, nil
	}
	p := &Peer{NodeID: m.GetNodeId(), NodeName: m.GetNodeName(), User: m.GetUser(), Tags: slices.Clone(m.GetTags())}
	if a := m.GetAddress(); a != "" {
		addr, err := netip.ParseAddr(a)
		if err != nil {
			return nil, errs.E(errs.Invalid, "tailnet peer: address %q: %v", clip(a), err)
		}
		p.Addr = addr
	}
	if err := p.check(); err != nil {
		return nil, err
	}
	return p, nil
}

// Field limits: a peer is small, and what the tailnet says about it is
// still checked before it is recorded.
const (
	maxFieldLen = 256
	maxTags     = 32
)

// check reports whether p is a peer worth recording: it names a node (an id
// or an address), and its fields are short, printable UTF-8.
func (p *Peer) check() error {
	if p.NodeID == "" && !p.Addr.IsValid() {
		return errs.E(errs.Invalid, "tailnet peer: neither a node id nor an address")
	}
	if len(p.Tags) > maxTags {
		return errs.E(errs.Invalid, "tailnet peer: %d tags, over the limit of %d", len(p.Tags), maxTags)
	}
	for _, f := range append([]string{p.NodeID, p.NodeName, p.User}, p.Tags...) {
		if !printable(f) {
			return errs.E(errs.Invalid, "tailnet peer: field %q is not short printable text", clip(f))
		}
	}
	return nil
}

// printable reports whether s is at most maxFieldLen bytes of valid UTF-8
// without control characters.
func printable(s string) bool {
	if len(s) > maxFieldLen || !utf8.ValidString(s) {
		return false
	}
	for _, r := range s {
		if r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0) {
			return false
		}
	}
	return true
}

type key struct{}

// With returns ctx carrying peer p: the request came from p over the
// tailnet. Only the gateway's listeners and the service transport's
// interceptor call it.
func With(ctx context.Context, p *Peer) context.Context {
	if p == nil {
		return ctx
	}
	return context.WithValue(ctx, key{}, p)
}

// From returns the peer ctx carries: nil for a request that did not come
// over the tailnet.
func From(ctx context.Context) *Peer {
	p, _ := ctx.Value(key{}).(*Peer)
	return p
}

// Header carries the peer of the device request that a call between
// services serves, so that the audit events it causes record it. It is an
// annotation: nothing is authorized by it (device tokens are checked
// against the peer at the gateway), and a service that could forge it can
// append audit events anyway.
const Header = "Contractual-Tailnet-Peer"

// maxHeaderLen bounds Header's value.
const maxHeaderLen = 2048

// Encode returns p's Header value: the deterministic protobuf encoding of
// p.Proto(), in unpadded base64url.
func Encode(p *Peer) string {
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(p.Proto())
	if err != nil { // a TailnetPeer always marshals
		return ""
	}
	return base64.RawURLEncoding.EncodeToString(b)
}

// Decode parses a Header value (errs.Invalid if it is not one).
func Decode(v string) (*Peer, error) {
	if len(v) > maxHeaderLen {
		return nil, errs.E(errs.Invalid, "%s: %d bytes, over the limit of %d", Header, len(v), maxHeaderLen)
	}
	b, err := base64.RawURLEncoding.DecodeString(v)
	if err != nil {
		return nil, errs.E(errs.Invalid, "%s: not base64url: %v", Header, err)
	}
	m := &contractualv1.TailnetPeer{}
	if err := proto.Unmarshal(b, m); err != nil {
		return nil, errs.E(errs.Invalid, "%s: %v", Header, err)
	}
	if len(m.ProtoReflect().GetUnknown()) != 0 {
		return nil, errs.E(errs.Invalid, "%s: unknown fields", Header)
	}
	return FromProto(m)
}

// clip shortens an untrusted string for an error message.
func clip(s string) string {
	if len(s) > 64 {
		return strings.ToValidUTF8(s[:64], "") + "…"
	}
	return s
}
