package mcpbridge_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http/httptest"
	"os"
	"os/exec"
	"os/signal"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/contractual/contractual/internal/cli"
	"github.com/contractual/contractual/internal/mcptest"
)

// The tests launch the bridge as an MCP client does: a command whose
// stdin and stdout carry the protocol. The command is this test binary,
// which runs the contractual CLI when envCLI is set (see TestMain).
const envCLI = "MCPBRIDGE_TEST_RUN_CLI"

func TestMain(m *testing.M) {
	if os.Getenv(envCLI) == "1" {
		ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
		code := cli.Main(ctx, os.Args[1:], &cli.Env{Stdin: os.Stdin, Stdout: os.Stdout, Stderr: os.Stderr})
		stop()
		os.Exit(code)
	}
	os.Exit(m.Run())
}

// testTimeout bounds each test; it only stops a test that waits for
// something that never comes, far above what a test needs, so that a
// machine under heavy load (a load average of 20 on 2 cores) still passes.
const testTimeout = 5 * time.Minute

// bridge is one `contractual mcp` process and its stderr.
type bridge struct {
	cmd    *exec.Cmd
	stderr *mcptest.Buffer
}

// command returns `contractual mcp args...` with a fresh config directory,
// the server URL in $CONTRACTUAL_SERVER and the token in $CONTRACTUAL_TOKEN
// (when not empty).
func command(t *testing.T, serverURL, token string, args ...string) *bridge {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(exe, append([]string{"mcp"}, args...)...)
	cmd.Env = append(os.Environ(),
		envCLI+"=1",
		"CONTRACTUAL_CONFIG="+t.TempDir(),
		"CONTRACTUAL_SERVER="+serverURL,
		"CONTRACTUAL_TOKEN="+token,
	)
	b := &bridge{cmd: cmd, stderr: &mcptest.Buffer{}}
	cmd.Stderr = b.stderr
	return b
}

// connect starts b and connects an MCP client to it with opts.
func (b *bridge) connect(ctx context.Context, t *testing.T, opts *mcp.ClientOptions) (*mcp.Client, *mcp.ClientSession, error) {
	t.Helper()
	c := mcp.NewClient(&mcp.Implementation{Name: "bridge-test", Version: "1.0.0"}, opts)
	// Close closes the bridge's stdin and waits this long for it to exit
	// before it signals it.
	s, err := c.Connect(ctx, &mcp.CommandTransport{Command: b.cmd, TerminateDuration: testTimeout}, nil)
	return c, s, err
}

// exitCode waits for b to exit and returns its status.
func (b *bridge) exitCode(t *testing.T) int {
	t.Helper()
	if b.cmd.ProcessState == nil {
		t.Fatal("the bridge has not exited")
	}
	return b.cmd.ProcessState.ExitCode()
}

