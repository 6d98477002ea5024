package pairing

import (
	"context"
	"fmt"
	"strings"
)

// Cursor is where a page of devices or requests starts: after the row
// paired (or created) at At with rowid Row. Rows are listed in that order,
// which the indexes devices_by_paired and requests_by_created serve.
type Cursor struct {
	At  int64 `json:"a"`
	Row int64 `json:"r"`
}

// DeviceState selects devices by where they are in their life.
type DeviceState int

// The device states; DeviceAny selects every device.
const (
	DeviceAny DeviceState = iota
	// DeviceActive is neither revoked nor expired.
	DeviceActive
	// DeviceRevoked is revoked.
	DeviceRevoked
	// DeviceExpired is expired and not revoked.
	DeviceExpired
)

// DeviceFilter selects devices; the zero value selects every one.
type DeviceFilter struct {
	State DeviceState
	// Scope, if set, keeps the devices whose scopes include it, expanded
	// (see Scopes.Has): ScopeRead keeps read, approve and owner devices.
	Scope Scopes
}

// where returns f's SQL condition on devices and its arguments, at now.
func (f DeviceFilter) where(now int64) (string, []any) {
	var conds []string
	var args []any
	switch f.State {
	case DeviceActive:
		conds, args = append(conds, activeClause), append(args, now)
	case DeviceRevoked:
		conds = append(conds, `revoked_at IS NOT NULL`)
	case DeviceExpired:
		conds, args = append(conds, `(revoked_at IS NULL AND expires_at <= ?)`), append(args, now)
	}
	if f.Scope != 0 {
		// The stored scope is a comma-separated list of names.
		var holders []string
		for i, n := range scopeNames {
			if Scopes(1 << i).Has(f.Scope) {
				holders, args = append(holders, `instr(',' || scope || ',', ?) > 0`), append(args, ","+n+",")
			}
		}
		conds = append(conds, "("+strings.Join(holders, " OR ")+")")
	}
	if len(conds) == 0 {
		return "TRUE", nil
	}
	return strings.Join(conds, " AND "), args
}

// afterClause is the keyset condition "after the cursor (?, ?)" on a
// table's time column and rowid.
func afterClause(column string) string {
	return fmt.Sprintf(`(%s, rowid) > (?, ?)`, column)
}

// DevicePage returns up to n devices (every one if n < 0) that match f, in
// pairing order, after the cursor after (nil: from the first), and the
// cursor of the last one if more follow. A page costs O(n) on the index, but
// for the rows that the filter skips.
func (s *Store) DevicePage(ctx context.Context, f DeviceFilter, after *Cursor, n int) ([]Device, *Cursor, error) {
	where, args := f.where(nanos(s.now()))
	if after != nil {
		where, args = where+" AND "+afterClause("paired_at"), append(args, after.At, after.Row)
	}
	rows, err := s.db.QueryContext(ctx, `SELECT rowid, id, name, pub, scope, kind, paired_at, approved_by, revoked_at, revoked_by, last_used_at, expires_at, tailnet_peer
		FROM devices WHERE `+where+` ORDER BY paired_at, rowid`+limit(n), args...)
	if err != nil {
		return nil, nil, storeErr(err, "listing devices")
	}
	defer rows.Close()
	var (
		out  []Device
		last Cursor
	)
	for rows.Next() {
		if len(out) == n {
			return out, &last, nil
		}
		var row int64
		d, err := scanDevice(rowScanner{rows, &row})
		if err != nil {
			return nil, nil, err
		}
		out, last = append(out, d), Cursor{At: nanos(d.PairedAt), Row: row}
	}
	if err := rows.Err(); err != nil {
		return nil, nil, storeErr(err, "listing devices")
	}
	return out, nil, nil
}

// Devices lists every device, revoked ones included, in pairing order.
func (s *Store) Devices(ctx context.Context) ([]Device, error) {
	ds, _, err := s.DevicePage(ctx, DeviceFilter{}, nil, -1)
	return ds, err
}

// RequestPage returns up to n live requests (every one if n < 0: pending,
// or approved and not yet completed within NonceTTL), oldest first, after
// the cursor after (nil: from the first), without nonces, and the cursor of
// the last one if more follow.
func (s *Store) RequestPage(ctx context.Context, after *Cursor, n int) ([]Request, *Cursor, error) {
	now := s.now()
	where, args := liveClause, []any{nanos(now), nanos(now.Add(-s.opts.NonceTTL))}
	if after != nil {
		where, args = where+" AND "+afterClause("created_at"), append(args, after.At, after.Row)
	}
	rows, err := s.db.QueryContext(ctx, `SELECT rowid, `+requestColumns+` FROM requests WHERE `+where+` ORDER BY created_at, rowid`+limit(n), args...)
	if err != nil {
		return nil, nil, storeErr(err, "listing requests")
	}
	defer rows.Close()
	var (
		out  []Request
		last Cursor
	)
	for rows.Next() {
		if len(out) == n {
			return out, &last, nil
		}
		var row int64
		r, err := scanRequest(rowScanner{rows, &row})
		if err != nil {
			return nil, nil, storeErr(err, "reading a request")
		}
		r.nonceHash = nil
		out, last = append(out, *r), Cursor{At: nanos(r.CreatedAt), Row: row}
	}
	if err := rows.Err(); err != nil {
		return nil, nil, storeErr(err, "listing requests")
	}
	return out, nil, nil
}

// Pending lists the live requests (pending, or approved and not yet
// completed within NonceTTL), oldest first, without nonces.
func (s *Store) Pending(ctx context.Context) ([]Request, error) {
	rs, _, err := s.RequestPage(ctx, nil, -1)
	return rs, err
}

// limit is the LIMIT clause that reads a page of n rows and tells whether
// one follows: none for n < 0.
func limit(n int) string {
	if n < 0 {
		return ""
	}
	return fmt.Sprintf(" LIMIT %d", n+1)
}

// rowScanner reads a rowid, then what its caller's scan reads.
type rowScanner struct {
	row   scanner
	rowid *int64
}

func (r rowScanner) Scan(dest ...any) error { return r.row.Scan(append([]any{r.rowid}, dest...)...) }
