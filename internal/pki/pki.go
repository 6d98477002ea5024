// Package pki is Contractual's internal certificate authority and the
// mutual TLS its services speak to each other.
//
// Identity. A service is named by lowercase letters (ValidService). Its
// identity is the SPIFFE ID spiffe://contractual.internal/<service> (ID),
// carried as the only URI SAN of its certificate, next to the DNS SAN
// <service>. A server learns its caller with PeerID, from the chain its TLS
// stack verified, never from anything the peer sends unverified.
//
// The CA. Init creates (once) a root CA, mints an issuing CA signed by it and
// issues each service its first certificate; Renew, which needs only the
// issuing CA, re-issues a service's certificate when it is past half its
// life or does not check out. The root key never leaves the root directory.
// Every file is replaced atomically (a temporary file in the same directory,
// synced, renamed, the directory synced). The layout:
//
//	root dir    ca.pem, ca.key                       (only init reads it)
//	issuer dir  issuer.pem, issuer.key, bundle.pem
//	certs dir   <service>/cert.pem                   (the leaf, then the issuing CA)
//	            <service>/key.pem                    (PKCS #8, mode 0440)
//	            <service>/bundle.pem                 (the root(s) to trust)
//
// Keys are ECDSA P-256: every TLS 1.3 stack must support it (RFC 8446,
// section 9.1), unlike Ed25519 certificates.
//
// TLS. A Source serves one service's certificate directory: it keeps the
// current certificate and bundle and reloads them when the files change, so
// a renewed certificate is used without a restart. Its ServerConfig and
// ClientConfig are TLS 1.3 only and verify the peer against the current
// bundle and its SPIFFE ID.
package pki

import (
	"crypto/tls"
	"crypto/x509"
	"strings"

	"github.com/contractual/contractual/internal/errs"
)

// TrustDomain is the SPIFFE trust domain of every service identity.
const TrustDomain = "contractual.internal"

// idPrefix starts every service's SPIFFE ID.
const idPrefix = "spiffe://" + TrustDomain + "/"

// maxServiceLen is the longest service name: one DNS label.
const maxServiceLen = 63

// ValidService reports whether name is a service name: 1 to 63 lowercase
// ASCII letters, so that it is both a DNS label and a SPIFFE path segment.
func ValidService(name string) error {
	if name == "" || len(name) > maxServiceLen {
		return errs.E(errs.Invalid, "pki: service name %q: want 1 to %d lowercase letters", name, maxServiceLen)
	}
	for _, c := range []byte(name) {
		if c < 'a' || c > 'z' {
			return errs.E(errs.Invalid, "pki: service name %q: want lowercase letters only", name)
		}
	}
	return nil
}

// ID returns the SPIFFE ID of service.
func ID(service string) string { return idPrefix + service }

// ServiceOf returns the service that cert names: its one URI SAN must be the
// SPIFFE ID of a valid service in TrustDomain. It checks the names only;
// the chain is the caller's to verify (PeerID uses a verified one).
func ServiceOf(cert *x509.Certificate) (string, error) {
	if len(cert.URIs) != 1 {
		return "", errs.E(errs.Unauthenticated, "pki: certificate has %d URI SANs, want one SPIFFE ID", len(cert.URIs))
	}
	// A valid service name is letters only, so comparing the whole
	// re-encoded URI rules out ports, user info, queries, fragments,
	// escapes and extra path segments at once.
	u := cert.URIs[0].String()
	service, ok := strings.CutPrefix(u, idPrefix)
	if !ok || ValidService(service) != nil {
		return "", errs.E(errs.Unauthenticated, "pki: certificate's URI SAN %q is not %s<service>", u, idPrefix)
	}
	return service, nil
}

// PeerID returns the service at the other end of a connection whose peer
// certificate the TLS stack verified (a server configured by ServerConfig):
// the service of the verified chain's leaf, VerifiedChains[0][0].
func PeerID(cs *tls.ConnectionState) (string, error) {
	if cs == nil || len(cs.VerifiedChains) == 0 || len(cs.VerifiedChains[0]) == 0 {
		return "", errs.E(errs.Unauthenticated, "pki: no verified peer certificate")
	}
	return ServiceOf(cs.VerifiedChains[0][0])
}
