package pki

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// ioTimeout bounds a test's network waits: far above what a loopback
// handshake needs, even on a loaded machine.
const ioTimeout = 2 * time.Minute

// handshake runs one TLS handshake on loopback between a server and a
// client configuration, then sends one byte from the server to the client
// (in TLS 1.3 the client learns of a refused certificate only on reading),
// and returns each side's error.
func handshake(t *testing.T, server, client *tls.Config) (serverErr, clientErr error) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	done := make(chan error, 1)
	go func() {
		conn, err := l.Accept()
		if err != nil {
			done <- err
			return
		}
		defer conn.Close()
		conn.SetDeadline(time.Now().Add(ioTimeout))
		tc := tls.Server(conn, server)
		if err := tc.Handshake(); err != nil {
			done <- err
			return
		}
		_, err = tc.Write([]byte{1})
		done <- err
	}()
	conn, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	conn.SetDeadline(time.Now().Add(ioTimeout))
	tc := tls.Client(conn, client)
	clientErr = tc.Handshake()
	if clientErr == nil {
		_, clientErr = io.ReadFull(tc, make([]byte, 1))
	}
	conn.Close()
	return <-done, clientErr
}

// wantRefused fails the test unless the handshake failed on both sides and
// the refusing side's error contains why.
func wantRefused(t *testing.T, serverErr, clientErr error, refuser error, why string) {
	t.Helper()
	if serverErr == nil || clientErr == nil {
		t.Fatalf("handshake: server %v, client %v; want both to fail", serverErr, clientErr)
	}
	if !strings.Contains(refuser.Error(), why) {
		t.Fatalf("refused with %q, want %q", refuser, why)
	}
}

// withClientCert returns cfg presenting cert instead of its own.
func withClientCert(cfg *tls.Config, cert tls.Certificate) *tls.Config {
	cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &cert, nil }
	return cfg
}

// withServerCert returns cfg presenting cert instead of its own.
func withServerCert(cfg *tls.Config, cert tls.Certificate) *tls.Config {
	get := cfg.GetConfigForClient
	cfg.GetConfigForClient = func(h *tls.ClientHelloInfo) (*tls.Config, error) {
		c, err := get(h)
		if c != nil {
			c.Certificates = []tls.Certificate{cert}
		}
		return c, err
	}
	return cfg
}

func TestHandshake(t *testing.T) {
	c := newCA(t, newClock(t0), "policy", "runner")
	policy, runner := c.source(t, "policy"), c.source(t, "runner")
	var state tls.ConnectionState
	server := policy.ServerConfig()
	get := server.GetConfigForClient
	server.GetConfigForClient = func(h *tls.ClientHelloInfo) (*tls.Config, error) {
		cfg, err := get(h)
		verify := cfg.VerifyConnection
		cfg.VerifyConnection = func(cs tls.ConnectionState) error {
			state = cs
			return verify(cs)
		}
		return cfg, err
	}
	serverErr, clientErr := handshake(t, server, runner.ClientConfig("policy"))
	if serverErr != nil || clientErr != nil {
		t.Fatalf("handshake: server %v, client %v", serverErr, clientErr)
	}
	if state.Version != tls.VersionTLS13 {
		t.Errorf("version %x, want TLS 1.3", state.Version)
	}
	if got, err := PeerID(&state); err != nil || got != "runner" {
		t.Errorf("PeerID = %q, %v; want runner", got, err)
	}
}

func TestRefusesNoClientCertificate(t *testing.T) {
	c := newCA(t, newClock(t0), "policy", "runner")
	policy, runner := c.source(t, "policy"), c.source(t, "runner")
	serverErr, clientErr := handshake(t, policy.ServerConfig(), withClientCert(runner.ClientConfig("policy"), tls.Certificate{}))
	wantRefused(t, serverErr, clientErr, serverErr, "client didn't provide a certificate")
	if !strings.Contains(clientErr.Error(), "certificate required") {
		t.Errorf("the client was told %q", clientErr)
	}
}

