package deploytest_test

import (
	"context"
	"net/http"
	"slices"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// bearerTransport sends a device's token with every request.
type bearerTransport struct{ token string }

func (b bearerTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set("Authorization", "Bearer "+b.token)
	return http.DefaultTransport.RoundTrip(r)
}

// mcpAgent: an agent reaches the approved tools over MCP at the
// deployment's gateway (/mcp), which follows policy's contracts over
// mutual TLS: the Go SDK's client lists the tool the flow approved and
// calls it, through policy and the runner in their containers; a token
// that is not a device's gets no session.
func (d *deployment) mcpAgent(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Minute)
	defer cancel()
	c := mcp.NewClient(&mcp.Implementation{Name: "deploytest-agent", Version: "1"}, nil)
	cs, err := c.Connect(ctx, &mcp.StreamableClientTransport{Endpoint: d.url + "/mcp", HTTPClient: &http.Client{Transport: bearerTransport{d.token(t)}}}, nil)
	if err != nil {
		t.Fatalf("connecting to %s/mcp: %v", d.url, err)
	}
	defer cs.Close()
	var names []string
	for tool, err := range cs.Tools(ctx, nil) {
		if err != nil {
			t.Fatalf("tools/list: %v", err)
		}
		names = append(names, tool.Name)
	}
	if !slices.Contains(names, "textkit.slugify") {
		t.Fatalf("tools/list: %v; want textkit.slugify, which the flow approved", names)
	}
	res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "textkit.slugify", Arguments: map[string]any{"text": "Hello, MCP in Compose!"}})
	if err != nil {
		t.Fatalf("tools/call: %v", err)
	}
	got, _ := res.StructuredContent.(map[string]any)
	if res.IsError || got["slug"] != "hello-mcp-in-compose" {
		t.Errorf("tools/call textkit.slugify: error %v, %v %v", res.IsError, res.StructuredContent, res.Content)
	}

	bad := mcp.NewClient(&mcp.Implementation{Name: "deploytest-stranger", Version: "1"}, nil)
	if s, err := bad.Connect(ctx, &mcp.StreamableClientTransport{Endpoint: d.url + "/mcp", HTTPClient: &http.Client{Transport: bearerTransport{"not-a-device-token"}}, MaxRetries: -1}, nil); err == nil {
		s.Close()
		t.Error("a token that is no device's opened an MCP session")
	}
}
