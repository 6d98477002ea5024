package splittest_test

import (
	"context"
	"net/http"
	"slices"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/contractual/contractual/internal/authz"
	"github.com/contractual/contractual/internal/splittest"
)

// bearerTransport sends a device token with every request.
type bearerTransport struct{ token string }

func (b bearerTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set("Authorization", "Bearer "+b.token)
	return http.DefaultTransport.RoundTrip(r)
}

// TestSplitMCP: the split gateway serves MCP too: it follows policy's
// approved contracts over mutual TLS (WatchContracts, GetContract in its
// row), lists the approved tool and calls it through policy and the
// runner.
func TestSplitMCP(t *testing.T) {
	s := splittest.Start(t)
	d := owner(t, s)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	changed := make(chan struct{}, 16)
	c := mcp.NewClient(&mcp.Implementation{Name: "split-agent", Version: "1"}, &mcp.ClientOptions{
		ToolListChangedHandler: func(context.Context, *mcp.ToolListChangedRequest) {
			select {
			case changed <- struct{}{}:
			default:
			}
		},
	})
	cs, err := c.Connect(ctx, &mcp.StreamableClientTransport{Endpoint: s.URL + "/mcp", HTTPClient: &http.Client{Transport: bearerTransport{d.Token}}}, nil)
	if err != nil {
		t.Fatalf("connecting: %v\n%s", err, s.Log(authz.Gateway))
	}
	defer cs.Close()
	for {
		list, err := cs.ListTools(ctx, nil)
		if err != nil {
			t.Fatal(err)
		}
		if slices.ContainsFunc(list.Tools, func(tl *mcp.Tool) bool { return tl.Name == "count.count_vowels" }) {
			break
		}
		select {
		case <-changed:
		case <-ctx.Done():
			t.Fatalf("tools %v; no count.count_vowels\n%s", list.Tools, s.Log(authz.Gateway))
		}
	}
	res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "count.count_vowels", Arguments: map[string]any{"text": "contractual"}})
	if err != nil {
		t.Fatal(err)
	}
	// count.wasm counts the vowels of its whole input, {"text":"contractual"}.
	if tc, ok := res.Content[0].(*mcp.TextContent); res.IsError || !ok || tc.Text != `{"count":5}` {
		t.Fatalf("count_vowels: %v %v", res.IsError, res.Content)
	}
}
