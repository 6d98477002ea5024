// Package principal carries who is making a call through a context: the
// owner, a paired device, a chat session or a job. Every call is made by one.
package principal

import (
	"context"
	"strings"
)

// Service names a service's own identity ("service:runner"), as opposed to
// the principal a call is made by. In one process it travels in the context
// like a principal; across processes it will come from the caller's verified
// certificate, never from a header.
func Service(name string) string { return "service:" + name }

// Runner is the runner's identity: the only caller the broker releases
// secrets to.
var Runner = Service("runner")

type key struct{}

// With returns ctx carrying principal p.
func With(ctx context.Context, p string) context.Context {
	return context.WithValue(ctx, key{}, p)
}

// From returns the principal ctx carries, or "" if none.
func From(ctx context.Context) string {
	p, _ := ctx.Value(key{}).(string)
	return p
}

// Valid reports whether p is a principal name: one of "device:",
// "session:", "job:" followed by an id.
func Valid(p string) bool {
	for _, prefix := range []string{"device:", "session:", "job:"} {
		if id, ok := strings.CutPrefix(p, prefix); ok {
			return id != "" && len(id) <= 128 && !strings.ContainsAny(id, " \t\r\n")
		}
	}
	return false
}
