package server_test

import (
	"context"
	"encoding/json"
	"net/http"
	"os"
	"strings"
	"testing"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/structpb"

	contractualv1 "github.com/contractual/contractual/contracts/gen/contractual/v1"
	"github.com/contractual/contractual/contracts/gen/contractual/v1/contractualv1connect"
	"github.com/contractual/contractual/internal/cli"
)

// publishTool publishes tools/<name>/<name>.wasm with contract src and
// approves it, as the device with token tok, and returns the digest.
func publishTool(t *testing.T, pol contractualv1connect.PolicyServiceClient, name, src string) string {
	t.Helper()
	mod, err := os.ReadFile(tool(name, name+".wasm"))
	if err != nil {
		t.Fatal(err)
	}
	pub, err := pol.Publish(context.Background(), &contractualv1.PublishRequest{Module: mod, Contract: []byte(src), ContractFilename: "contract.yaml"})
	if err != nil {
		t.Fatalf("publishing %s: %v", name, err)
	}
	d := pub.GetRecord().GetDigest()
	if _, err := pol.Approve(context.Background(), &contractualv1.ApproveRequest{Digest: d}); err != nil {
		t.Fatalf("approving %s: %v", name, err)
	}
	return d
}

// runLocal runs `contractual run` in-process and returns its exit status
// and stderr.
func runLocal(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var out, errOut strings.Builder
	code := cli.Main(context.Background(), append([]string{"run", "--cache-dir", ""}, args...), &cli.Env{
		Stdin: strings.NewReader(""), Stdout: &out, Stderr: &errOut,
		Getenv: func(string) string { return "" },
	})
	return code, out.String(), errOut.String()
}

// TestOutputSchemaEnforced checks that a tool whose output breaks its
// contract's output schema is refused by the server, as `contractual run`
// refuses it, and that the refusal is in the audit log.
func TestOutputSchemaEnforced(t *testing.T) {
	s, _ := start(t)
	tok, _ := owner(t, s)
	opts := connect.WithInterceptors(bearer(tok))
	pol := contractualv1connect.NewPolicyServiceClient(http.DefaultClient, s.URL, opts)
	tools := contractualv1connect.NewToolServiceClient(http.DefaultClient, s.URL, opts)

	// textkit's slugify, under a contract whose output schema allows slugs
	// of at most 5 characters.
	src := strings.Replace(readTool(t, "textkit", "contract.yaml"),
		"output_schema: {type: object, properties: {slug: {type: string}}",
		"output_schema: {type: object, properties: {slug: {type: string, maxLength: 5}}", 1)
	if !strings.Contains(src, "maxLength: 5") {
		t.Fatal("textkit's contract no longer has the output schema this test narrows")
	}
	publishTool(t, pol, "textkit", src)

	input := func(text string) *structpb.Value {
		return structpb.NewStructValue(&structpb.Struct{Fields: map[string]*structpb.Value{"text": structpb.NewStringValue(text)}})
	}
	if resp, err := tools.Invoke(context.Background(), &contractualv1.InvokeRequest{Tool: "textkit.slugify", Input: input("Ok")}); err != nil {
		t.Fatalf("a conforming output was refused: %v", err)
	} else if got := resp.GetOutput().GetStructValue().GetFields()["slug"].GetStringValue(); got != "ok" {
		t.Fatalf("slug %q, want ok", got)
	}
	resp, err := tools.Invoke(context.Background(), &contractualv1.InvokeRequest{Tool: "textkit.slugify", Input: input("Far too long for the schema")})
	if err == nil {
		t.Fatalf("the server returned output that breaks the output schema: %v", resp.GetOutput())
	}
	if connect.CodeOf(err) != connect.CodeAborted || !strings.Contains(err.Error(), "output of slugify does not meet its schema") {
		t.Fatalf("invoke: %v (code %v), want aborted (tool failed) for the output schema", err, connect.CodeOf(err))
	}

	// `contractual run` refuses the same call, with the same words.
	dir := t.TempDir()
	cfile := dir + "/contract.yaml"
	if err := os.WriteFile(cfile, []byte(src), 0o600); err != nil {
		t.Fatal(err)
	}
	code, _, errOut := runLocal(t, tool("textkit", "textkit.wasm"), "--contract", cfile, "--export", "slugify",
		"--input", `{"text": "Far too long for the schema"}`)
	if code != 1 || !strings.Contains(errOut, "output of slugify does not meet its schema") {
		t.Fatalf("run: exit %d: %s", code, errOut)
	}

	// The audit log records the run as failed.
	au := contractualv1connect.NewAuditServiceClient(http.DefaultClient, s.URL, opts)
	tail, err := au.Tail(context.Background(), &contractualv1.TailRequest{Limit: 1})
	if err != nil {
		t.Fatal(err)
	}
	ev := tail.GetEvents()[0]
	if ev.GetAction() != "call.run" || ev.GetOutcome() != "tool_failed" || !strings.Contains(ev.GetDetail(), "does not meet its schema") {
		t.Fatalf("last audit event: %v", ev)
	}
}

