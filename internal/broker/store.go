package broker

import (
	"context"
	"database/sql"
	"fmt"
	"net/url"
	"os"
	"path/filepath"

	_ "modernc.org/sqlite" // the "sqlite" database/sql driver

	"github.com/contractual/contractual/internal/errs"
)

// DBFile is the name of the broker's SQLite store inside its directory.
const DBFile = "broker.db"

// schemaVersion is stored in PRAGMA user_version.
const schemaVersion = 1

// schema is the broker's store. meta holds the data keyset, encrypted by
// the KEK; secrets holds one row per secret version, the value encrypted
// by the data keyset with "name|version" as associated data; usage holds
// when a secret was last released. Nothing but the broker writes it.
const schema = `
CREATE TABLE IF NOT EXISTS meta (
	key   TEXT PRIMARY KEY,
	value BLOB NOT NULL
) STRICT;
CREATE TABLE IF NOT EXISTS secrets (
	name       TEXT NOT NULL,
	version    INTEGER NOT NULL CHECK (version >= 1),
	ciphertext BLOB NOT NULL,
	created_at INTEGER NOT NULL,
	PRIMARY KEY (name, version)
) STRICT;
CREATE TABLE IF NOT EXISTS usage (
	name         TEXT PRIMARY KEY,
	last_used_at INTEGER NOT NULL
) STRICT;
`

// keysetKey is the meta key of the encrypted data keyset.
const keysetKey = "data_keyset"

// openDB creates dir (0700) and broker.db in it (0600), opens it with WAL
// and synchronous=FULL, and creates the schema.
func openDB(ctx context.Context, dir string) (*sql.DB, error) {
	path, err := prepareFile(dir)
	if err != nil {
		return nil, err
	}
	params := url.Values{
		"_pragma": {"busy_timeout(5000)", "journal_mode(WAL)", "synchronous(FULL)", "secure_delete(1)"},
		"_txlock": {"immediate"},
	}
	dsn := (&url.URL{Scheme: "file", Path: path, RawQuery: params.Encode()}).String()
	db, err := sql.Open("sqlite", dsn)
	if err != nil {
		return nil, errs.Wrap(errs.Unavailable, err, "broker: opening %s", path)
	}
	db.SetMaxOpenConns(4)
	db.SetMaxIdleConns(4)
	db.SetConnMaxLifetime(0)
	if err := createSchema(ctx, db); err != nil {
		db.Close()
		return nil, err
	}
	return db, nil
}

// prepareFile makes dir and the store file with tight permissions, and
// returns the file's absolute path.
func prepareFile(dir string) (string, error) {
	if dir == "" {
		return "", errs.E(errs.Invalid, "broker: no directory")
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return "", errs.Wrap(errs.Invalid, err, "broker: directory %q", dir)
	}
	if err := os.MkdirAll(abs, 0o700); err != nil {
		return "", errs.Wrap(errs.Unavailable, err, "broker: creating %s", abs)
	}
	path := filepath.Join(abs, DBFile)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return "", errs.Wrap(errs.Unavailable, err, "broker: opening %s", path)
	}
	defer f.Close()
	if err := f.Chmod(0o600); err != nil {
		return "", errs.Wrap(errs.Unavailable, err, "broker: chmod %s", path)
	}
	return path, nil
}

// createSchema creates the tables and checks the schema version.
func createSchema(ctx context.Context, db *sql.DB) error {
	var v int
	if err := db.QueryRowContext(ctx, `PRAGMA user_version`).Scan(&v); err != nil {
		return errs.Wrap(errs.Unavailable, err, "broker: reading the schema version")
	}
	if v > schemaVersion {
		return errs.E(errs.FailedPrecondition, "broker: the store has schema version %d; this build knows %d", v, schemaVersion)
	}
	stmt := schema + fmt.Sprintf("PRAGMA user_version = %d;", schemaVersion)
	if _, err := db.ExecContext(ctx, stmt); err != nil {
		return errs.Wrap(errs.Unavailable, err, "broker: creating the schema")
	}
	return nil
}

// storeErr wraps a store failure as errs.Unavailable.
func storeErr(err error, format string, args ...any) error {
	return errs.Wrap(errs.Unavailable, err, "broker: "+format, args...)
}
