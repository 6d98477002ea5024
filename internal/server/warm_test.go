package server_test

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"

	contractualv1 "github.com/contractual/contractual/contracts/gen/contractual/v1"
	"github.com/contractual/contractual/contracts/gen/contractual/v1/contractualv1connect"
	"github.com/contractual/contractual/internal/server"
)

// logWatch is a slog handler that keeps every record, rendered as
// "message key=value...", and wakes whoever waits for one.
type logWatch struct {
	mu      sync.Mutex
	lines   []string
	changed chan struct{}
}

func newLogWatch() *logWatch { return &logWatch{changed: make(chan struct{})} }

func (w *logWatch) Enabled(context.Context, slog.Level) bool { return true }
func (w *logWatch) WithAttrs([]slog.Attr) slog.Handler       { return w }
func (w *logWatch) WithGroup(string) slog.Handler            { return w }

func (w *logWatch) Handle(_ context.Context, r slog.Record) error {
	var b strings.Builder
	b.WriteString(r.Message)
	r.Attrs(func(a slog.Attr) bool {
		fmt.Fprintf(&b, " %s=%v", a.Key, a.Value)
		return true
	})
	w.mu.Lock()
	defer w.mu.Unlock()
	w.lines = append(w.lines, b.String())
	close(w.changed)
	w.changed = make(chan struct{})
	return nil
}

// wait waits for a record that contains every one of parts.
func (w *logWatch) wait(t *testing.T, parts ...string) {
	t.Helper()
	deadline := time.NewTimer(patience)
	defer deadline.Stop()
	for {
		w.mu.Lock()
		lines, changed := w.lines, w.changed
		w.mu.Unlock()
		for _, l := range lines {
			found := true
			for _, p := range parts {
				found = found && strings.Contains(l, p)
			}
			if found {
				return
			}
		}
		select {
		case <-changed:
		case <-deadline.C:
			t.Fatalf("no log record with %q in:\n%s", parts, strings.Join(lines, "\n"))
		}
	}
}

// TestWarmAndPrune: in the all-in-one server the runner follows policy: an
// approved tool's module is compiled before its first call, into its own
// directory of the compilation cache, and that directory is deleted when
// the contract is revoked.
func TestWarmAndPrune(t *testing.T) {
	logs := newLogWatch()
	var dir string
	s := startWith(t, func(c *server.Config) { c.Log, dir = slog.New(logs), c.DataDir })
	tok, _ := owner(t, s)
	pol := contractualv1connect.NewPolicyServiceClient(http.DefaultClient, s.URL, connect.WithInterceptors(bearer(tok)))
	d := publishTool(t, pol, "countvowels", readTool(t, "countvowels", "contract.yaml"))
	got, err := pol.GetContract(context.Background(), &contractualv1.GetContractRequest{Digest: d})
	if err != nil {
		t.Fatal(err)
	}
	module := got.GetRecord().GetContract().GetModule()
	code := filepath.Join(dir, "cache", strings.TrimPrefix(module, "sha256:"))

	logs.wait(t, "module warmed", d)
	if _, err := os.Stat(code); err != nil {
		t.Fatalf("the warmed module's compiled code: %v", err)
	}
	if _, err := pol.Revoke(context.Background(), &contractualv1.RevokeRequest{Digest: d}); err != nil {
		t.Fatal(err)
	}
	logs.wait(t, "compiled code pruned", module)
	if _, err := os.Stat(code); !os.IsNotExist(err) {
		t.Fatalf("the revoked module's compiled code is still there: %v", err)
	}
}
