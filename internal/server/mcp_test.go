package server_test

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/modelcontextprotocol/go-sdk/mcp"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/structpb"

	contractualv1 "github.com/contractual/contractual/contracts/gen/contractual/v1"
	"github.com/contractual/contractual/contracts/gen/contractual/v1/contractualv1connect"
	toolservice "github.com/contractual/contractual/internal/invoke"
	"github.com/contractual/contractual/internal/mcpserver"
	"github.com/contractual/contractual/internal/server"
)

// outcome bounds the wait for anything a test waits on: generous, so that
// a loaded machine is slow, not failing.
const outcome = 2 * time.Minute

// addHeaders is an http.RoundTripper that adds headers to every request.
type addHeaders struct {
	h    http.Header
	next http.RoundTripper
}

func (t addHeaders) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	for k, v := range t.h {
		r.Header[k] = v
	}
	return t.next.RoundTrip(r)
}

// agent is an MCP client session of a paired device, with what the
// server told it.
type agent struct {
	*mcp.ClientSession
	changed  chan struct{}                        // a tools/list_changed arrived
	progress chan *mcp.ProgressNotificationParams // progress notifications
}

// mcpHTTP returns an http.Client that sends tok as the bearer token and
// the extra headers (key, value, ...).
func mcpHTTP(tok string, kv ...string) *http.Client {
	h := http.Header{}
	if tok != "" {
		h.Set("Authorization", "Bearer "+tok)
	}
	for i := 0; i+1 < len(kv); i += 2 {
		h.Set(kv[i], kv[i+1])
	}
	return &http.Client{Transport: addHeaders{h: h, next: http.DefaultTransport}}
}

// connectMCP connects the Go SDK's client to s's /mcp as the device with
// token tok, sending the extra headers kv (key, value, ...).
func connectMCP(t testing.TB, s *server.Server, tok string, kv ...string) (*agent, error) {
	return dialMCP(t, s, tok, 0, kv...)
}

// dialMCP is connectMCP with the client's reconnection attempts of its
// stream (0: the SDK's default; -1: none, the session ends when a stream
// does).
func dialMCP(t testing.TB, s *server.Server, tok string, retries int, kv ...string) (*agent, error) {
	a := &agent{changed: make(chan struct{}, 64), progress: make(chan *mcp.ProgressNotificationParams, 64)}
	c := mcp.NewClient(&mcp.Implementation{Name: "test-agent", Version: "1"}, &mcp.ClientOptions{
		ToolListChangedHandler: func(context.Context, *mcp.ToolListChangedRequest) {
			select {
			case a.changed <- struct{}{}:
			default:
			}
		},
		ProgressNotificationHandler: func(_ context.Context, r *mcp.ProgressNotificationClientRequest) {
			select {
			case a.progress <- r.Params:
			default:
			}
		},
	})
	ctx, cancel := context.WithTimeout(context.Background(), outcome)
	defer cancel()
	cs, err := c.Connect(ctx, &mcp.StreamableClientTransport{Endpoint: s.URL + "/mcp", HTTPClient: mcpHTTP(tok, kv...), MaxRetries: retries}, nil)
	if err != nil {
		return nil, err
	}
	t.Cleanup(func() { cs.Close() })
	a.ClientSession = cs
	return a, nil
}

// toolNames lists the agent's tools, sorted.
func (a *agent) toolNames(t testing.TB) []string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), outcome)
	defer cancel()
	var names []string
	for tool, err := range a.Tools(ctx, nil) {
		if err != nil {
			t.Fatalf("listing tools: %v", err)
		}
		names = append(names, tool.Name)
	}
	slices.Sort(names)
	return names
}

// waitTools waits until the agent's tool list is want, listing again at
// each tools/list_changed, and each second (a test of the notification
// itself waits for it: see expectChanged).
func (a *agent) waitTools(t testing.TB, want ...string) {
	t.Helper()
	slices.Sort(want)
	deadline := time.After(outcome)
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		got := a.toolNames(t)
		if slices.Equal(got, want) {
			return
		}
		select {
		case <-a.changed:
		case <-tick.C:
		case <-deadline:
			t.Fatalf("tools are %q, want %q", got, want)
		}
	}
}

