package server_test

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/structpb"

	contractualv1 "github.com/contractual/contractual/contracts/gen/contractual/v1"
	"github.com/contractual/contractual/contracts/gen/contractual/v1/contractualv1connect"
	"github.com/contractual/contractual/internal/server"
)

// patience bounds every wait in these tests: far above what anything
// takes, so that only a hang fails them.
const patience = 2 * time.Minute

// startWith runs a server like start, with cfg changed by edit.
func startWith(t *testing.T, edit func(*server.Config)) *server.Server {
	t.Helper()
	cfg := server.Config{DataDir: t.TempDir(), Addr: "127.0.0.1:0"}
	edit(&cfg)
	s, err := server.Start(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close(context.Background()) })
	return s
}

// addr is s's host:port.
func addr(s *server.Server) string { return strings.TrimPrefix(s.URL, "http://") }

// invoke calls textkit.slugify as the device with token tok, over a client
// of its own (its own connections).
func invoke(s *server.Server, tok, text string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), patience)
	defer cancel()
	c := contractualv1connect.NewToolServiceClient(&http.Client{Transport: &http.Transport{}}, s.URL, connect.WithInterceptors(bearer(tok)))
	in, _ := structpb.NewValue(map[string]any{"text": text})
	resp, err := c.Invoke(ctx, &contractualv1.InvokeRequest{Tool: "textkit.slugify", Input: in})
	if err != nil {
		return "", err
	}
	return resp.GetOutput().GetStructValue().GetFields()["slug"].GetStringValue(), nil
}

// dial opens a raw TCP connection to s, closed at the end of the test.
func dial(t testing.TB, s *server.Server) net.Conn {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr(s), patience)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// head is the request line and headers of an HTTP/1.1 POST to path that
// announces a body of n bytes.
func head(path string, n int, headers ...string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "POST %s HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: %d\r\n", path, n)
	for i := 0; i+1 < len(headers); i += 2 {
		fmt.Fprintf(&b, "%s: %s\r\n", headers[i], headers[i+1])
	}
	b.WriteString("\r\n")
	return b.String()
}

// closedByServer waits (up to patience) for the server to close c and
// reports whether it did; it discards whatever the server sent first.
func closedByServer(c net.Conn) bool {
	c.SetReadDeadline(time.Now().Add(patience))
	_, err := io.Copy(io.Discard, c)
	var ne net.Error
	return !(errors.As(err, &ne) && ne.Timeout())
}

// TestRefusedBeforeTheBody: a request that the gateway refuses (no token,
// a bad token, an internal or unknown procedure, a compressed open call) is
// answered without one byte of its body having been sent, in Connect JSON,
// and its connection is closed: a slow body holds nothing.
func TestRefusedBeforeTheBody(t *testing.T) {
	s, _ := start(t)
	owner(t, s)
	for _, tt := range []struct {
		name    string
		path    string
		headers []string
		status  int
		code    string
	}{
		{"no token", "/contractual.v1.ToolService/Invoke", []string{"Content-Type", "application/json"}, 401, "unauthenticated"},
		{"bad token", "/contractual.v1.ToolService/Invoke", []string{"Content-Type", "application/json", "Authorization", "Bearer AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"}, 401, "unauthenticated"},
		{"bad token on an open procedure", "/contractual.v1.PairingService/BeginPairing", []string{"Content-Type", "application/json", "Authorization", "Bearer nope"}, 401, "unauthenticated"},
		{"publish without token", "/contractual.v1.PolicyService/Publish", []string{"Content-Type", "application/proto"}, 401, "unauthenticated"},
		{"internal", "/contractual.v1.RunnerService/Execute", []string{"Content-Type", "application/proto"}, 403, "permission_denied"},
		{"unknown", "/contractual.v1.ToolService/Uninvoke", []string{"Content-Type", "application/json"}, 501, "unimplemented"},
		{"gzip, open", "/contractual.v1.PairingService/BeginPairing", []string{"Content-Type", "application/json", "Content-Encoding", "gzip"}, 400, "invalid_argument"},
		{"connect stream gzip, open", "/grpc.health.v1.Health/Watch", []string{"Content-Type", "application/connect+json", "Connect-Content-Encoding", "gzip"}, 200, "invalid_argument"},
	} {
		c := dial(t, s)
		if _, err := io.WriteString(c, head(tt.path, 1<<20, tt.headers...)); err != nil {
			t.Fatal(err)
		}
		c.SetReadDeadline(time.Now().Add(patience))
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Fatalf("%s: no answer before the body: %v", tt.name, err)
		}
		body, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != tt.status || !bytes.Contains(body, []byte(`"code":"`+tt.code+`"`)) {
			t.Errorf("%s: %d %s, want %d %s", tt.name, resp.StatusCode, body, tt.status, tt.code)
		}
		if !closedByServer(c) {
			t.Errorf("%s: the connection was left open", tt.name)
		}
	}
}

