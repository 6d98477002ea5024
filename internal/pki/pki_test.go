package pki

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net"
	"net/url"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/contractual/contractual/internal/errs"
)

// t0 is the tests' "now"; the clocks start there.
var t0 = time.Date(2030, 6, 1, 12, 0, 0, 0, time.UTC)

// clock is a settable clock for Options.Now and SourceOptions.Now.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock(t time.Time) *clock { return &clock{t: t} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Set(t time.Time) {
	c.mu.Lock()
	c.t = t
	c.mu.Unlock()
}

func (c *clock) Add(d time.Duration) { c.Set(c.Now().Add(d)) }

// testCA is a CA made by Init in a temporary directory.
type testCA struct {
	dir, root, issuer, certs string
	clock                    *clock
}

// newCA runs Init at clk's time for services.
func newCA(t testing.TB, clk *clock, services ...string) *testCA {
	t.Helper()
	dir := t.TempDir()
	c := &testCA{dir: dir, root: filepath.Join(dir, "root"), issuer: filepath.Join(dir, "issuer"), certs: filepath.Join(dir, "certs"), clock: clk}
	if _, err := Init(c.root, c.issuer, c.certs, services, Options{Now: clk.Now}); err != nil {
		t.Fatalf("Init: %v", err)
	}
	return c
}

// renew runs Renew at the CA's clock.
func (c *testCA) renew(t *testing.T, services ...string) Changes {
	t.Helper()
	ch, err := Renew(c.issuer, c.certs, services, Options{Now: c.clock.Now})
	if err != nil {
		t.Fatalf("Renew: %v", err)
	}
	return ch
}

// source opens service's directory with the CA's clock.
func (c *testCA) source(t *testing.T, service string) *Source {
	t.Helper()
	s, err := NewSource(filepath.Join(c.certs, service), SourceOptions{Now: c.clock.Now})
	if err != nil {
		t.Fatalf("NewSource(%s): %v", service, err)
	}
	return s
}

// issuerPair loads the issuing CA.
func (c *testCA) issuerPair(t *testing.T) *pair {
	t.Helper()
	p, err := loadCA(filepath.Join(c.issuer, issuerCertFile), filepath.Join(c.issuer, issuerKeyFile))
	if err != nil || p == nil {
		t.Fatalf("loading the issuer: %v", err)
	}
	return p
}

// rootPair loads the root CA.
func (c *testCA) rootPair(t testing.TB) *pair {
	t.Helper()
	p, err := loadCA(filepath.Join(c.root, rootCertFile), filepath.Join(c.root, rootKeyFile))
	if err != nil || p == nil {
		t.Fatalf("loading the root: %v", err)
	}
	return p
}

