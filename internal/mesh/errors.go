package mesh

import (
	"context"

	"connectrpc.com/connect"

	"github.com/contractual/contractual/internal/rpc"
)

// errorsFromConnect turns a client's *connect.Error into the errs error of
// its kind (rpc.FromConnect).
type errorsFromConnect struct{}

func (errorsFromConnect) WrapUnary(next connect.UnaryFunc) connect.UnaryFunc {
	return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
		resp, err := next(ctx, req)
		if err != nil {
			return nil, rpc.FromConnect(err)
		}
		return resp, nil
	}
}

func (errorsFromConnect) WrapStreamingClient(next connect.StreamingClientFunc) connect.StreamingClientFunc {
	return next
}

func (errorsFromConnect) WrapStreamingHandler(next connect.StreamingHandlerFunc) connect.StreamingHandlerFunc {
	return next
}