// drainChanged forgets the tools/list_changed notifications received so
// far.
func (a *agent) drainChanged() {
	for {
		select {
		case <-a.changed:
		default:
			return
		}
	}
}

// expectChanged waits for a tools/list_changed notification.
func (a *agent) expectChanged(t testing.TB, after string) {
	t.Helper()
	select {
	case <-a.changed:
	case <-time.After(outcome):
		t.Fatalf("no tools/list_changed after %s", after)
	}
}

// call calls tool with args.
func (a *agent) call(t testing.TB, tool string, args any) *mcp.CallToolResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), outcome)
	defer cancel()
	res, err := a.CallTool(ctx, &mcp.CallToolParams{Name: tool, Arguments: args})
	if err != nil {
		t.Fatalf("calling %s: %v", tool, err)
	}
	return res
}

// text is the text of a result's one content.
func text(t testing.TB, res *mcp.CallToolResult) string {
	t.Helper()
	if len(res.Content) != 1 {
		t.Fatalf("result content %v", res.Content)
	}
	tc, ok := res.Content[0].(*mcp.TextContent)
	if !ok {
		t.Fatalf("result content %T", res.Content[0])
	}
	return tc.Text
}

// auditRuns returns the audit log's call.run events by decision id.
func auditRuns(t testing.TB, s *server.Server, tok string) map[string]*contractualv1.AuditEvent {
	t.Helper()
	ac := contractualv1connect.NewAuditServiceClient(http.DefaultClient, s.URL, connect.WithInterceptors(bearer(tok)))
	runs := map[string]*contractualv1.AuditEvent{}
	var after uint64
	for {
		resp, err := ac.Tail(context.Background(), &contractualv1.TailRequest{Limit: 1000, After: after})
		if err != nil {
			t.Fatal(err)
		}
		if len(resp.GetEvents()) == 0 {
			return runs
		}
		for _, e := range resp.GetEvents() {
			if e.GetAction() == "call.run" {
				runs[e.GetDecisionId()] = e
			}
			after = max(after, e.GetIndex())
		}
	}
}

// deviceOf returns the principal of the device with token tok, from the
// owner's device list.
func deviceOf(t testing.TB, s *server.Server, ownerTok, name string) string {
	t.Helper()
	pc := contractualv1connect.NewPairingServiceClient(http.DefaultClient, s.URL, connect.WithInterceptors(bearer(ownerTok)))
	list, err := pc.ListDevices(context.Background(), &contractualv1.ListDevicesRequest{})
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range list.GetDevices() {
		if d.GetName() == name {
			return d.GetId()
		}
	}
	t.Fatalf("no device %q in %v", name, list)
	return ""
}