func TestRefusesTLS12(t *testing.T) {
	c := newCA(t, newClock(t0), "policy", "runner")
	policy, runner := c.source(t, "policy"), c.source(t, "runner")
	client := runner.ClientConfig("policy")
	client.MinVersion, client.MaxVersion = tls.VersionTLS12, tls.VersionTLS12
	serverErr, clientErr := handshake(t, policy.ServerConfig(), client)
	wantRefused(t, serverErr, clientErr, serverErr, "client offered only unsupported versions")
}

func TestRefusesAnotherCA(t *testing.T) {
	clk := newClock(t0)
	ours, theirs := newCA(t, clk, "policy", "runner"), newCA(t, clk, "policy", "runner")
	t.Run("client", func(t *testing.T) {
		// A client that trusts our server presents their certificate.
		foreign := theirs.source(t, "runner").current().certs[0]
		client := withClientCert(ours.source(t, "runner").ClientConfig("policy"), foreign)
		serverErr, clientErr := handshake(t, ours.source(t, "policy").ServerConfig(), client)
		wantRefused(t, serverErr, clientErr, serverErr, "certificate signed by unknown authority")
	})
	t.Run("server", func(t *testing.T) {
		serverErr, clientErr := handshake(t, theirs.source(t, "policy").ServerConfig(), ours.source(t, "runner").ClientConfig("policy"))
		wantRefused(t, serverErr, clientErr, clientErr, "certificate signed by unknown authority")
	})
}

func TestRefusesAnExpiredCertificate(t *testing.T) {
	clk := newClock(t0.Add(-10 * time.Hour))
	c := newCA(t, clk, "policy", "runner")
	// At t0, runner's certificate (issued at t0 - 10h for 6h) has expired;
	// policy's is renewed.
	clk.Set(t0)
	c.renew(t, "policy")
	policy, runner := c.source(t, "policy"), c.source(t, "runner")
	if exp := runner.Leaf().NotAfter; !exp.Before(t0) {
		t.Fatalf("runner's certificate is valid until %v", exp)
	}
	t.Run("client", func(t *testing.T) {
		serverErr, clientErr := handshake(t, policy.ServerConfig(), runner.ClientConfig("policy"))
		wantRefused(t, serverErr, clientErr, serverErr, "certificate has expired or is not yet valid: current time 2030-06-01T12:00:00Z is after 2030-06-01T08:00:00Z")
	})
	t.Run("server", func(t *testing.T) {
		serverErr, clientErr := handshake(t, runner.ServerConfig(), policy.ClientConfig("runner"))
		wantRefused(t, serverErr, clientErr, clientErr, "certificate has expired or is not yet valid: current time 2030-06-01T12:00:00Z is after 2030-06-01T08:00:00Z")
	})
}

func TestClientRefusesAnotherService(t *testing.T) {
	c := newCA(t, newClock(t0), "policy", "runner", "audit")
	runner, policy := c.source(t, "runner"), c.source(t, "policy")
	// policy dials what it believes is audit and finds runner.
	serverErr, clientErr := handshake(t, runner.ServerConfig(), policy.ClientConfig("audit"))
	wantRefused(t, serverErr, clientErr, clientErr,
		"the server is spiffe://contractual.internal/runner, want spiffe://contractual.internal/audit")
	// The host name dialled plays no part: the SPIFFE ID does.
	if serverErr, clientErr := handshake(t, runner.ServerConfig(), policy.ClientConfig("runner")); serverErr != nil || clientErr != nil {
		t.Fatalf("dialling runner: server %v, client %v", serverErr, clientErr)
	}
}

