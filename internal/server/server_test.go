package server_test

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/structpb"
	_ "modernc.org/sqlite"

	contractualv1 "github.com/contractual/contractual/contracts/gen/contractual/v1"
	"github.com/contractual/contractual/contracts/gen/contractual/v1/contractualv1connect"
	"github.com/contractual/contractual/internal/cli"
	"github.com/contractual/contractual/internal/server"
)

const repo = "../.."

// start runs an all-in-one server on a free loopback port with its data in
// a fresh directory.
func start(t *testing.T) (*server.Server, string) {
	t.Helper()
	dir := t.TempDir()
	s, err := server.Start(context.Background(), server.Config{DataDir: dir, Addr: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close(context.Background()) })
	return s, dir
}

// owners holds the first device paired on each test server (see owner).
var owners sync.Map // *server.Server → [2]string{token, token file}

// owner returns the token of s's owner device, pairing it with the setup
// code at the first call, and a file holding the token (for --token-file).
func owner(t testing.TB, s *server.Server) (token, file string) {
	t.Helper()
	if v, ok := owners.Load(s); ok {
		c := v.([2]string)
		return c[0], c[1]
	}
	pc := contractualv1connect.NewPairingServiceClient(http.DefaultClient, s.URL)
	token = pairDevice(t, s.URL, "owner laptop", func(code string) {
		if _, err := pc.ApproveWithSetupCode(context.Background(), &contractualv1.ApproveWithSetupCodeRequest{RequestCode: code, SetupCode: s.SetupCode}); err != nil {
			t.Fatalf("approving the owner device with the setup code: %v", err)
		}
	})
	file = filepath.Join(t.TempDir(), "device.token")
	if err := os.WriteFile(file, []byte(token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	owners.Store(s, [2]string{token, file})
	return token, file
}

// contractual runs the CLI in-process against s and returns its exit
// status, stdout and stderr.
func contractual(t *testing.T, s *server.Server, dir string, args ...string) (int, string, string) {
	t.Helper()
	var out, errOut bytes.Buffer
	_, file := owner(t, s)
	args = append(args, "--server", s.URL, "--token-file", file)
	if args[0] == "audit" {
		args = append(args, "--data", dir)
	}
	code := cli.Main(context.Background(), args, &cli.Env{
		Stdin: strings.NewReader(""), Stdout: &out, Stderr: &errOut,
		Getenv: func(string) string { return "" },
	})
	return code, out.String(), errOut.String()
}

func mustRun(t *testing.T, s *server.Server, dir string, args ...string) string {
	t.Helper()
	code, out, errOut := contractual(t, s, dir, args...)
	if code != 0 {
		t.Fatalf("contractual %s: exit %d\n%s%s", strings.Join(args, " "), code, out, errOut)
	}
	return out
}

// digestIn finds the contract digest a publish printed.
func digestIn(t *testing.T, out string) string {
	t.Helper()
	i := strings.Index(out, "(sha256:")
	if i < 0 {
		t.Fatalf("no digest in %q", out)
	}
	return out[i+1 : i+1+7+64]
}

func tool(name, file string) string { return filepath.Join(repo, "tools", name, file) }

// TestWholeSystem is the owner's path end to end, through the CLI against
// a real server on loopback.
func TestWholeSystem(t *testing.T) {
	s, dir := start(t)
	input := `{"text": "Hello, Contractual World!"}`

	out := mustRun(t, s, dir, "publish", tool("textkit", "textkit.wasm"), "--contract", tool("textkit", "contract.yaml"))
	if !strings.Contains(out, ": pending") {
		t.Fatalf("publish: %s", out)
	}
	v1 := digestIn(t, out)

	code, _, errOut := contractual(t, s, dir, "invoke", "textkit.slugify", "--input", input)
	if code == 0 || !strings.Contains(errOut, "permission_denied") || !strings.Contains(errOut, "pending") {
		t.Fatalf("invoke before approval: exit %d: %s", code, errOut)
	}

	mustRun(t, s, dir, "contracts", "approve", v1, "--reason", "reviewed")
	out = mustRun(t, s, dir, "invoke", "textkit.slugify", "--input", input)
	if strings.TrimSpace(out) != `{"slug":"hello-contractual-world"}` {
		t.Fatalf("invoke: %q", out)
	}

	// One changed byte of the contract: a new pending contract, shown as a
	// diff; the approval of v1 does not cover it, v1 still runs.
	changed := filepath.Join(t.TempDir(), "contract.yaml")
	src, _ := os.ReadFile(tool("textkit", "contract.yaml"))
	os.WriteFile(changed, bytes.Replace(src, []byte("version: 1.0.0"), []byte("version: 1.0.1"), 1), 0o600)
	out = mustRun(t, s, dir, "publish", tool("textkit", "textkit.wasm"), "--contract", changed)
	v2 := digestIn(t, out)
	if v2 == v1 || !strings.Contains(out, ": pending") || !strings.Contains(out, "version") {
		t.Fatalf("changed publish: %s", out)
	}
	out = mustRun(t, s, dir, "invoke", "textkit.slugify", "--input", input, "--json")
	var inv struct {
		ContractDigest string `json:"contract_digest"`
	}
	if err := json.Unmarshal([]byte(out), &inv); err != nil || inv.ContractDigest != v1 {
		t.Fatalf("invoke ran %q, want the approved %s (%v)", inv.ContractDigest, v1, err)
	}

	out = mustRun(t, s, dir, "audit", "verify")
	if !strings.Contains(out, "audit log intact") {
		t.Fatalf("verify: %s", out)
	}

	// Tamper with the audit store the way an attacker with the file would:
	// drop the guard triggers and edit a row.
	s.Close(context.Background())
	db, err := sql.Open("sqlite", filepath.Join(dir, "audit", "audit.db"))
	if err != nil {
		t.Fatal(err)
	}
	rows, err := db.Query(`SELECT name FROM sqlite_master WHERE type = 'trigger'`)
	if err != nil {
		t.Fatal(err)
	}
	var triggers []string
	for rows.Next() {
		var n string
		rows.Scan(&n)
		triggers = append(triggers, n)
	}
	rows.Close()
	for _, n := range triggers {
		if _, err := db.Exec(`DROP TRIGGER "` + n + `"`); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := db.Exec(`DELETE FROM events WHERE idx = 3`); err != nil {
		t.Fatal(err)
	}
	db.Close()
	code, _, errOut = contractual(t, s, dir, "audit", "verify")
	if code == 0 || !strings.Contains(errOut, "first bad index 3") {
		t.Fatalf("verify after tampering: exit %d: %s", code, errOut)
	}
}

// publishApproved publishes and approves textkit through a Connect client,
// as the device with token tok.
func publishApproved(t *testing.T, s *server.Server, tok string, opts ...connect.ClientOption) {
	t.Helper()
	opts = append(opts, connect.WithInterceptors(bearer(tok)))
	pol := contractualv1connect.NewPolicyServiceClient(http.DefaultClient, s.URL, opts...)
	wasm, _ := os.ReadFile(tool("textkit", "textkit.wasm"))
	src, _ := os.ReadFile(tool("textkit", "contract.yaml"))
	pub, err := pol.Publish(context.Background(), &contractualv1.PublishRequest{Module: wasm, Contract: src, ContractFilename: "contract.yaml"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := pol.Approve(context.Background(), &contractualv1.ApproveRequest{Digest: pub.GetRecord().GetDigest()}); err != nil {
		t.Fatal(err)
	}
}

func bearer(tok string) connect.Interceptor {
	return connect.UnaryInterceptorFunc(func(next connect.UnaryFunc) connect.UnaryFunc {
		return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
			req.Header().Set("Authorization", "Bearer "+tok)
			return next(ctx, req)
		}
	})
}

// TestCurl invokes a tool with curl speaking Connect JSON, as the README
// shows.
func TestCurl(t *testing.T) {
	requireCurl(t)
	s, _ := start(t)
	tok, _ := owner(t, s)
	publishApproved(t, s, tok)
	curlTo := func(path, auth, body string) (string, string) { return curlJSON(t, s.URL+path, auth, body) }
	curl := func(auth, body string) (string, string) {
		return curlTo("/contractual.v1.ToolService/Invoke", auth, body)
	}
	body, code := curl(strings.TrimSpace(string(tok)), `{"tool": "textkit.slugify", "input": {"text": "Curl Me"}}`)
	var got struct {
		Output struct{ Slug string }
	}
	if err := json.Unmarshal([]byte(body), &got); code != "200" || err != nil || got.Output.Slug != "curl-me" {
		t.Errorf("curl: %s %s (%v)", code, body, err)
	}
	tests := []struct{ name, auth, body, code, msg string }{
		{"no token", "", `{"tool": "textkit.slugify", "input": {"text": "x"}}`, "401", "unauthenticated"},
		{"wrong token", "nope-nope-nope-nope-nope-nope-nope-nope", `{"tool": "textkit.slugify", "input": {"text": "x"}}`, "401", "invalid or revoked device token"},
		{"malformed JSON", string(tok), `{"tool": "textkit.slugify", "input": `, "400", "invalid_argument"},
		{"unknown tool", string(tok), `{"tool": "nothing.here", "input": {}}`, "404", "not_found"},
		{"schema", string(tok), `{"tool": "textkit.slugify", "input": {"text": 1}}`, "400", "/text"},
	}
	for _, tt := range tests {
		body, code := curl(strings.TrimSpace(tt.auth), tt.body)
		if code != tt.code || !strings.Contains(body, tt.msg) {
			t.Errorf("%s: %s %s, want %s with %q", tt.name, code, body, tt.code, tt.msg)
		}
	}
	owner := strings.TrimSpace(string(tok))
	// Over the stated 2 MiB cap for everything but a publish.
	huge := `{"tool": "textkit.slugify", "input": {"text": "` + strings.Repeat("a", 3<<20) + `"}}`
	if body, code := curl(owner, huge); code != "429" || !strings.Contains(body, "resource_exhausted") {
		t.Errorf("oversized: %s %.200s", code, body)
	}
	// Procedures for services only are refused by the gateway, whoever
	// asks, with a Connect error; an unknown procedure is unimplemented.
	for _, tt := range []struct{ path, code, msg string }{
		{"/contractual.v1.RunnerService/Execute", "403", `"code":"permission_denied"`},
		{"/contractual.v1.AuditInternalService/Append", "403", `"code":"permission_denied"`},
		{"/contractual.v1.PolicyInternalService/Evaluate", "403", `"code":"permission_denied"`},
		{"/contractual.v1.PolicyInternalService/GetModule", "403", `"code":"permission_denied"`},
		{"/contractual.v1.PolicyInternalService/GetVerifier", "403", `"code":"permission_denied"`},
		{"/contractual.v1.PolicyInternalService/WatchContracts", "403", `"code":"permission_denied"`},
		{"/contractual.v1.BrokerInternalService/IssueHandle", "403", `"code":"permission_denied"`},
		{"/contractual.v1.BrokerInternalService/RedeemHandle", "403", `"code":"permission_denied"`},
		// What moved to the internal services is gone from the public ones.
		{"/contractual.v1.PolicyService/Evaluate", "501", `"code":"unimplemented"`},
		{"/contractual.v1.AuditService/Append", "501", `"code":"unimplemented"`},
		{"/contractual.v1.ToolService/Nope", "501", `"code":"unimplemented"`},
		{"/contractual.v1.NopeService/Invoke", "501", `"code":"unimplemented"`},
		{"/contractual.v2.ToolService/Invoke", "501", `"code":"unimplemented"`},
		{"/grpc.health.v1.Health/Nope", "501", `"code":"unimplemented"`},
	} {
		for _, auth := range []string{owner, "", "garbage-token"} {
			if body, code := curlTo(tt.path, auth, `{}`); code != tt.code || !strings.Contains(body, tt.msg) {
				t.Errorf("%s (token %q): %s %s, want %s with %s", tt.path, auth, code, body, tt.code, tt.msg)
			}
		}
	}
}

// TestGRPC drives the same API with a gRPC-protocol client over h2c.
func TestGRPC(t *testing.T) {
	s, _ := start(t)
	tok, _ := owner(t, s)
	publishApproved(t, s, tok, connect.WithGRPC())
	h2c := &http.Client{Transport: &http.Transport{Protocols: func() *http.Protocols {
		p := new(http.Protocols)
		p.SetUnencryptedHTTP2(true)
		return p
	}()}}
	tools := contractualv1connect.NewToolServiceClient(h2c, s.URL, connect.WithGRPC(),
		connect.WithInterceptors(bearer(strings.TrimSpace(string(tok)))))
	in, _ := structpb.NewValue(map[string]any{"text": "gRPC works"})
	resp, err := tools.Invoke(context.Background(), &contractualv1.InvokeRequest{Tool: "textkit.slugify", Input: in})
	if err != nil {
		t.Fatal(err)
	}
	if got := resp.GetOutput().GetStructValue().GetFields()["slug"].GetStringValue(); got != "grpc-works" {
		t.Errorf("slug %q", got)
	}
	_, err = tools.Invoke(context.Background(), &contractualv1.InvokeRequest{Tool: "textkit.nope", Input: in})
	if connect.CodeOf(err) != connect.CodeNotFound {
		t.Errorf("unknown export: %v", err)
	}
}
