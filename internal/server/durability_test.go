package server_test

import (
	"bytes"
	"context"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/structpb"

	contractualv1 "github.com/contractual/contractual/contracts/gen/contractual/v1"
	"github.com/contractual/contractual/contracts/gen/contractual/v1/contractualv1connect"
	"github.com/contractual/contractual/internal/audit"
)

// TestKillDurability kills the server with SIGKILL, repeatedly, in the middle
// of a stream of invocations. Every invocation that was acknowledged must
// have its audit event after the restart, and the chain must verify.
func TestKillDurability(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and restarts the server several times")
	}
	bin := filepath.Join(t.TempDir(), "contractual")
	if out, err := exec.Command("go", "build", "-o", bin, "../../cmd/contractual").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	dir := t.TempDir()
	addr := freeAddr(t)
	url := "http://" + addr

	var acked []string // decision ids of acknowledged invocations
	srv := &remote{url: url, token: filepath.Join(t.TempDir(), "device.token")}
	for round := range 3 {
		cmd := exec.Command(bin, "serve", "--data", dir, "--addr", addr)
		var logs syncBuffer
		cmd.Stdout, cmd.Stderr = &logs, &logs
		t.Cleanup(func() {
			if t.Failed() {
				t.Logf("server round %d:\n%s", round, logs.String())
			}
		})
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		waitListening(t, addr)
		if round == 0 {
			srv.pair(t, &logs)
			srv.publishApproved(t)
		}
		acked = append(acked, invokeUntilKilled(t, srv, cmd, 20+10*round)...)
	}

	// Restart once more, cleanly, and look for every acknowledged call.
	cmd := exec.Command(bin, "serve", "--data", dir, "--addr", addr)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	waitListening(t, addr)
	seen := map[string]bool{}
	for after := uint64(0); ; {
		resp, err := srv.audit().Tail(context.Background(), &contractualv1.TailRequest{Limit: 1000, After: after})
		if err != nil {
			t.Fatal(err)
		}
		if len(resp.GetEvents()) == 0 {
			break
		}
		if len(resp.GetEvents()) == 1000 {
			t.Fatal("more events than one Tail page; page differently")
		}
		for _, e := range resp.GetEvents() {
			if e.GetAction() == "call.run" && e.GetOutcome() == "ok" {
				seen[e.GetDecisionId()] = true
			}
			after = max(after, e.GetIndex())
		}
	}
	cmd.Process.Signal(syscall.SIGTERM)
	cmd.Wait()
	missing := 0
	for _, id := range acked {
		if !seen[id] {
			missing++
		}
	}
	if missing > 0 || len(acked) == 0 {
		t.Fatalf("%d of %d acknowledged invocations have no audit event", missing, len(acked))
	}
	res, err := audit.VerifyFile(context.Background(), filepath.Join(dir, "audit"))
	if err != nil || !res.GetOk() {
		t.Fatalf("verify after kills: %v %v", res, err)
	}
	t.Logf("%d acknowledged invocations over 3 kills, all audited; chain of %d events verifies", len(acked), res.GetEvents())
}

// invokeUntilKilled invokes from several goroutines and SIGKILLs the server
// once n invocations were acknowledged; it returns the acknowledged ids.
func invokeUntilKilled(t *testing.T, srv *remote, cmd *exec.Cmd, n int) []string {
	var (
		mu    sync.Mutex
		acked []string
		wg    sync.WaitGroup
		once  sync.Once
	)
	kill := func() { once.Do(func() { cmd.Process.Kill() }) }
	tools := srv.tools()
	in, _ := structpb.NewValue(map[string]any{"text": "durable"})
	for range 4 {
		wg.Go(func() {
			for {
				resp, err := tools.Invoke(context.Background(), &contractualv1.InvokeRequest{Tool: "textkit.slugify", Input: in})
				if err != nil {
					return // the server is gone
				}
				mu.Lock()
				acked = append(acked, resp.GetDecisionId())
				if len(acked) >= n {
					kill()
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	kill()
	cmd.Wait()
	return acked
}

type remote struct{ url, token string }

// pair pairs the first device with the setup code that the server printed
// on its console (in logs), the way an owner does, and keeps its token.
func (f *remote) pair(t *testing.T, logs *syncBuffer) {
	t.Helper()
	re := regexp.MustCompile(`with setup code (\S+) `)
	var m []string
	for deadline := time.Now().Add(3 * time.Minute); m == nil && time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		m = re.FindStringSubmatch(logs.String())
	}
	if m == nil {
		t.Fatalf("the server printed no setup code:\n%s", logs)
	}
	pc := contractualv1connect.NewPairingServiceClient(http.DefaultClient, f.url)
	tok := pairDevice(t, f.url, "durability", func(code string) {
		if _, err := pc.ApproveWithSetupCode(context.Background(), &contractualv1.ApproveWithSetupCodeRequest{RequestCode: code, SetupCode: m[1]}); err != nil {
			t.Fatal(err)
		}
	})
	if err := os.WriteFile(f.token, []byte(tok), 0o600); err != nil {
		t.Fatal(err)
	}
}

func (f *remote) opts() connect.ClientOption {
	tok, _ := os.ReadFile(f.token)
	return connect.WithInterceptors(bearer(strings.TrimSpace(string(tok))))
}

func (f *remote) tools() contractualv1connect.ToolServiceClient {
	return contractualv1connect.NewToolServiceClient(http.DefaultClient, f.url, f.opts())
}

func (f *remote) audit() contractualv1connect.AuditServiceClient {
	return contractualv1connect.NewAuditServiceClient(http.DefaultClient, f.url, f.opts())
}

func (f *remote) publishApproved(t *testing.T) {
	pol := contractualv1connect.NewPolicyServiceClient(http.DefaultClient, f.url, f.opts())
	wasm, _ := os.ReadFile(tool("textkit", "textkit.wasm"))
	src, _ := os.ReadFile(tool("textkit", "contract.yaml"))
	pub, err := pol.Publish(context.Background(), &contractualv1.PublishRequest{Module: wasm, Contract: src, ContractFilename: "contract.yaml"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := pol.Approve(context.Background(), &contractualv1.ApproveRequest{Digest: pub.GetRecord().GetDigest()}); err != nil {
		t.Fatal(err)
	}
}

func freeAddr(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// waitListening waits (bounded) for the server to accept connections.
func waitListening(t *testing.T, addr string) {
	deadline := time.Now().Add(3 * time.Minute)
	for time.Now().Before(deadline) {
		if c, err := net.Dial("tcp", addr); err == nil {
			c.Close()
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("server did not listen on %s", addr)
}

// syncBuffer is a bytes.Buffer that a running process may write while the
// test reads it.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}
