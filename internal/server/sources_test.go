package server_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"io"
	"net/http"
	"strings"
	"testing"

	"connectrpc.com/connect"

	contractualv1 "github.com/contractual/contractual/contracts/gen/contractual/v1"
	"github.com/contractual/contractual/contracts/gen/contractual/v1/contractualv1connect"
	"github.com/contractual/contractual/internal/server"
)

// invokeAs sends an Invoke in Connect JSON with token tok and extra
// headers, and returns the status and body.
func invokeAs(t *testing.T, s *server.Server, tok string, headers ...string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, s.URL+contractualv1connect.ToolServiceInvokeProcedure,
		strings.NewReader(`{"tool": "textkit.slugify", "input": {"text": "Good Token"}}`))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+tok)
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// garbage is a well-formed token that no device holds.
func garbage() string {
	b := make([]byte, 32)
	rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}

// TestFailedLoginsNeverLockOut: a hundred garbage tokens from one address
// are answered "unauthenticated", then "back off"; the valid token from the
// same address works all along.
func TestFailedLoginsNeverLockOut(t *testing.T) {
	s, _ := start(t)
	tok, _ := owner(t, s)
	publishApproved(t, s, tok)
	for i := range 100 {
		code, body := invokeAs(t, s, garbage())
		want := http.StatusUnauthorized
		if i >= 10 {
			want = http.StatusTooManyRequests
		}
		if code != want {
			t.Fatalf("garbage token %d: %d %s, want %d", i+1, code, body, want)
		}
		if i%25 == 24 {
			if code, body := invokeAs(t, s, tok); code != http.StatusOK || !strings.Contains(body, "good-token") {
				t.Fatalf("the valid token after %d failures from its address: %d %s", i+1, code, body)
			}
		}
	}
}

// TestTailnetSources: behind tailscale serve (PublicURL set, requests from
// loopback carrying serve's identity headers), one tailnet node's failures
// and pairing requests do not count against another's, and the audit log
// records who asked.
func TestTailnetSources(t *testing.T) {
	s := startWith(t, func(c *server.Config) { c.PublicURL = "https://box.tail1234.ts.net" })
	tok, _ := owner(t, s)
	publishApproved(t, s, tok)
	aliceTok := pairFrom(t, s, s.URL, alice, "invoke") // one pairing request from alice
	aliceHdr := []string{"Tailscale-User-Login", "alice@example.com", "X-Forwarded-For", "100.64.0.2"}
	bobHdr := []string{"Tailscale-User-Login", "bob@example.com", "X-Forwarded-For", "100.64.0.3"}
	for i := range 20 {
		if code, _ := invokeAs(t, s, garbage(), aliceHdr...); i >= 10 && code != http.StatusTooManyRequests {
			t.Fatalf("alice's failure %d: %d", i+1, code)
		}
	}
	if code, body := invokeAs(t, s, garbage(), bobHdr...); code != http.StatusUnauthorized {
		t.Errorf("bob's first failure after alice's twenty: %d %s", code, body)
	}
	if code, body := invokeAs(t, s, aliceTok, aliceHdr...); code != http.StatusOK {
		t.Errorf("alice's valid token from alice: %d %s", code, body)
	}

	// Pairing requests are limited per source too (5 a minute).
	begin := func(who []string) error {
		pub, _, _ := ed25519.GenerateKey(rand.Reader)
		pc := contractualv1connect.NewPairingServiceClient(http.DefaultClient, s.URL, connect.WithInterceptors(headers(who...)))
		_, err := pc.BeginPairing(context.Background(), &contractualv1.BeginPairingRequest{PublicKey: pub, Name: "phone"})
		return err
	}
	for range 4 {
		if err := begin(aliceHdr); err != nil {
			t.Fatal(err)
		}
	}
	if err := begin(aliceHdr); connect.CodeOf(err) != connect.CodeResourceExhausted {
		t.Errorf("alice's sixth pairing request: %v", err)
	}
	if err := begin(bobHdr); err != nil {
		t.Errorf("bob's pairing request after alice's: %v", err)
	}
	audit := contractualv1connect.NewAuditServiceClient(http.DefaultClient, s.URL, connect.WithInterceptors(bearer(tok)))
	tail, err := audit.Tail(context.Background(), &contractualv1.TailRequest{Limit: 1000})
	if err != nil {
		t.Fatal(err)
	}
	var fromBob bool
	for _, ev := range tail.GetEvents() {
		fromBob = fromBob || ev.GetAction() == "pairing.request" && strings.Contains(ev.GetDetail(), `from "tailnet:addr:100.64.0.3"`)
	}
	if !fromBob {
		t.Error("no pairing request from tailnet:addr:100.64.0.3 in the audit log")
	}
}

// headers sets the given request headers on every call.
func headers(kv ...string) connect.Interceptor {
	return connect.UnaryInterceptorFunc(func(next connect.UnaryFunc) connect.UnaryFunc {
		return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
			for i := 0; i+1 < len(kv); i += 2 {
				req.Header().Set(kv[i], kv[i+1])
			}
			return next(ctx, req)
		}
	})
}