// TestMCP is a paired agent's view over MCP with the Go SDK's client: the
// approved tools only, with their contracts' descriptions and schemas; a
// call's result is Invoke's; a call that breaks the input schema is a tool
// error with policy's reason; a tool that takes a string is called with
// one "input" argument; the list follows approvals and revocations, with
// tools/list_changed; every call that ran is in the audit log as a
// call.run of the agent's device.
func TestMCP(t *testing.T) {
	s, _ := start(t)
	tok, _ := owner(t, s)
	pol := contractualv1connect.NewPolicyServiceClient(http.DefaultClient, s.URL, connect.WithInterceptors(bearer(tok)))
	textkit := publishTool(t, pol, "textkit", readTool(t, "textkit", "contract.yaml"))
	greeterSrc := readTool(t, "greeter", "contract.yaml")
	agentTok := pairAgent(t, s, tok, "agent")
	agentID := deviceOf(t, s, tok, "agent")

	a, err := connectMCP(t, s, agentTok)
	if err != nil {
		t.Fatal(err)
	}
	if ins := a.InitializeResult().Instructions; ins == "" || a.InitializeResult().Capabilities.Tools == nil || !a.InitializeResult().Capabilities.Tools.ListChanged {
		t.Errorf("initialize: instructions %q, capabilities %+v", ins, a.InitializeResult().Capabilities)
	}
	a.waitTools(t, "textkit.json_pick", "textkit.slugify", "textkit.word_count")

	// The schemas and descriptions are the contract's.
	ctx, cancel := context.WithTimeout(context.Background(), outcome)
	defer cancel()
	list, err := a.ListTools(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	rec, err := pol.GetContract(ctx, &contractualv1.GetContractRequest{Digest: textkit})
	if err != nil {
		t.Fatal(err)
	}
	for _, ct := range rec.GetRecord().GetContract().GetTools() {
		i := slices.IndexFunc(list.Tools, func(tl *mcp.Tool) bool { return tl.Name == "textkit."+ct.GetExport() })
		if i < 0 {
			t.Fatalf("no tool textkit.%s", ct.GetExport())
		}
		tl := list.Tools[i]
		if tl.Description != ct.GetDescription() {
			t.Errorf("%s: description %q, want %q", tl.Name, tl.Description, ct.GetDescription())
		}
		sameJSON(t, tl.Name+" input schema", tl.InputSchema, ct.GetInputSchema().AsMap())
		sameJSON(t, tl.Name+" output schema", tl.OutputSchema, ct.GetOutputSchema().AsMap())
	}

	// A call's result is Invoke's, as structured content too.
	res := a.call(t, "textkit.slugify", map[string]any{"text": "Hello Contractual World"})
	if res.IsError || text(t, res) != `{"slug":"hello-contractual-world"}` {
		t.Fatalf("slugify: %v %q", res.IsError, text(t, res))
	}
	sameJSON(t, "structured content", res.StructuredContent, map[string]any{"slug": "hello-contractual-world"})
	tools := contractualv1connect.NewToolServiceClient(http.DefaultClient, s.URL, connect.WithInterceptors(bearer(agentTok)))
	in, _ := structpb.NewValue(map[string]any{"text": "Hello Contractual World"})
	inv, err := tools.Invoke(ctx, &contractualv1.InvokeRequest{Tool: "textkit.slugify", Input: in})
	if err != nil {
		t.Fatal(err)
	}
	invJSON, _ := protojson.Marshal(inv.GetOutput())
	sameJSON(t, "Invoke's output", json.RawMessage(invJSON), res.StructuredContent)
	ran := []string{res.Meta[mcpserver.MetaDecision].(string)}

	// Input that breaks the schema: a tool error with policy's reason.
	bad := a.call(t, "textkit.slugify", map[string]any{"text": 5})
	if !bad.IsError || !strings.Contains(text(t, bad), "schema") {
		t.Errorf("a call breaking the input schema: %v %q", bad.IsError, text(t, bad))
	}
	// A tool that is not approved is not there.
	if _, err := a.CallTool(ctx, &mcp.CallToolParams{Name: "greeter.greet", Arguments: map[string]any{"name": "x"}}); err == nil {
		t.Error("an unapproved tool was called")
	}

	// Approving greeter and countvowels lists them, and the agent is told.
	a.drainChanged()
	publishTool(t, pol, "greeter", greeterSrc)
	publishTool(t, pol, "countvowels", readTool(t, "countvowels", "contract.yaml"))
	a.expectChanged(t, "approvals")
	a.waitTools(t, "countvowels.count_vowels", "greeter.greet", "textkit.json_pick", "textkit.slugify", "textkit.word_count")
	res = a.call(t, "greeter.greet", map[string]any{"name": "agent"})
	if res.IsError || text(t, res) != `{"message":"Hello, agent!"}` {
		t.Fatalf("greet: %v %q", res.IsError, text(t, res))
	}
	ran = append(ran, res.Meta[mcpserver.MetaDecision].(string))
	// countvowels takes a string: one "input" argument.
	res = a.call(t, "countvowels.count_vowels", map[string]any{"input": "Hello, world"})
	if res.IsError || !strings.Contains(text(t, res), `"count":3`) {
		t.Fatalf("count_vowels: %v %q", res.IsError, text(t, res))
	}
	ran = append(ran, res.Meta[mcpserver.MetaDecision].(string))

	// Revoking textkit takes its tools away, and the agent is told.
	a.drainChanged()
	if _, err := pol.Revoke(ctx, &contractualv1.RevokeRequest{Digest: textkit, Reason: "enough"}); err != nil {
		t.Fatal(err)
	}
	a.expectChanged(t, "a revocation")
	a.waitTools(t, "countvowels.count_vowels", "greeter.greet")

	runs := auditRuns(t, s, tok)
	for _, id := range ran {
		ev, ok := runs[id]
		if !ok || ev.GetPrincipal() != "device:"+agentID || ev.GetOutcome() != "ok" {
			t.Errorf("decision %s: audit event %v, want a call.run of device:%s", id, ev, agentID)
		}
	}
}

// sameJSON checks that got and want encode to the same JSON value.
func sameJSON(t testing.TB, what string, got, want any) {
	t.Helper()
	norm := func(v any) any {
		b, err := json.Marshal(v)
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		var out any
		if err := json.Unmarshal(b, &out); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		return out
	}
	g, w := norm(got), norm(want)
	gb, _ := json.Marshal(g)
	wb, _ := json.Marshal(w)
	if string(gb) != string(wb) {
		t.Errorf("%s: %s, want %s", what, gb, wb)
	}
}

// TestMCPApproval: a high-risk tool called over MCP says where the owner
// approves it, in progress notifications, and waits; once the owner
// approves from another device the call completes with the result. A
// denial ends the waiting call as a tool error with the owner's reason.
func TestMCPApproval(t *testing.T) {
	s, _ := start(t)
	tok, _ := owner(t, s)
	pol := contractualv1connect.NewPolicyServiceClient(http.DefaultClient, s.URL, connect.WithInterceptors(bearer(tok)))
	publishTool(t, pol, "greeter", highRiskGreeter(t))
	agentTok := pairAgent(t, s, tok, "agent")
	a, err := connectMCP(t, s, agentTok)
	if err != nil {
		t.Fatal(err)
	}
	a.waitTools(t, "greeter.greet")

	for _, tt := range []struct {
		name    string
		decide  func(ctx context.Context, id string) error
		want    string
		isError bool
	}{
		{"approved", func(ctx context.Context, id string) error {
			_, err := pol.ApproveCall(ctx, &contractualv1.ApproveCallRequest{Id: id, Reason: "go ahead"})
			return err
		}, `{"message":"Hello, mcp approved!"}`, false},
		{"denied", func(ctx context.Context, id string) error {
			_, err := pol.DenyCall(ctx, &contractualv1.DenyCallRequest{Id: id, Reason: "not today"})
			return err
		}, "not today", true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), outcome)
			defer cancel()
			type result struct {
				res *mcp.CallToolResult
				err error
			}
			done := make(chan result, 1)
			go func() {
				p := &mcp.CallToolParams{Name: "greeter.greet", Arguments: map[string]any{"name": "mcp " + tt.name}}
				p.SetProgressToken("wait-" + tt.name)
				res, err := a.CallTool(ctx, p)
				done <- result{res, err}
			}()
			// The first progress notification says where to approve.
			var first *mcp.ProgressNotificationParams
			for first == nil {
				select {
				case p := <-a.progress:
					if p.ProgressToken == "wait-"+tt.name { // not the previous call's
						first = p
					}
				case r := <-done:
					t.Fatalf("the call ended before waiting: %v, %v", r.res, r.err)
				case <-ctx.Done():
					t.Fatal("no progress notification")
				}
			}
			list, err := pol.ListCallApprovals(ctx, &contractualv1.ListCallApprovalsRequest{})
			if err != nil || len(list.GetApprovals()) != 1 {
				t.Fatalf("pending approvals: %v, %v", list, err)
			}
			id := list.GetApprovals()[0].GetId()
			if first.ProgressToken != "wait-"+tt.name || !strings.Contains(first.Message, s.URL+toolservice.ApprovalPath(id)) {
				t.Errorf("progress %+v does not say where to approve %s", first, id)
			}
			if err := tt.decide(ctx, id); err != nil {
				t.Fatal(err)
			}
			r := <-done
			if r.err != nil {
				t.Fatal(r.err)
			}
			if r.res.IsError != tt.isError || !strings.Contains(text(t, r.res), tt.want) {
				t.Fatalf("result %v %q, want %v %q", r.res.IsError, text(t, r.res), tt.isError, tt.want)
			}
		})
	}
}

