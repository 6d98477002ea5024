package splittest_test

import (
	"context"
	"crypto/tls"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/structpb"

	contractualv1 "github.com/contractual/contractual/contracts/gen/contractual/v1"
	"github.com/contractual/contractual/contracts/gen/contractual/v1/contractualv1connect"
	"github.com/contractual/contractual/internal/authz"
	"github.com/contractual/contractual/internal/loadtest"
	"github.com/contractual/contractual/internal/pki"
	"github.com/contractual/contractual/internal/splittest"
)

const repo = "../.."

// smallContract is count.wasm's contract (a 461-byte tool, no WASI); the
// module's digest is left for PublishApproved to fill in.
const smallContract = `module: %s
name: count
version: 1.0.0
publisher: split tests
description: Counts vowels.
tools:
  - export: count_vowels
    description: Count the vowels of the input.
    risk: low
    input_schema: {type: object, properties: {text: {type: string}}, required: [text]}
`

func read(t testing.TB, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(repo, path))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// owner pairs the split's owner device and publishes and approves the
// small tool with it.
func owner(t testing.TB, s *splittest.Split) *loadtest.Device {
	t.Helper()
	hc := loadtest.NewHTTPClient(4)
	d, err := loadtest.PairOwner(context.Background(), hc, &loadtest.Server{URL: s.URL, SetupCode: s.SetupCode}, "owner")
	if err != nil {
		t.Fatalf("pairing the owner through the split gateway: %v\n%s", err, s.Log(authz.Gateway))
	}
	if _, _, err := d.PublishApproved(context.Background(), read(t, "runtime/sandbox/testdata/hostile/count.wasm"), smallContract); err != nil {
		t.Fatal(err)
	}
	return d
}

// TestSplitFlow: through the split — each service its binary's code, each
// hop mutual TLS on loopback — a device pairs, publishes, approves,
// invokes, stores and lists a secret and verifies the audit log, which
// holds every service's events.
func TestSplitFlow(t *testing.T) {
	s := splittest.Start(t)
	d := owner(t, s)
	ctx := context.Background()
	resp, err := d.Tools.Invoke(ctx, &contractualv1.InvokeRequest{Tool: "count.count_vowels", Input: structpb.NewStructValue(&structpb.Struct{
		Fields: map[string]*structpb.Value{"text": structpb.NewStringValue("contractual")},
	})})
	if err != nil {
		t.Fatalf("invoke: %v", err)
	}
	// count.wasm counts the vowels of its whole input, {"text":"contractual"}.
	if got := resp.GetOutput().GetStructValue().GetFields()["count"].GetNumberValue(); got != 5 {
		t.Fatalf("count_vowels = %v, want 5", resp.GetOutput())
	}
	auth := connect.WithInterceptors(bearer(d.Token))
	brk := contractualv1connect.NewBrokerServiceClient(d.HTTP, s.URL, auth)
	if _, err := brk.PutSecret(ctx, &contractualv1.PutSecretRequest{Name: "GITHUB_TOKEN", Value: []byte("not-a-real-token")}); err != nil {
		t.Fatalf("put secret: %v", err)
	}
	list, err := brk.ListSecrets(ctx, &contractualv1.ListSecretsRequest{})
	if err != nil || len(list.GetSecrets()) != 1 || list.GetSecrets()[0].GetName() != "GITHUB_TOKEN" {
		t.Fatalf("list secrets: %v %v", list, err)
	}
	aud := contractualv1connect.NewAuditServiceClient(d.HTTP, s.URL, auth)
	v, err := aud.Verify(ctx, &contractualv1.VerifyRequest{Full: true})
	if err != nil || !v.GetOk() {
		t.Fatalf("audit verify: %v %v", v, err)
	}
	tail, err := aud.Tail(ctx, &contractualv1.TailRequest{Limit: 100})
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, ev := range tail.GetEvents() {
		seen[ev.GetService()] = true
	}
	for _, svc := range []string{"gateway", "policy", "runner", "broker"} {
		if !seen[svc] {
			t.Errorf("no %s event in the audit log: %v", svc, tail.GetEvents())
		}
	}
	// The engine runs without a model, and refuses sessions saying how to
	// configure one.
	_, err = contractualv1connect.NewSessionServiceClient(d.HTTP, s.URL, auth).OpenSession(ctx, &contractualv1.OpenSessionRequest{})
	if connect.CodeOf(err) != connect.CodeFailedPrecondition || !strings.Contains(err.Error(), "the engine has no model") {
		t.Errorf("OpenSession without a model: %v", err)
	}
}