// forge returns a certificate chain signed by issuer for a leaf with the
// given URI SANs (and nothing else of a service certificate's names), valid
// at the CA's clock, as a TLS certificate.
func forge(t *testing.T, c *testCA, issuer *pair, uris ...string) tls.Certificate {
	t.Helper()
	key, err := newKey()
	if err != nil {
		t.Fatal(err)
	}
	now := c.clock.Now()
	tmpl := &x509.Certificate{
		NotBefore:   now.Add(-time.Minute),
		NotAfter:    now.Add(time.Hour),
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	for _, s := range uris {
		u, err := url.Parse(s)
		if err != nil {
			t.Fatal(err)
		}
		tmpl.URIs = append(tmpl.URIs, u)
	}
	leaf, err := sign(tmpl, issuer, key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{leaf.cert.Raw, issuer.cert.Raw}, PrivateKey: key, Leaf: leaf.cert}
}

func TestValidService(t *testing.T) {
	for _, name := range []string{"policy", "a", strings.Repeat("x", 63)} {
		if err := ValidService(name); err != nil {
			t.Errorf("ValidService(%q) = %v, want nil", name, err)
		}
	}
	for _, name := range []string{"", "Policy", "pol-icy", "policy2", "pol.icy", "pólicy", strings.Repeat("x", 64)} {
		if err := ValidService(name); !errs.Is(err, errs.Invalid) {
			t.Errorf("ValidService(%q) = %v, want an invalid error", name, err)
		}
	}
}

func TestServiceOf(t *testing.T) {
	tests := []struct {
		uris []string
		want string // "" = refused
	}{
		{[]string{"spiffe://contractual.internal/policy"}, "policy"},
		{[]string{"SPIFFE://contractual.internal/policy"}, "policy"}, // the scheme is case-insensitive
		{nil, ""},
		{[]string{"spiffe://contractual.internal/policy", "spiffe://contractual.internal/runner"}, ""},
		{[]string{"spiffe://example.org/policy"}, ""},
		{[]string{"spiffe://sub.contractual.internal/policy"}, ""},
		{[]string{"spiffe://Contractual.internal/policy"}, ""},
		{[]string{"https://contractual.internal/policy"}, ""},
		{[]string{"spiffe://contractual.internal/policy/x"}, ""},
		{[]string{"spiffe://contractual.internal/Policy"}, ""},
		{[]string{"spiffe://contractual.internal/"}, ""},
		{[]string{"spiffe://contractual.internal:443/policy"}, ""},
		{[]string{"spiffe://x@contractual.internal/policy"}, ""},
		{[]string{"spiffe://contractual.internal/policy?x=1"}, ""},
		{[]string{"spiffe://contractual.internal/policy#x"}, ""},
		{[]string{"spiffe://contractual.internal/%70olicy"}, ""},
	}
	for _, tt := range tests {
		cert := &x509.Certificate{}
		for _, s := range tt.uris {
			u, err := url.Parse(s)
			if err != nil {
				t.Fatal(err)
			}
			cert.URIs = append(cert.URIs, u)
		}
		got, err := ServiceOf(cert)
		if tt.want == "" {
			if !errs.Is(err, errs.Unauthenticated) {
				t.Errorf("ServiceOf(%q) = %q, %v; want an unauthenticated error", tt.uris, got, err)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("ServiceOf(%q) = %q, %v; want %q", tt.uris, got, err, tt.want)
		}
	}
}

func TestPeerIDNeedsAVerifiedChain(t *testing.T) {
	leaf := &x509.Certificate{URIs: []*url.URL{{Scheme: "spiffe", Host: TrustDomain, Path: "/policy"}}}
	// Certificates the peer sent but that were not verified name no one.
	for _, cs := range []*tls.ConnectionState{nil, {}, {PeerCertificates: []*x509.Certificate{leaf}}} {
		if got, err := PeerID(cs); !errs.Is(err, errs.Unauthenticated) {
			t.Errorf("PeerID(%+v) = %q, %v; want unauthenticated", cs, got, err)
		}
	}
	got, err := PeerID(&tls.ConnectionState{VerifiedChains: [][]*x509.Certificate{{leaf}}})
	if err != nil || got != "policy" {
		t.Errorf("PeerID(verified) = %q, %v; want policy", got, err)
	}
}

// TestNameConstraints shows that Go's verifier holds the issuing CA to its
// name constraints, whatever it signs: a URI outside the trust domain, a
// DNS name that is not a service's, or an IP address fails the chain.
func TestNameConstraints(t *testing.T) {
	clk := newClock(t0)
	c := newCA(t, clk, "policy", "runner")
	issuer := c.issuerPair(t)
	roots := x509.NewCertPool()
	roots.AddCert(c.rootPair(t).cert)
	verify := func(tmpl *x509.Certificate) error {
		t.Helper()
		key, err := newKey()
		if err != nil {
			t.Fatal(err)
		}
		tmpl.NotBefore, tmpl.NotAfter = t0.Add(-time.Minute), t0.Add(time.Hour)
		leaf, err := sign(tmpl, issuer, key)
		if err != nil {
			t.Fatal(err)
		}
		inter := x509.NewCertPool()
		inter.AddCert(issuer.cert)
		_, err = leaf.cert.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, CurrentTime: t0})
		return err
	}
	id := func(s string) []*url.URL {
		u, _ := url.Parse(s)
		return []*url.URL{u}
	}
	if err := verify(&x509.Certificate{DNSNames: []string{"policy"}, URIs: id(ID("policy"))}); err != nil {
		t.Fatalf("a service's names: %v", err)
	}
	refused := []struct {
		name string
		tmpl *x509.Certificate
	}{
		{"URI in another trust domain", &x509.Certificate{URIs: id("spiffe://example.org/policy")}},
		{"DNS name not a service's", &x509.Certificate{DNSNames: []string{"example.com"}}},
		{"DNS name of no service", &x509.Certificate{DNSNames: []string{"audit"}}},
		{"IPv4 address", &x509.Certificate{IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}}},
		{"IPv6 address", &x509.Certificate{IPAddresses: []net.IP{net.IPv6loopback}}},
	}
	for _, tt := range refused {
		err := verify(tt.tmpl)
		var ci x509.CertificateInvalidError
		if !errors.As(err, &ci) || ci.Reason != x509.CANotAuthorizedForThisName {
			t.Errorf("%s: Verify = %v, want a name constraint violation", tt.name, err)
		}
	}
}
