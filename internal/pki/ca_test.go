package pki

import (
	"bytes"
	"crypto/x509"
	"io/fs"
	"math/big"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/contractual/contractual/internal/errs"
)

// fileState is what a test compares of a file between two runs.
type fileState struct {
	data  string
	mode  fs.FileMode
	mtime time.Time
}

// snapshot returns every file and directory under dir.
func snapshot(t *testing.T, dir string) map[string]fileState {
	t.Helper()
	m := map[string]fileState{}
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		st := fileState{mode: fi.Mode(), mtime: fi.ModTime()}
		if !d.IsDir() {
			b, err := os.ReadFile(path)
			if err != nil {
				return err
			}
			st.data = string(b)
		}
		m[path] = st
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// serial returns the serial number of the certificate in dir's cert.pem.
func serial(t *testing.T, dir string) *big.Int {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, CertFile))
	if err != nil {
		t.Fatal(err)
	}
	certs, err := parseCerts(b)
	if err != nil {
		t.Fatal(err)
	}
	return certs[0].SerialNumber
}

// issuedServices returns the services of ch.Issued.
func issuedServices(ch Changes) []string {
	var s []string
	for _, is := range ch.Issued {
		s = append(s, is.Service)
	}
	return s
}

func TestInitCreatesTheLayout(t *testing.T) {
	clk := newClock(t0)
	c := newCA(t, clk, "policy", "runner")
	modes := map[string]fs.FileMode{
		"root/ca.pem":           certMode,
		"root/ca.key":           caKeyMode,
		"issuer/issuer.pem":     certMode,
		"issuer/issuer.key":     caKeyMode,
		"issuer/bundle.pem":     certMode,
		"certs/policy/cert.pem": certMode, "certs/policy/key.pem": serviceKeyMode, "certs/policy/bundle.pem": certMode,
		"certs/runner/cert.pem": certMode, "certs/runner/key.pem": serviceKeyMode, "certs/runner/bundle.pem": certMode,
	}
	var files []string
	for path, st := range snapshot(t, c.dir) {
		if st.mode.IsDir() {
			continue
		}
		rel, _ := filepath.Rel(c.dir, path)
		files = append(files, rel)
		if want, ok := modes[rel]; !ok {
			t.Errorf("unexpected file %s", rel)
		} else if st.mode.Perm() != want {
			t.Errorf("%s: mode %v, want %v", rel, st.mode.Perm(), want)
		}
	}
	if len(files) != len(modes) {
		t.Errorf("files %q, want %d", files, len(modes))
	}

	root, issuer := c.rootPair(t).cert, c.issuerPair(t).cert
	if root.NotAfter.Sub(root.NotBefore) != DefaultRootValidity+Backdate || !root.IsCA || root.MaxPathLen != 1 {
		t.Errorf("root: %v to %v, CA %v, path length %d", root.NotBefore, root.NotAfter, root.IsCA, root.MaxPathLen)
	}
	if issuer.CheckSignatureFrom(root) != nil || issuer.NotAfter.Sub(issuer.NotBefore) != DefaultIssuerValidity+Backdate ||
		!issuer.IsCA || issuer.MaxPathLen != 0 || !issuer.MaxPathLenZero {
		t.Errorf("issuer: %v to %v, CA %v, path length %d", issuer.NotBefore, issuer.NotAfter, issuer.IsCA, issuer.MaxPathLen)
	}
	bundle, _ := os.ReadFile(filepath.Join(c.certs, "policy", BundleFile))
	if !bytes.Equal(bundle, encodeCert(root.Raw)) {
		t.Error("the service's bundle is not the root certificate")
	}

	b, _ := os.ReadFile(filepath.Join(c.certs, "policy", CertFile))
	chain, err := parseCerts(b)
	if err != nil || len(chain) != 2 || !chain[1].Equal(issuer) {
		t.Fatalf("cert.pem: %d certificates, %v; want the leaf, then the issuer", len(chain), err)
	}
	leaf := chain[0]
	if got := leaf.URIs; len(got) != 1 || got[0].String() != "spiffe://contractual.internal/policy" {
		t.Errorf("URI SANs %v", got)
	}
	if !slices.Equal(leaf.DNSNames, []string{"policy"}) || len(leaf.IPAddresses) != 0 || len(leaf.EmailAddresses) != 0 {
		t.Errorf("other SANs: DNS %v, IP %v, email %v", leaf.DNSNames, leaf.IPAddresses, leaf.EmailAddresses)
	}
	if !slices.Equal(leaf.ExtKeyUsage, []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}) || leaf.IsCA {
		t.Errorf("key usages %v, CA %v", leaf.ExtKeyUsage, leaf.IsCA)
	}
	if !leaf.NotBefore.Equal(t0.Add(-Backdate)) || !leaf.NotAfter.Equal(t0.Add(DefaultValidity)) {
		t.Errorf("valid %v to %v, want %v to %v", leaf.NotBefore, leaf.NotAfter, t0.Add(-Backdate), t0.Add(DefaultValidity))
	}
	if leaf.PublicKeyAlgorithm != x509.ECDSA {
		t.Errorf("key algorithm %v, want ECDSA", leaf.PublicKeyAlgorithm)
	}
}

