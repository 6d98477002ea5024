package sqlitestore

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/contractual/contractual/internal/errs"
)

func TestOpen(t *testing.T) {
	ctx := context.Background()
	dir := filepath.Join(t.TempDir(), "svc")
	c := Config{Service: "svc", Dir: dir, File: "svc.db", Schema: "CREATE TABLE IF NOT EXISTS t (x INTEGER) STRICT;", Version: 2}
	db, err := Open(ctx, c)
	if err != nil {
		t.Fatal(err)
	}
	var mode, sync string
	db.QueryRow(`PRAGMA journal_mode`).Scan(&mode)
	db.QueryRow(`PRAGMA synchronous`).Scan(&sync)
	if mode != "wal" || sync != "2" { // 2 = FULL
		t.Errorf("journal_mode %s, synchronous %s", mode, sync)
	}
	db.Close()
	for path, want := range map[string]os.FileMode{dir: 0o700, filepath.Join(dir, "svc.db"): 0o600} {
		if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != want {
			t.Errorf("%s: %v %v, want %v", path, fi.Mode().Perm(), err, want)
		}
	}
	// A store written by a newer build is refused, not downgraded.
	c.Version = 1
	if _, err := Open(ctx, c); errs.KindOf(err) != errs.FailedPrecondition || !strings.Contains(err.Error(), "schema version 2") {
		t.Errorf("older build: %v", err)
	}
	if _, err := Open(ctx, Config{Service: "svc"}); errs.KindOf(err) != errs.Invalid {
		t.Errorf("no directory: %v", err)
	}
}
