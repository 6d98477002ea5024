package metrics_test

import (
	"context"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/emptypb"

	"github.com/contractual/contractual/internal/metrics"
)

// BenchmarkInterceptor is the interceptor's cost on one call, against the
// call without it (a unary func that does nothing).
func BenchmarkInterceptor(b *testing.B) {
	next := connect.UnaryFunc(func(context.Context, connect.AnyRequest) (connect.AnyResponse, error) { return nil, nil })
	req := connect.NewRequest(&emptypb.Empty{})
	for _, bb := range []struct {
		name string
		f    connect.UnaryFunc
	}{
		{"bare", next},
		{"intercepted", metrics.NewRegistry().Interceptor().WrapUnary(next)},
	} {
		b.Run(bb.name, func(b *testing.B) {
			for b.Loop() {
				bb.f(b.Context(), req)
			}
		})
	}
}

// BenchmarkToolsObserve is the cost of recording one tool call.
func BenchmarkToolsObserve(b *testing.B) {
	tools := metrics.NewRegistry().Tools()
	for b.Loop() {
		tools.Observe("weather.forecast", nil, time.Millisecond)
	}
}
