package mcpbridge

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// The standalone stream's events, as the spec of server-sent events reads
// them: data over several lines, comments, ids, retry, events of another
// name, and a last event without its blank line (dropped).
func TestEvents(t *testing.T) {
	var out bytes.Buffer
	local, err := (&mcp.IOTransport{Reader: io.NopCloser(strings.NewReader("")), Writer: nopWriteCloser{&out}}).Connect(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	b := &bridge{local: local, log: slog.New(slog.DiscardHandler), pending: map[jsonrpc.ID]call{}}
	stream := strings.Join([]string{
		": a keep-alive",
		"id: 1",
		`data: {"jsonrpc":"2.0","method":"notifications/tools/list_changed"}`,
		"",
		"event: message",
		"id: 2",
		"retry: 2500",
		`data: {"jsonrpc":"2.0",`,
		`data:"method":"notifications/message","params":{"level":"info","data":"two lines"}}`,
		"",
		"event: other",
		`data: {"jsonrpc":"2.0","method":"notifications/other"}`,
		"",
		"id: 3",
		"",
		`data: {"jsonrpc":"2.0","method":"notifications/cut"}`,
	}, "\n")
	lastID, retry := b.events(context.Background(), strings.NewReader(stream), "0")
	if lastID != "3" || retry != 2500*time.Millisecond {
		t.Errorf("events: last id %q, retry %v; want 3, 2.5s", lastID, retry)
	}
	want := `{"jsonrpc":"2.0","method":"notifications/tools/list_changed"}
{"jsonrpc":"2.0","method":"notifications/message","params":{"level":"info","data":"two lines"}}
`
	if got := out.String(); got != want {
		t.Errorf("relayed:\n%s\nwant:\n%s", got, want)
	}
}