// TestRefusalsInEachProtocol: refusals and internal procedures reach gRPC
// (grpc-go, over h2c), gRPC-Web and Connect clients as their own errors.
func TestRefusalsInEachProtocol(t *testing.T) {
	s, _ := start(t)
	tok, _ := owner(t, s)
	cc, err := grpc.NewClient("passthrough:///"+addr(s), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), patience)
	defer cancel()
	withToken := metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+tok)
	in, _ := structpb.NewValue(map[string]any{"text": "x"})
	for _, tt := range []struct {
		name, proc string
		ctx        context.Context
		req        any
		want       codes.Code
	}{
		{"no token", contractualv1connect.ToolServiceInvokeProcedure, ctx, &contractualv1.InvokeRequest{Tool: "textkit.slugify", Input: in}, codes.Unauthenticated},
		{"bad token", contractualv1connect.ToolServiceInvokeProcedure, metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer x"), &contractualv1.InvokeRequest{}, codes.Unauthenticated},
		{"internal", contractualv1connect.RunnerServiceExecuteProcedure, withToken, &contractualv1.ExecuteRequest{}, codes.PermissionDenied},
		{"internal, no token", contractualv1connect.AuditInternalServiceAppendProcedure, ctx, &contractualv1.AppendRequest{}, codes.PermissionDenied},
		{"internal service, with a token", contractualv1connect.PolicyInternalServiceEvaluateProcedure, withToken, &contractualv1.EvaluateRequest{}, codes.PermissionDenied},
		{"unknown", "/contractual.v1.ToolService/Uninvoke", withToken, &contractualv1.InvokeRequest{}, codes.Unimplemented},
		{"unknown service", "/contractual.v1.SchedulerService/Run", ctx, &contractualv1.InvokeRequest{}, codes.Unimplemented},
		{"allowed", contractualv1connect.PolicyServiceListContractsProcedure, withToken, &contractualv1.ListContractsRequest{}, codes.OK},
	} {
		var out contractualv1.InvokeResponse
		var err error
		if tt.want == codes.OK {
			err = cc.Invoke(tt.ctx, tt.proc, tt.req, &contractualv1.ListContractsResponse{})
		} else {
			err = cc.Invoke(tt.ctx, tt.proc, tt.req, &out)
		}
		if status.Code(err) != tt.want {
			t.Errorf("grpc-go, %s: %v, want %v", tt.name, err, tt.want)
		}
	}

	h2c := &http.Client{Transport: &http.Transport{Protocols: func() *http.Protocols {
		p := new(http.Protocols)
		p.SetUnencryptedHTTP2(true)
		return p
	}()}}
	for _, proto := range []struct {
		name string
		opt  connect.ClientOption
	}{{"connect", connect.WithProtoJSON()}, {"grpc-web", connect.WithGRPCWeb()}, {"grpc", connect.WithGRPC()}} {
		tools := contractualv1connect.NewToolServiceClient(h2c, s.URL, proto.opt)
		if _, err := tools.Invoke(ctx, &contractualv1.InvokeRequest{Tool: "textkit.slugify", Input: in}); connect.CodeOf(err) != connect.CodeUnauthenticated {
			t.Errorf("%s, no token: %v", proto.name, err)
		}
		runner := contractualv1connect.NewRunnerServiceClient(h2c, s.URL, proto.opt, connect.WithInterceptors(bearer(tok)))
		if _, err := runner.Execute(ctx, &contractualv1.ExecuteRequest{}); connect.CodeOf(err) != connect.CodePermissionDenied {
			t.Errorf("%s, internal: %v", proto.name, err)
		}
	}
}

