package cli

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	rpb "google.golang.org/grpc/reflection/grpc_reflection_v1"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/structpb"

	contractualv1 "github.com/contractual/contractual/contracts/gen/contractual/v1"
	"github.com/contractual/contractual/contracts/gen/contractual/v1/contractualv1connect"
	"github.com/contractual/contractual/internal/tailnet"
	"github.com/contractual/contractual/internal/tailnet/tailnettest"
)

// tailnetTimeout bounds the end-to-end test's waits; it takes seconds.
const tailnetTimeout = 2 * time.Minute

// TestServeTailnet is the README's tailnet way, end to end on a real
// tailnet in the process (Tailscale's test control server, DERP and STUN
// on loopback): `contractual serve --tailnet` joins it with the auth key in
// TS_AUTHKEY=file:..., and the owner's "phone", another tsnet node, pairs
// with the setup code serve printed (`contractual pair`: Ed25519 key,
// proof of possession), publishes and approves a tool, and calls it with
// curl semantics (Connect JSON over HTTP POST) and with grpc-go over the
// tailnet; the audit log records the phone's node on the call. Refused:
// the phone's token from a third node; everything but pairing to a node
// with no paired device; an approve from the phone once the tailnet policy
// caps its scopes to invoke.
func TestServeTailnet(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), tailnetTimeout)
	defer cancel()
	tn := tailnettest.NewWith(t, tailnettest.Options{AuthKey: "tskey-auth-e2e"})
	keyFile := filepath.Join(t.TempDir(), "ts-authkey")
	if err := os.WriteFile(keyFile, []byte("tskey-auth-e2e\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	url, setupCode, _ := serveTailnet(t, tn, map[string]string{"TS_AUTHKEY": "file:" + keyFile},
		"--data", filepath.Join(t.TempDir(), "data"), "--addr", "127.0.0.1:0",
		"--tailnet", "--tailnet-control-url", tn.ControlURL, "--tailnet-https", "off")
	if want := "http://contractual." + tn.Domain; url != want {
		t.Fatalf("serve's tailnet URL = %q, want %q", url, want)
	}

	// The phone pairs over the tailnet, as the README has it.
	phone := tn.Node(t, "phone")
	ph := newNodeCLI(t, phone)
	out := ph.run(t, 0, "pair", "--server", url, "--setup-code", setupCode, "--name", "phone")
	if !strings.Contains(out, "paired as") {
		t.Fatalf("pair: %s", out)
	}
	textkit := digestOf(t, ph.run(t, 0, "publish", tool("textkit", "textkit.wasm"), "--contract", tool("textkit", "contract.yaml")))
	ph.run(t, 0, "contracts", "approve", textkit)
	tok := ph.token(t)

	// curl semantics: Connect JSON over a plain HTTP POST.
	invoke := url + contractualv1connect.ToolServiceInvokeProcedure
	body := `{"tool": "textkit.slugify", "input": {"text": "Hello, Tailnet!"}}`
	if code, b := post(t, phone, invoke, tok, body); code != http.StatusOK || !strings.Contains(b, `"hello-tailnet"`) {
		t.Fatalf("Invoke (Connect JSON) from the phone: %d %s", code, b)
	}
	// grpc-go over the phone's tailnet dialer.
	gc := grpcConn(t, phone, url)
	if slug, err := grpcInvoke(ctx, gc, tok); err != nil || slug != "hello-grpc" {
		t.Fatalf("Invoke (gRPC) from the phone: %q, %v", slug, err)
	}

	// The audit log records the phone's node on the call's events.
	var tail struct {
		Events []struct {
			Action  string
			Outcome string
			Tailnet struct {
				NodeID   string `json:"node_id"`
				NodeName string `json:"node_name"`
				User     string
			}
		}
	}
	if err := json.Unmarshal([]byte(ph.run(t, 0, "audit", "tail", "-n", "1000", "--json")), &tail); err != nil {
		t.Fatal(err)
	}
	calls := 0
	for _, ev := range tail.Events {
		if ev.Action == "call.run" {
			calls++
			if ev.Tailnet.NodeID != phone.ID || ev.Tailnet.NodeName != phone.Name || ev.Tailnet.User == "" {
				t.Errorf("a call.run event records tailnet peer %+v, want the phone's node %s (%s)", ev.Tailnet, phone.ID, phone.Name)
			}
		}
	}
	if calls != 2 {
		t.Errorf("%d call.run events, want the phone's 2: %+v", calls, tail.Events)
	}

	// The phone's token from another node is refused, over HTTP and gRPC.
	thief := tn.Node(t, "thief")
	if code, b := post(t, thief, invoke, tok, body); code != http.StatusForbidden || !strings.Contains(b, "bound to the tailnet node") {
		t.Errorf("the phone's token from another node: %d %s, want 403 (bound to the phone's node)", code, b)
	}
	if _, err := grpcInvoke(ctx, grpcConn(t, thief, url), tok); status.Code(err) != codes.PermissionDenied {
		t.Errorf("the phone's token from another node over gRPC: %v, want permission denied", err)
	}

	// The tailnet policy caps the phone's device to invoke. The control
	// server pushes the grant to the server's node, which applies it with
	// no event to wait on; a node that joins afterwards is in a later map
	// from control than the grant, so once the server answers that node,
	// it has the grant. That node is also one with no paired device.
	tn.SetAppCaps(map[string][]json.RawMessage{tailnet.DefaultCap: {json.RawMessage(`{"scopes": ["invoke"]}`)}})
	stranger := tn.Node(t, "stranger")
	noRedirect := *stranger.HTTPClient()
	noRedirect.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	get := func(path string) (int, string) {
		resp, err := noRedirect.Get(url + path)
		if err != nil {
			t.Fatalf("GET %s from a node with no paired device: %v", path, err)
		}
		resp.Body.Close()
		return resp.StatusCode, resp.Header.Get("Location")
	}
	if code, _ := get("/ui/pair"); code != http.StatusOK {
		t.Errorf("the pairing page for a node with no paired device: %d", code)
	}
	for _, path := range []string{"/ui/", "/ui/contracts"} {
		if code, loc := get(path); code != http.StatusSeeOther || loc != "/ui/pair" {
			t.Errorf("GET %s from a node with no paired device: %d to %q, want a redirect to /ui/pair", path, code, loc)
		}
	}
	if code, b := post(t, stranger, invoke, "", body); code != http.StatusUnauthorized {
		t.Errorf("Invoke with no token from a node with no paired device: %d %s", code, b)
	}
	if code, b := post(t, stranger, url+"/grpc.health.v1.Health/Check", "", `{}`); code != http.StatusUnauthorized {
		t.Errorf("health from a node with no paired device: %d %s", code, b)
	}
	refl, err := rpb.NewServerReflectionClient(grpcConn(t, stranger, url)).ServerReflectionInfo(ctx)
	if err == nil {
		// io.EOF from Send means the server ended the stream: its status
		// comes from Recv.
		err = refl.Send(&rpb.ServerReflectionRequest{MessageRequest: &rpb.ServerReflectionRequest_ListServices{}})
	}
	if err == nil || errors.Is(err, io.EOF) {
		_, err = refl.Recv()
	}
	if status.Code(err) != codes.Unauthenticated {
		t.Errorf("reflection from a node with no paired device: %v, want unauthenticated", err)
	}
	// Pairing is open to it: a request begins (and awaits approval).
	pub, _, _ := ed25519.GenerateKey(rand.Reader)
	if code, b := post(t, stranger, url+contractualv1connect.PairingServiceBeginPairingProcedure, "",
		`{"public_key": "`+base64.StdEncoding.EncodeToString(pub)+`", "name": "stranger", "scopes": ["invoke"]}`); code != http.StatusOK {
		t.Errorf("BeginPairing from a node with no paired device: %d %s", code, b)
	}

	// Capped to invoke, the phone's owner device still invokes, and may
	// no longer approve. (The digest is of no contract: authorized, the
	// approve would be not_found. The test publishes nothing more, so that
	// serve stops with no module compiling.)
	if code, b := post(t, phone, invoke, tok, body); code != http.StatusOK {
		t.Errorf("Invoke from the capped phone: %d %s", code, b)
	}
	if out := ph.run(t, exitFailure, "contracts", "approve", "sha256:"+strings.Repeat("0", 64)); !strings.Contains(out, "permission_denied") {
		t.Errorf("approve from the capped phone: %s", out)
	}
}

