package mesh_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"connectrpc.com/connect"

	contractualv1 "github.com/contractual/contractual/contracts/gen/contractual/v1"
	"github.com/contractual/contractual/contracts/gen/contractual/v1/contractualv1connect"
	"github.com/contractual/contractual/internal/authz"
	"github.com/contractual/contractual/internal/mesh"
	"github.com/contractual/contractual/internal/principal"
)

// heldSessions streams a session's events one at a time: the first at
// once, the next only when the test releases it, so a client that gets the
// first before the release is reading the stream as it is written.
type heldSessions struct {
	contractualv1connect.UnimplementedSessionServiceHandler
	release chan struct{}
	ended   chan error // the handler's context's end, when it returns
}

func (h *heldSessions) WatchSession(ctx context.Context, req *contractualv1.WatchSessionRequest, out *connect.ServerStream[contractualv1.WatchSessionResponse]) error {
	defer func() { h.ended <- ctx.Err() }()
	send := func(seq int64) error {
		return out.Send(&contractualv1.WatchSessionResponse{Event: &contractualv1.SessionEvent{Seq: seq, Text: principal.From(ctx)}})
	}
	if err := send(1); err != nil {
		return err
	}
	select {
	case <-h.release:
	case <-ctx.Done():
		return ctx.Err()
	}
	return send(2)
}

// TestMemoryStreams: a server stream over the in-memory network reaches
// the client message by message, with the authorization of any other call;
// a client that stops reading ends the handler's call.
func TestMemoryStreams(t *testing.T) {
	h := &heldSessions{release: make(chan struct{}), ended: make(chan error, 2)}
	n := mesh.NewMemory(nil)
	t.Cleanup(func() { n.Close(context.Background()) })
	_, handler := contractualv1connect.NewSessionServiceHandler(h, mesh.HandlerOptions(nil))
	if err := n.Serve(authz.Engine, handler); err != nil {
		t.Fatal(err)
	}
	c := mesh.NewClients(n, authz.Gateway).Engine
	ctx := principal.With(context.Background(), "device:d1")

	st, err := c.WatchSession(ctx, &contractualv1.WatchSessionRequest{SessionId: "s"})
	if err != nil {
		t.Fatal(err)
	}
	if !st.Receive() {
		t.Fatalf("no first event before the second was released: %v", st.Err())
	}
	if got := st.Msg().GetEvent(); got.GetSeq() != 1 || got.GetText() != "device:d1" {
		t.Fatalf("first event %v: want seq 1 for device:d1", got)
	}
	close(h.release)
	if !st.Receive() || st.Msg().GetEvent().GetSeq() != 2 {
		t.Fatalf("second event: %v", st.Err())
	}
	if st.Receive() {
		t.Fatalf("a third event %v", st.Msg())
	}
	if err := st.Err(); err != nil {
		t.Fatal(err)
	}
	st.Close()
	if err := <-h.ended; err != nil {
		t.Errorf("the handler's context ended before it returned: %v", err)
	}

	// A client that closes the stream early ends the call.
	h.release = make(chan struct{})
	st, err = c.WatchSession(ctx, &contractualv1.WatchSessionRequest{SessionId: "s"})
	if err != nil {
		t.Fatal(err)
	}
	if !st.Receive() {
		t.Fatal(st.Err())
	}
	st.Close()
	select {
	case err := <-h.ended:
		if !errors.Is(err, context.Canceled) {
			t.Errorf("after the client closed, the handler's context: %v", err)
		}
	case <-time.After(time.Minute):
		t.Fatal("the handler still runs a minute after the client closed its stream")
	}
}
