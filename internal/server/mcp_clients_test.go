package server_test

import (
	"bytes"
	"context"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/modelcontextprotocol/go-sdk/mcp"

	contractualv1 "github.com/contractual/contractual/contracts/gen/contractual/v1"
	"github.com/contractual/contractual/contracts/gen/contractual/v1/contractualv1connect"
	"github.com/contractual/contractual/internal/cli"
	"github.com/contractual/contractual/internal/mcptest"
	"github.com/contractual/contractual/internal/server"
)

// The stdio bridge's tests launch `contractual mcp` as an MCP client does:
// a command whose stdin and stdout carry the protocol. The command is this
// test binary, which runs the contractual CLI when envCLI is set.
const envCLI = "SERVER_TEST_RUN_CLI"

func TestMain(m *testing.M) {
	if os.Getenv(envCLI) == "1" {
		ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
		code := cli.Main(ctx, os.Args[1:], &cli.Env{Stdin: os.Stdin, Stdout: os.Stdout, Stderr: os.Stderr})
		stop()
		os.Exit(code)
	}
	os.Exit(m.Run())
}

// mcpWorld is a server with textkit approved and greeter published but
// pending, an owner device and an invoke-only agent device.
type mcpWorld struct {
	s                  *server.Server
	ownerTok, agentTok string
	pol                contractualv1connect.PolicyServiceClient
}