// TestRefusesBadSPIFFEIDs presents certificates from a trusted CA whose
// URI SANs are wrong: none, two, another trust domain, not a service. Each
// is refused by the server (as a client certificate) and by the client (as
// a server certificate). The issuing CA's name constraints already stop a
// foreign trust domain in the chain; a CA without them (trusted the same)
// shows that the SPIFFE check stops it on its own.
func TestRefusesBadSPIFFEIDs(t *testing.T) {
	c := newCA(t, newClock(t0), "policy", "runner")
	policy, runner := c.source(t, "policy"), c.source(t, "runner")
	constrained := c.issuerPair(t)

	// An issuing CA without name constraints, signed by the same root.
	key, err := newKey()
	if err != nil {
		t.Fatal(err)
	}
	unconstrained, err := sign(&x509.Certificate{
		Subject:   pkix.Name{CommonName: "unconstrained"},
		NotBefore: t0.Add(-time.Hour), NotAfter: t0.Add(time.Hour),
		KeyUsage: x509.KeyUsageCertSign, BasicConstraintsValid: true, IsCA: true, MaxPathLenZero: true,
	}, c.rootPair(t), key)
	if err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name   string
		issuer *pair
		uris   []string
		why    string
	}{
		{"no URI", constrained, nil, "certificate has 0 URI SANs"},
		{"two URIs", constrained, []string{ID("runner"), ID("policy")}, "certificate has 2 URI SANs"},
		{"not a service", constrained, []string{ID("runner") + "/x"}, `URI SAN "spiffe://contractual.internal/runner/x" is not`},
		{"another trust domain, constrained", constrained, []string{"spiffe://example.org/runner"}, `x509: a root or intermediate certificate is not authorized to sign for this name: URI "spiffe://example.org/runner" is not permitted`},
		{"another trust domain", unconstrained, []string{"spiffe://example.org/runner"}, `URI SAN "spiffe://example.org/runner" is not`},
		{"a subdomain of the trust domain", unconstrained, []string{"spiffe://x.contractual.internal/runner"}, `is not spiffe://contractual.internal/<service>`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			bad := forge(t, c, tt.issuer, tt.uris...)
			serverErr, clientErr := handshake(t, policy.ServerConfig(), withClientCert(runner.ClientConfig("policy"), bad))
			wantRefused(t, serverErr, clientErr, serverErr, tt.why)
			serverErr, clientErr = handshake(t, withServerCert(runner.ServerConfig(), bad), policy.ClientConfig("runner"))
			wantRefused(t, serverErr, clientErr, clientErr, tt.why)
		})
	}
	// The same forgery with a good ID passes: the refusals are the IDs'.
	good := forge(t, c, unconstrained, ID("runner"))
	if serverErr, clientErr := handshake(t, policy.ServerConfig(), withClientCert(runner.ClientConfig("policy"), good)); serverErr != nil || clientErr != nil {
		t.Fatalf("a good ID: server %v, client %v", serverErr, clientErr)
	}
}

