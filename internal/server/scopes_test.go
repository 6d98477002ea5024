package server_test

import (
	"bufio"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"io"
	"net/http"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/structpb"

	contractualv1 "github.com/contractual/contractual/contracts/gen/contractual/v1"
	"github.com/contractual/contractual/contracts/gen/contractual/v1/contractualv1connect"
	"github.com/contractual/contractual/internal/cli"
	"github.com/contractual/contractual/internal/server"
)

// pairScoped pairs a device asking for scopes, approved by the device with
// token approver, and returns its token and id.
func pairScoped(t *testing.T, s *server.Server, approver, name string, scopes ...string) (string, string) {
	t.Helper()
	pub, priv, _ := ed25519.GenerateKey(rand.Reader)
	pc := contractualv1connect.NewPairingServiceClient(http.DefaultClient, s.URL)
	begin, err := pc.BeginPairing(context.Background(), &contractualv1.BeginPairingRequest{PublicKey: pub, Name: name, Scopes: scopes})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(begin.GetScopes(), scopes) {
		t.Fatalf("begin answered scopes %q, want %q", begin.GetScopes(), scopes)
	}
	asApprover := contractualv1connect.NewPairingServiceClient(http.DefaultClient, s.URL, connect.WithInterceptors(bearer(approver)))
	reqs, err := asApprover.ListPairingRequests(context.Background(), &contractualv1.ListPairingRequestsRequest{})
	if err != nil || len(reqs.GetRequests()) != 1 || !slices.Equal(reqs.GetRequests()[0].GetScopes(), scopes) {
		t.Fatalf("the approver sees %v, %v; want one request for %q", reqs, err, scopes)
	}
	if _, err := asApprover.ApprovePairing(context.Background(), &contractualv1.ApprovePairingRequest{Code: begin.GetCode()}); err != nil {
		t.Fatal(err)
	}
	d := &pendingDevice{pc: pc, priv: priv, begin: begin}
	done, err := pc.CompletePairing(context.Background(), d.proof())
	if err != nil || !slices.Equal(done.GetScopes(), scopes) {
		t.Fatalf("complete: %v %v", done, err)
	}
	return done.GetToken(), begin.GetDeviceId()
}