func TestRelaysASession(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), testTimeout)
	defer cancel()
	srv := mcptest.NewServer(t, "the-device-token")
	b := command(t, strings.TrimSuffix(srv.URL, "/mcp"), srv.Token)

	listChanged := make(chan struct{}, 10)
	var pmu sync.Mutex
	var progress []string
	progressed := make(chan struct{}, 10)
	c, s, err := b.connect(ctx, t, &mcp.ClientOptions{
		ToolListChangedHandler: func(context.Context, *mcp.ToolListChangedRequest) { listChanged <- struct{}{} },
		ProgressNotificationHandler: func(_ context.Context, r *mcp.ProgressNotificationClientRequest) {
			pmu.Lock()
			progress = append(progress, fmt.Sprintf("%v %v/%v %s", r.Params.ProgressToken, r.Params.Progress, r.Params.Total, r.Params.Message))
			pmu.Unlock()
			progressed <- struct{}{}
		},
	})
	if err != nil {
		t.Fatalf("connecting through the bridge: %v\nstderr:\n%s", err, b.stderr)
	}
	c.AddRoots(&mcp.Root{URI: "file:///work/project", Name: "project"})

	if got, want := toolNames(ctx, t, s), []string{"count", "echo", "grow", "roots", "wait"}; !slices.Equal(got, want) {
		t.Errorf("tools/list through the bridge: %q, want %q", got, want)
	}
	if got := callText(ctx, t, s, &mcp.CallToolParams{Name: "echo", Arguments: map[string]any{"text": "hi"}}); got != "echo: hi" {
		t.Errorf("tools/call echo: %q, want %q", got, "echo: hi")
	}

	// Progress comes on the call's own stream.
	p := &mcp.CallToolParams{Name: "count", Arguments: map[string]any{"n": 3}}
	p.SetProgressToken("p-1")
	if got := callText(ctx, t, s, p); got != "counted 3" {
		t.Errorf("tools/call count: %q, want %q", got, "counted 3")
	}
	for range 3 {
		select {
		case <-progressed:
		case <-ctx.Done():
			t.Fatalf("waiting for 3 progress notifications: %v", ctx.Err())
		}
	}
	pmu.Lock()
	if want := []string{"p-1 1/3 step 1", "p-1 2/3 step 2", "p-1 3/3 step 3"}; !slices.Equal(progress, want) {
		t.Errorf("progress notifications: %q, want %q", progress, want)
	}
	pmu.Unlock()

	// tools/list_changed comes on the session's standalone stream, which
	// the bridge holds open.
	if got := callText(ctx, t, s, &mcp.CallToolParams{Name: "grow"}); got != "grew" {
		t.Errorf("tools/call grow: %q, want %q", got, "grew")
	}
	select {
	case <-listChanged:
	case <-ctx.Done():
		t.Fatalf("waiting for notifications/tools/list_changed: %v\nstderr:\n%s", ctx.Err(), b.stderr)
	}
	if got := toolNames(ctx, t, s); !slices.Contains(got, "grown") {
		t.Errorf("tools/list after list_changed: %q, want grown in it", got)
	}

	// The server's own request to the client (roots/list), answered
	// through the bridge.
	if got := callText(ctx, t, s, &mcp.CallToolParams{Name: "roots"}); got != "file:///work/project" {
		t.Errorf("tools/call roots: %q, want the client's root file:///work/project", got)
	}

	// A call the client cancels is cancelled on the server, and the
	// session goes on.
	waitCtx, cancelWait := context.WithCancel(ctx)
	waitDone := make(chan error, 1)
	go func() {
		_, err := s.CallTool(waitCtx, &mcp.CallToolParams{Name: "wait"})
		waitDone <- err
	}()
	select {
	case <-srv.Waiting():
	case <-ctx.Done():
		t.Fatalf("waiting for the call of wait to start: %v", ctx.Err())
	}
	cancelWait()
	select {
	case <-srv.Cancelled():
	case <-ctx.Done():
		t.Fatalf("waiting for the server to see the call of wait cancelled: %v\nstderr:\n%s", ctx.Err(), b.stderr)
	}
	if err := <-waitDone; !errors.Is(err, context.Canceled) {
		t.Errorf("the cancelled call of wait returned %v, want context.Canceled", err)
	}
	if got := callText(ctx, t, s, &mcp.CallToolParams{Name: "echo", Arguments: map[string]any{"text": "still here"}}); got != "echo: still here" {
		t.Errorf("tools/call echo after a cancelled call: %q", got)
	}

	if err := s.Close(); err != nil {
		t.Errorf("closing the session (the bridge's exit): %v\nstderr:\n%s", err, b.stderr)
	}
	if code := b.exitCode(t); code != 0 {
		t.Errorf("the bridge exited %d after its client closed stdin, want 0\nstderr:\n%s", code, b.stderr)
	}

	// Every request carried the token; after initialize, the negotiated
	// protocol version; the bridge opened the standalone stream, and
	// ended the session (DELETE) when its client left.
	reqs := srv.Requests()
	var methods []string
	initialized := false
	for i, r := range reqs {
		methods = append(methods, r.Method)
		if !r.Authorized {
			t.Errorf("request %d (%s %s) did not carry the token", i, r.Method, r.RPCMethod)
		}
		if initialized && (r.ProtocolVersion == "" || r.SessionID == "") {
			t.Errorf("request %d (%s %s) after initialize: Mcp-Protocol-Version %q, Mcp-Session-Id %q; want both", i, r.Method, r.RPCMethod, r.ProtocolVersion, r.SessionID)
		}
		initialized = initialized || r.RPCMethod == "initialize"
	}
	if !initialized {
		t.Errorf("the server saw no initialize: %+v", reqs)
	}
	if !slices.Contains(methods, "GET") || methods[len(methods)-1] != "DELETE" {
		t.Errorf("the server saw %q: want a GET (the standalone stream) and a DELETE last", methods)
	}
	if strings.Contains(b.stderr.String(), srv.Token) {
		t.Errorf("the bridge wrote its token to stderr:\n%s", b.stderr)
	}
}

