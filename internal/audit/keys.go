package audit

import (
	"bytes"
	"errors"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/tink-crypto/tink-go/v2/keyset"
	tinkpb "github.com/tink-crypto/tink-go/v2/proto/tink_go_proto"
	"github.com/tink-crypto/tink-go/v2/signature"
	"github.com/tink-crypto/tink-go/v2/tink"
	"google.golang.org/protobuf/proto"

	"github.com/contractual/contractual/internal/decision"
	"github.com/contractual/contractual/internal/errs"
)

// keys are the log's signer, its verifier, and the public keyset that
// devices pin (the bytes of audit-verify.keyset).
type keys struct {
	signer   tink.Signer
	verifier tink.Verifier
	public   []byte
}

// loadKeys reads the signing keyset from dir, or creates it (and its public
// half) on first start. A log that already has checkpoints must find its
// key: a new one would make every old checkpoint fail, so Open refuses.
func loadKeys(dir string, haveCheckpoints bool) (keys, error) {
	h, err := loadOrCreateSigning(dir, haveCheckpoints)
	if err != nil {
		return keys{}, err
	}
	signer, err := signature.NewSigner(h)
	if err != nil {
		return keys{}, errs.Wrap(errs.Internal, err, "audit: signing keyset")
	}
	pub, err := decision.MarshalPublic(h)
	if err != nil {
		return keys{}, errs.Wrap(errs.Internal, err, "audit: public keyset")
	}
	verifier, pub, err := ensureVerifyKeyset(dir, pub)
	if err != nil {
		return keys{}, err
	}
	return keys{signer, verifier, pub}, nil
}

// loadOrCreateSigning reads audit-signing.keyset or creates it.
func loadOrCreateSigning(dir string, haveCheckpoints bool) (*keyset.Handle, error) {
	path := filepath.Join(dir, SigningKeysetFile)
	b, err := os.ReadFile(path)
	switch {
	case err == nil:
		h, err := decision.UnmarshalPrivate(b)
		if err != nil {
			return nil, errs.Wrap(errs.FailedPrecondition, err, "audit: reading %s", path)
		}
		return h, nil
	case !errors.Is(err, fs.ErrNotExist):
		return nil, errs.Wrap(errs.Unavailable, err, "audit: reading %s", path)
	case haveCheckpoints:
		return nil, errs.E(errs.FailedPrecondition,
			"audit: the log has signed checkpoints but %s is missing; restore it (a new key would invalidate them)", path)
	}
	h, err := decision.NewKeyset()
	if err != nil {
		return nil, errs.Wrap(errs.Internal, err, "audit: creating the signing keyset")
	}
	b, err = decision.MarshalPrivate(h)
	if err != nil {
		return nil, errs.Wrap(errs.Internal, err, "audit: encoding the signing keyset")
	}
	if err := writeFileAtomic(path, b, 0o600); err != nil {
		return nil, err
	}
	return h, nil
}

// ensureVerifyKeyset writes the public keyset pub if it is missing, and
// checks that an existing one holds exactly pub's keys: a replaced public
// file must not go unnoticed (nor be silently "repaired"). It returns the
// verifier and the file's bytes.
func ensureVerifyKeyset(dir string, pub []byte) (tink.Verifier, []byte, error) {
	path := filepath.Join(dir, VerifyKeysetFile)
	b, err := os.ReadFile(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		if err := writeFileAtomic(path, pub, 0o644); err != nil {
			return nil, nil, err
		}
		b = pub
	case err != nil:
		return nil, nil, errs.Wrap(errs.Unavailable, err, "audit: reading %s", path)
	}
	v, err := parseVerifyKeyset(b)
	if err != nil {
		return nil, nil, errs.Wrap(errs.FailedPrecondition, err, "audit: reading %s", path)
	}
	// Exactly the signing key's public half: devices pin this file, and a
	// key added beside the real one would verify whatever it signs.
	if !sameKeyset(b, pub) {
		return nil, nil, errs.E(errs.FailedPrecondition, "audit: %s does not match %s", path, SigningKeysetFile)
	}
	return v, b, nil
}

// sameKeyset reports whether two binary public keysets hold the same keys.
func sameKeyset(a, b []byte) bool {
	var ka, kb tinkpb.Keyset
	if proto.Unmarshal(a, &ka) != nil || proto.Unmarshal(b, &kb) != nil {
		return false
	}
	return proto.Equal(&ka, &kb)
}

// parseVerifyKeyset reads a public keyset written by decision.MarshalPublic.
func parseVerifyKeyset(b []byte) (tink.Verifier, error) {
	h, err := keyset.ReadWithNoSecrets(keyset.NewBinaryReader(bytes.NewReader(b)))
	if err != nil {
		return nil, err
	}
	return signature.NewVerifier(h)
}

// writeFileAtomic writes b to path with mode perm: a temporary file in the
// same directory, synced, renamed over path, and the directory synced.
func writeFileAtomic(path string, b []byte, perm os.FileMode) error {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".*")
	if err != nil {
		return errs.Wrap(errs.Unavailable, err, "audit: writing %s", path)
	}
	tmp := f.Name()
	err = errors.Join(f.Chmod(perm), write(f, b), f.Sync(), f.Close())
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		os.Remove(tmp)
		return errs.Wrap(errs.Unavailable, err, "audit: writing %s", path)
	}
	return syncDir(dir)
}

// write writes all of b to f.
func write(f *os.File, b []byte) error {
	_, err := f.Write(b)
	return err
}

// syncDir makes a rename in dir durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return errs.Wrap(errs.Unavailable, err, "audit: syncing %s", dir)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return errs.Wrap(errs.Unavailable, err, "audit: syncing %s", dir)
	}
	return nil
}
