package pairing

import (
	"context"

	"github.com/contractual/contractual/internal/tailnet"
)

// sourceKey is the context key of the caller's source.
type sourceKey struct{}

// WithSource returns ctx carrying source, where a call came from (the
// remote IP address), so that pairing can rate-limit per source. The
// gateway sets it on every call it passes on.
func WithSource(ctx context.Context, source string) context.Context {
	return context.WithValue(ctx, sourceKey{}, source)
}

// SourceFrom returns the source set by WithSource, or "" if none.
func SourceFrom(ctx context.Context) string {
	s, _ := ctx.Value(sourceKey{}).(string)
	return s
}

// encodePeer is the stored form of the tailnet node p ("" for none).
func encodePeer(p *tailnet.Peer) string {
	if p == nil {
		return ""
	}
	return tailnet.Encode(p)
}

// decodePeer reads a stored tailnet node; nil for none (or an unreadable
// one: the node is for display, and the binding is the separate key).
func decodePeer(v string) *tailnet.Peer {
	if v == "" {
		return nil
	}
	p, err := tailnet.Decode(v)
	if err != nil {
		return nil
	}
	return p
}