// TestSourceReloads shows when a Source rereads its files: on a handshake
// once CheckEvery has passed and the files changed, or on Reload; and that a
// failed reload (a key that does not match, as between the renewer's two
// renames) keeps the current pair until the files change again.
func TestSourceReloads(t *testing.T) {
	clk := newClock(t0)
	c := newCA(t, clk, "policy", "runner")
	var logs bytes.Buffer
	dir := filepath.Join(c.certs, "policy")
	s, err := NewSource(dir, SourceOptions{Now: clk.Now, CheckEvery: 10 * time.Second, Logger: slog.New(slog.NewJSONHandler(&logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	first := s.Leaf().SerialNumber
	if s.Service() != "policy" {
		t.Fatalf("Service = %q", s.Service())
	}

	// A renewal, staged: the new pair in a scratch directory.
	scratch := t.TempDir()
	if _, err := issue(c.issuerPair(t), scratch, "policy", clk.Now(), time.Hour); err != nil {
		t.Fatal(err)
	}
	next := serial(t, scratch)
	copyFile := func(name string) {
		t.Helper()
		b, err := os.ReadFile(filepath.Join(scratch, name))
		if err != nil {
			t.Fatal(err)
		}
		if err := writeFile(filepath.Join(dir, name), b, certMode); err != nil {
			t.Fatal(err)
		}
	}
	servesSerial := func(want fmt.Stringer) {
		t.Helper()
		if got := s.current().certs[0].Leaf.SerialNumber; got.String() != want.String() {
			t.Fatalf("serving serial %v, want %v", got, want)
		}
	}

	// The renewer's first rename: the new key beside the old certificate.
	copyFile(KeyFile)
	clk.Add(9 * time.Second)
	servesSerial(first) // not checked yet
	clk.Add(time.Second)
	servesSerial(first) // checked: they do not match; the old pair stays
	if !strings.Contains(logs.String(), "reload failed") || !strings.Contains(logs.String(), "private key does not match public key") {
		t.Errorf("log %q: want the failed reload", logs.String())
	}
	if err := s.Reload(); err == nil {
		t.Fatal("Reload of a mismatched pair succeeded")
	}
	servesSerial(first)
	// A handshake still works with the pair in use.
	if serverErr, clientErr := handshake(t, s.ServerConfig(), c.source(t, "runner").ClientConfig("policy")); serverErr != nil || clientErr != nil {
		t.Fatalf("handshake with the kept pair: server %v, client %v", serverErr, clientErr)
	}

	// The second rename: the pair matches again, and the next check loads it.
	copyFile(CertFile)
	clk.Add(5 * time.Second)
	servesSerial(first)
	clk.Add(5 * time.Second)
	servesSerial(next)
	if !strings.Contains(logs.String(), `"msg":"pki: loaded a new certificate"`) {
		t.Errorf("log %q: want the new certificate", logs.String())
	}

	// Reload reads at once, whatever the time.
	if _, err := issue(c.issuerPair(t), dir, "policy", clk.Now(), time.Hour); err != nil {
		t.Fatal(err)
	}
	if err := s.Reload(); err != nil {
		t.Fatal(err)
	}
	servesSerial(serial(t, dir))
}

// TestRenewalWithoutRestart runs an HTTP/2 server and client over mutual
// TLS across a renewal and past the expiry of the certificates they started
// with: both pick the renewed certificates up without a restart, as the
// serial numbers each side sees show. A client whose Source does not reload
// is refused at the same moment, so it is the reload that carries them.
func TestRenewalWithoutRestart(t *testing.T) {
	clk := newClock(t0)
	c := newCA(t, clk, "policy", "runner")
	policy, runner := c.source(t, "policy"), c.source(t, "runner")
	stale, err := NewSource(filepath.Join(c.certs, "runner"), SourceOptions{Now: clk.Now, CheckEvery: 1000 * time.Hour})
	if err != nil {
		t.Fatal(err)
	}

	srv := policy.Server(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		caller, err := PeerID(r.TLS)
		if err != nil {
			http.Error(w, err.Error(), http.StatusUnauthorized)
			return
		}
		fmt.Fprintf(w, "%s %s %s", r.Proto, caller, r.TLS.VerifiedChains[0][0].SerialNumber)
	}))
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.ServeTLS(l, "", "")
	defer srv.Close()
	url := "https://" + l.Addr().String() + "/"

	client := &http.Client{Transport: runner.Transport("policy"), Timeout: ioTimeout}
	defer client.CloseIdleConnections()
	call := func(client *http.Client) (string, error) {
		t.Helper()
		client.CloseIdleConnections() // a new connection: a new handshake
		resp, err := client.Get(url)
		if err != nil {
			return "", err
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("%s: %s", resp.Status, body)
		}
		return fmt.Sprintf("%s server %s", body, resp.TLS.PeerCertificates[0].SerialNumber), nil
	}
	want := func() string {
		return fmt.Sprintf("HTTP/2.0 runner %s server %s", serial(t, filepath.Join(c.certs, "runner")), serial(t, filepath.Join(c.certs, "policy")))
	}

	before := want()
	if got, err := call(client); err != nil || got != before {
		t.Fatalf("before the renewal: %q, %v; want %q", got, err, before)
	}

	// Past half their life, the renewer replaces both certificates.
	clk.Set(t0.Add(4 * time.Hour))
	if ch := c.renew(t, "policy", "runner"); len(ch.Issued) != 2 {
		t.Fatalf("Renew issued %v, want both", ch.Issued)
	}
	renewed := want()
	if renewed == before {
		t.Fatal("the serials did not change")
	}
	if got, err := call(client); err != nil || got != renewed {
		t.Fatalf("after the renewal: %q, %v; want %q", got, err, renewed)
	}

	// Past the first certificates' expiry (t0 + 6h).
	clk.Set(t0.Add(7 * time.Hour))
	if got, err := call(client); err != nil || got != renewed {
		t.Fatalf("after the old certificates' expiry: %q, %v; want %q", got, err, renewed)
	}
	staleClient := &http.Client{Transport: stale.Transport("policy"), Timeout: ioTimeout}
	defer staleClient.CloseIdleConnections()
	if got, err := call(staleClient); err == nil {
		t.Fatalf("a client still on its expired certificate got %q", got)
	}
}

func TestServerSpeaksHTTP1ForCurl(t *testing.T) {
	c := newCA(t, newClock(t0), "policy", "runner")
	policy, runner := c.source(t, "policy"), c.source(t, "runner")
	srv := policy.Server(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		caller, _ := PeerID(r.TLS)
		fmt.Fprint(w, r.Proto, " ", caller)
	}))
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.ServeTLS(l, "", "")
	defer srv.Close()
	// An HTTP/1.1-only client with runner's certificate, as curl --http1.1
	// --cert would be.
	cfg := runner.ClientConfig("policy")
	cfg.NextProtos = []string{"http/1.1"}
	tr := &http.Transport{TLSClientConfig: cfg}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr, Timeout: ioTimeout}).Get("https://" + l.Addr().String() + "/")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if string(body) != "HTTP/1.1 runner" {
		t.Errorf("body %q, want HTTP/1.1 runner", body)
	}
}

