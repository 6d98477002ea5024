package scheduler

import (
	"context"
	"database/sql"
	"time"

	"github.com/contractual/contractual/internal/errs"
	"github.com/contractual/contractual/internal/sqlitestore"
)

// schema is the scheduler's store. Times are Unix nanoseconds, UTC.
//
// triggers holds one row per approved job with a trigger to fire: the
// version's digest, its trigger in words, the next fire time (NULL when a
// one-shot trigger is done, and for webhooks), the last fire time enqueued,
// and through: every fire time at or before it has been dealt with (fired,
// skipped or dropped), the mark the misfire policy counts from.
//
// deliveries holds the webhook deliveries seen, until their replay window
// has passed.
const schema = `
CREATE TABLE IF NOT EXISTS triggers (
	job_id     TEXT PRIMARY KEY,
	digest     TEXT NOT NULL,
	trigger    TEXT NOT NULL,
	next_due   INTEGER,
	last_fired INTEGER,
	through    INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS deliveries (
	job_id      TEXT NOT NULL,
	delivery_id TEXT NOT NULL,
	expires     INTEGER NOT NULL,
	PRIMARY KEY (job_id, delivery_id)
);
CREATE INDEX IF NOT EXISTS deliveries_by_expiry ON deliveries (expires);
`

const schemaVersion = 1

func openDB(ctx context.Context, dir string) (*sql.DB, error) {
	return sqlitestore.Open(ctx, sqlitestore.Config{
		Service: "scheduler", Dir: dir, File: "scheduler.db", Schema: schema, Version: schemaVersion,
	})
}

func storeErr(err error, format string, args ...any) error {
	return errs.Wrap(errs.Unavailable, err, "scheduler: "+format, args...)
}

// nanos is t as stored; a zero t is NULL.
func nanos(t time.Time) any {
	if t.IsZero() {
		return nil
	}
	return t.UnixNano()
}

// fromNanos reads a stored time.
func fromNanos(n sql.NullInt64) time.Time {
	if !n.Valid {
		return time.Time{}
	}
	return time.Unix(0, n.Int64).UTC()
}

// loadTriggers reads every stored trigger state, by job id. The entries
// have no trigger yet: the feed's snapshot brings the jobs.
func loadTriggers(ctx context.Context, db *sql.DB) (map[string]*entry, error) {
	rows, err := db.QueryContext(ctx, `SELECT job_id, digest, next_due, last_fired, through FROM triggers`)
	if err != nil {
		return nil, storeErr(err, "reading the triggers")
	}
	defer rows.Close()
	out := map[string]*entry{}
	for rows.Next() {
		e := &entry{index: -1}
		var next, last, through sql.NullInt64
		if err := rows.Scan(&e.id, &e.digest, &next, &last, &through); err != nil {
			return nil, storeErr(err, "reading the triggers")
		}
		e.next, e.lastFired, e.through = fromNanos(next), fromNanos(last), fromNanos(through)
		out[e.id] = e
	}
	if err := rows.Err(); err != nil {
		return nil, storeErr(err, "reading the triggers")
	}
	return out, nil
}

// saveTriggers writes es' states and deletes the rows of gone, in one
// transaction.
func (s *Service) saveTriggers(ctx context.Context, es []*entry, gone []string) error {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return storeErr(err, "recording triggers")
	}
	defer tx.Rollback()
	if len(es) > 0 {
		stmt, err := tx.PrepareContext(ctx, `INSERT INTO triggers (job_id, digest, trigger, next_due, last_fired, through)
			VALUES (?, ?, ?, ?, ?, ?)
			ON CONFLICT (job_id) DO UPDATE SET digest = excluded.digest, trigger = excluded.trigger,
				next_due = excluded.next_due, last_fired = excluded.last_fired, through = excluded.through`)
		if err != nil {
			return storeErr(err, "recording triggers")
		}
		defer stmt.Close()
		for _, e := range es {
			if _, err := stmt.ExecContext(ctx, e.id, e.digest, e.describe, nanos(e.next), nanos(e.lastFired), e.through.UnixNano()); err != nil {
				return storeErr(err, "recording the trigger of job %s", e.id)
			}
		}
	}
	for _, id := range gone {
		if _, err := tx.ExecContext(ctx, `DELETE FROM triggers WHERE job_id = ?`, id); err != nil {
			return storeErr(err, "forgetting the trigger of job %s", id)
		}
	}
	if err := tx.Commit(); err != nil {
		return storeErr(err, "recording triggers")
	}
	return nil
}

// claimDelivery records a webhook delivery of job until expires, after
// forgetting the expired ones; false if it is already recorded.
func (s *Service) claimDelivery(ctx context.Context, job, delivery string, now, expires time.Time) (bool, error) {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return false, storeErr(err, "recording a delivery")
	}
	defer tx.Rollback()
	if _, err := tx.ExecContext(ctx, `DELETE FROM deliveries WHERE expires <= ?`, now.UnixNano()); err != nil {
		return false, storeErr(err, "pruning deliveries")
	}
	res, err := tx.ExecContext(ctx, `INSERT INTO deliveries (job_id, delivery_id, expires) VALUES (?, ?, ?)
		ON CONFLICT DO NOTHING`, job, delivery, expires.UnixNano())
	if err != nil {
		return false, storeErr(err, "recording a delivery")
	}
	n, err := res.RowsAffected()
	if err != nil {
		return false, storeErr(err, "recording a delivery")
	}
	if err := tx.Commit(); err != nil {
		return false, storeErr(err, "recording a delivery")
	}
	return n == 1, nil
}

// releaseDelivery forgets a delivery whose run could not be enqueued, so
// that the sender may retry it.
func (s *Service) releaseDelivery(ctx context.Context, job, delivery string) error {
	if _, err := s.db.ExecContext(ctx, `DELETE FROM deliveries WHERE job_id = ? AND delivery_id = ?`, job, delivery); err != nil {
		return storeErr(err, "forgetting a delivery")
	}
	return nil
}
