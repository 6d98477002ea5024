package pki

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"io/fs"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/contractual/contractual/internal/errs"
)

// Default lifetimes.
const (
	DefaultRootValidity   = 10 * 365 * 24 * time.Hour
	DefaultIssuerValidity = 365 * 24 * time.Hour
	DefaultValidity       = 6 * time.Hour
)

// Backdate is how long before its issuance a certificate becomes valid, for
// clocks that disagree a little.
const Backdate = time.Minute

// Options tune Init and Renew; zero values take the defaults.
type Options struct {
	// Now returns the current time (default time.Now); tests set it.
	Now func() time.Time
	// Validity is a service certificate's lifetime (default
	// DefaultValidity), cut short at the issuing CA's expiry.
	Validity time.Duration
	// IssuerValidity is the issuing CA's lifetime (default
	// DefaultIssuerValidity), cut short at the root's expiry.
	IssuerValidity time.Duration
	// RootValidity is the root CA's lifetime (default DefaultRootValidity).
	RootValidity time.Duration
}

func (o Options) withDefaults() Options {
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Validity <= 0 {
		o.Validity = DefaultValidity
	}
	if o.IssuerValidity <= 0 {
		o.IssuerValidity = DefaultIssuerValidity
	}
	if o.RootValidity <= 0 {
		o.RootValidity = DefaultRootValidity
	}
	return o
}

// Changes says what Init or Renew wrote.
type Changes struct {
	// Root is set when the root CA was created.
	Root bool
	// Issuer is set when an issuing CA was minted, and says why.
	Issuer string
	// Issued lists the certificates issued, in the order of the services.
	Issued []Issued
	// IssuerStale is set by Renew when the issuing CA is past half its
	// life: only Init, which reads the root, mints the next one.
	IssuerStale bool
}

// Issued describes one service certificate that was issued.
type Issued struct {
	Service string
	// Reason says why it was due: "absent", "past half its life", or what
	// failed to check out.
	Reason   string
	NotAfter time.Time
}

// Init makes the CA and the services' first certificates; running it again
// changes only what is due. It creates the root CA in rootDir if absent;
// mints an issuing CA into issuerDir if it is absent, past half its life,
// not signed by the root or not constrained to cover services; and issues
// a certificate for each service into certsDir/<service> as Renew does.
// The root key is read from rootDir and written nowhere else.
func Init(rootDir, issuerDir, certsDir string, services []string, o Options) (Changes, error) {
	o = o.withDefaults()
	var ch Changes
	if err := checkArgs(services, rootDir, issuerDir, certsDir); err != nil {
		return ch, err
	}
	now := o.Now()
	root, created, err := ensureRoot(rootDir, now, o.RootValidity)
	if err != nil {
		return ch, err
	}
	ch.Root = created
	issuer, bundle, why, err := ensureIssuer(issuerDir, root, services, now, o.IssuerValidity)
	if err != nil {
		return ch, err
	}
	ch.Issuer = why
	ch.Issued, err = renewAll(issuer, bundle, certsDir, services, now, o.Validity)
	return ch, err
}