// TestSplitRefusals: each service port takes only mutual TLS with a
// certificate of the mesh's CA, and then only the calls in the caller's row
// of the table, never a device token.
func TestSplitRefusals(t *testing.T) {
	s := splittest.Start(t)
	d := owner(t, s)
	ctx := context.Background()

	// A client with service svc's certificate, calling policy.
	as := func(svc authz.Service) (*http.Client, string) {
		src, err := pki.NewSource(filepath.Join(s.Certs, string(svc)), pki.SourceOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return &http.Client{Transport: src.Transport(string(authz.Policy))}, "https://" + s.Addrs[authz.Policy]
	}

	t.Run("a service calling a procedure not in its row", func(t *testing.T) {
		hc, url := as(authz.Broker)
		_, err := contractualv1connect.NewPolicyInternalServiceClient(hc, url).GetModule(ctx, &contractualv1.GetModuleRequest{Digest: "sha256:" + strings.Repeat("0", 64)})
		if connect.CodeOf(err) != connect.CodePermissionDenied || !strings.Contains(err.Error(), "broker may not call /contractual.v1.PolicyInternalService/GetModule") {
			t.Fatalf("broker → GetModule: %v", err)
		}
		// The same certificate may call what its row allows.
		if _, err := contractualv1connect.NewPolicyInternalServiceClient(hc, url).GetVerifier(ctx, &contractualv1.GetVerifierRequest{}); err != nil {
			t.Fatalf("broker → GetVerifier: %v", err)
		}
	})
	t.Run("a service acting for a device", func(t *testing.T) {
		hc, url := as(authz.Runner)
		cctx, call := connect.NewClientContext(ctx)
		call.RequestHeader().Set(authz.HeaderOnBehalfOf, "device:"+strings.Repeat("a", 16))
		_, err := contractualv1connect.NewPolicyServiceClient(hc, url).Approve(cctx, &contractualv1.ApproveRequest{Digest: "sha256:" + strings.Repeat("0", 64)})
		if connect.CodeOf(err) != connect.CodePermissionDenied {
			t.Fatalf("runner approving for a device: %v", err)
		}
	})
	t.Run("a device token on a service port, with a service certificate", func(t *testing.T) {
		hc, url := as(authz.Gateway)
		c := contractualv1connect.NewPolicyServiceClient(hc, url, connect.WithInterceptors(bearer(d.Token)))
		_, err := c.ListContracts(ctx, &contractualv1.ListContractsRequest{})
		if connect.CodeOf(err) != connect.CodePermissionDenied || !strings.Contains(err.Error(), "device tokens are not accepted") {
			t.Fatalf("device token on policy's port: %v", err)
		}
	})
	t.Run("a device token on a service port, without a certificate", func(t *testing.T) {
		for _, svc := range []authz.Service{authz.Audit, authz.Policy, authz.Broker, authz.Runner, authz.Engine} {
			// The handshake is refused before any request is read: the
			// server asks for a certificate and the client has none.
			conn, err := tls.Dial("tcp", s.Addrs[svc], &tls.Config{InsecureSkipVerify: true, NextProtos: []string{"http/1.1"}})
			if err != nil {
				t.Fatalf("%s: %v", svc, err)
			}
			fmt.Fprintf(conn, "GET /contractual.v1.PolicyService/ListContracts HTTP/1.1\r\nHost: %s\r\nAuthorization: Bearer %s\r\n\r\n", svc, d.Token)
			_, err = conn.Read(make([]byte, 1))
			conn.Close()
			if err == nil || !strings.Contains(err.Error(), "certificate required") {
				t.Fatalf("%s without a certificate: %v, want the handshake refused (certificate required)", svc, err)
			}
		}
	})
	t.Run("a certificate from another CA", func(t *testing.T) {
		dir := t.TempDir()
		if _, err := pki.Init(filepath.Join(dir, "root"), filepath.Join(dir, "issuer"), filepath.Join(dir, "certs"), []string{"gateway"}, pki.Options{}); err != nil {
			t.Fatal(err)
		}
		src, err := pki.NewSource(filepath.Join(dir, "certs", "gateway"), pki.SourceOptions{})
		if err != nil {
			t.Fatal(err)
		}
		// Trust the real mesh's server, to be sure the refusal is the
		// server's: the client presents the other CA's certificate. With
		// TLS 1.3 the client's handshake completes before the server has
		// checked that certificate, and the server's alert arrives on the
		// first read; over HTTP/2 it surfaces as whichever error the
		// transport's connection pool happens to report first, so the test
		// reads the alert itself.
		cfg := src.ClientConfig("policy")
		cfg.VerifyConnection = nil
		cfg.NextProtos = []string{"h2"}
		conn, err := tls.Dial("tcp", s.Addrs[authz.Policy], cfg)
		if err == nil {
			defer conn.Close()
			_ = conn.SetReadDeadline(time.Now().Add(time.Minute))
			_, err = conn.Read(make([]byte, 1))
		}
		if err == nil || !strings.Contains(err.Error(), "unknown certificate authority") && !strings.Contains(err.Error(), "bad certificate") {
			t.Fatalf("a certificate from another CA: %v", err)
		}
	})
}

// bearer sends token as a device's bearer token.
func bearer(token string) connect.Interceptor {
	return connect.UnaryInterceptorFunc(func(next connect.UnaryFunc) connect.UnaryFunc {
		return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
			req.Header().Set("Authorization", "Bearer "+token)
			return next(ctx, req)
		}
	})
}

