package audit

import (
	"context"
	"math"
	"slices"

	"google.golang.org/protobuf/proto"

	contractualv1 "github.com/contractual/contractual/contracts/gen/contractual/v1"
	"github.com/contractual/contractual/internal/errs"
)

// Tail limits.
const (
	// DefaultTailLimit is how many events Tail returns when asked for 0.
	DefaultTailLimit = 50
	// MaxTailLimit is the most events one Tail returns.
	MaxTailLimit = 1000
)

// Tail returns the newest events with an index greater than after, at most
// limit of them (0 means DefaultTailLimit; more than MaxTailLimit is
// clamped), oldest first, each with its index, time and chain hash. A
// follower that passes the last index it saw knows it missed events when
// the first one returned is not that index + 1.
func (s *Store) Tail(ctx context.Context, after uint64, limit int) ([]*contractualv1.AuditEvent, error) {
	if s.isClosed() {
		return nil, errClosed()
	}
	switch {
	case limit <= 0:
		limit = DefaultTailLimit
	case limit > MaxTailLimit:
		limit = MaxTailLimit
	}
	if after >= math.MaxInt64 {
		return nil, nil
	}
	rows, err := s.rdb.QueryContext(ctx,
		`SELECT enc, hash FROM events WHERE idx > ? ORDER BY idx DESC LIMIT ?`, int64(after), limit)
	if err != nil {
		return nil, errs.Wrap(errs.Unavailable, err, "audit: tail")
	}
	defer rows.Close()
	var out []*contractualv1.AuditEvent
	for rows.Next() {
		var enc, hash []byte
		if err := rows.Scan(&enc, &hash); err != nil {
			return nil, errs.Wrap(errs.Unavailable, err, "audit: tail")
		}
		e, err := decodeEvent(enc)
		if err != nil {
			return nil, errs.Wrap(errs.FailedPrecondition, err, "audit: an event does not decode; run verify")
		}
		e.Hash = hash
		out = append(out, e)
	}
	if err := rows.Err(); err != nil {
		return nil, errs.Wrap(errs.Unavailable, err, "audit: tail")
	}
	slices.Reverse(out)
	return out, nil
}

// decodeEvent decodes a stored encoding, with its digests as strings.
func decodeEvent(enc []byte) (*contractualv1.AuditEvent, error) {
	e := new(contractualv1.AuditEvent)
	if err := proto.Unmarshal(enc, e); err != nil {
		return nil, err
	}
	expand(e)
	return e, nil
}
