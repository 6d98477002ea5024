package pki

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/contractual/contractual/internal/errs"
)

// The files of a service's certificate directory (a Source's directory).
const (
	// CertFile holds the service's certificate, then the issuing CA's.
	CertFile = "cert.pem"
	// KeyFile holds the service's private key (PKCS #8).
	KeyFile = "key.pem"
	// BundleFile holds the root certificate(s) to trust.
	BundleFile = "bundle.pem"
)

// The CA's files.
const (
	rootCertFile   = "ca.pem"
	rootKeyFile    = "ca.key"
	issuerCertFile = "issuer.pem"
	issuerKeyFile  = "issuer.key"
)

// File modes. A service's key is readable by its group: the renewer writes
// it as its own user, and the services share its group (see plan). The CA
// keys are for the CA's user only.
const (
	caKeyMode      = 0o400
	serviceKeyMode = 0o440
	certMode       = 0o444
	caDirMode      = 0o700
	serviceDirMode = 0o750
)

// encodeCert returns der as a PEM CERTIFICATE block.
func encodeCert(der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

// encodeKey returns k as a PEM PKCS #8 PRIVATE KEY block.
func encodeKey(k *ecdsa.PrivateKey) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		return nil, errs.Wrap(errs.Internal, err, "pki: encoding key")
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

// parseCerts returns every CERTIFICATE block of b, in order.
func parseCerts(b []byte) ([]*x509.Certificate, error) {
	var certs []*x509.Certificate
	for {
		var block *pem.Block
		block, b = pem.Decode(b)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, err
		}
		certs = append(certs, c)
	}
	if len(certs) == 0 {
		return nil, errors.New("no certificate")
	}
	return certs, nil
}

// parseKey returns the ECDSA key of a PEM PKCS #8 block.
func parseKey(b []byte) (*ecdsa.PrivateKey, error) {
	block, _ := pem.Decode(b)
	if block == nil || block.Type != "PRIVATE KEY" {
		return nil, errors.New("no PKCS #8 private key")
	}
	k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		return nil, err
	}
	ek, ok := k.(*ecdsa.PrivateKey)
	if !ok {
		return nil, errors.New("not an ECDSA key")
	}
	return ek, nil
}

// readFile reads path; an absent file is (nil, nil).
func readFile(path string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, errs.Wrap(errs.Unavailable, err, "pki: reading %s", path)
	}
	return b, nil
}

// writeFile replaces path with b, mode perm: a temporary file in the same
// directory, synced, renamed over path, and the directory synced. A reader
// sees the old file or the new one, never part of one. If path already
// holds b with mode perm, nothing is written.
func writeFile(path string, b []byte, perm os.FileMode) error {
	if old, err := os.ReadFile(path); err == nil && bytes.Equal(old, b) {
		if fi, err := os.Stat(path); err == nil && fi.Mode().Perm() == perm {
			return nil
		}
	}
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".*")
	if err != nil {
		return errs.Wrap(errs.Unavailable, err, "pki: writing %s", path)
	}
	tmp := f.Name()
	_, werr := f.Write(b)
	err = errors.Join(f.Chmod(perm), werr, f.Sync(), f.Close())
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		os.Remove(tmp)
		return errs.Wrap(errs.Unavailable, err, "pki: writing %s", path)
	}
	return syncDir(dir)
}

// syncDir makes a rename in dir durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return errs.Wrap(errs.Unavailable, err, "pki: syncing %s", dir)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return errs.Wrap(errs.Unavailable, err, "pki: syncing %s", dir)
	}
	return nil
}
