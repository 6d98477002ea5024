package pki

import (
	"crypto/tls"
	"crypto/x509"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/contractual/contractual/internal/errs"
)

// DefaultCheckEvery is how often, at most, a Source looks at its files.
const DefaultCheckEvery = 10 * time.Second

// SourceOptions tune a Source; zero values take the defaults.
type SourceOptions struct {
	// Now returns the current time (default time.Now). It paces the checks
	// and is the clock of every certificate verification; tests set it.
	Now func() time.Time
	// CheckEvery is how often, at most, the files are checked for a
	// change (default DefaultCheckEvery). The check happens on a
	// handshake, so an idle Source reads nothing.
	CheckEvery time.Duration
	// Logger receives failed reloads and the http.Server's errors
	// (default slog.Default()).
	Logger *slog.Logger
}

// A Source holds one service's certificate, key and bundle, read from a
// directory (CertFile, KeyFile, BundleFile), and reloads them when the files
// change: on a handshake at most every CheckEvery, or on Reload. A reload
// that fails (a file missing or malformed, a key that does not match its
// certificate, as between the renewer's two renames) keeps the pair in use
// and is tried again once the files change. It is safe for concurrent use.
type Source struct {
	dir string
	o   SourceOptions
	cur atomic.Pointer[material]

	mu      sync.Mutex // guards checked and seen
	checked time.Time
	seen    []os.FileInfo // the files as last loaded or tried
}

// material is what a Source loaded at once.
type material struct {
	certs   []tls.Certificate // one
	roots   *x509.CertPool
	service string
}

// NewSource loads dir, which must hold a valid pair and bundle.
func NewSource(dir string, o SourceOptions) (*Source, error) {
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.CheckEvery <= 0 {
		o.CheckEvery = DefaultCheckEvery
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	s := &Source{dir: dir, o: o}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.checked = o.Now()
	if err := s.reloadLocked(); err != nil {
		return nil, err
	}
	return s, nil
}

// Service returns the service the current certificate names.
func (s *Source) Service() string { return s.cur.Load().service }

// Leaf returns the current certificate.
func (s *Source) Leaf() *x509.Certificate { return s.cur.Load().certs[0].Leaf }

// Reload reads the files now. On failure the current pair stays in use.
func (s *Source) Reload() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.checked = s.o.Now()
	return s.reloadLocked()
}

// current returns the material in use, first reloading it if CheckEvery
// has passed since the last check and the files changed since then.
func (s *Source) current() *material {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.o.Now()
	if now.Sub(s.checked) >= s.o.CheckEvery || now.Before(s.checked) {
		s.checked = now
		if s.changedLocked() {
			s.reloadLocked()
		}
	}
	return s.cur.Load()
}

// changedLocked reports whether any file differs (another file, size or
// modification time) from when it was last loaded or tried.
func (s *Source) changedLocked() bool {
	fis := s.stat()
	if len(fis) != len(s.seen) {
		return true
	}
	for i, fi := range fis {
		old := s.seen[i]
		if !os.SameFile(fi, old) || fi.Size() != old.Size() || !fi.ModTime().Equal(old.ModTime()) {
			return true
		}
	}
	return false
}

// stat returns the files' infos, or nil if one is missing.
func (s *Source) stat() []os.FileInfo {
	var fis []os.FileInfo
	for _, name := range []string{CertFile, KeyFile, BundleFile} {
		fi, err := os.Stat(filepath.Join(s.dir, name))
		if err != nil {
			return nil
		}
		fis = append(fis, fi)
	}
	return fis
}

// reloadLocked loads the files, noting them as seen before reading them:
// if they change while being read, the next check loads them again.
func (s *Source) reloadLocked() error {
	s.seen = s.stat()
	m, err := load(s.dir)
	if err != nil {
		if old := s.cur.Load(); old != nil {
			s.o.Logger.Warn("pki: reload failed; keeping the current certificate",
				"dir", s.dir, "err", err, "not_after", old.certs[0].Leaf.NotAfter)
		}
		return err
	}
	if old := s.cur.Swap(m); old != nil && !old.certs[0].Leaf.Equal(m.certs[0].Leaf) {
		s.o.Logger.Info("pki: loaded a new certificate", "dir", s.dir,
			"serial", m.certs[0].Leaf.SerialNumber.Text(16), "not_after", m.certs[0].Leaf.NotAfter)
	}
	return nil
}

// load reads a service's pair and bundle from dir.
func load(dir string) (*material, error) {
	read := func(name string) ([]byte, error) {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			return nil, errs.Wrap(errs.Unavailable, err, "pki: reading %s", name)
		}
		return b, nil
	}
	certPEM, err := read(CertFile)
	if err != nil {
		return nil, err
	}
	keyPEM, err := read(KeyFile)
	if err != nil {
		return nil, err
	}
	bundle, err := read(BundleFile)
	if err != nil {
		return nil, err
	}
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, errs.Wrap(errs.Unavailable, err, "pki: %s and %s in %s", CertFile, KeyFile, dir)
	}
	service, err := ServiceOf(cert.Leaf)
	if err != nil {
		return nil, errs.Wrap(errs.Unavailable, err, "pki: %s", filepath.Join(dir, CertFile))
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(bundle) {
		return nil, errs.E(errs.Unavailable, "pki: no certificate in %s", filepath.Join(dir, BundleFile))
	}
	return &material{certs: []tls.Certificate{cert}, roots: roots, service: service}, nil
}

