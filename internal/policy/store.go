package policy

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/contractual/contractual/contracts/contract"
	contractualv1 "github.com/contractual/contractual/contracts/gen/contractual/v1"
	"github.com/contractual/contractual/internal/errs"
	"github.com/contractual/contractual/internal/sqlitestore"
)

// DBFile is the name of policy's SQLite store inside its directory.
const DBFile = "policy.db"

// schemaVersion is stored in PRAGMA user_version. Version 2 added the
// jobs' tables (jobSchema) and version 3 the call approvals
// (callApprovalSchema), created in an older store at its next start.
const schemaVersion = 3

// schema is policy's store. Contracts are kept as the canonical encoding of
// their normal form (the bytes their digest hashes); seq is the publish
// order, and the key that ListContracts pages by (newest first), on its
// own or after a name or a state (the indexes). The partial unique index
// makes "one approved contract per name" a property of the store, not only
// of the code.
const schema = `
CREATE TABLE IF NOT EXISTS meta (
	key   TEXT PRIMARY KEY,
	value BLOB NOT NULL
) STRICT;
CREATE TABLE IF NOT EXISTS modules (
	digest    TEXT PRIMARY KEY,
	wasm      BLOB NOT NULL,
	stored_at INTEGER NOT NULL
) STRICT;
CREATE TABLE IF NOT EXISTS contracts (
	seq          INTEGER PRIMARY KEY,
	digest       TEXT NOT NULL UNIQUE,
	name         TEXT NOT NULL,
	module       TEXT NOT NULL REFERENCES modules(digest),
	contract     BLOB NOT NULL,
	state        INTEGER NOT NULL,
	published_by TEXT NOT NULL,
	published_at INTEGER NOT NULL,
	decided_by   TEXT NOT NULL DEFAULT '',
	decided_at   INTEGER,
	reason       TEXT NOT NULL DEFAULT ''
) STRICT;
CREATE INDEX IF NOT EXISTS contracts_by_name ON contracts(name, seq);
CREATE INDEX IF NOT EXISTS contracts_by_state ON contracts(state, seq);
CREATE UNIQUE INDEX IF NOT EXISTS contracts_one_approved ON contracts(name) WHERE state = 2;
`

// keysetKey is the meta key of the signing keyset.
const keysetKey = "signing_keyset"

// openDB opens policy's own store (policy.db in dir) and creates the schema.
func openDB(ctx context.Context, dir string) (*sql.DB, error) {
	return sqlitestore.Open(ctx, sqlitestore.Config{
		Service: "policy", Dir: dir, File: DBFile,
		Schema: schema + jobSchema + callApprovalSchema, Version: schemaVersion,
		Pragmas: []string{"foreign_keys(1)"},
	})
}

// querier is a *sql.DB or a *sql.Tx.
type querier interface {
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
}

// recordColumns are the columns scanRecord reads, in order.
const recordColumns = `digest, contract, state, published_by, published_at, decided_by, decided_at, reason`

// scanner is a *sql.Row or *sql.Rows.
type scanner interface{ Scan(dest ...any) error }

// scanRecord reads one row of recordColumns.
func scanRecord(row scanner) (*contractualv1.ContractRecord, error) {
	var (
		digest, by, decidedBy, reason string
		enc                           []byte
		state                         int32
		at                            int64
		decidedAt                     sql.NullInt64
	)
	if err := row.Scan(&digest, &enc, &state, &by, &at, &decidedBy, &decidedAt, &reason); err != nil {
		return nil, err
	}
	c := new(contractualv1.Contract)
	if err := proto.Unmarshal(enc, c); err != nil {
		return nil, errs.Wrap(errs.Internal, err, "policy: contract %s is damaged in the store", digest)
	}
	rec := &contractualv1.ContractRecord{
		Digest:      digest,
		Contract:    c,
		State:       contractualv1.ContractState(state),
		PublishedBy: by,
		PublishedAt: timestamppb.New(time.Unix(0, at)),
		DecidedBy:   decidedBy,
		Reason:      reason,
	}
	if decidedAt.Valid {
		rec.DecidedAt = timestamppb.New(time.Unix(0, decidedAt.Int64))
	}
	return rec, nil
}