// TestSplitCallApproval: through the split, the gateway waits for a
// high-risk call's one-shot approval in policy (WaitCallApproval over
// mutual TLS), and runs the call once another device approves it.
func TestSplitCallApproval(t *testing.T) {
	s := splittest.Start(t)
	d := owner(t, s)
	ctx := context.Background()
	risky := strings.Replace(strings.Replace(smallContract, "name: count", "name: risky", 1), "risk: low", "risk: high", 1)
	if _, _, err := d.PublishApproved(ctx, read(t, "runtime/sandbox/testdata/hostile/count.wasm"), risky); err != nil {
		t.Fatal(err)
	}
	agent, err := d.Pair(ctx, d.HTTP, "agent", "invoke")
	if err != nil {
		t.Fatal(err)
	}
	in := structpb.NewStructValue(&structpb.Struct{Fields: map[string]*structpb.Value{"text": structpb.NewStringValue("approve me")}})
	first, err := agent.Tools.Invoke(ctx, &contractualv1.InvokeRequest{Tool: "risky.count_vowels", Input: in, Wait: durationpb.New(0)})
	id := first.GetPendingApproval().GetId()
	if err != nil || id == "" {
		t.Fatalf("the agent's call: %v, %v\n%s", first, err, s.Log(authz.Gateway))
	}
	done := make(chan error, 1)
	go func() {
		for {
			resp, err := agent.Tools.Invoke(ctx, &contractualv1.InvokeRequest{Tool: "risky.count_vowels", Input: in, Wait: durationpb.New(time.Minute)})
			if err != nil || resp.GetPendingApproval() == nil {
				// The whole input, {"text":"approve me"}, has 5 vowels.
				if got := resp.GetOutput().GetStructValue().GetFields()["count"].GetNumberValue(); err == nil && got != 5 {
					err = fmt.Errorf("count_vowels = %v, want 5", resp.GetOutput())
				}
				done <- err
				return
			}
		}
	}()
	if _, err := d.Policy.ApproveCall(ctx, &contractualv1.ApproveCallRequest{Id: id}); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatalf("the waiting call: %v\n%s", err, s.Log(authz.Gateway))
	}
}
