// Package mcptest is for tests that speak MCP: a loopback MCP server made
// with the official Go SDK that requires a bearer token (to test clients,
// such as the stdio bridge of `contractual mcp`), and the official MCP
// Inspector's CLI (the reference client, to test servers such as the
// gateway's /mcp, or this package's Server).
//
//	srv := mcptest.NewServer(t, "a-token")
//	out := mcptest.Inspector(t, srv.URL, "a-token", "--method", "tools/list")
//
// Server is a stand-in for nothing of Contractual's: it is the SDK's own
// server with four plain tools, so that a test of a client sees what a
// real MCP server sends (progress on a call's stream, tools/list_changed on
// the session's standalone stream, a request of its own to the client).
//
// Inspector needs node and npm. Without them it skips the test, except
// with CI=true: there a missing dependency fails it (.ci/run installs
// them, and the pinned Inspector).
package mcptest

import (
	"bytes"
	"context"
	"crypto/subtle"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// Server is a loopback MCP server (Streamable HTTP, with sessions) that
// requires "Authorization: Bearer <Token>" on every request.
//
// Its tools:
//   - echo {text}: returns "echo: <text>".
//   - count {n}: sends n progress notifications to a call that asked for
//     progress, then returns "counted <n>".
//   - grow: adds the tool "grown" (its sessions get tools/list_changed on
//     their standalone streams), returns "grew".
//   - roots: asks the client for its roots (a request of the server to the
//     client, on the call's stream) and returns their URIs, one a line.
//   - wait: waits until the call is cancelled (see Waiting and Cancelled).
type Server struct {
	// URL is the MCP endpoint, http://127.0.0.1:<port>/mcp.
	URL string
	// Token is the bearer token it requires.
	Token string
	// MCP is the SDK's server, for a test to add to.
	MCP *mcp.Server

	waiting, cancelled chan struct{}

	mu       sync.Mutex
	revoked  bool
	forbid   bool
	requests []Request
}

// Request is what the server saw of one HTTP request.
type Request struct {
	Method string // GET, POST, DELETE
	// RPCMethod is the JSON-RPC method of a POST's message ("" for a
	// response, a batch, or another method).
	RPCMethod string
	// Authorized is whether it carried the token (and the token was not
	// revoked).
	Authorized bool
	// ProtocolVersion is its Mcp-Protocol-Version header.
	ProtocolVersion string
	// SessionID is its Mcp-Session-Id header.
	SessionID string
}

type echoIn struct {
	Text string `json:"text" jsonschema:"the text to echo"`
}

type countIn struct {
	N int `json:"n" jsonschema:"how many progress notifications to send"`
}

// NewServer starts a Server on loopback, closed with t.Cleanup.
func NewServer(t testing.TB, token string) *Server {
	t.Helper()
	return NewServerWith(t, token, nil)
}

// NewServerWith starts a Server with the SDK's options for its Streamable
// HTTP handler (Stateless, JSONResponse...); nil means the defaults.
func NewServerWith(t testing.TB, token string, opts *mcp.StreamableHTTPOptions) *Server {
	t.Helper()
	if token == "" {
		t.Fatal("mcptest: NewServer needs a token")
	}
	s := &Server{Token: token, waiting: make(chan struct{}, 100), cancelled: make(chan struct{}, 100)}
	s.MCP = mcp.NewServer(&mcp.Implementation{Name: "mcptest", Version: "1.0.0"}, nil)
	mcp.AddTool(s.MCP, &mcp.Tool{Name: "echo", Description: "returns its text"},
		func(_ context.Context, _ *mcp.CallToolRequest, in echoIn) (*mcp.CallToolResult, any, error) {
			return text("echo: " + in.Text), nil, nil
		})
	mcp.AddTool(s.MCP, &mcp.Tool{Name: "count", Description: "sends n progress notifications"},
		func(ctx context.Context, req *mcp.CallToolRequest, in countIn) (*mcp.CallToolResult, any, error) {
			if tok := req.Params.GetProgressToken(); tok != nil {
				for i := 1; i <= in.N; i++ {
					if err := req.Session.NotifyProgress(ctx, &mcp.ProgressNotificationParams{
						ProgressToken: tok, Progress: float64(i), Total: float64(in.N), Message: fmt.Sprintf("step %d", i),
					}); err != nil {
						return nil, nil, err
					}
				}
			}
			return text(fmt.Sprintf("counted %d", in.N)), nil, nil
		})
	mcp.AddTool(s.MCP, &mcp.Tool{Name: "grow", Description: "adds the tool grown"},
		func(context.Context, *mcp.CallToolRequest, any) (*mcp.CallToolResult, any, error) {
			mcp.AddTool(s.MCP, &mcp.Tool{Name: "grown", Description: "was added by grow"},
				func(context.Context, *mcp.CallToolRequest, any) (*mcp.CallToolResult, any, error) {
					return text("grown"), nil, nil
				})
			return text("grew"), nil, nil
		})
	mcp.AddTool(s.MCP, &mcp.Tool{Name: "roots", Description: "lists the client's roots"},
		func(ctx context.Context, req *mcp.CallToolRequest, _ any) (*mcp.CallToolResult, any, error) {
			res, err := req.Session.ListRoots(ctx, nil)
			if err != nil {
				return nil, nil, err
			}
			var uris []string
			for _, r := range res.Roots {
				uris = append(uris, r.URI)
			}
			return text(strings.Join(uris, "\n")), nil, nil
		})

	mcp.AddTool(s.MCP, &mcp.Tool{Name: "wait", Description: "waits until the call is cancelled"},
		func(ctx context.Context, _ *mcp.CallToolRequest, _ any) (*mcp.CallToolResult, any, error) {
			s.waiting <- struct{}{}
			<-ctx.Done()
			s.cancelled <- struct{}{}
			return nil, nil, ctx.Err()
		})

	h := mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return s.MCP }, opts)
	mux := http.NewServeMux()
	mux.Handle("/mcp", s.auth(h))
	hs := httptest.NewServer(mux) // loopback
	t.Cleanup(hs.Close)
	s.URL = hs.URL + "/mcp"
	return s
}