// TestSlowClientsAreCut: with short configured timeouts, a connection that
// sends its headers or its body too slowly, or sits idle, is closed by the
// server.
func TestSlowClientsAreCut(t *testing.T) {
	s := startWith(t, func(c *server.Config) {
		// Short enough to keep the test quick; the requests below are sent
		// whole at once, so only the server's timeouts can end them.
		const d = 2 * time.Second
		c.Limits = server.Limits{ReadHeaderTimeout: d, UnauthenticatedReadTimeout: d, ReadTimeout: d, IdleTimeout: d}
	})
	tok, _ := owner(t, s)

	// Headers that never end.
	c := dial(t, s)
	io.WriteString(c, "POST /contractual.v1.PairingService/BeginPairing HTTP/1.1\r\nHost: x\r\nX-Slow: ")
	if !closedByServer(c) {
		t.Error("slow headers: the connection was left open")
	}
	// An open procedure's body that never ends.
	c = dial(t, s)
	io.WriteString(c, head("/contractual.v1.PairingService/BeginPairing", 1000, "Content-Type", "application/json")+"{")
	if !closedByServer(c) {
		t.Error("slow open body: the connection was left open")
	}
	// The Control UI's pairing endpoint, the same.
	c = dial(t, s)
	io.WriteString(c, head("/ui/pair/begin", 1000, "Content-Type", "application/json")+"{")
	if !closedByServer(c) {
		t.Error("slow UI body: the connection was left open")
	}
	// An authenticated call's body that never ends: ReadTimeout.
	c = dial(t, s)
	io.WriteString(c, head("/contractual.v1.ToolService/Invoke", 1000, "Content-Type", "application/json", "Authorization", "Bearer "+tok)+"{")
	if !closedByServer(c) {
		t.Error("slow authenticated body: the connection was left open")
	}
	// An idle keep-alive connection.
	c = dial(t, s)
	io.WriteString(c, "GET /ui/pair HTTP/1.1\r\nHost: x\r\n\r\n")
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil || resp.StatusCode != 200 || resp.Close {
		t.Fatalf("a keep-alive request: %v %v", resp, err)
	}
	if !closedByServer(c) {
		t.Error("idle: the connection was left open")
	}
}

// TestDeadlinesByProcedure: Invoke has its own deadline (here far too
// short), which ends the call's context; other calls are not affected.
func TestDeadlinesByProcedure(t *testing.T) {
	s := startWith(t, func(c *server.Config) { c.Limits = server.Limits{InvokeTimeout: time.Nanosecond} })
	tok, _ := owner(t, s)
	publishApproved(t, s, tok)
	if _, err := invoke(s, tok, "x"); connect.CodeOf(err) != connect.CodeDeadlineExceeded && connect.CodeOf(err) != connect.CodeUnavailable {
		t.Errorf("invoke past its deadline: %v", err)
	}
	pol := contractualv1connect.NewPolicyServiceClient(http.DefaultClient, s.URL, connect.WithInterceptors(bearer(tok)))
	if _, err := pol.ListContracts(context.Background(), &contractualv1.ListContractsRequest{}); err != nil {
		t.Errorf("another call: %v", err)
	}
}

// TestUnauthenticatedSlots: requests without a credential that hold a body
// open use up at most MaxUnauthenticated slots; past them the next one is
// refused at once, while a paired device's calls go through; a slot is
// free again once its request is done.
func TestUnauthenticatedSlots(t *testing.T) {
	s := startWith(t, func(c *server.Config) { c.Limits = server.Limits{MaxUnauthenticated: 2} })
	tok, _ := owner(t, s)
	publishApproved(t, s, tok)
	body := `{"name": "slow", "publicKey": "` + strings.Repeat("A", 43) + `="}`
	var slow []net.Conn
	for range 2 {
		c := dial(t, s)
		// The server asks for the body (100 Continue) from inside the
		// handler, that is once the request holds its slot.
		io.WriteString(c, head("/contractual.v1.PairingService/BeginPairing", len(body), "Content-Type", "application/json", "Connection", "close", "Expect", "100-continue"))
		c.SetReadDeadline(time.Now().Add(patience))
		line, err := bufio.NewReader(c).ReadString('\n')
		if err != nil || !strings.Contains(line, "100") {
			t.Fatalf("waiting for 100 Continue: %q %v", line, err)
		}
		io.WriteString(c, body[:1])
		slow = append(slow, c)
	}
	pc := contractualv1connect.NewPairingServiceClient(&http.Client{Transport: &http.Transport{}}, s.URL)
	ctx, cancel := context.WithTimeout(context.Background(), patience)
	defer cancel()
	_, err := pc.BeginPairing(ctx, &contractualv1.BeginPairingRequest{Name: "third", PublicKey: make([]byte, 32)})
	if connect.CodeOf(err) != connect.CodeResourceExhausted || !strings.Contains(err.Error(), "unauthenticated requests") {
		t.Fatalf("a third unauthenticated request: %v", err)
	}
	if got, err := invoke(s, tok, "Still Here"); err != nil || got != "still-here" {
		t.Fatalf("an authorized call with the slots taken: %q %v", got, err)
	}
	// Finish the two slow requests (they close their connections once
	// answered, after their slots are released).
	for _, c := range slow {
		io.WriteString(c, body[1:])
		if !closedByServer(c) {
			t.Fatal("a finished request's connection stayed open")
		}
	}
	pub, _, _ := ed25519.GenerateKey(rand.Reader)
	if _, err := pc.BeginPairing(ctx, &contractualv1.BeginPairingRequest{Name: "fourth", PublicKey: pub}); err != nil {
		t.Fatalf("after the slots were freed: %v", err)
	}
}