// serveTailnet runs `contractual serve` with args and env until t ends, and
// returns the tailnet URL and the setup code it prints, and the login URL
// if it printed one (which the test's owner then visits: the control
// server completes the login).
func serveTailnet(t *testing.T, tn *tailnettest.Tailnet, env map[string]string, args ...string) (url, setupCode, login string) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	lines := make(chan string, 64)
	var stderr syncBuffer
	done := make(chan int, 1)
	go func() {
		done <- Main(ctx, append([]string{"serve"}, args...), &Env{
			Stdin: strings.NewReader(""), Stdout: lineWriter(lines), Stderr: &stderr,
			Getenv: func(k string) string { return env[k] },
		})
	}()
	t.Cleanup(func() {
		cancel()
		if code := <-done; code != 0 {
			t.Errorf("serve exited %d:\n%s", code, stderr.String())
		}
	})
	urlRE := regexp.MustCompile(`serving your tailnet at (\S+) `)
	codeRE := regexp.MustCompile(`setup code (\S+) `)
	loginRE := regexp.MustCompile(`to add this server to your tailnet, open (\S+) `)
	timeout := time.After(tailnetTimeout)
	for url == "" || setupCode == "" {
		select {
		case l := <-lines:
			if m := urlRE.FindStringSubmatch(l); m != nil {
				url = m[1]
			}
			if m := codeRE.FindStringSubmatch(l); m != nil {
				setupCode = m[1]
			}
			if m := loginRE.FindStringSubmatch(l); m != nil {
				login = m[1]
				if !tn.Control.CompleteAuth(login) {
					t.Errorf("serve printed login URL %q, which the control server does not know", login)
				}
			}
			if strings.Contains(l, "in a browser, open") && !strings.Contains(l, "--server "+url+" --setup-code") {
				t.Errorf("the setup-code instructions do not pair over the tailnet: %s", l)
			}
		case code := <-done:
			done <- code
			t.Fatalf("serve exited %d:\n%s", code, stderr.String())
		case <-timeout:
			t.Fatalf("serve printed no tailnet URL and setup code:\n%s", stderr.String())
		}
	}
	return url, setupCode, login
}

