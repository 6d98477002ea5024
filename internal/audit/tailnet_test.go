package audit

import (
	"context"
	"net/netip"
	"testing"

	contractualv1 "github.com/contractual/contractual/contracts/gen/contractual/v1"
	"github.com/contractual/contractual/internal/errs"
	"github.com/contractual/contractual/internal/tailnet"
)

// TestAppendStampsThePeer: an event appended for a request from a tailnet
// node records that node, unless it names one itself; without a peer,
// nothing is stamped; a malformed peer on an event is refused; and the log
// still verifies.
func TestAppendStampsThePeer(t *testing.T) {
	svc := NewService(mustOpen(t))
	phone := &tailnet.Peer{NodeID: "nA1CNTRL", NodeName: "phone.tail1234.ts.net", Addr: netip.MustParseAddr("100.64.0.2"), User: "alice@example.com"}
	own := &contractualv1.TailnetPeer{NodeId: "nOWN", Address: "100.64.0.9"}
	ctx := tailnet.With(context.Background(), phone)
	plain, named := event(1), event(2)
	named.Tailnet = own
	if _, err := svc.Append(ctx, &contractualv1.AppendRequest{Events: []*contractualv1.AuditEvent{plain, named}}); err != nil {
		t.Fatal(err)
	}
	if _, err := svc.Append(context.Background(), &contractualv1.AppendRequest{Events: []*contractualv1.AuditEvent{event(3)}}); err != nil {
		t.Fatal(err)
	}
	bad := event(4)
	bad.Tailnet = &contractualv1.TailnetPeer{User: "nobody"}
	if _, err := svc.Append(ctx, &contractualv1.AppendRequest{Events: []*contractualv1.AuditEvent{bad}}); !errs.Is(err, errs.Invalid) {
		t.Errorf("an event with a malformed peer: %v", err)
	}
	resp, err := svc.Tail(context.Background(), &contractualv1.TailRequest{Limit: 10})
	if err != nil {
		t.Fatal(err)
	}
	evs := resp.GetEvents()
	if len(evs) != 3 {
		t.Fatalf("%d events", len(evs))
	}
	if got := evs[0].GetTailnet(); got.GetNodeId() != phone.NodeID || got.GetUser() != phone.User || got.GetAddress() != "100.64.0.2" {
		t.Errorf("the event for phone's request records %v", got)
	}
	if got := evs[1].GetTailnet(); got.GetNodeId() != "nOWN" {
		t.Errorf("the event naming its own peer records %v", got)
	}
	if got := evs[2].GetTailnet(); got != nil {
		t.Errorf("the event without a peer records %v", got)
	}
	v, err := svc.Verify(context.Background(), &contractualv1.VerifyRequest{Full: true})
	if err != nil || !v.GetOk() {
		t.Fatalf("verify: %v %v", v, err)
	}
}