func TestRevokedTokenIsAnErrorAndAnExit(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), testTimeout)
	defer cancel()
	srv := mcptest.NewServer(t, "the-device-token")
	b := command(t, strings.TrimSuffix(srv.URL, "/mcp"), srv.Token)
	_, s, err := b.connect(ctx, t, nil)
	if err != nil {
		t.Fatalf("connecting through the bridge: %v\nstderr:\n%s", err, b.stderr)
	}
	toolNames(ctx, t, s)
	waitForStream(ctx, t, srv) // so that the refusal comes as the answer to a call
	srv.Revoke()
	_, err = s.CallTool(ctx, &mcp.CallToolParams{Name: "echo", Arguments: map[string]any{"text": "hi"}})
	if err == nil || !strings.Contains(err.Error(), "refused this device's token") || !strings.Contains(err.Error(), "401") {
		t.Errorf("tools/call with a revoked token: %v, want the gateway's refusal of the token (401)", err)
	}
	// The bridge ends by itself: the client sees its side close.
	if err := s.Wait(); err != nil && !errors.Is(err, mcp.ErrConnectionClosed) {
		t.Logf("the session ended with: %v", err)
	}
	s.Close()
	if code := b.exitCode(t); code != 1 {
		t.Errorf("the bridge exited %d after a 401, want 1", code)
	}
	stderr := b.stderr.String()
	if !strings.Contains(stderr, "contractual mcp: unauthenticated:") || !strings.Contains(stderr, "contractual pair") {
		t.Errorf("stderr does not say the token was refused and what to do:\n%s", stderr)
	}
}

func TestForbiddenDeviceIsAnErrorAndAnExit(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), testTimeout)
	defer cancel()
	srv := mcptest.NewServer(t, "the-device-token")
	b := command(t, strings.TrimSuffix(srv.URL, "/mcp"), srv.Token)
	_, s, err := b.connect(ctx, t, nil)
	if err != nil {
		t.Fatalf("connecting through the bridge: %v\nstderr:\n%s", err, b.stderr)
	}
	waitForStream(ctx, t, srv) // so that the refusal comes as the answer to a call
	srv.Forbid()
	_, err = s.ListTools(ctx, nil)
	if err == nil || !strings.Contains(err.Error(), "refused this device") || !strings.Contains(err.Error(), "403") {
		t.Errorf("tools/list by a forbidden device: %v, want the gateway's refusal (403)\nstderr:\n%s\nrequests: %+v", err, b.stderr, srv.Requests())
	}
	s.Wait()
	s.Close()
	if code := b.exitCode(t); code != 1 {
		t.Errorf("the bridge exited %d after a 403, want 1", code)
	}
	if stderr := b.stderr.String(); !strings.Contains(stderr, "contractual mcp: permission_denied:") || !strings.Contains(stderr, "invoke scope") {
		t.Errorf("stderr does not say the device was refused and what to do:\n%s", stderr)
	}
}

// A gateway may answer calls with plain JSON and keep no sessions (no
// standalone stream: 405): the bridge relays just the same.
func TestStatelessJSONGateway(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), testTimeout)
	defer cancel()
	srv := mcptest.NewServerWith(t, "the-device-token", &mcp.StreamableHTTPOptions{Stateless: true, JSONResponse: true})
	b := command(t, strings.TrimSuffix(srv.URL, "/mcp"), srv.Token)
	_, s, err := b.connect(ctx, t, nil)
	if err != nil {
		t.Fatalf("connecting through the bridge: %v\nstderr:\n%s", err, b.stderr)
	}
	if got := toolNames(ctx, t, s); len(got) != 5 {
		t.Errorf("tools/list through the bridge: %q", got)
	}
	if got := callText(ctx, t, s, &mcp.CallToolParams{Name: "echo", Arguments: map[string]any{"text": "json"}}); got != "echo: json" {
		t.Errorf("tools/call echo: %q", got)
	}
	if err := s.Close(); err != nil {
		t.Errorf("closing the session: %v\nstderr:\n%s", err, b.stderr)
	}
	if code := b.exitCode(t); code != 0 {
		t.Errorf("the bridge exited %d, want 0\nstderr:\n%s", code, b.stderr)
	}
}

func TestUnreachableGatewayIsAnExit(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), testTimeout)
	defer cancel()
	gone := httptest.NewServer(nil)
	gone.Close() // nothing listens there any more
	b := command(t, gone.URL, "the-device-token")
	_, s, err := b.connect(ctx, t, nil)
	if err == nil {
		s.Close()
		t.Fatal("connecting through the bridge to no gateway succeeded")
	}
	if !strings.Contains(err.Error(), "starting an MCP session with the gateway at "+gone.URL+"/mcp") {
		t.Errorf("initialize with no gateway: %v, want why", err)
	}
	b.cmd.Wait()
	if code := b.exitCode(t); code != 1 {
		t.Errorf("the bridge exited %d with no gateway, want 1", code)
	}
	if stderr := b.stderr.String(); !strings.Contains(stderr, "contractual mcp: unavailable:") {
		t.Errorf("stderr does not say the gateway is unavailable:\n%s", stderr)
	}
}