// TestServeTailnetLogin: with no auth key, serve prints the URL at which
// the owner adds the server to the tailnet, and serves the tailnet once
// the owner has logged in there; the node is named as --tailnet-hostname
// says.
func TestServeTailnetLogin(t *testing.T) {
	tn := tailnettest.NewWith(t, tailnettest.Options{RequireLogin: true})
	url, _, login := serveTailnet(t, tn, nil, "--data", filepath.Join(t.TempDir(), "data"), "--addr", "127.0.0.1:0",
		"--tailnet", "--tailnet-hostname", "tools", "--tailnet-control-url", tn.ControlURL, "--tailnet-https=off")
	if !strings.HasPrefix(login, tn.ControlURL+"/auth/") {
		t.Errorf("serve printed login URL %q, want the control server's", login)
	}
	if want := "http://tools." + tn.Domain; url != want {
		t.Errorf("tailnet URL = %q, want %q", url, want)
	}
}

// TestServeTailnetRefuses: serve --tailnet refuses, before starting
// anything, an auth key in the environment itself (it says to use
// file:), a --public-url beside it, and an unknown HTTPS mode.
func TestServeTailnetRefuses(t *testing.T) {
	for _, c := range []struct {
		name string
		env  map[string]string
		args []string
		code int
		want string
	}{
		{"key in TS_AUTHKEY", map[string]string{"TS_AUTHKEY": "tskey-auth-secret"}, nil, exitUsage, "TS_AUTHKEY=file:"},
		{"public URL", nil, []string{"--public-url", "https://box.tail1234.ts.net"}, exitUsage, "--public-url"},
		{"HTTPS mode", nil, []string{"--tailnet-https", "maybe"}, exitUsage, "want auto, on or off"},
	} {
		t.Run(c.name, func(t *testing.T) {
			var out, errOut bytes.Buffer
			env := &Env{Stdin: strings.NewReader(""), Stdout: &out, Stderr: &errOut, Getenv: func(k string) string { return c.env[k] }}
			args := append([]string{"serve", "--data", filepath.Join(t.TempDir(), "data"), "--addr", "127.0.0.1:0", "--tailnet",
				"--tailnet-control-url", "http://127.0.0.1:1"}, c.args...)
			if code := Main(context.Background(), args, env); code != c.code || !strings.Contains(errOut.String(), c.want) {
				t.Errorf("exit %d, want %d, saying %q:\n%s%s", code, c.code, c.want, &out, &errOut)
			}
			if strings.Contains(out.String()+errOut.String(), "tskey-auth-secret") {
				t.Errorf("the refusal repeats the key:\n%s%s", &out, &errOut)
			}
		})
	}
}

