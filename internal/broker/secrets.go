package broker

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	contractualv1 "github.com/contractual/contractual/contracts/gen/contractual/v1"
	"github.com/contractual/contractual/internal/errs"
	"github.com/contractual/contractual/internal/paging"
	"github.com/contractual/contractual/internal/principal"
	"github.com/contractual/contractual/internal/secret"
)

// checkName refuses a malformed secret name.
func checkName(name string) error {
	if !secret.ValidName(name) {
		return errs.E(errs.Invalid, "secret name %q is malformed: it must match %s", clip(name, 80), secret.NamePattern)
	}
	return nil
}

// checkValue refuses a value that is empty, too long, or holds a byte
// that cannot go into an HTTP header (CR, LF, NUL). Its errors say where,
// never what.
func checkValue(v []byte) error {
	switch {
	case len(v) == 0:
		return errs.E(errs.Invalid, "the secret value is empty")
	case len(v) > secret.MaxValueBytes:
		return errs.E(errs.Invalid, "the secret value is %d bytes, over the %d byte limit", len(v), secret.MaxValueBytes)
	}
	if i := bytes.IndexAny(v, "\r\n\x00"); i >= 0 {
		return errs.E(errs.Invalid, "the secret value holds a CR, LF or NUL byte at offset %d (a trailing newline from a file or a terminal?); it must fit in one HTTP header", i)
	}
	return nil
}

// owner returns the principal of ctx if it may manage secrets: one of the
// owner's paired devices.
func owner(ctx context.Context) (string, error) {
	who := principal.From(ctx)
	switch {
	case who == "":
		return "", errs.E(errs.Unauthenticated, "no principal: secrets are managed by the owner")
	case !strings.HasPrefix(who, "device:") || !principal.Valid(who):
		return "", errs.E(errs.PermissionDenied, "%s may not manage secrets: only the owner's paired devices may", clip(who, 100))
	}
	return who, nil
}

