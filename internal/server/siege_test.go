package server_test

import (
	"context"
	"io"
	"net"
	"net/http"
	"sync"
	"syscall"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/types/known/structpb"

	contractualv1 "github.com/contractual/contractual/contracts/gen/contractual/v1"
	"github.com/contractual/contractual/contracts/gen/contractual/v1/contractualv1connect"
)

// TestFiveThousandSlowClients: 5,000 connections that send their headers
// and then a body one byte at a time (or never finish their headers), at
// the open pairing procedures, Invoke without a token, reflection and the
// Control UI's pairing endpoint, held open by their clients, do not keep a
// paired device's calls out; the server, with its default limits, holds
// at most MaxConns (1024) of them.
func TestFiveThousandSlowClients(t *testing.T) {
	const n = 5000
	raiseFileLimit(t, 3*n)
	s, _ := start(t)
	tok, _ := owner(t, s)
	publishApproved(t, s, tok)

	heads := []string{
		head(contractualv1connect.PairingServiceBeginPairingProcedure, 100000, "Content-Type", "application/json"),
		head(contractualv1connect.ToolServiceInvokeProcedure, 100000, "Content-Type", "application/json"),
		head("/ui/pair/begin", 100000, "Content-Type", "application/json"),
		head("/grpc.reflection.v1.ServerReflection/ServerReflectionInfo", 100000, "Content-Type", "application/grpc-web+proto"),
		"POST " + contractualv1connect.PairingServiceCompletePairingProcedure + " HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ",
	}
	var (
		mu     sync.Mutex
		conns  []net.Conn
		closed = make(chan struct{}, n)
		work   = make(chan int)
		wg     sync.WaitGroup
	)
	for range 32 {
		wg.Go(func() {
			for i := range work {
				c, err := net.DialTimeout("tcp", addr(s), patience)
				if err != nil {
					t.Errorf("dial %d: %v", i, err)
					continue
				}
				t.Cleanup(func() { c.Close() })
				io.WriteString(c, heads[i%len(heads)])
				mu.Lock()
				conns = append(conns, c)
				mu.Unlock()
				go func() {
					if closedByServer(c) {
						closed <- struct{}{}
					}
				}()
			}
		})
	}
	for i := range n {
		work <- i
	}
	close(work)
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}

	// Their clients keep them going, one byte at a time.
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
			}
			mu.Lock()
			for _, c := range conns {
				c.SetWriteDeadline(time.Now().Add(time.Millisecond))
				c.Write([]byte{'a'})
			}
			mu.Unlock()
		}
	}()

	// A paired device's calls, over Connect (HTTP/1.1) and gRPC (h2c).
	if got, err := invoke(s, tok, "Under Siege"); err != nil || got != "under-siege" {
		t.Fatalf("invoke under siege: %q %v", got, err)
	}
	cc, err := grpc.NewClient("passthrough:///"+addr(s), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	ctx, cancel := context.WithTimeout(metadata.AppendToOutgoingContext(context.Background(), "authorization", "Bearer "+tok), patience)
	defer cancel()
	in, _ := structpb.NewValue(map[string]any{"text": "Still Standing"})
	var out contractualv1.InvokeResponse
	if err := cc.Invoke(ctx, contractualv1connect.ToolServiceInvokeProcedure, &contractualv1.InvokeRequest{Tool: "textkit.slugify", Input: in}, &out); err != nil {
		t.Fatalf("gRPC invoke under siege: %v", err)
	}
	if got := out.GetOutput().GetStructValue().GetFields()["slug"].GetStringValue(); got != "still-standing" {
		t.Fatalf("gRPC invoke under siege: %q", got)
	}

	// The server let go of all but at most MaxConns of the 5,000.
	deadline := time.NewTimer(patience)
	defer deadline.Stop()
	for i := range n - 1024 {
		select {
		case <-closed:
		case <-deadline.C:
			t.Fatalf("the server still holds %d of the %d slow connections", n-i, n)
		}
	}
	// And it still answers a newcomer.
	c := contractualv1connect.NewPolicyServiceClient(&http.Client{Transport: &http.Transport{}}, s.URL, connect.WithInterceptors(bearer(tok)))
	if _, err := c.ListContracts(ctx, &contractualv1.ListContractsRequest{}); err != nil {
		t.Fatalf("a call after the siege: %v", err)
	}
}

// raiseFileLimit raises the soft limit on open files to at least n (up to
// the hard limit), for tests that hold many connections.
func raiseFileLimit(t *testing.T, n uint64) {
	t.Helper()
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatal(err)
	}
	if lim.Cur >= n {
		return
	}
	if lim.Max < n {
		t.Fatalf("this test needs %d open files; the hard limit is %d", n, lim.Max)
	}
	old := lim.Cur
	lim.Cur = n
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		lim.Cur = old
		syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim)
	})
}