// TestDeviceScopes: over the API, an invoke-only device (an agent's
// machine) calls tools and nothing else: approving contracts or pairing
// requests, writing secrets and revoking devices are permission_denied,
// naming the scope it lacks; an approve device may grant only the scopes
// it holds. Devices list with their scopes.
func TestDeviceScopes(t *testing.T) {
	s, _ := start(t)
	ownerTok, _ := owner(t, s)
	publishApproved(t, s, ownerTok)
	agentTok, agentID := pairScoped(t, s, ownerTok, "agent", "invoke")
	approverTok, _ := pairScoped(t, s, ownerTok, "phone", "approve")

	as := connect.WithInterceptors(bearer(agentTok))
	tools := contractualv1connect.NewToolServiceClient(http.DefaultClient, s.URL, as)
	in, _ := structpb.NewValue(map[string]any{"text": "Agent Call"})
	if _, err := tools.Invoke(context.Background(), &contractualv1.InvokeRequest{Tool: "textkit.slugify", Input: in}); err != nil {
		t.Fatalf("the agent's invoke: %v", err)
	}
	pol := contractualv1connect.NewPolicyServiceClient(http.DefaultClient, s.URL, as)
	brk := contractualv1connect.NewBrokerServiceClient(http.DefaultClient, s.URL, as)
	pc := contractualv1connect.NewPairingServiceClient(http.DefaultClient, s.URL, as)
	ctx := context.Background()
	for _, c := range []struct {
		name, scope string
		call        func() error
	}{
		{"approve a contract", "approve", func() error {
			_, err := pol.Approve(ctx, &contractualv1.ApproveRequest{Digest: "sha256:" + strings.Repeat("0", 64)})
			return err
		}},
		{"approve a pairing request", "approve", func() error {
			_, err := pc.ApprovePairing(ctx, &contractualv1.ApprovePairingRequest{Code: "ABCDEF"})
			return err
		}},
		{"write a secret", "owner", func() error {
			_, err := brk.PutSecret(ctx, &contractualv1.PutSecretRequest{Name: "GITHUB_TOKEN", Value: []byte("x")})
			return err
		}},
		{"revoke a device", "owner", func() error {
			_, err := pc.RevokeDevice(ctx, &contractualv1.RevokeDeviceRequest{DeviceId: agentID})
			return err
		}},
		{"publish", "publish", func() error {
			_, err := pol.Publish(ctx, &contractualv1.PublishRequest{Module: []byte("\x00asm"), Contract: []byte("x")})
			return err
		}},
		{"list devices", "read", func() error {
			_, err := pc.ListDevices(ctx, &contractualv1.ListDevicesRequest{})
			return err
		}},
	} {
		err := c.call()
		if connect.CodeOf(err) != connect.CodePermissionDenied || !strings.Contains(err.Error(), "needs scope "+c.scope) ||
			!strings.Contains(err.Error(), "has scopes invoke") {
			t.Errorf("the agent may not %s: got %v, want permission_denied naming scope %s", c.name, err, c.scope)
		}
	}

	// An approve device may not grant invoke (it does not hold it).
	pub, _, _ := ed25519.GenerateKey(rand.Reader)
	open := contractualv1connect.NewPairingServiceClient(http.DefaultClient, s.URL)
	begin, err := open.BeginPairing(ctx, &contractualv1.BeginPairingRequest{PublicKey: pub, Name: "other agent", Scopes: []string{"invoke"}})
	if err != nil {
		t.Fatal(err)
	}
	asApprover := contractualv1connect.NewPairingServiceClient(http.DefaultClient, s.URL, connect.WithInterceptors(bearer(approverTok)))
	_, err = asApprover.ApprovePairing(ctx, &contractualv1.ApprovePairingRequest{Code: begin.GetCode()})
	if connect.CodeOf(err) != connect.CodePermissionDenied || !strings.Contains(err.Error(), "may grant only those") {
		t.Errorf("an approve device granting invoke: %v", err)
	}
	// An unknown scope is bad input.
	pub2, _, _ := ed25519.GenerateKey(rand.Reader)
	_, err = open.BeginPairing(ctx, &contractualv1.BeginPairingRequest{PublicKey: pub2, Name: "x", Scopes: []string{"admin"}})
	if connect.CodeOf(err) != connect.CodeInvalidArgument || !strings.Contains(err.Error(), `unknown scope "admin"`) {
		t.Errorf("an unknown scope: %v", err)
	}

	// The owner sees every device with its scopes and kind.
	asOwner := contractualv1connect.NewPairingServiceClient(http.DefaultClient, s.URL, connect.WithInterceptors(bearer(ownerTok)))
	devs, err := asOwner.ListDevices(ctx, &contractualv1.ListDevicesRequest{})
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, d := range devs.GetDevices() {
		got[d.GetName()] = strings.Join(d.GetScopes(), ",") + " " + d.GetKind().String()
		if d.GetExpiresAt() == nil || d.GetLastUsedAt() == nil {
			t.Errorf("device %s lists no expiry or last use", d.GetName())
		}
	}
	want := map[string]string{"owner laptop": "owner DEVICE_KIND_CLIENT", "agent": "invoke DEVICE_KIND_CLIENT", "phone": "approve DEVICE_KIND_CLIENT"}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("device %s: %q, want %q (all: %v)", k, got[k], v, got)
		}
	}

	// The agent may unpair itself; then its token is refused.
	if _, err := pc.Unpair(ctx, &contractualv1.UnpairRequest{}); err != nil {
		t.Fatalf("the agent unpairing itself: %v", err)
	}
	if _, err := tools.Invoke(ctx, &contractualv1.InvokeRequest{Tool: "textkit.slugify", Input: in}); connect.CodeOf(err) != connect.CodeUnauthenticated {
		t.Errorf("invoke after unpairing: %v", err)
	}
}

// cliEnv runs the CLI in process with its own config directory (its own
// device key and token).
type cliEnv struct {
	t   *testing.T
	s   *server.Server
	cfg string
}

func newCLI(t *testing.T, s *server.Server) *cliEnv { return &cliEnv{t: t, s: s, cfg: t.TempDir()} }

// runTo runs the CLI with args, writing its output to out, and returns its
// exit status and stderr.
func (c *cliEnv) runTo(out io.Writer, args ...string) (int, string) {
	var errOut strings.Builder
	args = append(args, "--server", c.s.URL)
	code := cli.Main(context.Background(), args, &cli.Env{
		Stdin: strings.NewReader(""), Stdout: out, Stderr: &errOut,
		Getenv: func(k string) string {
			if k == "CONTRACTUAL_CONFIG" {
				return c.cfg
			}
			return ""
		},
	})
	return code, errOut.String()
}

// run runs the CLI with args and returns its exit status and output.
func (c *cliEnv) run(args ...string) (int, string) {
	var out strings.Builder
	code, errOut := c.runTo(&out, args...)
	return code, out.String() + errOut
}

var requestLine = regexp.MustCompile(`pairing request ([A-Z0-9]{6}) for device ([a-z2-7]{26}) \(agent\), scopes invoke`)

