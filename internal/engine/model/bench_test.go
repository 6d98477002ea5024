package model_test

import (
	"testing"

	"github.com/contractual/contractual/internal/engine/modeltest"
)

// BenchmarkPropose measures one turn against the scripted server on loopback:
// the client's own work (schema building, encoding, the HTTP round trip,
// parsing and validation) with a model that answers at once.
func BenchmarkPropose(b *testing.B) {
	for _, stream := range []bool{false, true} {
		b.Run(map[bool]string{false: "plain", true: "stream"}[stream], func(b *testing.B) {
			srv := modeltest.New(b)
			c := newClient(b, srv, stream, 0)
			ctx := b.Context()
			for b.Loop() {
				srv.Push(modeltest.Turn{Content: validCall, PromptTokens: 100, CompletionTokens: 20})
				p, err := c.Propose(ctx, conv, tools)
				if err != nil || len(p.Calls) != 1 {
					b.Fatalf("Propose: %v, %+v", err, p)
				}
			}
		})
	}
}
