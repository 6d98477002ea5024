package pairing

import "context"

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
