package server_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/structpb"

	contractualv1 "github.com/contractual/contractual/contracts/gen/contractual/v1"
	"github.com/contractual/contractual/contracts/gen/contractual/v1/contractualv1connect"
	"github.com/contractual/contractual/internal/cli"
	"github.com/contractual/contractual/internal/errs"
)

// pairDevice runs the device side of pairing: begin, have approve approve
// the request (by its code), prove possession, get the token.
func pairDevice(t testing.TB, url, name string, approve func(code string)) string {
	t.Helper()
	d := beginPairing(t, url, name)
	// Before approval, possession alone gets nothing.
	if _, err := d.pc.CompletePairing(context.Background(), d.proof()); connect.CodeOf(err) != connect.CodeFailedPrecondition {
		t.Fatalf("complete before approval: %v", err)
	}
	approve(d.begin.GetCode())
	return d.complete(t)
}

// TestPairing: the first device pairs with the setup code the server
// printed; it can then call tools and approve a second device; revoking the
// second device refuses its next call at once.
func TestPairing(t *testing.T) {
	s, _ := start(t)
	if s.SetupCode == "" {
		t.Fatal("no setup code at first start")
	}
	pc := contractualv1connect.NewPairingServiceClient(http.DefaultClient, s.URL)
	first := pairDevice(t, s.URL, "laptop", func(code string) {
		if _, err := pc.ApproveWithSetupCode(context.Background(), &contractualv1.ApproveWithSetupCodeRequest{RequestCode: code, SetupCode: s.SetupCode}); err != nil {
			t.Fatal(err)
		}
	})
	asFirst := connect.WithInterceptors(bearer(first))
	publishApproved(t, s, first)
	tools := contractualv1connect.NewToolServiceClient(http.DefaultClient, s.URL, asFirst)
	in, _ := structpb.NewValue(map[string]any{"text": "Paired"})
	if _, err := tools.Invoke(context.Background(), &contractualv1.InvokeRequest{Tool: "textkit.slugify", Input: in}); err != nil {
		t.Fatalf("invoke as the first device: %v", err)
	}

	// The setup code was single-use.
	_, err := pc.ApproveWithSetupCode(context.Background(), &contractualv1.ApproveWithSetupCodeRequest{RequestCode: "ABCDEF", SetupCode: s.SetupCode})
	if err == nil {
		t.Fatal("setup code reused")
	}

	asFirstPairing := contractualv1connect.NewPairingServiceClient(http.DefaultClient, s.URL, asFirst)
	second := pairDevice(t, s.URL, "phone", func(code string) {
		if _, err := asFirstPairing.ApprovePairing(context.Background(), &contractualv1.ApprovePairingRequest{Code: code}); err != nil {
			t.Fatal(err)
		}
	})
	tools2 := contractualv1connect.NewToolServiceClient(http.DefaultClient, s.URL, connect.WithInterceptors(bearer(second)))
	if _, err := tools2.Invoke(context.Background(), &contractualv1.InvokeRequest{Tool: "textkit.slugify", Input: in}); err != nil {
		t.Fatalf("invoke as the second device: %v", err)
	}
	devs, err := asFirstPairing.ListDevices(context.Background(), &contractualv1.ListDevicesRequest{})
	if err != nil || len(devs.GetDevices()) != 2 {
		t.Fatalf("devices: %v %v", devs, err)
	}
	var phone string
	for _, d := range devs.GetDevices() {
		if d.GetName() == "phone" {
			phone = d.GetId()
		}
	}
	if _, err := asFirstPairing.RevokeDevice(context.Background(), &contractualv1.RevokeDeviceRequest{DeviceId: phone}); err != nil {
		t.Fatal(err)
	}
	_, err = tools2.Invoke(context.Background(), &contractualv1.InvokeRequest{Tool: "textkit.slugify", Input: in})
	if connect.CodeOf(err) != connect.CodeUnauthenticated {
		t.Errorf("revoked device: %v", err)
	}

	// Without a device token, nobody can approve pairing.
	pub, _, _ := ed25519.GenerateKey(rand.Reader)
	third, err := pc.BeginPairing(context.Background(), &contractualv1.BeginPairingRequest{PublicKey: pub, Name: "tablet"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := pc.ApprovePairing(context.Background(), &contractualv1.ApprovePairingRequest{Code: third.GetCode()}); connect.CodeOf(err) != connect.CodeUnauthenticated {
		t.Errorf("approving a pairing request with no token: %v", err)
	}
}

// TestPairCLI pairs the CLI as the first device with the setup code, then
// uses its device token (no bootstrap token) to publish, approve and invoke,
// on the server it paired with: only pair is told --server.
func TestPairCLI(t *testing.T) {
	s, _ := start(t)
	cfg := t.TempDir()
	run := func(args ...string) (int, string) {
		var out, errOut strings.Builder
		if args[0] == "pair" {
			args = append(args, "--server", s.URL+"/")
		}
		code := cli.Main(context.Background(), args, &cli.Env{
			Stdin: strings.NewReader(""), Stdout: &out, Stderr: &errOut,
			Getenv: func(k string) string {
				switch k {
				case "CONTRACTUAL_CONFIG":
					return cfg
				}
				return ""
			},
		})
		return code, out.String() + errOut.String()
	}
	if code, out := run("pair", "--setup-code", s.SetupCode, "--name", "ci-laptop"); code != 0 || !strings.Contains(out, "paired as device:") {
		t.Fatalf("pair: %d %s", code, out)
	}
	if fi, err := os.Stat(filepath.Join(cfg, "device.token")); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("device token file: %v %v", fi, err)
	}
	code, out := run("publish", tool("textkit", "textkit.wasm"), "--contract", tool("textkit", "contract.yaml"))
	if code != 0 {
		t.Fatalf("publish as the device: %s", out)
	}
	if code, out := run("contracts", "approve", digestIn(t, out)); code != 0 {
		t.Fatalf("approve: %s", out)
	}
	if code, out := run("invoke", "textkit.slugify", "--input", `{"text": "Device Token"}`); code != 0 || !strings.Contains(out, "device-token") {
		t.Fatalf("invoke: %d %s", code, out)
	}
	if code, out := run("devices", "list"); code != 0 || !strings.Contains(out, "ci-laptop") {
		t.Fatalf("devices list: %d %s", code, out)
	}
}

// TestNewSetupCode: while no device is paired, a fresh setup code replaces
// the old one, which then reads as expired (serve prints a new one when the
// old one expires unused); once a device is paired there is none.
func TestNewSetupCode(t *testing.T) {
	s, _ := start(t)
	old := s.SetupCode
	code, _, err := s.NewSetupCode(context.Background())
	if err != nil || code == old || s.SetupCode != code {
		t.Fatalf("NewSetupCode: %q %v (old %q)", code, err, old)
	}
	pc := contractualv1connect.NewPairingServiceClient(http.DefaultClient, s.URL)
	pub, _, _ := ed25519.GenerateKey(rand.Reader)
	begin, err := pc.BeginPairing(context.Background(), &contractualv1.BeginPairingRequest{PublicKey: pub, Name: "late"})
	if err != nil {
		t.Fatal(err)
	}
	_, err = pc.ApproveWithSetupCode(context.Background(), &contractualv1.ApproveWithSetupCodeRequest{RequestCode: begin.GetCode(), SetupCode: old})
	if connect.CodeOf(err) != connect.CodeFailedPrecondition || !strings.Contains(err.Error(), "expired") {
		t.Fatalf("the replaced setup code: %v", err)
	}
	owner(t, s)
	if _, _, err := s.NewSetupCode(context.Background()); !errs.Is(err, errs.FailedPrecondition) {
		t.Fatalf("a setup code with a device paired: %v", err)
	}
}

// TestSetupCodeAfterLastOwnerLeaves: when the last owner device unpairs
// (or expires), serve's check makes a fresh setup code, which pairs a new
// owner, even with an invoke-only device still active; while a code is
// valid or an owner is active, it makes none.
func TestSetupCodeAfterLastOwnerLeaves(t *testing.T) {
	s, _ := start(t)
	ctx := context.Background()
	if fresh, err := s.EnsureSetupCode(ctx); err != nil || fresh {
		t.Fatalf("with the first code still valid: %v %v", fresh, err)
	}
	ownerTok, _ := owner(t, s)
	pairScoped(t, s, ownerTok, "agent", "invoke")
	if fresh, err := s.EnsureSetupCode(ctx); err != nil || fresh {
		t.Fatalf("with an owner paired: %v %v", fresh, err)
	}
	pc := contractualv1connect.NewPairingServiceClient(http.DefaultClient, s.URL, connect.WithInterceptors(bearer(ownerTok)))
	if _, err := pc.Unpair(ctx, &contractualv1.UnpairRequest{}); err != nil {
		t.Fatal(err)
	}
	old := s.SetupCode
	if fresh, err := s.EnsureSetupCode(ctx); err != nil || !fresh || s.SetupCode == old {
		t.Fatalf("with no owner left: %v %v (code %q, was %q)", fresh, err, s.SetupCode, old)
	}
	if fresh, err := s.EnsureSetupCode(ctx); err != nil || fresh {
		t.Fatalf("right after making one: %v %v", fresh, err)
	}
	open := contractualv1connect.NewPairingServiceClient(http.DefaultClient, s.URL)
	tok := pairDevice(t, s.URL, "new laptop", func(code string) {
		if _, err := open.ApproveWithSetupCode(ctx, &contractualv1.ApproveWithSetupCodeRequest{RequestCode: code, SetupCode: s.SetupCode}); err != nil {
			t.Fatal(err)
		}
	})
	asNew := contractualv1connect.NewPairingServiceClient(http.DefaultClient, s.URL, connect.WithInterceptors(bearer(tok)))
	if _, err := asNew.ListDevices(ctx, &contractualv1.ListDevicesRequest{}); err != nil {
		t.Fatalf("the new owner: %v", err)
	}
}