// nodeCLI is the CLI on a tailnet node: its own config directory, calling
// through the node.
type nodeCLI struct {
	env         *Env
	dir         string
	out, errOut *bytes.Buffer
}

func newNodeCLI(t *testing.T, n *tailnettest.Node) *nodeCLI {
	dir := t.TempDir()
	out, errOut := new(bytes.Buffer), new(bytes.Buffer)
	return &nodeCLI{dir: dir, out: out, errOut: errOut, env: &Env{
		Stdin: strings.NewReader(""), Stdout: out, Stderr: errOut, HTTPClient: n.HTTPClient(),
		Getenv: func(k string) string {
			if k == "CONTRACTUAL_CONFIG" {
				return dir
			}
			return ""
		},
	}}
}

// run runs the command on the node, wants exit status code, and returns
// what it printed on stdout (on stderr if it failed).
func (d *nodeCLI) run(t *testing.T, code int, args ...string) string {
	t.Helper()
	d.out.Reset()
	d.errOut.Reset()
	ctx, cancel := context.WithTimeout(context.Background(), tailnetTimeout)
	defer cancel()
	if got := Main(ctx, args, d.env); got != code {
		t.Fatalf("contractual %s: exit %d, want %d:\n%s%s", strings.Join(args, " "), got, code, d.out, d.errOut)
	}
	if code != 0 {
		return d.errOut.String()
	}
	return d.out.String()
}

// token is the device token that `contractual pair` kept.
func (d *nodeCLI) token(t *testing.T) string {
	b, err := os.ReadFile(filepath.Join(d.dir, "device.token"))
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

// digestOf reads the digest that `contractual publish` printed.
func digestOf(t *testing.T, out string) string {
	m := regexp.MustCompile(`\((sha256:[0-9a-f]{64})\)`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("no digest in %q", out)
	}
	return m[1]
}

// post sends body as Connect JSON to url from node n, with token tok if
// any, as curl does, and returns the status and the response body.
func post(t *testing.T, n *tailnettest.Node, url, tok, body string) (int, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), tailnetTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	if tok != "" {
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	resp, err := n.HTTPClient().Do(req)
	if err != nil {
		t.Fatalf("POST %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// grpcConn is a gRPC client connection (h2c) from node n to the server at
// url, dialled over the tailnet.
func grpcConn(t *testing.T, n *tailnettest.Node, url string) *grpc.ClientConn {
	t.Helper()
	host := strings.TrimPrefix(url, "http://")
	cc, err := grpc.NewClient("passthrough:///"+net.JoinHostPort(host, "80"),
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithContextDialer(func(ctx context.Context, addr string) (net.Conn, error) { return n.Dial(ctx, "tcp", addr) }))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return cc
}

// grpcInvoke calls textkit.slugify over cc with token tok and returns the
// slug.
func grpcInvoke(ctx context.Context, cc *grpc.ClientConn, tok string) (string, error) {
	in, _ := structpb.NewValue(map[string]any{"text": "Hello, gRPC"})
	resp := new(contractualv1.InvokeResponse)
	ctx = metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+tok)
	if err := cc.Invoke(ctx, contractualv1connect.ToolServiceInvokeProcedure, &contractualv1.InvokeRequest{Tool: "textkit.slugify", Input: in}, resp); err != nil {
		return "", err
	}
	return resp.GetOutput().GetStructValue().GetFields()["slug"].GetStringValue(), nil
}

// lineWriter sends each line written to it to ch, dropping what ch has
// no room for (nobody reads what serve prints later).
type lineWriter chan<- string

func (w lineWriter) Write(p []byte) (int, error) {
	for _, l := range strings.SplitAfter(string(p), "\n") {
		select {
		case w <- l:
		default:
		}
	}
	return len(p), nil
}

// syncBuffer is a bytes.Buffer safe for concurrent writers.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