// Renew re-issues, from the issuing CA in issuerDir, the certificate of each
// service in certsDir/<service> that is due: absent, past half its life,
// not matching its key, not naming the service, or not verifying against
// the issuer's bundle. It also replaces a service's bundle.pem that differs
// from the issuer's. It fails if the issuing CA has expired: only Init,
// with the root, can mint another.
func Renew(issuerDir, certsDir string, services []string, o Options) (Changes, error) {
	o = o.withDefaults()
	var ch Changes
	if err := checkArgs(services, issuerDir, certsDir); err != nil {
		return ch, err
	}
	issuer, err := loadCA(filepath.Join(issuerDir, issuerCertFile), filepath.Join(issuerDir, issuerKeyFile))
	if err != nil {
		return ch, err
	}
	if issuer == nil {
		return ch, errs.E(errs.FailedPrecondition, "pki: no issuing CA in %s: run contractual-ca init", issuerDir)
	}
	now := o.Now()
	if !now.Before(issuer.cert.NotAfter) {
		return ch, errs.E(errs.FailedPrecondition, "pki: the issuing CA expired at %s: run contractual-ca init", issuer.cert.NotAfter.UTC().Format(time.RFC3339))
	}
	bundle, err := readFile(filepath.Join(issuerDir, BundleFile))
	if err != nil {
		return ch, err
	}
	if bundle == nil {
		return ch, errs.E(errs.FailedPrecondition, "pki: no %s in %s: run contractual-ca init", BundleFile, issuerDir)
	}
	ch.IssuerStale = pastHalf(issuer.cert, now)
	ch.Issued, err = renewAll(issuer, bundle, certsDir, services, now, o.Validity)
	return ch, err
}

// checkArgs validates the services and that no directory holds another:
// each is mounted into different containers.
func checkArgs(services []string, dirs ...string) error {
	if len(services) == 0 {
		return errs.E(errs.Invalid, "pki: no services")
	}
	for i, s := range services {
		if err := ValidService(s); err != nil {
			return err
		}
		if slices.Contains(services[:i], s) {
			return errs.E(errs.Invalid, "pki: service %q listed twice", s)
		}
	}
	abs := make([]string, len(dirs))
	for i, d := range dirs {
		if d == "" {
			return errs.E(errs.Invalid, "pki: empty directory name")
		}
		a, err := filepath.Abs(d)
		if err != nil {
			return errs.Wrap(errs.Invalid, err, "pki: directory %s", d)
		}
		abs[i] = a
		for _, b := range abs[:i] {
			if within(a, b) || within(b, a) {
				return errs.E(errs.Invalid, "pki: directories %s and %s overlap: each must be separate", b, a)
			}
		}
	}
	return nil
}

// within reports whether path a is b or inside it.
func within(a, b string) bool {
	return a == b || strings.HasPrefix(a, b+string(filepath.Separator)) || b == string(filepath.Separator)
}

// pair is a certificate with its key.
type pair struct {
	cert    *x509.Certificate
	certPEM []byte
	key     *ecdsa.PrivateKey
}

// loadCA reads a CA's certificate and key; both absent is (nil, nil).
func loadCA(certPath, keyPath string) (*pair, error) {
	certPEM, err := readFile(certPath)
	if err != nil {
		return nil, err
	}
	keyPEM, err := readFile(keyPath)
	if err != nil {
		return nil, err
	}
	switch {
	case certPEM == nil && keyPEM == nil:
		return nil, nil
	case certPEM == nil:
		return nil, errs.E(errs.FailedPrecondition, "pki: %s without %s", keyPath, certPath)
	case keyPEM == nil:
		return nil, errs.E(errs.FailedPrecondition, "pki: %s without %s", certPath, keyPath)
	}
	certs, err := parseCerts(certPEM)
	if err != nil {
		return nil, errs.Wrap(errs.FailedPrecondition, err, "pki: %s", certPath)
	}
	key, err := parseKey(keyPEM)
	if err != nil {
		return nil, errs.Wrap(errs.FailedPrecondition, err, "pki: %s", keyPath)
	}
	c := &pair{cert: certs[0], certPEM: encodeCert(certs[0].Raw), key: key}
	if !c.cert.IsCA {
		return nil, errs.E(errs.FailedPrecondition, "pki: %s is not a CA certificate", certPath)
	}
	if !key.PublicKey.Equal(c.cert.PublicKey) {
		return nil, errs.E(errs.FailedPrecondition, "pki: %s does not match %s", keyPath, certPath)
	}
	return c, nil
}