// auth requires the token, and records the request.
func (s *Server) auth(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var rpcMethod string
		if r.Method == http.MethodPost && r.Body != nil {
			body, err := io.ReadAll(io.LimitReader(r.Body, 16<<20))
			if err != nil {
				http.Error(w, err.Error(), http.StatusBadRequest)
				return
			}
			var m struct {
				Method string `json:"method"`
			}
			if json.Unmarshal(body, &m) == nil {
				rpcMethod = m.Method
			}
			r.Body = io.NopCloser(bytes.NewReader(body))
		}
		got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		s.mu.Lock()
		ok = ok && !s.revoked && subtle.ConstantTimeCompare([]byte(got), []byte(s.Token)) == 1
		s.requests = append(s.requests, Request{
			Method:          r.Method,
			RPCMethod:       rpcMethod,
			Authorized:      ok,
			ProtocolVersion: r.Header.Get("Mcp-Protocol-Version"),
			SessionID:       r.Header.Get("Mcp-Session-Id"),
		})
		forbid := s.forbid
		s.mu.Unlock()
		if !ok {
			w.Header().Set("WWW-Authenticate", `Bearer realm="mcptest"`)
			http.Error(w, "mcptest: the device token is revoked or wrong", http.StatusUnauthorized)
			return
		}
		if forbid {
			http.Error(w, "mcptest: this device may not use MCP", http.StatusForbidden)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// Revoke makes the server refuse the token from now on (401), as the
// gateway refuses a revoked device's.
func (s *Server) Revoke() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.revoked = true
}

// Waiting receives when a call of wait starts waiting.
func (s *Server) Waiting() <-chan struct{} { return s.waiting }

// Cancelled receives when a call of wait was cancelled (or its session
// ended).
func (s *Server) Cancelled() <-chan struct{} { return s.cancelled }

// Forbid makes the server refuse the device from now on (403), as the
// gateway refuses a device without the scope MCP needs.
func (s *Server) Forbid() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.forbid = true
}

// Requests returns what the server saw of the HTTP requests so far.
func (s *Server) Requests() []Request {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Request(nil), s.requests...)
}

func text(s string) *mcp.CallToolResult {
	return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: s}}}
}
