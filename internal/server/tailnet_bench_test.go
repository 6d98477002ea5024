package server_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/contractual/contractual/contracts/contract"
	contractualv1 "github.com/contractual/contractual/contracts/gen/contractual/v1"
	"github.com/contractual/contractual/contracts/gen/contractual/v1/contractualv1connect"
	"github.com/contractual/contractual/internal/pairing"
	"github.com/contractual/contractual/internal/server"
	"github.com/contractual/contractual/internal/tailnet/tailnettest"
	"github.com/contractual/contractual/internal/tailnet/tsnode"
)

// BenchmarkInvokeTailnet measures one invocation of the small tool from a
// device on the tailnet (a tsnet node: WireGuard in userspace, through the
// test tailnet's DERP relay on loopback, and WhoIs on every request) next
// to the same invocation from a device on the server's machine (loopback),
// interleaved, on one server:
//
//	go test -run '^$' -bench InvokeTailnet -benchtime 500x ./internal/server
func BenchmarkInvokeTailnet(b *testing.B) {
	tn := tailnettest.New(b)
	ctx := context.Background()
	dir := b.TempDir()
	s, err := server.Start(ctx, server.Config{DataDir: dir, Addr: "127.0.0.1:0",
		Tailnet: &tsnode.Config{ControlURL: tn.ControlURL, HTTPS: tsnode.HTTPSOff, Ephemeral: true}})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close(ctx)
	ownerTok, _ := owner(b, s)
	auth := connect.WithInterceptors(bearer(ownerTok))
	wasm, err := os.ReadFile(filepath.Join("..", "..", "runtime", "sandbox", "testdata", "hostile", "count.wasm"))
	if err != nil {
		b.Fatal(err)
	}
	pol := contractualv1connect.NewPolicyServiceClient(http.DefaultClient, s.URL, auth)
	pub, err := pol.Publish(ctx, &contractualv1.PublishRequest{
		Module: wasm, Contract: fmt.Appendf(nil, vowelsContract, contract.ModuleDigest(wasm)), ContractFilename: "vowels.yaml",
	})
	if err != nil {
		b.Fatal(err)
	}
	if _, err := pol.Approve(ctx, &contractualv1.ApproveRequest{Digest: pub.GetRecord().GetDigest()}); err != nil {
		b.Fatal(err)
	}

	// The phone pairs over the tailnet, approved by the local owner.
	phone := tn.Node(b, "phone")
	pk, priv, _ := ed25519.GenerateKey(rand.Reader)
	pc := contractualv1connect.NewPairingServiceClient(phone.HTTPClient(), s.TailnetURL)
	begin, err := pc.BeginPairing(ctx, &contractualv1.BeginPairingRequest{PublicKey: pk, Name: "phone", Scopes: []string{"invoke"}})
	if err != nil {
		b.Fatal(err)
	}
	local := contractualv1connect.NewPairingServiceClient(http.DefaultClient, s.URL, auth)
	if _, err := local.ApprovePairing(ctx, &contractualv1.ApprovePairingRequest{Code: begin.GetCode()}); err != nil {
		b.Fatal(err)
	}
	done, err := pc.CompletePairing(ctx, &contractualv1.CompletePairingRequest{
		DeviceId: begin.GetDeviceId(), Nonce: begin.GetNonce(),
		Signature: ed25519.Sign(priv, pairing.SignedMessage(begin.GetDeviceId(), begin.GetNonce())),
	})
	if err != nil {
		b.Fatal(err)
	}

	overTailnet := contractualv1connect.NewToolServiceClient(phone.HTTPClient(), s.TailnetURL, connect.WithInterceptors(bearer(done.GetToken())))
	overLoopback := contractualv1connect.NewToolServiceClient(http.DefaultClient, s.URL, auth)
	in, _ := structpb.NewValue(map[string]any{"text": "the quick brown fox"})
	req := &contractualv1.InvokeRequest{Tool: "vowels.count_vowels", Input: in}
	for _, c := range []contractualv1connect.ToolServiceClient{overTailnet, overLoopback} {
		if _, err := c.Invoke(ctx, req); err != nil { // warm: compile, connections
			b.Fatal(err)
		}
	}

	var ts, lo []time.Duration
	b.ResetTimer()
	for range b.N {
		t0 := time.Now()
		if _, err := overTailnet.Invoke(ctx, req); err != nil {
			b.Fatal(err)
		}
		t1 := time.Now()
		if _, err := overLoopback.Invoke(ctx, req); err != nil {
			b.Fatal(err)
		}
		ts, lo = append(ts, t1.Sub(t0)), append(lo, time.Since(t1))
	}
	b.StopTimer()
	p50 := func(d []time.Duration) float64 {
		slices.Sort(d)
		return float64(d[len(d)/2]) / float64(time.Microsecond)
	}
	pt, pl := p50(ts), p50(lo)
	b.ReportMetric(pt, "tailnet-p50-µs")
	b.ReportMetric(pl, "loopback-p50-µs")
	b.ReportMetric(pt/pl, "tailnet/loopback")
}