// ensureRoot loads the root CA from dir, or creates it when dir holds no
// root certificate (a key without one, left by an interrupted run, is
// replaced: nothing was signed with it).
func ensureRoot(dir string, now time.Time, validity time.Duration) (*pair, bool, error) {
	certPath, keyPath := filepath.Join(dir, rootCertFile), filepath.Join(dir, rootKeyFile)
	_, err := os.Stat(certPath)
	if err == nil {
		root, err := loadCA(certPath, keyPath)
		if err != nil {
			return nil, false, err
		}
		if !now.Before(root.cert.NotAfter) {
			return nil, false, errs.E(errs.FailedPrecondition,
				"pki: the root CA in %s expired at %s: move it away and run init again (every service then trusts the new root)",
				dir, root.cert.NotAfter.UTC().Format(time.RFC3339))
		}
		return root, false, nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return nil, false, errs.Wrap(errs.Unavailable, err, "pki: reading %s", certPath)
	}
	if err := os.MkdirAll(dir, caDirMode); err != nil {
		return nil, false, errs.Wrap(errs.Unavailable, err, "pki: creating %s", dir)
	}
	key, err := newKey()
	if err != nil {
		return nil, false, err
	}
	tmpl := &x509.Certificate{
		Subject:               pkix.Name{Organization: []string{"Contractual"}, CommonName: "Contractual root CA"},
		NotBefore:             now.Add(-Backdate),
		NotAfter:              now.Add(validity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLen:            1,
	}
	root, err := sign(tmpl, nil, key)
	if err != nil {
		return nil, false, err
	}
	if err := writeCA(root, certPath, keyPath); err != nil {
		return nil, false, err
	}
	return root, true, nil
}

// ensureIssuer loads the issuing CA from dir, minting a new one when it is
// not fit to keep (see issuerDue), and makes dir's bundle the root. It
// returns the issuer, the bundle and why it minted one ("" if it did not).
func ensureIssuer(dir string, root *pair, services []string, now time.Time, validity time.Duration) (*pair, []byte, string, error) {
	certPath, keyPath := filepath.Join(dir, issuerCertFile), filepath.Join(dir, issuerKeyFile)
	if err := os.MkdirAll(dir, caDirMode); err != nil {
		return nil, nil, "", errs.Wrap(errs.Unavailable, err, "pki: creating %s", dir)
	}
	bundle := root.certPEM
	issuer, err := loadCA(certPath, keyPath)
	why := ""
	switch {
	case err != nil:
		why = err.Error()
	case issuer == nil:
		why = "absent"
	default:
		why = issuerDue(issuer.cert, root.cert, services, now)
	}
	if why != "" {
		key, err := newKey()
		if err != nil {
			return nil, nil, "", err
		}
		notAfter := earlier(now.Add(validity), root.cert.NotAfter)
		tmpl := &x509.Certificate{
			Subject:               pkix.Name{Organization: []string{"Contractual"}, CommonName: "Contractual issuing CA"},
			NotBefore:             now.Add(-Backdate),
			NotAfter:              notAfter,
			KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
			BasicConstraintsValid: true,
			IsCA:                  true,
			MaxPathLenZero:        true,
			// Go's verifier enforces these on every chain through this
			// CA: URIs only in the trust domain, DNS names only the
			// services' (and, as X.509 has it, their subdomains: "no
			// dot" cannot be said), no IP addresses.
			PermittedDNSDomainsCritical: true,
			PermittedURIDomains:         []string{TrustDomain},
			PermittedDNSDomains:         slices.Sorted(slices.Values(services)),
			ExcludedIPRanges:            []*net.IPNet{{IP: net.IPv4zero, Mask: net.CIDRMask(0, 32)}, {IP: net.IPv6zero, Mask: net.CIDRMask(0, 128)}},
		}
		if issuer, err = sign(tmpl, root, key); err != nil {
			return nil, nil, "", err
		}
		if err := writeCA(issuer, certPath, keyPath); err != nil {
			return nil, nil, "", err
		}
	}
	if err := writeFile(filepath.Join(dir, BundleFile), bundle, certMode); err != nil {
		return nil, nil, "", err
	}
	return issuer, bundle, why, nil
}

// issuerDue says why issuer must be replaced, or "" if it may stay: it
// must be signed by root, valid now and not past half its life, and its
// name constraints must permit every service's DNS name.
func issuerDue(issuer, root *x509.Certificate, services []string, now time.Time) string {
	if err := issuer.CheckSignatureFrom(root); err != nil {
		return "not signed by the root: " + err.Error()
	}
	if pastHalf(issuer, now) {
		return "past half its life"
	}
	if now.Before(issuer.NotBefore) {
		return "not valid yet"
	}
	for _, s := range services {
		if !slices.Contains(issuer.PermittedDNSDomains, s) {
			return "its name constraints leave out " + s
		}
	}
	return ""
}

// pastHalf reports whether cert has lived half its validity, or more.
func pastHalf(cert *x509.Certificate, now time.Time) bool {
	return !now.Before(cert.NotBefore.Add(cert.NotAfter.Sub(cert.NotBefore) / 2))
}

// renewAll issues the certificates that are due, in the order of services,
// and returns them with every service's failure.
func renewAll(issuer *pair, bundle []byte, certsDir string, services []string, now time.Time, validity time.Duration) ([]Issued, error) {
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(bundle) {
		return nil, errs.E(errs.FailedPrecondition, "pki: the issuer's %s holds no certificate", BundleFile)
	}
	var issued []Issued
	var failed []error
	for _, s := range services {
		is, err := renewOne(issuer, bundle, roots, filepath.Join(certsDir, s), s, now, validity)
		if err != nil {
			failed = append(failed, err)
		} else if is.Service != "" {
			issued = append(issued, is)
		}
	}
	return issued, errors.Join(failed...)
}

// renewOne brings the directory of one service up to date. A failure here
// does not stop the other services' renewal.
func renewOne(issuer *pair, bundle []byte, roots *x509.CertPool, dir, service string, now time.Time, validity time.Duration) (Issued, error) {
	if err := os.MkdirAll(dir, serviceDirMode); err != nil {
		return Issued{}, errs.Wrap(errs.Unavailable, err, "pki: creating %s", dir)
	}
	// The bundle first: a new root is trusted before a certificate
	// chaining to it is presented.
	if err := writeFile(filepath.Join(dir, BundleFile), bundle, certMode); err != nil {
		return Issued{}, err
	}
	why, err := leafDue(dir, service, roots, now)
	if err != nil || why == "" {
		return Issued{}, err
	}
	notAfter, err := issue(issuer, dir, service, now, validity)
	if err != nil {
		return Issued{}, err
	}
	return Issued{Service: service, Reason: why, NotAfter: notAfter}, nil
}

// leafDue says why the certificate in dir must be re-issued, or "" if it
// may stay.
func leafDue(dir, service string, roots *x509.CertPool, now time.Time) (string, error) {
	certPEM, err := readFile(filepath.Join(dir, CertFile))
	if err != nil {
		return "", err
	}
	keyPEM, err := readFile(filepath.Join(dir, KeyFile))
	if err != nil {
		return "", err
	}
	if certPEM == nil || keyPEM == nil {
		return "absent", nil
	}
	leaf, err := checkPair(certPEM, keyPEM, roots, now)
	if err != nil {
		return err.Error(), nil
	}
	if got, err := ServiceOf(leaf); err != nil || got != service {
		return "does not name " + ID(service), nil
	}
	if pastHalf(leaf, now) {
		return "past half its life", nil
	}
	return "", nil
}

// checkPair parses a certificate chain and its key, and verifies that they
// match and that the chain verifies against roots at now, for both server
// and client authentication. It returns the leaf.
func checkPair(certPEM, keyPEM []byte, roots *x509.CertPool, now time.Time) (*x509.Certificate, error) {
	chain, err := parseCerts(certPEM)
	if err != nil {
		return nil, errs.Wrap(errs.Invalid, err, "pki: %s", CertFile)
	}
	key, err := parseKey(keyPEM)
	if err != nil {
		return nil, errs.Wrap(errs.Invalid, err, "pki: %s", KeyFile)
	}
	leaf := chain[0]
	if !key.PublicKey.Equal(leaf.PublicKey) {
		return nil, errs.E(errs.Invalid, "pki: %s does not match %s", KeyFile, CertFile)
	}
	inter := x509.NewCertPool()
	for _, c := range chain[1:] {
		inter.AddCert(c)
	}
	for _, eku := range []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth} {
		opts := x509.VerifyOptions{Roots: roots, Intermediates: inter, CurrentTime: now, KeyUsages: []x509.ExtKeyUsage{eku}}
		if _, err := leaf.Verify(opts); err != nil {
			return nil, errs.Wrap(errs.Invalid, err, "pki: %s does not verify", CertFile)
		}
	}
	return leaf, nil
}