func TestInitIsIdempotent(t *testing.T) {
	clk := newClock(t0)
	c := newCA(t, clk, "policy", "runner")
	before := snapshot(t, c.dir)
	clk.Add(time.Hour)
	ch, err := Init(c.root, c.issuer, c.certs, []string{"policy", "runner"}, Options{Now: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	if ch.Root || ch.Issuer != "" || len(ch.Issued) != 0 {
		t.Errorf("second Init changed %+v", ch)
	}
	after := snapshot(t, c.dir)
	for path, st := range before {
		if after[path] != st {
			t.Errorf("%s changed", path)
		}
	}
	for path := range after {
		if _, ok := before[path]; !ok {
			t.Errorf("%s appeared", path)
		}
	}
}

func TestRenewIssuesOnlyWhatIsDue(t *testing.T) {
	clk := newClock(t0)
	c := newCA(t, clk, "policy", "runner", "audit")
	all := []string{"policy", "runner", "audit"}
	dir := func(s string) string { return filepath.Join(c.certs, s) }
	serials := func() map[string]string {
		m := map[string]string{}
		for _, s := range all {
			m[s] = serial(t, dir(s)).String()
		}
		return m
	}

	// Renew only reads the issuer's directory (the renewer mounts it
	// read-only).
	issuerBefore := snapshot(t, c.issuer)
	defer func() {
		after := snapshot(t, c.issuer)
		for path, st := range issuerBefore {
			if after[path] != st {
				t.Errorf("Renew changed %s", path)
			}
		}
	}()

	clk.Add(time.Hour)
	if ch := c.renew(t, all...); len(ch.Issued) != 0 {
		t.Fatalf("nothing is due, yet Renew issued %v", ch.Issued)
	}

	// audit's key replaced by policy's: they no longer match.
	key, _ := os.ReadFile(filepath.Join(dir("policy"), KeyFile))
	if err := writeFile(filepath.Join(dir("audit"), KeyFile), key, serviceKeyMode); err != nil {
		t.Fatal(err)
	}
	// runner's pair replaced by a pair from another CA.
	other := newCA(t, clk, "runner")
	for _, f := range []string{CertFile, KeyFile} {
		b, _ := os.ReadFile(filepath.Join(other.certs, "runner", f))
		if err := writeFile(filepath.Join(dir("runner"), f), b, certMode); err != nil {
			t.Fatal(err)
		}
	}
	before := serials()
	ch := c.renew(t, all...)
	if got := issuedServices(ch); !slices.Equal(got, []string{"runner", "audit"}) {
		t.Fatalf("issued %v, want runner and audit", ch.Issued)
	}
	if r := ch.Issued[0].Reason; !strings.Contains(r, "does not verify") || !strings.Contains(r, "unknown authority") {
		t.Errorf("runner's reason %q", r)
	}
	if r := ch.Issued[1].Reason; !strings.Contains(r, "does not match") {
		t.Errorf("audit's reason %q", r)
	}
	after := serials()
	if after["policy"] != before["policy"] || after["runner"] == before["runner"] || after["audit"] == before["audit"] {
		t.Errorf("serials before %v, after %v", before, after)
	}

	// policy, issued at t0, passes half its life (6h + 1 min of backdating)
	// at t0 + 2h59m30s; runner and audit were issued at t0 + 1h.
	clk.Set(t0.Add(2*time.Hour + 59*time.Minute + 29*time.Second))
	if ch := c.renew(t, all...); len(ch.Issued) != 0 {
		t.Fatalf("issued %v before policy's half-life", ch.Issued)
	}
	clk.Add(time.Second)
	before = serials()
	ch = c.renew(t, all...)
	if len(ch.Issued) != 1 || ch.Issued[0].Service != "policy" || ch.Issued[0].Reason != "past half its life" ||
		!ch.Issued[0].NotAfter.Equal(clk.Now().Add(DefaultValidity)) {
		t.Fatalf("issued %+v, want policy, past half its life", ch.Issued)
	}
	after = serials()
	if after["policy"] == before["policy"] || after["runner"] != before["runner"] || after["audit"] != before["audit"] {
		t.Errorf("serials before %v, after %v", before, after)
	}

	// A certificate naming another service is re-issued.
	b, _ := os.ReadFile(filepath.Join(dir("runner"), CertFile))
	k, _ := os.ReadFile(filepath.Join(dir("runner"), KeyFile))
	if err := firstErr(writeFile(filepath.Join(dir("audit"), CertFile), b, certMode), writeFile(filepath.Join(dir("audit"), KeyFile), k, serviceKeyMode)); err != nil {
		t.Fatal(err)
	}
	ch = c.renew(t, all...)
	if len(ch.Issued) != 1 || ch.Issued[0].Service != "audit" || ch.Issued[0].Reason != "does not name spiffe://contractual.internal/audit" {
		t.Fatalf("issued %+v, want audit, does not name it", ch.Issued)
	}
}

// firstErr returns the first non-nil error.
func firstErr(list ...error) error {
	for _, err := range list {
		if err != nil {
			return err
		}
	}
	return nil
}

func TestRenewRewritesAStaleBundle(t *testing.T) {
	clk := newClock(t0)
	c := newCA(t, clk, "policy")
	path := filepath.Join(c.certs, "policy", BundleFile)
	if err := writeFile(path, []byte("stale"), certMode); err != nil {
		t.Fatal(err)
	}
	if ch := c.renew(t, "policy"); len(ch.Issued) != 0 {
		t.Errorf("issued %v; only the bundle was stale", ch.Issued)
	}
	got, _ := os.ReadFile(path)
	want, _ := os.ReadFile(filepath.Join(c.issuer, BundleFile))
	if !bytes.Equal(got, want) {
		t.Error("the service's bundle was not replaced with the issuer's")
	}
}

// TestRootKeyStaysInRootDir looks for the root's private key, as PEM and as
// its raw scalar, in every file Init and Renew wrote.
func TestRootKeyStaysInRootDir(t *testing.T) {
	clk := newClock(t0)
	c := newCA(t, clk, "policy", "runner")
	clk.Add(4 * time.Hour)
	if ch := c.renew(t, "policy", "runner"); len(ch.Issued) != 2 {
		t.Fatalf("Renew issued %v, want both", ch.Issued)
	}
	clk.Add(time.Hour)
	if _, err := Init(c.root, c.issuer, c.certs, []string{"policy", "runner", "audit"}, Options{Now: clk.Now}); err != nil {
		t.Fatal(err)
	}
	keyPath := filepath.Join(c.root, rootKeyFile)
	keyPEM, _ := os.ReadFile(keyPath)
	root := c.rootPair(t)
	needles := [][]byte{keyPEM, root.key.D.Bytes()}
	for path, st := range snapshot(t, c.dir) {
		if path == keyPath || st.mode.IsDir() {
			continue
		}
		for _, n := range needles {
			if bytes.Contains([]byte(st.data), n) {
				t.Errorf("%s holds the root key", path)
			}
		}
		if strings.HasPrefix(filepath.Base(path), ".") {
			t.Errorf("temporary file %s left behind", path)
		}
	}
}

func TestInitMintsAnIssuerWhenDue(t *testing.T) {
	clk := newClock(t0)
	c := newCA(t, clk, "policy")
	first := c.issuerPair(t).cert
	policy := serial(t, filepath.Join(c.certs, "policy"))

	// A new service is outside the issuer's name constraints.
	ch, err := Init(c.root, c.issuer, c.certs, []string{"policy", "engine"}, Options{Now: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	if ch.Root || ch.Issuer != "its name constraints leave out engine" || !slices.Equal(issuedServices(ch), []string{"engine"}) {
		t.Fatalf("Init changed %+v; want a new issuer and engine's certificate only", ch)
	}
	second := c.issuerPair(t).cert
	if second.Equal(first) || !slices.Contains(second.PermittedDNSDomains, "engine") {
		t.Error("no new issuer permitting engine")
	}
	if serial(t, filepath.Join(c.certs, "policy")).Cmp(policy) != 0 {
		t.Error("policy's certificate, still valid, was re-issued")
	}
	// policy's certificate, from the first issuer, still verifies.
	c.source(t, "policy")

	// Past half its life, Renew warns and Init mints the next.
	clk.Set(second.NotBefore.Add(second.NotAfter.Sub(second.NotBefore) / 2))
	if ch := c.renew(t, "policy", "engine"); !ch.IssuerStale {
		t.Error("Renew did not report the issuer past half its life")
	}
	ch, err = Init(c.root, c.issuer, c.certs, []string{"policy", "engine"}, Options{Now: clk.Now})
	if err != nil || ch.Issuer != "past half its life" {
		t.Fatalf("Init = %+v, %v; want a new issuer, past half its life", ch, err)
	}
}

func TestRenewRefusesAnExpiredIssuer(t *testing.T) {
	clk := newClock(t0)
	c := newCA(t, clk, "policy")
	clk.Set(c.issuerPair(t).cert.NotAfter)
	_, err := Renew(c.issuer, c.certs, []string{"policy"}, Options{Now: clk.Now})
	if !errs.Is(err, errs.FailedPrecondition) || !strings.Contains(err.Error(), "run contractual-ca init") {
		t.Fatalf("Renew = %v, want a failed precondition naming init", err)
	}
	// Leaves never outlive their issuer.
	clk.Set(c.issuerPair(t).cert.NotAfter.Add(-time.Hour))
	ch := c.renew(t, "policy")
	if len(ch.Issued) != 1 || !ch.Issued[0].NotAfter.Equal(c.issuerPair(t).cert.NotAfter) {
		t.Errorf("issued %+v, want policy cut at the issuer's expiry", ch.Issued)
	}
}

func TestInitRefusesBadArguments(t *testing.T) {
	dir := t.TempDir()
	root, issuer, certs := filepath.Join(dir, "root"), filepath.Join(dir, "issuer"), filepath.Join(dir, "certs")
	for _, tt := range []struct {
		name                string
		root, issuer, certs string
		services            []string
	}{
		{"no services", root, issuer, certs, nil},
		{"bad service", root, issuer, certs, []string{"Policy"}},
		{"service twice", root, issuer, certs, []string{"policy", "policy"}},
		{"root inside certs", filepath.Join(certs, "root"), issuer, certs, []string{"policy"}},
		{"issuer inside root", root, filepath.Join(root, "issuer"), certs, []string{"policy"}},
		{"same directory", root, root, certs, []string{"policy"}},
	} {
		if _, err := Init(tt.root, tt.issuer, tt.certs, tt.services, Options{}); !errs.Is(err, errs.Invalid) {
			t.Errorf("%s: Init = %v, want invalid", tt.name, err)
		}
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 0 {
		t.Errorf("refused Inits wrote %v", entries)
	}
}

func TestInitRefusesARootCertificateWithoutItsKey(t *testing.T) {
	clk := newClock(t0)
	c := newCA(t, clk, "policy")
	if err := os.Remove(filepath.Join(c.root, rootKeyFile)); err != nil {
		t.Fatal(err)
	}
	cert, _ := os.ReadFile(filepath.Join(c.root, rootCertFile))
	_, err := Init(c.root, c.issuer, c.certs, []string{"policy"}, Options{Now: clk.Now})
	if !errs.Is(err, errs.FailedPrecondition) {
		t.Fatalf("Init = %v, want a failed precondition", err)
	}
	if now, _ := os.ReadFile(filepath.Join(c.root, rootCertFile)); !bytes.Equal(now, cert) {
		t.Error("the root certificate was replaced")
	}
}
