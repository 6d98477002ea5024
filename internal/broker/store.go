package broker

import (
	"context"
	"database/sql"

	"github.com/contractual/contractual/internal/errs"
	"github.com/contractual/contractual/internal/sqlitestore"
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

// openDB opens broker's own store (broker.db in dir) and creates the schema.
func openDB(ctx context.Context, dir string) (*sql.DB, error) {
	return sqlitestore.Open(ctx, sqlitestore.Config{
		Service: "broker", Dir: dir, File: DBFile,
		Schema: schema, Version: schemaVersion,
		Pragmas: []string{"secure_delete(1)"},
	})
}

// storeErr wraps a store failure as errs.Unavailable.
func storeErr(err error, format string, args ...any) error {
	return errs.Wrap(errs.Unavailable, err, "broker: "+format, args...)
}