// TestConnectionCap: at MaxConns, connections that never authenticated are
// closed, oldest first, to let a paired device in; a connection that has
// carried an authenticated request (HTTP/1.1 or HTTP/2) is kept.
func TestConnectionCap(t *testing.T) {
	s := startWith(t, func(c *server.Config) { c.Limits = server.Limits{MaxConns: 8} })
	tok, _ := owner(t, s)
	publishApproved(t, s, tok)
	idle := func() []net.Conn {
		var conns []net.Conn
		for range 8 {
			// Each one is served (so accepted and counted), then sits idle.
			c := dial(t, s)
			io.WriteString(c, "GET /ui/pair HTTP/1.1\r\nHost: x\r\n\r\n")
			c.SetReadDeadline(time.Now().Add(patience))
			if resp, err := http.ReadResponse(bufio.NewReader(c), nil); err == nil {
				resp.Body.Close()
			}
			conns = append(conns, c)
		}
		return conns
	}
	first := idle()
	for i := range 3 {
		if got, err := invoke(s, tok, fmt.Sprint("call ", i)); err != nil || got != fmt.Sprint("call-", i) {
			t.Fatalf("an authorized call at the cap: %q %v", got, err)
		}
	}
	if !closedByServer(first[0]) {
		t.Error("the oldest unauthenticated connection was kept")
	}

	// A gRPC client's one HTTP/2 connection, once authenticated, outlives
	// a new wave of unauthenticated ones.
	var dials atomic.Int32
	h2c := &http.Client{Transport: &http.Transport{
		Protocols: func() *http.Protocols {
			p := new(http.Protocols)
			p.SetUnencryptedHTTP2(true)
			return p
		}(),
		DialContext: func(ctx context.Context, network, address string) (net.Conn, error) {
			dials.Add(1)
			return new(net.Dialer).DialContext(ctx, network, address)
		},
	}}
	pol := contractualv1connect.NewPolicyServiceClient(h2c, s.URL, connect.WithGRPC(), connect.WithInterceptors(bearer(tok)))
	if _, err := pol.ListContracts(context.Background(), &contractualv1.ListContractsRequest{}); err != nil {
		t.Fatal(err)
	}
	idle()
	if _, err := pol.ListContracts(context.Background(), &contractualv1.ListContractsRequest{}); err != nil {
		t.Fatal(err)
	}
	if n := dials.Load(); n != 1 {
		t.Errorf("the authenticated HTTP/2 connection was closed: %d dials", n)
	}
}

// TestGzipBomb: an authenticated call's compressed body is capped after
// decompression, and the server stops inflating there instead of
// inflating the whole bomb to measure it.
func TestGzipBomb(t *testing.T) {
	s, _ := start(t)
	tok, _ := owner(t, s)
	var bomb bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&bomb, gzip.BestCompression)
	zw.Write([]byte(`{"tool": "textkit.slugify", "input": {"text": "`))
	zeros := make([]byte, 1<<20)
	for range 256 { // 256 MiB, far past every cap (Publish's is 66 MiB)
		zw.Write(zeros)
	}
	zw.Close()
	req, _ := http.NewRequest(http.MethodPost, s.URL+contractualv1connect.ToolServiceInvokeProcedure, bytes.NewReader(bomb.Bytes()))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Content-Encoding", "gzip")
	req.Header.Set("Authorization", "Bearer "+tok)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusTooManyRequests || !bytes.Contains(body, []byte("resource_exhausted")) {
		t.Fatalf("a gzip bomb: %d %s", resp.StatusCode, body)
	}
	// connect-go's own decompressor would have inflated all 256 MiB to
	// report "message size 268435…"; the capped one stops.
	if !bytes.Contains(body, []byte("unable to determine message size")) {
		t.Errorf("the bomb was inflated whole: %s", body)
	}
	// A compressed call within the caps works.
	var small bytes.Buffer
	zw = gzip.NewWriter(&small)
	zw.Write([]byte(`{}`))
	zw.Close()
	req, _ = http.NewRequest(http.MethodPost, s.URL+contractualv1connect.PolicyServiceListContractsProcedure, &small)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Content-Encoding", "gzip")
	req.Header.Set("Authorization", "Bearer "+tok)
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != 200 {
		t.Fatalf("a small compressed call: %v %v", resp, err)
	}
}
