package gateway

import (
	"context"

	"connectrpc.com/connect"

	contractualv1 "github.com/contractual/contractual/contracts/gen/contractual/v1"
	"github.com/contractual/contractual/contracts/gen/contractual/v1/contractualv1connect"
	"github.com/contractual/contractual/internal/rpc"
)

// sessions passes the devices' SessionService calls on to the engine, for
// the calling device (the engine's client names it); the two server
// streams are relayed message by message.
type sessions struct {
	contractualv1connect.SessionServiceClient
}

var _ contractualv1connect.SessionServiceHandler = sessions{}

func (s sessions) Send(ctx context.Context, req *contractualv1.SendRequest, out *connect.ServerStream[contractualv1.SendResponse]) error {
	in, err := s.SessionServiceClient.Send(ctx, req)
	if err != nil {
		return rpc.FromConnect(err)
	}
	return relayStream(in, out.Send)
}

func (s sessions) WatchSession(ctx context.Context, req *contractualv1.WatchSessionRequest, out *connect.ServerStream[contractualv1.WatchSessionResponse]) error {
	in, err := s.SessionServiceClient.WatchSession(ctx, req)
	if err != nil {
		return rpc.FromConnect(err)
	}
	return relayStream(in, out.Send)
}

// relayStream sends every message of in with send, and in's error, if any,
// as the stream's error.
func relayStream[T any](in *connect.ServerStreamForClient[T], send func(*T) error) error {
	defer in.Close()
	for in.Receive() {
		if err := send(in.Msg()); err != nil {
			return err
		}
	}
	return rpc.FromConnect(in.Err())
}