// issue writes a new key and certificate for service into dir, the key
// first: a reader that loads both between the two renames finds that they
// do not match and keeps its old pair (see Source).
func issue(issuer *pair, dir, service string, now time.Time, validity time.Duration) (time.Time, error) {
	key, err := newKey()
	if err != nil {
		return time.Time{}, err
	}
	tmpl := &x509.Certificate{
		Subject:               pkix.Name{CommonName: service},
		NotBefore:             now.Add(-Backdate),
		NotAfter:              earlier(now.Add(validity), issuer.cert.NotAfter),
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		BasicConstraintsValid: true,
		DNSNames:              []string{service},
		URIs:                  []*url.URL{{Scheme: "spiffe", Host: TrustDomain, Path: "/" + service}},
	}
	leaf, err := sign(tmpl, issuer, key)
	if err != nil {
		return time.Time{}, err
	}
	keyPEM, err := encodeKey(key)
	if err != nil {
		return time.Time{}, err
	}
	if err := writeFile(filepath.Join(dir, KeyFile), keyPEM, serviceKeyMode); err != nil {
		return time.Time{}, err
	}
	chain := slices.Concat(leaf.certPEM, issuer.certPEM)
	if err := writeFile(filepath.Join(dir, CertFile), chain, certMode); err != nil {
		return time.Time{}, err
	}
	return leaf.cert.NotAfter, nil
}