func newMCPWorld(t *testing.T) *mcpWorld {
	t.Helper()
	s, _ := start(t)
	tok, _ := owner(t, s)
	pol := contractualv1connect.NewPolicyServiceClient(http.DefaultClient, s.URL, connect.WithInterceptors(bearer(tok)))
	publishTool(t, pol, "textkit", readTool(t, "textkit", "contract.yaml"))
	// greeter is published, not approved: no agent may see it.
	mod, err := os.ReadFile(tool("greeter", "greeter.wasm"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := pol.Publish(context.Background(), &contractualv1.PublishRequest{Module: mod, Contract: []byte(readTool(t, "greeter", "contract.yaml"))}); err != nil {
		t.Fatal(err)
	}
	return &mcpWorld{s: s, ownerTok: tok, agentTok: pairAgent(t, s, tok, "agent"), pol: pol}
}

// TestMCPInspector: the official MCP Inspector's CLI, as a real agent,
// against the real server's /mcp over loopback HTTP with an invoke-only
// device's token: it lists exactly the approved tools and calls one; a
// refused call is a tool error; a wrong token gets nothing.
func TestMCPInspector(t *testing.T) {
	w := newMCPWorld(t)
	url := w.s.URL + "/mcp"

	out := mcptest.Inspector(t, url, w.agentTok, "--method", "tools/list")
	t.Logf("npx @modelcontextprotocol/inspector@%s --cli %s --transport http --header 'Authorization: Bearer …' --method tools/list:\n%s", mcptest.InspectorVersion, url, out)
	var names []string
	for _, tl := range mcptest.Tools(t, out) {
		names = append(names, tl.Name)
		if tl.Description == "" || tl.InputSchema["type"] != "object" {
			t.Errorf("tool %s: description %q, input schema %v", tl.Name, tl.Description, tl.InputSchema)
		}
	}
	if want := []string{"textkit.json_pick", "textkit.slugify", "textkit.word_count"}; !slices.Equal(names, want) {
		t.Errorf("the Inspector lists %v, want exactly the approved %v", names, want)
	}

	out = mcptest.Inspector(t, url, w.agentTok, "--method", "tools/call", "--tool-name", "textkit.slugify", "--tool-arg", "text=Hello from the Inspector")
	t.Logf("… --method tools/call --tool-name textkit.slugify --tool-arg 'text=Hello from the Inspector':\n%s", out)
	res := mcptest.Call(t, out)
	if res.IsError || res.Text() != `{"slug":"hello-from-the-inspector"}` {
		t.Errorf("tools/call textkit.slugify: error %v, %q", res.IsError, res.Text())
	}

	// A tool that is not approved is no tool at all.
	stdout, stderr, err := mcptest.InspectorResult(t, url, w.agentTok, "--method", "tools/call", "--tool-name", "greeter.greet", "--tool-arg", "name=x")
	if err == nil && !mcptest.Call(t, stdout).IsError {
		t.Errorf("tools/call of the pending greeter.greet succeeded: %s", stdout)
	}
	t.Logf("… --method tools/call --tool-name greeter.greet (pending, not approved): %v\n%s%s", err, stdout, stderr)

	// A token that is not a device's gets no session.
	if stdout, stderr, err := mcptest.InspectorResult(t, url, "not-a-device-token", "--method", "tools/list"); err == nil || bytes.Contains(stdout, []byte("textkit")) {
		t.Errorf("the Inspector with a wrong token: %v\n%s%s", err, stdout, stderr)
	}
}

// bridgeCmd returns `contractual mcp` (this test binary as the CLI) for
// the device with token tok on s, with its own config directory.
func bridgeCmd(t *testing.T, s *server.Server, tok string) (*exec.Cmd, *mcptest.Buffer) {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(exe, "mcp")
	cmd.Env = append(os.Environ(), envCLI+"=1", "CONTRACTUAL_CONFIG="+t.TempDir(), "CONTRACTUAL_SERVER="+s.URL, "CONTRACTUAL_TOKEN="+tok)
	stderr := &mcptest.Buffer{}
	cmd.Stderr = stderr
	return cmd, stderr
}

// TestMCPBridge: `contractual mcp` launched as Claude Desktop launches it,
// driven by the Go SDK's client over its stdin and stdout, relays the real
// gateway's /mcp: the approved tools only, a call, a refused call, the
// list changing when a contract is approved; and when the owner revokes
// the agent's device, its next call fails and the bridge exits non-zero.
// Then the Inspector launches the bridge too and lists and calls through it.
func TestMCPBridge(t *testing.T) {
	w := newMCPWorld(t)
	ctx, cancel := context.WithTimeout(context.Background(), outcome)
	defer cancel()

	changed := make(chan struct{}, 16)
	c := mcp.NewClient(&mcp.Implementation{Name: "bridge-agent", Version: "1"}, &mcp.ClientOptions{
		ToolListChangedHandler: func(context.Context, *mcp.ToolListChangedRequest) {
			select {
			case changed <- struct{}{}:
			default:
			}
		},
	})
	cmd, stderr := bridgeCmd(t, w.s, w.agentTok)
	cs, err := c.Connect(ctx, &mcp.CommandTransport{Command: cmd, TerminateDuration: outcome}, nil)
	if err != nil {
		t.Fatalf("connect through contractual mcp: %v\nstderr: %s", err, stderr)
	}
	defer cs.Close()
	a := &agent{ClientSession: cs, changed: changed}
	a.waitTools(t, "textkit.json_pick", "textkit.slugify", "textkit.word_count")

	res := a.call(t, "textkit.slugify", map[string]any{"text": "Through the Bridge"})
	if res.IsError || text(t, res) != `{"slug":"through-the-bridge"}` {
		t.Fatalf("slugify through the bridge: %v %q", res.IsError, text(t, res))
	}
	bad := a.call(t, "textkit.slugify", map[string]any{"text": 5})
	if !bad.IsError || !strings.Contains(text(t, bad), "schema") {
		t.Errorf("a call breaking the schema through the bridge: %v %q", bad.IsError, text(t, bad))
	}

	// Approving greeter changes the list, and the bridge relays the news.
	a.drainChanged()
	list, err := w.pol.ListContracts(ctx, &contractualv1.ListContractsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	var greeter string
	for _, r := range list.GetRecords() {
		if r.GetContract().GetName() == "greeter" {
			greeter = r.GetDigest()
		}
	}
	if greeter == "" {
		t.Fatal("greeter was not published")
	}
	if _, err := w.pol.Approve(ctx, &contractualv1.ApproveRequest{Digest: greeter}); err != nil {
		t.Fatal(err)
	}
	a.expectChanged(t, "greeter's approval")
	a.waitTools(t, "greeter.greet", "textkit.json_pick", "textkit.slugify", "textkit.word_count")

	// Revoked: the next call fails and the bridge ends with status 1.
	pc := contractualv1connect.NewPairingServiceClient(http.DefaultClient, w.s.URL, connect.WithInterceptors(bearer(w.ownerTok)))
	if _, err := pc.RevokeDevice(ctx, &contractualv1.RevokeDeviceRequest{DeviceId: deviceOf(t, w.s, w.ownerTok, "agent")}); err != nil {
		t.Fatal(err)
	}
	if res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "textkit.slugify", Arguments: map[string]any{"text": "revoked"}}); err == nil && !res.IsError {
		t.Errorf("a call through the bridge after the device was revoked succeeded: %q", text(t, res))
	}
	// The client's transport owns the process: once the session has ended
	// (the bridge exits), Close has waited for it.
	exited := make(chan struct{})
	go func() { cs.Wait(); close(exited) }()
	select {
	case <-exited:
	case <-time.After(outcome):
		t.Fatalf("the bridge of a revoked device is still running\nstderr: %s", stderr)
	}
	cs.Close()
	if cmd.ProcessState == nil || cmd.ProcessState.ExitCode() != 1 {
		t.Errorf("the bridge of a revoked device exited with %v, want status 1\nstderr: %s", cmd.ProcessState, stderr)
	}
	if !strings.Contains(stderr.String(), "unauthenticated") {
		t.Errorf("the bridge's stderr does not say the token was refused: %s", stderr)
	}

	// The Inspector launching the bridge, as a client configured with a
	// command, for a fresh agent device.
	tok2 := pairAgent(t, w.s, w.ownerTok, "agent-2")
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	env := []string{envCLI + "=1", "CONTRACTUAL_CONFIG=" + t.TempDir(), "CONTRACTUAL_SERVER=" + w.s.URL, "CONTRACTUAL_TOKEN=" + tok2}
	out := mcptest.InspectorCommand(t, env, []string{exe, "mcp"}, "--method", "tools/call", "--tool-name", "greeter.greet", "--tool-arg", "name=Inspector")
	t.Logf("npx @modelcontextprotocol/inspector@%s --cli --transport stdio contractual mcp --method tools/call --tool-name greeter.greet --tool-arg name=Inspector:\n%s", mcptest.InspectorVersion, out)
	if call := mcptest.Call(t, out); call.IsError || !strings.Contains(call.Text(), "Inspector") {
		t.Errorf("greeter.greet through the Inspector and the bridge: %s", out)
	}
}