// serverProtos returns what a server offers: HTTP/2, and HTTP/1.1 for a
// curl with a client certificate. (A new slice: http.Server may append.)
func serverProtos() []string { return []string{"h2", "http/1.1"} }

// ServerConfig returns the TLS configuration of a server: TLS 1.3 only; a
// client certificate required and verified against the current bundle, with
// exactly one SPIFFE ID of a service in the trust domain (which service may
// call what is for the server to decide, from PeerID). Every handshake takes
// the current certificate and bundle. Session tickets are off, so that every
// connection proves possession of a current certificate; connections
// between services are few and long-lived, so resumption would save little.
func (s *Source) ServerConfig() *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS13,
		NextProtos: serverProtos(),
		GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
			m := s.current()
			return &tls.Config{
				MinVersion:             tls.VersionTLS13,
				NextProtos:             serverProtos(),
				Certificates:           m.certs,
				ClientAuth:             tls.RequireAndVerifyClientCert,
				ClientCAs:              m.roots,
				Time:                   s.o.Now,
				SessionTicketsDisabled: true,
				VerifyConnection: func(cs tls.ConnectionState) error {
					_, err := PeerID(&cs)
					return err
				},
			}, nil
		},
	}
}

// ClientConfig returns the TLS configuration for dialling service expect:
// TLS 1.3 only, presenting the current certificate, and accepting only a
// server whose chain verifies against the current bundle (for server
// authentication) and whose SPIFFE ID is ID(expect).
//
// The server is identified by its SPIFFE ID, not by the host name dialled
// (a compose service name, or 127.0.0.1 in tests), so Go's own verification,
// which checks the host name against a bundle fixed in the config, is
// replaced by the same verification done by hand in VerifyConnection with
// the current bundle. InsecureSkipVerify turns off only Go's; the handshake
// still proves the server holds the key of the certificate verified.
func (s *Source) ClientConfig(expect string) *tls.Config {
	return &tls.Config{
		MinVersion:         tls.VersionTLS13,
		ServerName:         expect,
		NextProtos:         []string{"h2"},
		InsecureSkipVerify: true,
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			return &s.current().certs[0], nil
		},
		VerifyConnection: func(cs tls.ConnectionState) error { return s.verifyServer(cs, expect) },
	}
}

// verifyServer verifies the server's chain and that it is service expect.
func (s *Source) verifyServer(cs tls.ConnectionState, expect string) error {
	if len(cs.PeerCertificates) == 0 {
		return errs.E(errs.Unauthenticated, "pki: the server sent no certificate")
	}
	leaf := cs.PeerCertificates[0]
	inter := x509.NewCertPool()
	for _, c := range cs.PeerCertificates[1:] {
		inter.AddCert(c)
	}
	_, err := leaf.Verify(x509.VerifyOptions{
		Roots:         s.current().roots,
		Intermediates: inter,
		CurrentTime:   s.o.Now(),
		KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	})
	if err != nil {
		return errs.Wrap(errs.Unauthenticated, err, "pki: server certificate")
	}
	got, err := ServiceOf(leaf)
	if err != nil {
		return err
	}
	if got != expect {
		return errs.E(errs.Unauthenticated, "pki: the server is %s, want %s", ID(got), ID(expect))
	}
	return nil
}

// Server returns an http.Server for h over mutual TLS from s (ServerConfig),
// speaking HTTP/2, and HTTP/1.1 for a debugging curl. Start it with
// ServeTLS(listener, "", ""); handlers learn the caller with
// PeerID(r.TLS).
func (s *Source) Server(h http.Handler) *http.Server {
	return &http.Server{
		Handler:           h,
		TLSConfig:         s.ServerConfig(),
		ReadHeaderTimeout: time.Minute,
		IdleTimeout:       5 * time.Minute,
		ErrorLog:          slog.NewLogLogger(s.o.Logger.Handler(), slog.LevelWarn),
	}
}

// Transport returns an HTTP/2-only transport over mutual TLS to service
// expect (ClientConfig), for the Connect clients of that service. It uses
// no proxy.
func (s *Source) Transport(expect string) *http.Transport {
	var p http.Protocols
	p.SetHTTP2(true)
	return &http.Transport{
		TLSClientConfig:     s.ClientConfig(expect),
		Protocols:           &p,
		DialContext:         (&net.Dialer{Timeout: 30 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		TLSHandshakeTimeout: time.Minute,
		IdleConnTimeout:     90 * time.Second,
	}
}
