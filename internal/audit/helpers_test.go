package audit

import (
	"context"
	"database/sql"
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	contractualv1 "github.com/contractual/contractual/contracts/gen/contractual/v1"
	"github.com/contractual/contractual/internal/errs"
)

// newStore opens a store in a fresh directory and closes it at cleanup.
func newStore(t testing.TB, opts Options) (*Store, string) {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "audit")
	s, err := Open(context.Background(), dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close(context.Background()) })
	return s, dir
}

// event returns a plausible event numbered n.
func event(n int) *contractualv1.AuditEvent {
	return &contractualv1.AuditEvent{
		Service:        "runner",
		Principal:      "device:laptop",
		Action:         "call.run",
		Outcome:        "ok",
		ContractDigest: "sha256:" + strings.Repeat("c", 64),
		ModuleDigest:   "sha256:" + strings.Repeat("d", 64),
		Tool:           "textkit.slugify",
		InputHash:      "sha256:" + strings.Repeat("1", 64),
		OutputHash:     "sha256:" + strings.Repeat("2", 64),
		Egress: []*contractualv1.EgressRecord{{
			Method: "GET", Url: "https://api.example.com/v1/items", Status: 200, Bytes: 512, Allowed: true,
		}},
		DurationUs: 1234,
		DecisionId: fmt.Sprintf("d-%d", n),
		Detail:     fmt.Sprintf("event %d", n),
	}
}

// appendN appends events from+1..from+n one call of batch events at a time.
func appendN(t testing.TB, s *Store, from, n, batch int) {
	t.Helper()
	for i := from; i < from+n; i += batch {
		var evs []*contractualv1.AuditEvent
		for j := i; j < min(i+batch, from+n); j++ {
			evs = append(evs, event(j+1))
		}
		idxs, err := s.Append(context.Background(), evs)
		if err != nil {
			t.Fatal(err)
		}
		if idxs[0] != uint64(i+1) {
			t.Fatalf("append got index %d, want %d", idxs[0], i+1)
		}
	}
}

// mustVerify fails unless the store verifies with n events.
func mustVerify(t testing.TB, s *Store, n uint64) *contractualv1.VerifyResponse {
	t.Helper()
	res, err := s.Verify(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if !res.GetOk() || res.GetEvents() != n {
		t.Fatalf("verify: %v, want ok with %d events", res, n)
	}
	return res
}

// rawDB opens the log the way an attacker with the file would: a plain
// connection, with the guard triggers dropped.
func rawDB(t testing.TB, dir string) *sql.DB {
	t.Helper()
	db, err := sql.Open("sqlite", filepath.Join(dir, DBFile)+"?_pragma=busy_timeout(5000)")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

// dropTriggers drops every trigger, as an attacker can.
func dropTriggers(t testing.TB, db *sql.DB) {
	t.Helper()
	for _, n := range []string{"events_no_update", "events_no_delete", "checkpoints_no_update", "checkpoints_no_delete"} {
		mustExec(t, db, `DROP TRIGGER `+n)
	}
}

// mustExec runs a statement or fails the test.
func mustExec(t testing.TB, db *sql.DB, q string, args ...any) {
	t.Helper()
	if _, err := db.Exec(q, args...); err != nil {
		t.Fatalf("%s: %v", q, err)
	}
}

// row is one events row.
type row struct {
	idx  int64
	enc  []byte
	hash []byte
}

// readRow reads the events row at idx.
func readRow(t testing.TB, db *sql.DB, idx int64) row {
	t.Helper()
	r := row{idx: idx}
	if err := db.QueryRow(`SELECT enc, hash FROM events WHERE idx = ?`, idx).Scan(&r.enc, &r.hash); err != nil {
		t.Fatalf("reading row %d: %v", idx, err)
	}
	return r
}

// decodeRow decodes a row's event.
func decodeRow(t testing.TB, r row) *contractualv1.AuditEvent {
	t.Helper()
	e, err := decodeEvent(r.enc)
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// wantKind fails unless err has kind k.
func wantKind(t testing.TB, err error, k errs.Kind) {
	t.Helper()
	if err == nil || errs.KindOf(err) != k {
		t.Fatalf("got error %v (%v), want kind %v", err, errs.KindOf(err), k)
	}
}
