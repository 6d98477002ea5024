package policy

import (
	"context"
	"database/sql"

	"github.com/tink-crypto/tink-go/v2/keyset"

	"github.com/contractual/contractual/internal/decision"
	"github.com/contractual/contractual/internal/errs"
)

// loadKeys reads the signing keyset from the store, creating it on first
// start, and returns the decision signer and the public keyset.
func loadKeys(ctx context.Context, db *sql.DB) (*decision.Signer, []byte, error) {
	h, err := loadOrCreateKeyset(ctx, db)
	if err != nil {
		return nil, nil, err
	}
	signer, err := decision.NewSigner(h)
	if err != nil {
		return nil, nil, errs.Wrap(errs.Internal, err, "policy: signing keyset")
	}
	pub, err := decision.MarshalPublic(h)
	if err != nil {
		return nil, nil, errs.Wrap(errs.Internal, err, "policy: public keyset")
	}
	return signer, pub, nil
}

// loadOrCreateKeyset returns the stored keyset. Without one it stores a
// new one; should another process have stored one first, that one wins.
func loadOrCreateKeyset(ctx context.Context, db *sql.DB) (*keyset.Handle, error) {
	var b []byte
	err := db.QueryRowContext(ctx, `SELECT value FROM meta WHERE key = ?`, keysetKey).Scan(&b)
	switch {
	case err == nil:
		h, err := decision.UnmarshalPrivate(b)
		if err != nil {
			return nil, errs.Wrap(errs.FailedPrecondition, err, "policy: the stored signing keyset is damaged")
		}
		return h, nil
	case err != sql.ErrNoRows:
		return nil, storeErr(err, "reading the signing keyset")
	}
	h, err := decision.NewKeyset()
	if err != nil {
		return nil, errs.Wrap(errs.Internal, err, "policy: creating the signing keyset")
	}
	if b, err = decision.MarshalPrivate(h); err != nil {
		return nil, errs.Wrap(errs.Internal, err, "policy: encoding the signing keyset")
	}
	if _, err := db.ExecContext(ctx, `INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO NOTHING`, keysetKey, b); err != nil {
		return nil, storeErr(err, "storing the signing keyset")
	}
	return loadOrCreateKeyset(ctx, db)
}