// TestPairCLIScopes: `contractual pair --scope invoke` asks for invoke; the
// owner sees the scopes in `devices requests`, approves, and sees them in
// `devices list`; the agent can invoke but not approve, and unpairs itself
// with `devices revoke` of its own id.
func TestPairCLIScopes(t *testing.T) {
	s, _ := start(t)
	own := newCLI(t, s)
	if code, out := own.run("pair", "--setup-code", s.SetupCode, "--name", "laptop", "--scope", "invoke"); code != 0 ||
		!strings.Contains(out, "scopes owner;") {
		t.Fatalf("the first device (the setup code grants owner): %d %s", code, out)
	}
	code, out := own.run("publish", tool("textkit", "textkit.wasm"), "--contract", tool("textkit", "contract.yaml"))
	if code != 0 {
		t.Fatal(out)
	}
	if code, out := own.run("contracts", "approve", digestIn(t, out)); code != 0 {
		t.Fatal(out)
	}

	agent := newCLI(t, s)
	pr, pw := io.Pipe()
	paired := make(chan string, 1)
	go func() {
		var rest strings.Builder
		code, errOut := agent.runTo(io.MultiWriter(pw, &rest), "pair", "--name", "agent", "--scope", "invoke")
		pw.Close()
		paired <- strconv.Itoa(code) + "\n" + rest.String() + errOut
	}()
	line, err := bufio.NewReader(pr).ReadString('\n')
	if err != nil {
		t.Fatal(err)
	}
	go io.Copy(io.Discard, pr)
	m := requestLine.FindStringSubmatch(line)
	if m == nil {
		t.Fatalf("pair printed %q", line)
	}
	reqCode, agentID := m[1], m[2]
	if code, out := own.run("devices", "requests"); code != 0 || !regexp.MustCompile(reqCode+`\s+`+agentID+`\s+agent\s+client\s+invoke\s`).MatchString(out) {
		t.Fatalf("devices requests: %d\n%s", code, out)
	}
	if code, out := own.run("devices", "approve", reqCode); code != 0 {
		t.Fatalf("devices approve: %s", out)
	}
	if res := <-paired; !strings.HasPrefix(res, "0\n") || !strings.Contains(res, "paired as device:"+agentID+" with ") || !strings.Contains(res, ", scopes invoke;") {
		t.Fatalf("the agent's pair: %s", res)
	}
	code, out = own.run("devices", "list")
	if code != 0 || !regexp.MustCompile(agentID+`\s+agent\s+client\s+invoke\s`).MatchString(out) ||
		!regexp.MustCompile(`laptop\s+client\s+owner\s`).MatchString(out) || !strings.Contains(out, "SCOPES") {
		t.Fatalf("devices list: %d\n%s", code, out)
	}

	if code, out := agent.run("invoke", "textkit.slugify", "--input", `{"text": "From The Agent"}`); code != 0 || !strings.Contains(out, "from-the-agent") {
		t.Fatalf("the agent's invoke: %d %s", code, out)
	}
	if code, out := agent.run("devices", "approve", "ABCDEF"); code == 0 || !strings.Contains(out, "needs scope approve") {
		t.Fatalf("the agent approving: %d %s", code, out)
	}
	if code, out := agent.run("devices", "revoke", agentID); code != 0 {
		t.Fatalf("the agent unpairing itself: %s", out)
	}
	if code, out := agent.run("invoke", "textkit.slugify", "--input", `{"text": "x"}`); code == 0 || !strings.Contains(out, "unauthenticated") {
		t.Fatalf("the unpaired agent's invoke: %d %s", code, out)
	}
}

// TestPairCLIRetry: a mistyped setup code and then an expired one leave
// the CLI free to run `pair` again at once (the same device key), and
// each says what is wrong and where the right code is.
func TestPairCLIRetry(t *testing.T) {
	s, _ := start(t)
	c := newCLI(t, s)
	code, out := c.run("pair", "--setup-code", "ZZZZZZZZ", "--name", "laptop")
	if code == 0 || !strings.Contains(out, "wrong setup code") || !strings.Contains(out, "run `contractual pair` again") {
		t.Fatalf("a mistyped setup code: %d %s", code, out)
	}
	old := s.SetupCode
	if _, _, err := s.NewSetupCode(context.Background()); err != nil { // what serve does when a code expires
		t.Fatal(err)
	}
	code, out = c.run("pair", "--setup-code", old, "--name", "laptop")
	if code == 0 || !strings.Contains(out, "setup code expired") || !strings.Contains(out, "the server prints a new one on its console") {
		t.Fatalf("an expired setup code: %d %s", code, out)
	}
	if code, out := c.run("pair", "--setup-code", s.SetupCode, "--name", "laptop"); code != 0 || !strings.Contains(out, "paired as device:") {
		t.Fatalf("pairing again at once: %d %s", code, out)
	}
}