// getRecord reads the contract with digest; errs.NotFound if there is none.
func getRecord(ctx context.Context, q querier, digest string) (*contractualv1.ContractRecord, error) {
	row := q.QueryRowContext(ctx, `SELECT `+recordColumns+` FROM contracts WHERE digest = ?`, digest)
	rec, err := scanRecord(row)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return nil, errs.E(errs.NotFound, "no contract %s", digest)
	case err != nil:
		return nil, storeErr(err, "reading contract %s", digest)
	}
	return rec, nil
}

// queryRecords runs a query selecting recordColumns and reads every row.
func queryRecords(ctx context.Context, q querier, query string, args ...any) ([]*contractualv1.ContractRecord, error) {
	rows, err := q.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, storeErr(err, "listing contracts")
	}
	defer rows.Close()
	var out []*contractualv1.ContractRecord
	for rows.Next() {
		rec, err := scanRecord(rows)
		if err != nil {
			return nil, storeErr(err, "listing contracts")
		}
		out = append(out, rec)
	}
	if err := rows.Err(); err != nil {
		return nil, storeErr(err, "listing contracts")
	}
	return out, nil
}

// listRecords lists contracts newest first, filtered by name and state
// when they are set.
func listRecords(ctx context.Context, q querier, name string, state contractualv1.ContractState) ([]*contractualv1.ContractRecord, error) {
	return queryRecords(ctx, q, `SELECT `+recordColumns+` FROM contracts
		WHERE (?1 = '' OR name = ?1) AND (?2 = 0 OR state = ?2)
		ORDER BY seq DESC`, name, int32(state))
}

// listFilter selects contracts for ListContracts; the zero value selects
// every one.
type listFilter struct {
	// name is a contract name; prefix a start of one (of nameChars).
	name, prefix string
	// export, if set, keeps the contracts with a tool of that export.
	export string
	state  contractualv1.ContractState
}

// pageRecords returns up to n contracts matching f, newest first, starting
// after the contract with publish order after (0: from the newest); more
// tells whether another follows. A page costs O(n) on the indexes, but for
// a name prefix (the matching contracts are sorted) and an export (the
// contracts of the name are read until n match).
func pageRecords(ctx context.Context, q querier, f listFilter, after int64, n int) (recs []*contractualv1.ContractRecord, last int64, more bool, err error) {
	where, args := "TRUE", []any{}
	if after > 0 {
		where, args = "seq < ?", append(args, after)
	}
	if f.name != "" {
		where, args = where+" AND name = ?", append(args, f.name)
	}
	if f.prefix != "" {
		// Every name character sorts below "\x7f" (nameChars).
		where, args = where+" AND name >= ? AND name < ?", append(args, f.prefix, f.prefix+"\x7f")
	}
	if f.state != contractualv1.ContractState_CONTRACT_STATE_UNSPECIFIED {
		where, args = where+" AND state = ?", append(args, int32(f.state))
	}
	limit := ""
	if f.export == "" {
		limit = fmt.Sprintf(" LIMIT %d", n+1)
	}
	rows, err := q.QueryContext(ctx, `SELECT seq, `+recordColumns+` FROM contracts WHERE `+where+` ORDER BY seq DESC`+limit, args...)
	if err != nil {
		return nil, 0, false, storeErr(err, "listing contracts")
	}
	defer rows.Close()
	for rows.Next() {
		var seq int64
		rec, err := scanRecord(seqScanner{rows, &seq})
		if err != nil {
			return nil, 0, false, storeErr(err, "listing contracts")
		}
		if f.export != "" && !hasExport(rec.GetContract(), f.export) {
			continue
		}
		if len(recs) == n {
			return recs, last, true, nil
		}
		recs, last = append(recs, rec), seq
	}
	if err := rows.Err(); err != nil {
		return nil, 0, false, storeErr(err, "listing contracts")
	}
	return recs, last, false, nil
}

// seqScanner reads a row of seq and recordColumns: seq, then what
// scanRecord reads.
type seqScanner struct {
	row scanner
	seq *int64
}

func (s seqScanner) Scan(dest ...any) error { return s.row.Scan(append([]any{s.seq}, dest...)...) }

// hasExport reports whether c has a tool of export.
func hasExport(c *contractualv1.Contract, export string) bool {
	for _, t := range c.GetTools() {
		if t.GetExport() == export {
			return true
		}
	}
	return false
}