// newKey returns a new P-256 key.
func newKey() (*ecdsa.PrivateKey, error) {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, errs.Wrap(errs.Internal, err, "pki: generating key")
	}
	return k, nil
}

// sign makes the certificate tmpl for key, signed by parent (self-signed if
// parent is nil). The serial number is random (x509.CreateCertificate).
func sign(tmpl *x509.Certificate, parent *pair, key *ecdsa.PrivateKey) (*pair, error) {
	parentCert, parentKey := tmpl, key
	if parent != nil {
		parentCert, parentKey = parent.cert, parent.key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parentCert, &key.PublicKey, parentKey)
	if err != nil {
		return nil, errs.Wrap(errs.Internal, err, "pki: signing %s", tmpl.Subject.CommonName)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, errs.Wrap(errs.Internal, err, "pki: parsing %s", tmpl.Subject.CommonName)
	}
	return &pair{cert: cert, certPEM: encodeCert(der), key: key}, nil
}

// writeCA writes a CA's key, then its certificate.
func writeCA(c *pair, certPath, keyPath string) error {
	keyPEM, err := encodeKey(c.key)
	if err != nil {
		return err
	}
	if err := writeFile(keyPath, keyPEM, caKeyMode); err != nil {
		return err
	}
	return writeFile(certPath, c.certPEM, certMode)
}

// earlier returns the earlier of a and b.
func earlier(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}
