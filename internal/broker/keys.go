package broker

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"strconv"

	"github.com/tink-crypto/tink-go/v2/aead"
	"github.com/tink-crypto/tink-go/v2/keyset"
	"github.com/tink-crypto/tink-go/v2/tink"

	"github.com/contractual/contractual/internal/errs"
)

// keysetAD is the associated data of the data keyset's encryption by the
// KEK: it names the purpose, so the KEK's ciphertexts of anything else do
// not pass for a keyset.
var keysetAD = []byte("contractual broker data keyset v1")

// dataKeys is the data keyset and its AEAD primitive.
type dataKeys struct {
	handle *keyset.Handle
	aead   tink.AEAD
}

// newDataKeys builds the primitive of h.
func newDataKeys(h *keyset.Handle) (*dataKeys, error) {
	a, err := aead.New(h)
	if err != nil {
		return nil, errs.Wrap(errs.Internal, err, "broker: building the data AEAD")
	}
	return &dataKeys{handle: h, aead: a}, nil
}

// secretAD is the associated data of one secret version's ciphertext.
func secretAD(name string, version uint32) []byte {
	return []byte(name + "|" + strconv.FormatUint(uint64(version), 10))
}

// seal encrypts value as version of secret name.
func (d *dataKeys) seal(name string, version uint32, value []byte) ([]byte, error) {
	ct, err := d.aead.Encrypt(value, secretAD(name, version))
	if err != nil {
		return nil, errs.Wrap(errs.Internal, err, "broker: encrypting secret %s version %d", name, version)
	}
	return ct, nil
}

// open decrypts the ciphertext stored for version of secret name. A
// ciphertext moved from another row, or damaged, does not decrypt.
func (d *dataKeys) open(name string, version uint32, ct []byte) ([]byte, error) {
	v, err := d.aead.Decrypt(ct, secretAD(name, version))
	if err != nil {
		return nil, errs.E(errs.Internal, "broker: the stored ciphertext of secret %s version %d does not decrypt under its name and version (moved from another row, damaged, or under a retired key); refusing it", name, version)
	}
	return v, nil
}

// marshal encrypts the keyset with the KEK.
func (d *dataKeys) marshal(kek tink.AEAD) ([]byte, error) {
	var buf bytes.Buffer
	if err := d.handle.WriteWithAssociatedData(keyset.NewBinaryWriter(&buf), kek, keysetAD); err != nil {
		return nil, errs.Wrap(errs.Internal, err, "broker: encrypting the data keyset")
	}
	return buf.Bytes(), nil
}

// loadDataKeys reads the data keyset from the store and decrypts it with
// the KEK, or, if the store has none (first start), creates one with an
// AES-256-GCM key and stores it.
func loadDataKeys(ctx context.Context, db *sql.DB, kek tink.AEAD, kekPath string) (*dataKeys, error) {
	var enc []byte
	err := db.QueryRowContext(ctx, `SELECT value FROM meta WHERE key = ?`, keysetKey).Scan(&enc)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return createDataKeys(ctx, db, kek)
	case err != nil:
		return nil, storeErr(err, "reading the data keyset")
	}
	h, err := keyset.ReadWithAssociatedData(keyset.NewBinaryReader(bytes.NewReader(enc)), kek, keysetAD)
	if err != nil {
		return nil, errs.E(errs.FailedPrecondition, "broker: the key-encryption key in %s does not decrypt the stored data keyset: wrong key file, or a damaged store; refusing to start", kekPath)
	}
	return newDataKeys(h)
}

// createDataKeys creates and stores a fresh data keyset. A concurrent first
// start that stored one first wins: its keyset is the one kept.
func createDataKeys(ctx context.Context, db *sql.DB, kek tink.AEAD) (*dataKeys, error) {
	h, err := keyset.NewHandle(aead.AES256GCMKeyTemplate())
	if err != nil {
		return nil, errs.Wrap(errs.Internal, err, "broker: creating the data keyset")
	}
	d, err := newDataKeys(h)
	if err != nil {
		return nil, err
	}
	enc, err := d.marshal(kek)
	if err != nil {
		return nil, err
	}
	res, err := db.ExecContext(ctx, `INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT(key) DO NOTHING`, keysetKey, enc)
	if err != nil {
		return nil, storeErr(err, "storing the data keyset")
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return nil, errs.E(errs.Unavailable, "broker: another process created the data keyset at the same time; start again")
	}
	return d, nil
}

// keyIDs returns the ids of the keyset's keys.
func (d *dataKeys) keyIDs() []uint32 {
	var ids []uint32
	for _, k := range d.handle.KeysetInfo().GetKeyInfo() {
		ids = append(ids, k.GetKeyId())
	}
	return ids
}

// rotated returns the keyset with a new AES-256-GCM key added as primary,
// the old keys still enabled (so old ciphertexts decrypt), and the new
// primary's id.
func (d *dataKeys) rotated() (*dataKeys, uint32, error) {
	m := keyset.NewManagerFromHandle(d.handle)
	id, err := m.Add(aead.AES256GCMKeyTemplate())
	if err != nil {
		return nil, 0, errs.Wrap(errs.Internal, err, "broker: adding a data key")
	}
	if err := m.SetPrimary(id); err != nil {
		return nil, 0, errs.Wrap(errs.Internal, err, "broker: making the new data key primary")
	}
	h, err := m.Handle()
	if err != nil {
		return nil, 0, errs.Wrap(errs.Internal, err, "broker: building the rotated keyset")
	}
	nd, err := newDataKeys(h)
	return nd, id, err
}

// retired returns the keyset with every key but primary deleted, and how
// many keys went.
func (d *dataKeys) retired(primary uint32) (*dataKeys, int, error) {
	m := keyset.NewManagerFromHandle(d.handle)
	n := 0
	for _, id := range d.keyIDs() {
		if id == primary {
			continue
		}
		if err := m.Disable(id); err != nil {
			return nil, 0, errs.Wrap(errs.Internal, err, "broker: disabling data key %d", id)
		}
		if err := m.Delete(id); err != nil {
			return nil, 0, errs.Wrap(errs.Internal, err, "broker: deleting data key %d", id)
		}
		n++
	}
	h, err := m.Handle()
	if err != nil {
		return nil, 0, errs.Wrap(errs.Internal, err, "broker: building the retired keyset")
	}
	nd, err := newDataKeys(h)
	return nd, n, err
}