// TestMCPRefusals: /mcp takes a paired device's token with scope invoke
// and nothing else (no token 401, a read-only device 403), refuses a
// request from a web page of another origin (403) but not one of its own,
// and a device revoked mid-session is refused from its next request (401)
// while its open stream ends.
func TestMCPRefusals(t *testing.T) {
	s, _ := start(t)
	tok, _ := owner(t, s)
	publishApproved(t, s, tok)
	agentTok := pairAgent(t, s, tok, "agent")
	readTok, _ := pairScoped(t, s, tok, "reader", "read")

	initialize := `{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"raw","version":"1"}}}`
	post := func(tok, body string, kv ...string) *http.Response {
		t.Helper()
		req, _ := http.NewRequest(http.MethodPost, s.URL+"/mcp", strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Accept", "application/json, text/event-stream")
		if tok != "" {
			req.Header.Set("Authorization", "Bearer "+tok)
		}
		for i := 0; i+1 < len(kv); i += 2 {
			req.Header.Set(kv[i], kv[i+1])
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { resp.Body.Close() })
		return resp
	}
	for _, tt := range []struct {
		name string
		tok  string
		kv   []string
		want int
	}{
		{"no token", "", nil, http.StatusUnauthorized},
		{"a bad token", "not-a-token", nil, http.StatusUnauthorized},
		{"a read-only device", readTok, nil, http.StatusForbidden},
		{"another origin", agentTok, []string{"Origin", "http://evil.example"}, http.StatusForbidden},
		{"its own origin", agentTok, []string{"Origin", s.URL}, http.StatusOK},
		{"no origin", agentTok, nil, http.StatusOK},
	} {
		t.Run(tt.name, func(t *testing.T) {
			resp := post(tt.tok, initialize, tt.kv...)
			if resp.StatusCode != tt.want {
				b, _ := io.ReadAll(resp.Body)
				t.Fatalf("status %d, want %d: %s", resp.StatusCode, tt.want, b)
			}
		})
	}
	// A Host that is not the server's, on its loopback listener: refused.
	req, _ := http.NewRequest(http.MethodPost, s.URL+"/mcp", strings.NewReader(initialize))
	req.Host = "rebound.example:7700"
	req.Header.Set("Authorization", "Bearer "+agentTok)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json, text/event-stream")
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != http.StatusForbidden {
		t.Fatalf("a rebound Host: %v, %v", resp, err)
	} else {
		resp.Body.Close()
	}
	// The Go SDK's client with a bad Origin cannot connect.
	if _, err := connectMCP(t, s, agentTok, "Origin", "http://evil.example"); err == nil {
		t.Error("connected with another origin")
	}

	// Revoked mid-session: the open stream ends, the next call is refused.
	a, err := connectMCP(t, s, agentTok)
	if err != nil {
		t.Fatal(err)
	}
	a.waitTools(t, "textkit.json_pick", "textkit.slugify", "textkit.word_count")
	resp := post(agentTok, initialize)
	sid := resp.Header.Get("Mcp-Session-Id")
	if resp.StatusCode != http.StatusOK || sid == "" {
		t.Fatalf("initialize: %d, session %q", resp.StatusCode, sid)
	}
	if r := post(agentTok, `{"jsonrpc":"2.0","method":"notifications/initialized"}`, "Mcp-Session-Id", sid, "Mcp-Protocol-Version", "2025-06-18"); r.StatusCode != http.StatusAccepted {
		t.Fatalf("initialized: %d", r.StatusCode)
	}
	// Another device cannot use the session.
	if r := post(tok, `{"jsonrpc":"2.0","id":2,"method":"tools/list"}`, "Mcp-Session-Id", sid, "Mcp-Protocol-Version", "2025-06-18"); r.StatusCode != http.StatusForbidden {
		t.Fatalf("another device's request in the agent's session: %d, want 403", r.StatusCode)
	}
	greq, _ := http.NewRequest(http.MethodGet, s.URL+"/mcp", nil)
	greq.Header.Set("Authorization", "Bearer "+agentTok)
	greq.Header.Set("Accept", "text/event-stream")
	greq.Header.Set("Mcp-Session-Id", sid)
	greq.Header.Set("Mcp-Protocol-Version", "2025-06-18")
	stream, err := http.DefaultClient.Do(greq)
	if err != nil || stream.StatusCode != http.StatusOK {
		t.Fatalf("the stream: %v, %v", stream, err)
	}
	defer stream.Body.Close()
	ended := make(chan error, 1)
	go func() {
		_, err := io.Copy(io.Discard, bufio.NewReader(stream.Body))
		ended <- err
	}()

	pc := contractualv1connect.NewPairingServiceClient(http.DefaultClient, s.URL, connect.WithInterceptors(bearer(tok)))
	if _, err := pc.RevokeDevice(context.Background(), &contractualv1.RevokeDeviceRequest{DeviceId: deviceOf(t, s, tok, "agent")}); err != nil {
		t.Fatal(err)
	}
	select {
	case <-ended:
	case <-time.After(outcome):
		t.Fatal("the revoked device's stream is still open")
	}
	ctx, cancel := context.WithTimeout(context.Background(), outcome)
	defer cancel()
	if _, err := a.CallTool(ctx, &mcp.CallToolParams{Name: "textkit.slugify", Arguments: map[string]any{"text": "x"}}); err == nil {
		t.Fatal("a revoked device called a tool")
	}
	if r := post(agentTok, initialize); r.StatusCode != http.StatusUnauthorized {
		t.Fatalf("a revoked device: %d, want 401", r.StatusCode)
	}
}

// TestMCPResultCapped: a result over 64 KiB reaches the agent cut to
// 64 KiB, saying so; Invoke gets it whole.
func TestMCPResultCapped(t *testing.T) {
	s, _ := start(t)
	tok, _ := owner(t, s)
	pol := contractualv1connect.NewPolicyServiceClient(http.DefaultClient, s.URL, connect.WithInterceptors(bearer(tok)))
	src := readTool(t, "textkit", "contract.yaml")
	if !strings.Contains(src, "output_bytes: 65536") {
		t.Fatal("textkit's contract no longer caps its output at 65536 bytes")
	}
	publishTool(t, pol, "textkit", strings.Replace(src, "output_bytes: 65536", "output_bytes: 1048576", 1))
	agentTok := pairAgent(t, s, tok, "agent")
	a, err := connectMCP(t, s, agentTok)
	if err != nil {
		t.Fatal(err)
	}
	a.waitTools(t, "textkit.json_pick", "textkit.slugify", "textkit.word_count")
	long := strings.Repeat("0123456789", 10_000) // 100,000 bytes
	res := a.call(t, "textkit.json_pick", map[string]any{"json": map[string]any{"a": long}, "path": "a"})
	got := text(t, res)
	body, note, cut := strings.Cut(got, "\n[truncated by Contractual")
	if res.IsError || !cut || len(body) != 64<<10 || !strings.HasPrefix(body, `{"value":"0123456789`) || res.StructuredContent != nil {
		t.Fatalf("a 100 kB result: error %v, cut %v, %d bytes, structured %v", res.IsError, cut, len(body), res.StructuredContent != nil)
	}
	if !strings.Contains(note, "the output is 100012 bytes, over the 65536 byte cap") {
		t.Errorf("the note %q", note)
	}
}

// BenchmarkMCPCall measures one tools/call over MCP (the Go SDK's client,
// Streamable HTTP, a session) next to one Invoke over Connect of the same
// small tool by the same device on the same server, interleaved, and
// reports their medians and ratio:
//
//	go test -run '^$' -bench MCPCall -benchtime 1000x ./internal/server
func BenchmarkMCPCall(b *testing.B) {
	s, tok := vowelsServer(b)
	auth := connect.WithInterceptors(bearer(tok))
	a, err := connectMCP(b, s, tok)
	if err != nil {
		b.Fatal(err)
	}
	a.waitTools(b, "vowels.count_vowels")
	tools := contractualv1connect.NewToolServiceClient(http.DefaultClient, s.URL, auth)
	in, _ := structpb.NewValue(map[string]any{"text": "the quick brown fox"})
	req := &contractualv1.InvokeRequest{Tool: "vowels.count_vowels", Input: in}
	params := &mcp.CallToolParams{Name: "vowels.count_vowels", Arguments: map[string]any{"text": "the quick brown fox"}}
	ctx := context.Background()

	var viaMCP, viaInvoke []time.Duration
	b.ResetTimer()
	for range b.N {
		t0 := time.Now()
		res, err := a.CallTool(ctx, params)
		if err != nil || res.IsError {
			b.Fatalf("tools/call: %v %v", res, err)
		}
		t1 := time.Now()
		if _, err := tools.Invoke(ctx, req); err != nil {
			b.Fatal(err)
		}
		viaMCP, viaInvoke = append(viaMCP, t1.Sub(t0)), append(viaInvoke, time.Since(t1))
	}
	b.StopTimer()
	p50 := func(d []time.Duration) float64 {
		slices.Sort(d)
		return float64(d[len(d)/2]) / float64(time.Microsecond)
	}
	pm, pi := p50(viaMCP), p50(viaInvoke)
	b.ReportMetric(pm, "mcp-p50-µs")
	b.ReportMetric(pi, "invoke-p50-µs")
	b.ReportMetric(pm/pi, "mcp/invoke")
}

// TestMCPLongStreams: a stream lasts past the gateway's ReadTimeout once
// its request's body is read (the read deadline would otherwise end it):
// the session's stream of server messages, and a call that waits for an
// approval longer than that. The client does not reconnect, so a stream
// that ended would end its session.
func TestMCPLongStreams(t *testing.T) {
	const read = time.Second
	s := startWith(t, func(c *server.Config) { c.Limits.ReadTimeout = read })
	tok, _ := owner(t, s)
	pol := contractualv1connect.NewPolicyServiceClient(http.DefaultClient, s.URL, connect.WithInterceptors(bearer(tok)))
	publishTool(t, pol, "greeter", highRiskGreeter(t))
	agentTok := pairAgent(t, s, tok, "agent")
	a, err := dialMCP(t, s, agentTok, -1)
	if err != nil {
		t.Fatal(err)
	}
	a.waitTools(t, "greeter.greet")
	ctx, cancel := context.WithTimeout(context.Background(), outcome)
	defer cancel()
	done := make(chan error, 1)
	var res *mcp.CallToolResult
	go func() {
		p := &mcp.CallToolParams{Name: "greeter.greet", Arguments: map[string]any{"name": "patience"}}
		p.SetProgressToken("long")
		var err error
		res, err = a.CallTool(ctx, p)
		done <- err
	}()
	select {
	case <-a.progress:
	case err := <-done:
		t.Fatalf("the call ended before waiting: %v", err)
	case <-ctx.Done():
		t.Fatal("no progress notification")
	}
	// Let the streams outlive the read deadline: this makes the condition
	// under test; it waits for no outcome.
	time.Sleep(3 * read)
	list, err := pol.ListCallApprovals(ctx, &contractualv1.ListCallApprovalsRequest{})
	if err != nil || len(list.GetApprovals()) != 1 {
		t.Fatalf("pending approvals: %v, %v", list, err)
	}
	if _, err := pol.ApproveCall(ctx, &contractualv1.ApproveCallRequest{Id: list.GetApprovals()[0].GetId()}); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil || res.IsError || text(t, res) != `{"message":"Hello, patience!"}` {
		t.Fatalf("the call after %s: %v, %v", 3*read, res, err)
	}
	if got := a.toolNames(t); !slices.Equal(got, []string{"greeter.greet"}) {
		t.Fatalf("tools %q", got)
	}
}