func TestUnpairedDevice(t *testing.T) {
	var stdout, stderr bytes.Buffer
	config := t.TempDir()
	env := &cli.Env{
		Stdin: strings.NewReader(""), Stdout: &stdout, Stderr: &stderr,
		Getenv: func(k string) string {
			if k == "CONTRACTUAL_CONFIG" {
				return config
			}
			return ""
		},
	}
	if code := cli.Main(t.Context(), []string{"mcp", "--server", "http://127.0.0.1:1"}, env); code != 1 {
		t.Errorf("contractual mcp on an unpaired device exited %d, want 1", code)
	}
	if !strings.Contains(stderr.String(), "not paired") || stdout.Len() != 0 {
		t.Errorf("contractual mcp on an unpaired device: stdout %q, stderr %q; want nothing on stdout, why on stderr", &stdout, &stderr)
	}
}

// waitForStream waits until the server has seen the bridge's GET (the
// standalone stream) and the client's notifications/initialized: the
// session is all set up.
func waitForStream(ctx context.Context, t *testing.T, srv *mcptest.Server) {
	t.Helper()
	for {
		var get, initialized bool
		for _, r := range srv.Requests() {
			get = get || r.Method == "GET"
			initialized = initialized || r.RPCMethod == "notifications/initialized"
		}
		if get && initialized {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("waiting for the session to be set up: %v", ctx.Err())
		case <-time.After(10 * time.Millisecond):
		}
	}
}

func toolNames(ctx context.Context, t *testing.T, s *mcp.ClientSession) []string {
	t.Helper()
	res, err := s.ListTools(ctx, nil)
	if err != nil {
		t.Fatalf("tools/list: %v", err)
	}
	var names []string
	for _, tool := range res.Tools {
		names = append(names, tool.Name)
	}
	slices.Sort(names)
	return names
}

func callText(ctx context.Context, t *testing.T, s *mcp.ClientSession, p *mcp.CallToolParams) string {
	t.Helper()
	res, err := s.CallTool(ctx, p)
	if err != nil {
		t.Fatalf("tools/call %s: %v", p.Name, err)
	}
	if res.IsError || len(res.Content) != 1 {
		t.Fatalf("tools/call %s: %+v", p.Name, res)
	}
	tc, ok := res.Content[0].(*mcp.TextContent)
	if !ok {
		t.Fatalf("tools/call %s: content %T, want text", p.Name, res.Content[0])
	}
	return tc.Text
}

// The reference client, the MCP Inspector's CLI, launches the bridge as
// Claude Desktop does, and lists and calls the tools through it.
func TestInspectorThroughTheBridge(t *testing.T) {
	srv := mcptest.NewServer(t, "the-device-token")
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	env := []string{
		envCLI + "=1",
		"CONTRACTUAL_CONFIG=" + t.TempDir(),
		"CONTRACTUAL_SERVER=" + strings.TrimSuffix(srv.URL, "/mcp"),
		"CONTRACTUAL_TOKEN=" + srv.Token,
	}
	command := []string{exe, "mcp"}

	names := mcptest.ToolNames(t, mcptest.InspectorCommand(t, env, command, "--method", "tools/list"))
	if want := []string{"count", "echo", "grow", "roots", "wait"}; !slices.Equal(names, want) {
		t.Errorf("tools/list through the bridge: %q, want %q", names, want)
	}

	out := mcptest.InspectorCommand(t, env, command, "--method", "tools/call", "--tool-name", "echo", "--tool-arg", "text=through the bridge")
	if call := mcptest.Call(t, out); call.IsError || len(call.Content) != 1 || call.Text() != "echo: through the bridge" {
		t.Errorf("tools/call echo through the bridge: %s, want the text %q", out, "echo: through the bridge")
	}
	for i, r := range srv.Requests() {
		if !r.Authorized {
			t.Errorf("request %d (%s %s) did not carry the token", i, r.Method, r.RPCMethod)
		}
	}
}

// A client that writes what is not JSON-RPC ends the bridge with why, and
// nothing but protocol goes to stdout. (In process: Main with the client's
// side as a string.)
func TestNotJSONRPC(t *testing.T) {
	srv := mcptest.NewServer(t, "the-device-token")
	var stdout, stderr bytes.Buffer
	vars := map[string]string{
		"CONTRACTUAL_CONFIG": t.TempDir(),
		"CONTRACTUAL_SERVER": strings.TrimSuffix(srv.URL, "/mcp"),
		"CONTRACTUAL_TOKEN":  srv.Token,
	}
	env := &cli.Env{Stdin: strings.NewReader("this is not JSON-RPC\n"), Stdout: &stdout, Stderr: &stderr, Getenv: func(k string) string { return vars[k] }}
	if code := cli.Main(t.Context(), []string{"mcp"}, env); code != 1 {
		t.Errorf("contractual mcp fed garbage exited %d, want 1", code)
	}
	if !strings.Contains(stderr.String(), "contractual mcp: invalid: reading the MCP client's messages") || stdout.Len() != 0 {
		t.Errorf("contractual mcp fed garbage: stdout %q, stderr %q; want nothing on stdout, why on stderr", &stdout, &stderr)
	}
}