// TestStockExtismPlugin runs the go-sdk's count_vowels.wasm, unchanged,
// with its input passed as text, as `extism call --input` passes it.
func TestStockExtismPlugin(t *testing.T) {
	requireCurl(t)
	s, dir := start(t)
	tok, _ := owner(t, s)
	pol := contractualv1connect.NewPolicyServiceClient(http.DefaultClient, s.URL, connect.WithInterceptors(bearer(tok)))
	publishTool(t, pol, "countvowels", readTool(t, "countvowels", "contract.yaml"))
	const want = `{"count":3,"total":3,"vowels":"aeiouAEIOU"}`

	body, code := curlJSON(t, s.URL+"/contractual.v1.ToolService/Invoke", tok,
		`{"tool": "countvowels.count_vowels", "input": "Hello, World!"}`)
	var got struct{ Output json.RawMessage }
	if err := json.Unmarshal([]byte(body), &got); code != "200" || err != nil {
		t.Fatalf("curl: %s %s (%v)", code, body, err)
	}
	if compact(t, got.Output) != want {
		t.Fatalf("count_vowels(Hello, World!) = %s, want %s", got.Output, want)
	}

	// The CLI passes text with --text, locally and through the server.
	out := mustRun(t, s, dir, "invoke", "countvowels.count_vowels", "--text", "Hello, World!")
	if strings.TrimSpace(out) != want {
		t.Fatalf("invoke --text: %q, want %s", out, want)
	}
	exit, out, errOut := runLocal(t, tool("countvowels", "countvowels.wasm"), "--contract", tool("countvowels", "contract.yaml"), "--text", "Hello, World!")
	if exit != 0 || strings.TrimSpace(out) != want {
		t.Fatalf("run --text: exit %d: %q %s", exit, out, errOut)
	}

	// An object is not text: refused before the module runs, saying why.
	body, code = curlJSON(t, s.URL+"/contractual.v1.ToolService/Invoke", tok,
		`{"tool": "countvowels.count_vowels", "input": {"text": "Hello"}}`)
	if code != "400" || !strings.Contains(body, "want string") {
		t.Fatalf("object input: %s %s", code, body)
	}
}

func compact(t *testing.T, b []byte) string {
	t.Helper()
	var v any
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatalf("%s: %v", b, err)
	}
	out, _ := json.Marshal(v)
	return string(out)
}

// TestMalformedRequests checks that a malformed API request gets
// invalid_argument with a message that says what is wrong in the API's
// terms, and never the name of a Go type.
func TestMalformedRequests(t *testing.T) {
	requireCurl(t)
	s, _ := start(t)
	tok, _ := owner(t, s)
	tests := []struct{ path, body, want string }{
		{"/contractual.v1.ToolService/Invoke", `{"tool": "textkit.slugify", "input": `, "the request is not valid JSON for this procedure: unexpected EOF"},
		{"/contractual.v1.ToolService/Invoke", `{"tool": "textkit.slugify", "input": {}, "tol": 1}`, `unknown field "tol"`},
		{"/contractual.v1.ToolService/Invoke", `{"tool": 7, "input": {}}`, `invalid value for string field tool: 7`},
		{"/contractual.v1.ToolService/Invoke", `["textkit.slugify"]`, "the request is not valid JSON for this procedure"},
		{"/contractual.v1.ToolService/Invoke", `{"tool": "textkit.slugify"}`, "input is required"},
		{"/contractual.v1.ToolService/Invoke", `{"input": {}}`, "tool is required"},
		{"/contractual.v1.PolicyService/Approve", `{"digest": "sha256:abc"}`, "digest"},
		{"/contractual.v1.PolicyService/Publish", `{"module": "not base64!"}`, "invalid value for bytes field module"},
		{"/contractual.v1.PolicyService/ListContracts", `{"state": "SHINY"}`, `invalid value for enum field state: "SHINY"`},
	}
	for _, tt := range tests {
		body, code := curlJSON(t, s.URL+tt.path, tok, tt.body)
		var e struct{ Code, Message string }
		json.Unmarshal([]byte(body), &e)
		if code != "400" || e.Code != "invalid_argument" || !strings.Contains(e.Message, tt.want) {
			t.Errorf("%s %s: %s %s, want 400 invalid_argument with %q", tt.path, tt.body, code, body, tt.want)
		}
		for _, internal := range []string{"contractualv1", "*contractual", "unmarshal into", "structpb", "proto:"} {
			if strings.Contains(body, internal) {
				t.Errorf("%s %s: the message names %q: %s", tt.path, tt.body, internal, body)
			}
		}
	}
}

// TestContractsShow checks that `contracts show` prints the permissions
// card in words, as the Control UI shows it, and --json the record.
func TestContractsShow(t *testing.T) {
	s, dir := start(t)
	out := mustRun(t, s, dir, "publish", tool("ghwhoami", "ghwhoami.wasm"), "--contract", tool("ghwhoami", "contract.yaml"))
	digest := digestIn(t, out)
	out = mustRun(t, s, dir, "contracts", "show", digest)
	for _, want := range []string{
		"ghwhoami 1.0.0: pending\n",
		"  contract   " + digest + "\n",
		"Tools\n  whoami: risk low (runs without asking); takes a JSON object\n",
		"Network\n  GET https://api.github.com:443/user\n",
		"Secrets\n  GITHUB_TOKEN → Authorization: Bearer {secret}, on requests to https://api.github.com:443/user\n",
		"Configuration\n  none\n",
		"  log: not granted\n",
		"Limits per call\n",
		"  Timeout                   ",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("contracts show lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, `"record"`) || strings.Contains(out, `"digest"`) {
		t.Errorf("contracts show prints JSON, want words:\n%s", out)
	}
	out = mustRun(t, s, dir, "contracts", "show", digest, "--json")
	var resp struct {
		Record struct {
			Digest   string
			Contract struct{ Name string }
		}
	}
	if err := json.Unmarshal([]byte(out), &resp); err != nil || resp.Record.Digest != digest || resp.Record.Contract.Name != "ghwhoami" {
		t.Errorf("contracts show --json: %v\n%s", err, out)
	}
}