// PutSecret stores value as a new version of the secret (the owner).
func (s *Service) PutSecret(ctx context.Context, req *contractualv1.PutSecretRequest) (*contractualv1.PutSecretResponse, error) {
	who, err := owner(ctx)
	if err != nil {
		return nil, err
	}
	name := req.GetName()
	if err := checkName(name); err != nil {
		return nil, err
	}
	if err := checkValue(req.GetValue()); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.opts.Now()
	var meta *contractualv1.SecretMetadata
	err = s.inTx(ctx, func(tx *sql.Tx) error {
		var last uint32
		if err := tx.QueryRowContext(ctx, `SELECT COALESCE(MAX(version), 0) FROM secrets WHERE name = ?`, name).Scan(&last); err != nil {
			return storeErr(err, "reading secret %s", name)
		}
		version := last + 1
		ct, err := s.data.seal(name, version, req.GetValue())
		if err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO secrets (name, version, ciphertext, created_at) VALUES (?, ?, ?, ?)`,
			name, version, ct, now.UnixNano()); err != nil {
			return storeErr(err, "storing secret %s", name)
		}
		if meta, err = metadata(ctx, tx, name); err != nil {
			return err
		}
		return s.audit(ctx, event(actionPut, who, fmt.Sprintf("secret %s version %d", name, version)))
	})
	if err != nil {
		return nil, err
	}
	return &contractualv1.PutSecretResponse{Secret: meta}, nil
}

// prefixRE is a name prefix: the characters of secret names.
var prefixRE = regexp.MustCompile(`^[A-Z0-9_]{0,64}$`)

// ListSecrets lists secrets' metadata by name, a page at a time (see
// internal/paging), only those whose name starts with the request's prefix
// if it is set (the owner). A page costs O(page) on the primary key.
func (s *Service) ListSecrets(ctx context.Context, req *contractualv1.ListSecretsRequest) (*contractualv1.ListSecretsResponse, error) {
	if _, err := owner(ctx); err != nil {
		return nil, err
	}
	prefix := req.GetNamePrefix()
	if !prefixRE.MatchString(prefix) {
		return nil, errs.E(errs.Invalid, "name_prefix %q is not the start of a secret name (uppercase letters, digits and \"_\")", clip(prefix, 80))
	}
	n, err := paging.Size(req.GetPageSize())
	if err != nil {
		return nil, err
	}
	var after string
	if _, err := paging.Decode(req.GetPageToken(), "secrets", prefix, &after); err != nil {
		return nil, err
	}
	// Every name character sorts below "\x7f".
	rows, err := s.db.QueryContext(ctx, metadataQuery+` WHERE s.name > ? AND s.name >= ? AND s.name < ?
		GROUP BY s.name ORDER BY s.name LIMIT ?`, after, prefix, prefix+"\x7f", n+1)
	if err != nil {
		return nil, storeErr(err, "listing secrets")
	}
	defer rows.Close()
	out := &contractualv1.ListSecretsResponse{}
	for rows.Next() {
		if len(out.Secrets) == n {
			out.NextPageToken = paging.Encode("secrets", prefix, out.Secrets[n-1].GetName())
			break
		}
		m, err := scanMetadata(rows)
		if err != nil {
			return nil, storeErr(err, "listing secrets")
		}
		out.Secrets = append(out.Secrets, m)
	}
	if err := rows.Err(); err != nil {
		return nil, storeErr(err, "listing secrets")
	}
	return out, nil
}

// DeleteSecret deletes every version of a secret (the owner).
func (s *Service) DeleteSecret(ctx context.Context, req *contractualv1.DeleteSecretRequest) (*contractualv1.DeleteSecretResponse, error) {
	who, err := owner(ctx)
	if err != nil {
		return nil, err
	}
	name := req.GetName()
	if err := checkName(name); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	err = s.inTx(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `DELETE FROM secrets WHERE name = ?`, name)
		if err != nil {
			return storeErr(err, "deleting secret %s", name)
		}
		n, err := res.RowsAffected()
		if err != nil {
			return storeErr(err, "deleting secret %s", name)
		}
		if n == 0 {
			return errs.E(errs.NotFound, "no secret %s", name)
		}
		if _, err := tx.ExecContext(ctx, `DELETE FROM usage WHERE name = ?`, name); err != nil {
			return storeErr(err, "deleting secret %s", name)
		}
		return s.audit(ctx, event(actionDelete, who, fmt.Sprintf("secret %s, %d versions", name, n)))
	})
	if err != nil {
		return nil, err
	}
	return &contractualv1.DeleteSecretResponse{}, nil
}

// RotateKey adds a data key, makes it primary, re-encrypts every secret
// version with it and retires the old keys, all in one transaction: the
// store never holds a ciphertext under a key its keyset lacks (the owner).
func (s *Service) RotateKey(ctx context.Context, _ *contractualv1.RotateKeyRequest) (*contractualv1.RotateKeyResponse, error) {
	who, err := owner(ctx)
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	both, primary, err := s.data.rotated()
	if err != nil {
		return nil, err
	}
	final, retired, err := both.retired(primary)
	if err != nil {
		return nil, err
	}
	enc, err := final.marshal(s.kek)
	if err != nil {
		return nil, err
	}
	var n uint32
	err = s.inTx(ctx, func(tx *sql.Tx) error {
		var err error
		if n, err = reencrypt(ctx, tx, both); err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, `UPDATE meta SET value = ? WHERE key = ?`, enc, keysetKey); err != nil {
			return storeErr(err, "storing the rotated keyset")
		}
		detail := fmt.Sprintf("new primary data key %d; %d secret versions re-encrypted; %d old keys retired", primary, n, retired)
		return s.audit(ctx, event(actionRotate, who, detail))
	})
	if err != nil {
		return nil, err
	}
	s.data = final
	return &contractualv1.RotateKeyResponse{PrimaryKeyId: primary, Reencrypted: n, Retired: uint32(retired)}, nil
}

// reencrypt decrypts every secret version with d (old keys included) and
// encrypts it again under d's primary.
func reencrypt(ctx context.Context, tx *sql.Tx, d *dataKeys) (uint32, error) {
	type row struct {
		name    string
		version uint32
		ct      []byte
	}
	rows, err := tx.QueryContext(ctx, `SELECT name, version, ciphertext FROM secrets ORDER BY name, version`)
	if err != nil {
		return 0, storeErr(err, "reading secrets")
	}
	var all []row
	for rows.Next() {
		var r row
		if err := rows.Scan(&r.name, &r.version, &r.ct); err != nil {
			rows.Close()
			return 0, storeErr(err, "reading secrets")
		}
		all = append(all, r)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return 0, storeErr(err, "reading secrets")
	}
	for _, r := range all {
		v, err := d.open(r.name, r.version, r.ct)
		if err != nil {
			return 0, err
		}
		ct, err := d.seal(r.name, r.version, v)
		clear(v)
		if err != nil {
			return 0, err
		}
		if _, err := tx.ExecContext(ctx, `UPDATE secrets SET ciphertext = ? WHERE name = ? AND version = ?`, ct, r.name, r.version); err != nil {
			return 0, storeErr(err, "re-encrypting secret %s version %d", r.name, r.version)
		}
	}
	return uint32(len(all)), nil
}

// inTx runs fn in a transaction and commits it if fn succeeds.
func (s *Service) inTx(ctx context.Context, fn func(*sql.Tx) error) error {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return storeErr(err, "starting a transaction")
	}
	if err := fn(tx); err != nil {
		tx.Rollback()
		return err
	}
	if err := tx.Commit(); err != nil {
		return storeErr(err, "committing")
	}
	return nil
}

// metadataQuery selects what scanMetadata reads; callers add a WHERE or
// GROUP BY.
const metadataQuery = `SELECT s.name, MAX(s.version), MIN(s.created_at), MAX(s.created_at), u.last_used_at
FROM secrets s LEFT JOIN usage u ON u.name = s.name`

// scanner is a *sql.Row or *sql.Rows.
type scanner interface{ Scan(dest ...any) error }

// scanMetadata reads one row of metadataQuery.
func scanMetadata(row scanner) (*contractualv1.SecretMetadata, error) {
	var (
		name             string
		version          uint32
		created, updated int64
		used             sql.NullInt64
	)
	if err := row.Scan(&name, &version, &created, &updated, &used); err != nil {
		return nil, err
	}
	m := &contractualv1.SecretMetadata{
		Name:      name,
		Version:   version,
		CreatedAt: timestamppb.New(time.Unix(0, created)),
		UpdatedAt: timestamppb.New(time.Unix(0, updated)),
	}
	if used.Valid {
		m.LastUsedAt = timestamppb.New(time.Unix(0, used.Int64))
	}
	return m, nil
}

// querier is a *sql.DB or a *sql.Tx.
type querier interface {
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

// metadata reads one secret's metadata; errs.NotFound if it has none.
func metadata(ctx context.Context, q querier, name string) (*contractualv1.SecretMetadata, error) {
	m, err := scanMetadata(q.QueryRowContext(ctx, metadataQuery+` WHERE s.name = ? GROUP BY s.name`, name))
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return nil, errs.E(errs.NotFound, "no secret %s", name)
	case err != nil:
		return nil, storeErr(err, "reading secret %s", name)
	}
	return m, nil
}

// latest reads the newest version of secret name and its ciphertext;
// errs.NotFound if there is none.
func latest(ctx context.Context, q querier, name string) (uint32, []byte, error) {
	var (
		version uint32
		ct      []byte
	)
	err := q.QueryRowContext(ctx, `SELECT version, ciphertext FROM secrets WHERE name = ? ORDER BY version DESC LIMIT 1`, name).Scan(&version, &ct)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return 0, nil, errs.E(errs.NotFound, "no secret %s", name)
	case err != nil:
		return 0, nil, storeErr(err, "reading secret %s", name)
	}
	return version, ct, nil
}