// TestBundleRotationApplies adds a second root to the bundles of a running
// server and client (as a root rotation would): configurations made before
// the change trust it after the Source reloads.
func TestBundleRotationApplies(t *testing.T) {
	clk := newClock(t0)
	ours, theirs := newCA(t, clk, "policy", "runner"), newCA(t, clk, "policy", "runner")
	policy, runner := ours.source(t, "policy"), ours.source(t, "runner")
	server, client := policy.ServerConfig(), runner.ClientConfig("policy")
	foreignClient := theirs.source(t, "runner").current().certs[0]
	foreignServer := theirs.source(t, "policy").current().certs[0]

	serverErr, clientErr := handshake(t, server, withClientCert(runner.ClientConfig("policy"), foreignClient))
	wantRefused(t, serverErr, clientErr, serverErr, "unknown authority")
	serverErr, clientErr = handshake(t, withServerCert(policy.ServerConfig(), foreignServer), client)
	wantRefused(t, serverErr, clientErr, clientErr, "unknown authority")

	both := func(s *Source, service string) {
		t.Helper()
		a, _ := os.ReadFile(filepath.Join(ours.certs, service, BundleFile))
		b, _ := os.ReadFile(filepath.Join(theirs.certs, service, BundleFile))
		if err := writeFile(filepath.Join(ours.certs, service, BundleFile), append(a, b...), certMode); err != nil {
			t.Fatal(err)
		}
		if err := s.Reload(); err != nil {
			t.Fatal(err)
		}
	}
	both(policy, "policy")
	both(runner, "runner")
	if serverErr, clientErr := handshake(t, server, withClientCert(runner.ClientConfig("policy"), foreignClient)); serverErr != nil || clientErr != nil {
		t.Errorf("server with both roots: server %v, client %v", serverErr, clientErr)
	}
	if serverErr, clientErr := handshake(t, withServerCert(policy.ServerConfig(), foreignServer), client); serverErr != nil || clientErr != nil {
		t.Errorf("client with both roots: server %v, client %v", serverErr, clientErr)
	}
}
