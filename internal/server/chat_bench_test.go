package server_test

import (
	"context"
	"net/http"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/structpb"

	contractualv1 "github.com/contractual/contractual/contracts/gen/contractual/v1"
	"github.com/contractual/contractual/contracts/gen/contractual/v1/contractualv1connect"
	"github.com/contractual/contractual/internal/engine"
	"github.com/contractual/contractual/internal/engine/modeltest"
	"github.com/contractual/contractual/internal/server"
)

// BenchmarkChatTurn measures the engine's own overhead per turn: a turn
// whose model answers at once (one proposal of textkit.slugify, then an
// answer) against one Invoke of the same tool through the gateway, in the
// same run. A turn is two model requests (on loopback), a policy decision,
// a run, the session's events and audit records; turn/invoke is the ratio
// of the medians.
//
//	go test -run '^$' -bench ChatTurn -benchtime 200x ./internal/server
func BenchmarkChatTurn(b *testing.B) {
	m := modeltest.NewFunc(b, func(r modeltest.Request) modeltest.Turn {
		if strings.Contains(r.Messages[len(r.Messages)-1].Content, "<tool-output") {
			return modeltest.Turn{Content: `{"answer": "hello-world", "calls": []}`}
		}
		return modeltest.Turn{Content: `{"answer": null, "calls": [{"tool": "textkit.slugify", "input": "{\"text\": \"Hello World\"}"}]}`}
	})
	s, err := server.Start(context.Background(), server.Config{DataDir: b.TempDir(), Addr: "127.0.0.1:0",
		Engine: engine.Config{Model: engine.ModelConfig{Model: "scripted", BaseURL: m.URL}}})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close(context.Background())
	tok, _ := owner(b, s)
	auth := connect.WithInterceptors(bearer(tok))
	pol := contractualv1connect.NewPolicyServiceClient(http.DefaultClient, s.URL, auth)
	wasm, _ := os.ReadFile(tool("textkit", "textkit.wasm"))
	src, _ := os.ReadFile(tool("textkit", "contract.yaml"))
	pub, err := pol.Publish(context.Background(), &contractualv1.PublishRequest{Module: wasm, Contract: src, ContractFilename: "contract.yaml"})
	if err != nil {
		b.Fatal(err)
	}
	if _, err := pol.Approve(context.Background(), &contractualv1.ApproveRequest{Digest: pub.GetRecord().GetDigest()}); err != nil {
		b.Fatal(err)
	}
	c := sessionClient(s, tok)
	tools := contractualv1connect.NewToolServiceClient(http.DefaultClient, s.URL, auth)
	in, _ := structpb.NewValue(map[string]any{"text": "Hello World"})
	req := &contractualv1.InvokeRequest{Tool: "textkit.slugify", Input: in}
	ctx := context.Background()

	var turns, invokes []time.Duration
	b.ResetTimer()
	for range b.N {
		b.StopTimer()
		open, err := c.OpenSession(ctx, &contractualv1.OpenSessionRequest{Tools: []string{"textkit.slugify"}})
		if err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		t0 := time.Now()
		st, err := c.Send(ctx, &contractualv1.SendRequest{SessionId: open.GetSession().GetId(), Text: "Slugify Hello World"})
		if err != nil {
			b.Fatal(err)
		}
		var last *contractualv1.SessionEvent
		for st.Receive() {
			last = st.Msg().GetEvent()
		}
		st.Close()
		if st.Err() != nil || last.GetKind() != contractualv1.SessionEventKind_SESSION_EVENT_KIND_TURN_END {
			b.Fatalf("turn: %v %v", last, st.Err())
		}
		t1 := time.Now()
		if _, err := tools.Invoke(ctx, req); err != nil {
			b.Fatal(err)
		}
		turns, invokes = append(turns, t1.Sub(t0)), append(invokes, time.Since(t1))
	}
	b.StopTimer()
	p50 := func(d []time.Duration) float64 {
		slices.Sort(d)
		return float64(d[len(d)/2]) / float64(time.Microsecond)
	}
	pt, pi := p50(turns), p50(invokes)
	b.ReportMetric(pt, "turn-p50-µs")
	b.ReportMetric(pi, "invoke-p50-µs")
	b.ReportMetric(pt/pi, "turn/invoke")
}
