package authz_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"net/http"
	"net/netip"
	"path/filepath"
	"testing"

	"connectrpc.com/connect"

	contractualv1 "github.com/contractual/contractual/contracts/gen/contractual/v1"
	"github.com/contractual/contractual/contracts/gen/contractual/v1/contractualv1connect"
	"github.com/contractual/contractual/internal/audit"
	"github.com/contractual/contractual/internal/authz"
	"github.com/contractual/contractual/internal/errs"
	"github.com/contractual/contractual/internal/mesh"
	"github.com/contractual/contractual/internal/pairing"
	"github.com/contractual/contractual/internal/pki"
	"github.com/contractual/contractual/internal/splittest"
	"github.com/contractual/contractual/internal/tailnet"
)

var phone = &tailnet.Peer{NodeID: "nA1CNTRL", NodeName: "phone.tail1234.ts.net", Addr: netip.MustParseAddr("100.64.0.2"), User: "alice@example.com"}

// appendAs appends one event through the gateway's client of audit, with
// ctx's tailnet peer, and a raw Header value when raw is set.
func appendAs(ctx context.Context, c mesh.Audit, action, raw string) error {
	if raw != "" {
		var call connect.CallInfo
		ctx, call = connect.NewClientContext(ctx)
		call.RequestHeader().Set(tailnet.Header, raw)
	}
	_, err := c.Append(ctx, &contractualv1.AppendRequest{Events: []*contractualv1.AuditEvent{{
		Service: "gateway", Principal: "service:gateway", Action: action, Outcome: "ok",
	}}})
	return err
}

// checkPeerHeader runs the header's checks against audit reached through
// c (as the gateway), reading the log back with tail: the context's peer
// arrives and is stamped on the event; no peer stamps none; a malformed
// header is refused and records nothing.
func checkPeerHeader(t *testing.T, c mesh.Audit, tail func() []*contractualv1.AuditEvent) {
	t.Helper()
	ctx := context.Background()
	if err := appendAs(tailnet.With(ctx, phone), c, "test.with_peer", ""); err != nil {
		t.Fatalf("append with a peer: %v", err)
	}
	if err := appendAs(ctx, c, "test.without_peer", ""); err != nil {
		t.Fatalf("append without a peer: %v", err)
	}
	for _, raw := range []string{"!!!", tailnet.Encode(&tailnet.Peer{User: "no node"})} {
		if err := appendAs(ctx, c, "test.malformed", raw); !errs.Is(err, errs.Invalid) {
			t.Errorf("append with header %q: %v, want invalid", raw, err)
		}
	}
	seen := map[string]bool{}
	for _, ev := range tail() {
		seen[ev.GetAction()] = true
		switch ev.GetAction() {
		case "test.with_peer":
			got, err := tailnet.FromProto(ev.GetTailnet())
			if err != nil || got.Key() != phone.Key() || got.NodeName != phone.NodeName || got.User != phone.User || got.Addr != phone.Addr {
				t.Errorf("the event appended with a peer records %v (%v), want %v", got, err, phone)
			}
		case "test.without_peer":
			if ev.GetTailnet() != nil {
				t.Errorf("the event appended without a peer records %v", ev.GetTailnet())
			}
		case "test.malformed":
			t.Error("an append with a malformed peer header was recorded")
		}
	}
	if !seen["test.with_peer"] || !seen["test.without_peer"] {
		t.Errorf("events in the log: %v", seen)
	}
}

// TestPeerHeaderInMemory: the peer crosses the all-in-one server's
// in-memory network.
func TestPeerHeaderInMemory(t *testing.T) {
	ctx := context.Background()
	svc, err := audit.OpenService(ctx, audit.Config{Dir: t.TempDir()}, audit.Deps{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { svc.Close(ctx) })
	n := mesh.NewMemory(nil)
	t.Cleanup(func() { n.Close(ctx) })
	if err := n.Serve(authz.Audit, svc.Handlers(mesh.HandlerOptions(nil)).Mux()); err != nil {
		t.Fatal(err)
	}
	checkPeerHeader(t, mesh.NewClients(n, authz.Gateway).Audit, func() []*contractualv1.AuditEvent {
		resp, err := svc.Tail(ctx, &contractualv1.TailRequest{Limit: 100})
		if err != nil {
			t.Fatal(err)
		}
		return resp.GetEvents()
	})
}

// TestPeerHeaderOverMutualTLS: the peer crosses the split deployment's
// mutual TLS, to the audit service's own binary code; the log is read back
// by a paired device through the gateway.
func TestPeerHeaderOverMutualTLS(t *testing.T) {
	s := splittest.Start(t)
	src, err := pki.NewSource(filepath.Join(s.Certs, string(authz.Gateway)), pki.SourceOptions{})
	if err != nil {
		t.Fatal(err)
	}
	net := &mesh.TLS{Source: src, URLs: map[authz.Service]string{authz.Audit: "https://" + s.Addrs[authz.Audit]}}
	tok := pairOwner(t, s)
	reader := contractualv1connect.NewAuditServiceClient(http.DefaultClient, s.URL, connect.WithInterceptors(connect.UnaryInterceptorFunc(
		func(next connect.UnaryFunc) connect.UnaryFunc {
			return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
				req.Header().Set("Authorization", "Bearer "+tok)
				return next(ctx, req)
			}
		})))
	checkPeerHeader(t, mesh.NewClients(net, authz.Gateway).Audit, func() []*contractualv1.AuditEvent {
		resp, err := reader.Tail(context.Background(), &contractualv1.TailRequest{Limit: 100})
		if err != nil {
			t.Fatal(err)
		}
		return resp.GetEvents()
	})
}

// pairOwner pairs an owner device with s's setup code and returns its
// token.
func pairOwner(t *testing.T, s *splittest.Split) string {
	t.Helper()
	ctx := context.Background()
	pub, priv, _ := ed25519.GenerateKey(rand.Reader)
	pc := contractualv1connect.NewPairingServiceClient(http.DefaultClient, s.URL)
	begin, err := pc.BeginPairing(ctx, &contractualv1.BeginPairingRequest{PublicKey: pub, Name: "owner"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := pc.ApproveWithSetupCode(ctx, &contractualv1.ApproveWithSetupCodeRequest{RequestCode: begin.GetCode(), SetupCode: s.SetupCode}); err != nil {
		t.Fatal(err)
	}
	done, err := pc.CompletePairing(ctx, &contractualv1.CompletePairingRequest{
		DeviceId: begin.GetDeviceId(), Nonce: begin.GetNonce(),
		Signature: ed25519.Sign(priv, pairing.SignedMessage(begin.GetDeviceId(), begin.GetNonce())),
	})
	if err != nil {
		t.Fatal(err)
	}
	return done.GetToken()
}