// approvedRecord returns the approved contract named name, or nil.
func approvedRecord(ctx context.Context, q querier, name string) (*contractualv1.ContractRecord, error) {
	recs, err := queryRecords(ctx, q, `SELECT `+recordColumns+` FROM contracts WHERE name = ? AND state = ?`,
		name, int32(contractualv1.ContractState_CONTRACT_STATE_APPROVED))
	if err != nil || len(recs) == 0 {
		return nil, err
	}
	return recs[0], nil
}

// latestRecord returns the newest contract named name, or nil.
func latestRecord(ctx context.Context, q querier, name string) (*contractualv1.ContractRecord, error) {
	recs, err := queryRecords(ctx, q, `SELECT `+recordColumns+` FROM contracts WHERE name = ? ORDER BY seq DESC LIMIT 1`, name)
	if err != nil || len(recs) == 0 {
		return nil, err
	}
	return recs[0], nil
}

// insertModule stores wasm under digest unless it is there already.
func insertModule(ctx context.Context, tx *sql.Tx, digest string, wasm []byte, now time.Time) error {
	_, err := tx.ExecContext(ctx, `INSERT INTO modules (digest, wasm, stored_at) VALUES (?, ?, ?)
		ON CONFLICT (digest) DO NOTHING`, digest, wasm, now.UnixNano())
	return storeErr(err, "storing module %s", digest)
}

// insertContract stores a new record; enc is the contract's canonical
// encoding.
func insertContract(ctx context.Context, tx *sql.Tx, rec *contractualv1.ContractRecord, enc []byte) error {
	c := rec.GetContract()
	_, err := tx.ExecContext(ctx, `INSERT INTO contracts
		(digest, name, module, contract, state, published_by, published_at)
		VALUES (?, ?, ?, ?, ?, ?, ?)`,
		rec.GetDigest(), c.GetName(), c.GetModule(), enc, int32(rec.GetState()),
		rec.GetPublishedBy(), rec.GetPublishedAt().AsTime().UnixNano())
	return storeErr(err, "storing contract %s", rec.GetDigest())
}

// updateState moves the contract digest from state from to rec's state,
// decision and reason. It fails unless exactly that row was in from.
func updateState(ctx context.Context, tx *sql.Tx, rec *contractualv1.ContractRecord, from contractualv1.ContractState) error {
	res, err := tx.ExecContext(ctx, `UPDATE contracts SET state = ?, decided_by = ?, decided_at = ?, reason = ?
		WHERE digest = ? AND state = ?`,
		int32(rec.GetState()), rec.GetDecidedBy(), rec.GetDecidedAt().AsTime().UnixNano(), rec.GetReason(),
		rec.GetDigest(), int32(from))
	if err != nil {
		return storeErr(err, "updating contract %s", rec.GetDigest())
	}
	if n, err := res.RowsAffected(); err != nil || n != 1 {
		return errs.E(errs.Internal, "policy: contract %s was not %s when updated", rec.GetDigest(), stateName(from))
	}
	return nil
}

// getModule reads a module's bytes; errs.NotFound if there is none.
func getModule(ctx context.Context, q querier, digest string) ([]byte, error) {
	var wasm []byte
	err := q.QueryRowContext(ctx, `SELECT wasm FROM modules WHERE digest = ?`, digest).Scan(&wasm)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return nil, errs.E(errs.NotFound, "no module %s", digest)
	case err != nil:
		return nil, storeErr(err, "reading module %s", digest)
	}
	return wasm, nil
}

// storeErr wraps a store failure as errs.Unavailable; nil stays nil.
func storeErr(err error, format string, args ...any) error {
	if err == nil {
		return nil
	}
	var e *errs.Error
	if errors.As(err, &e) {
		return err
	}
	return errs.Wrap(errs.Unavailable, err, "policy store: "+format, args...)
}

// checkStored checks that a stored contract still hashes to its digest, so
// that a damaged or edited store cannot make policy approve or run what the
// owner did not see.
func checkStored(rec *contractualv1.ContractRecord) error {
	d, err := contract.Digest(rec.GetContract())
	if err != nil || d != rec.GetDigest() {
		return errs.E(errs.FailedPrecondition, "policy: contract %s in the store does not hash to its digest (got %s): the store is damaged", rec.GetDigest(), d)
	}
	return nil
}
