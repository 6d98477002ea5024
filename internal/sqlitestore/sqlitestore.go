// Package sqlitestore opens a service's own SQLite store: one file in the
// service's directory (0700), the file itself 0600, WAL with
// synchronous=FULL so a committed write survives a crash, immediate
// transactions, and a versioned schema. Each service owns its file and
// nothing else writes it.
package sqlitestore

import (
	"context"
	"database/sql"
	"fmt"
	"net/url"
	"os"
	"path/filepath"

	_ "modernc.org/sqlite" // the pure-Go driver, registered as "sqlite"

	"github.com/contractual/contractual/internal/errs"
)

// Config names a store and its schema.
type Config struct {
	// Service names the owner in messages ("policy").
	Service string
	// Dir is the service's directory; File the store's name in it.
	Dir, File string
	// Schema creates the tables (idempotently); Version is its version,
	// kept in PRAGMA user_version. A store from a newer build is refused.
	Schema  string
	Version int
	// Pragmas are extra connection pragmas, e.g. "foreign_keys(1)".
	Pragmas []string
	// MaxConns bounds the pool (default 4).
	MaxConns int
}

// Open creates the directory and file if needed, opens the store and
// creates its schema.
func Open(ctx context.Context, c Config) (*sql.DB, error) {
	path, err := PrepareFile(c.Service, c.Dir, c.File)
	if err != nil {
		return nil, err
	}
	params := url.Values{
		"_pragma": append([]string{"busy_timeout(5000)", "journal_mode(WAL)", "synchronous(FULL)"}, c.Pragmas...),
		"_txlock": {"immediate"},
	}
	dsn := (&url.URL{Scheme: "file", Path: path, RawQuery: params.Encode()}).String()
	db, err := sql.Open("sqlite", dsn)
	if err != nil {
		return nil, errs.Wrap(errs.Unavailable, err, "%s: opening %s", c.Service, path)
	}
	n := c.MaxConns
	if n <= 0 {
		n = 4
	}
	db.SetMaxOpenConns(n)
	db.SetMaxIdleConns(n)
	db.SetConnMaxLifetime(0)
	if err := schema(ctx, db, c); err != nil {
		db.Close()
		return nil, err
	}
	return db, nil
}

// PrepareFile makes dir (0700) and the store file in it (0600), for a store
// that opens its connections itself, and returns the file's absolute path;
// service names the owner in messages.
func PrepareFile(service, dir, file string) (string, error) {
	if dir == "" {
		return "", errs.E(errs.Invalid, "%s: no directory", service)
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return "", errs.Wrap(errs.Invalid, err, "%s: directory %q", service, dir)
	}
	if err := os.MkdirAll(abs, 0o700); err != nil {
		return "", errs.Wrap(errs.Unavailable, err, "%s: creating %s", service, abs)
	}
	path := filepath.Join(abs, file)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return "", errs.Wrap(errs.Unavailable, err, "%s: opening %s", service, path)
	}
	defer f.Close()
	if err := f.Chmod(0o600); err != nil {
		return "", errs.Wrap(errs.Unavailable, err, "%s: chmod %s", service, path)
	}
	return path, nil
}

// schema creates the tables and checks the schema version.
func schema(ctx context.Context, db *sql.DB, c Config) error {
	var v int
	if err := db.QueryRowContext(ctx, `PRAGMA user_version`).Scan(&v); err != nil {
		return errs.Wrap(errs.Unavailable, err, "%s: reading the schema version", c.Service)
	}
	if v > c.Version {
		return errs.E(errs.FailedPrecondition, "%s: the store has schema version %d; this build knows %d", c.Service, v, c.Version)
	}
	stmt := c.Schema + fmt.Sprintf("PRAGMA user_version = %d;", c.Version)
	if _, err := db.ExecContext(ctx, stmt); err != nil {
		return errs.Wrap(errs.Unavailable, err, "%s: creating the schema", c.Service)
	}
	return nil
}
