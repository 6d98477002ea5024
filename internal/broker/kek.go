package broker

import (
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"io"
	"os"

	"github.com/tink-crypto/tink-go/v2/aead/subtle"
	"github.com/tink-crypto/tink-go/v2/tink"

	"github.com/contractual/contractual/internal/errs"
)

// KEKSize is the size of the key-encryption key, in bytes (AES-256).
const KEKSize = 32

// maxKEKFile bounds what readKEK reads.
const maxKEKFile = 1024

// GenerateKEK writes a new random key-encryption key to path, mode 0600,
// as the standard base64 of 32 random bytes and a newline (what
// `openssl rand -base64 32` prints). It refuses to overwrite an existing
// file: losing the KEK loses every secret.
func GenerateKEK(path string) error {
	key := make([]byte, KEKSize)
	if _, err := rand.Read(key); err != nil {
		return errs.Wrap(errs.Internal, err, "broker: generating a key-encryption key")
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return errs.Wrap(errs.FailedPrecondition, err, "broker: creating the key-encryption key file %s", path)
	}
	enc := base64.StdEncoding.EncodeToString(key) + "\n"
	if _, err := f.WriteString(enc); err != nil {
		f.Close()
		return errs.Wrap(errs.Unavailable, err, "broker: writing %s", path)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return errs.Wrap(errs.Unavailable, err, "broker: writing %s", path)
	}
	if err := f.Close(); err != nil {
		return errs.Wrap(errs.Unavailable, err, "broker: writing %s", path)
	}
	return nil
}

// readKEK reads the key-encryption key at path and returns the AEAD it
// makes. The file holds either exactly 32 raw bytes, or the standard
// base64 of 32 bytes (44 characters) with optional surrounding whitespace;
// the two cannot be confused, as they differ in length. Anything else is
// refused.
func readKEK(path string) (tink.AEAD, error) {
	if path == "" {
		return nil, errs.E(errs.FailedPrecondition, "broker: no key-encryption key file configured")
	}
	f, err := os.Open(path)
	if err != nil {
		if os.IsNotExist(err) {
			return nil, errs.E(errs.FailedPrecondition, "broker: the key-encryption key file %s does not exist", path)
		}
		return nil, errs.Wrap(errs.FailedPrecondition, err, "broker: cannot read the key-encryption key file %s", path)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxKEKFile+1))
	if err != nil {
		return nil, errs.Wrap(errs.FailedPrecondition, err, "broker: cannot read the key-encryption key file %s", path)
	}
	key, err := decodeKEK(b)
	if err != nil {
		return nil, errs.Wrap(errs.FailedPrecondition, err, "broker: the key-encryption key file %s is unusable", path)
	}
	a, err := subtle.NewAESGCM(key)
	if err != nil {
		return nil, errs.Wrap(errs.Internal, err, "broker: building the key-encryption AEAD")
	}
	return a, nil
}

// decodeKEK turns a KEK file's bytes into the 32-byte key. Its errors never
// quote the file's content.
func decodeKEK(b []byte) ([]byte, error) {
	if len(b) == KEKSize {
		return bytes.Clone(b), nil
	}
	if len(b) > maxKEKFile {
		return nil, errs.E(errs.FailedPrecondition, "it is over %d bytes; it must hold %d raw bytes or their base64", maxKEKFile, KEKSize)
	}
	text := bytes.TrimSpace(b)
	key, err := base64.StdEncoding.DecodeString(string(text))
	if err != nil {
		return nil, errs.E(errs.FailedPrecondition, "it holds %d bytes, which are neither %d raw bytes nor valid base64", len(b), KEKSize)
	}
	if len(key) != KEKSize {
		return nil, errs.E(errs.FailedPrecondition, "its base64 decodes to %d bytes, not %d", len(key), KEKSize)
	}
	return key, nil
}
