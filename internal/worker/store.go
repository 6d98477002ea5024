package worker

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	contractualv1 "github.com/contractual/contractual/contracts/gen/contractual/v1"
	"github.com/contractual/contractual/internal/errs"
	"github.com/contractual/contractual/internal/sqlitestore"
)

// DBFile is the name of the worker's SQLite store inside its directory.
const DBFile = "worker.db"

// schemaVersion is stored in PRAGMA user_version.
const schemaVersion = 1

// schema is the worker's store. A run's seq is its enqueue order, the key
// ListRuns pages by; runs_due finds the next run to claim. The lease is
// lease_owner, lease_expires and lease_gen, the fencing token every write
// of a worker for the run is conditioned on. Times are Unix nanoseconds.
// A step's egress is the encoding of a StepRun holding only its egress.
const schema = `
CREATE TABLE IF NOT EXISTS runs (
	seq             INTEGER PRIMARY KEY,
	id              TEXT NOT NULL UNIQUE,
	job_id          TEXT NOT NULL,
	job_digest      TEXT NOT NULL,
	trigger         TEXT NOT NULL,
	scheduled_at    INTEGER NOT NULL,
	delivery_id     TEXT NOT NULL DEFAULT '',
	payload         BLOB NOT NULL,
	requested_by    TEXT NOT NULL DEFAULT '',
	state           INTEGER NOT NULL,
	attempt         INTEGER NOT NULL DEFAULT 0,
	next_attempt_at INTEGER NOT NULL,
	lease_owner     TEXT NOT NULL DEFAULT '',
	lease_expires   INTEGER NOT NULL DEFAULT 0,
	lease_gen       INTEGER NOT NULL DEFAULT 0,
	error           TEXT NOT NULL DEFAULT '',
	used            BLOB,
	run_ns          INTEGER NOT NULL DEFAULT 0,
	created_at      INTEGER NOT NULL,
	started_at      INTEGER,
	finished_at     INTEGER
) STRICT;
CREATE INDEX IF NOT EXISTS runs_due ON runs(state, next_attempt_at);
CREATE INDEX IF NOT EXISTS runs_by_job ON runs(job_id, seq);
CREATE TABLE IF NOT EXISTS steps (
	run_id          TEXT NOT NULL REFERENCES runs(id),
	idx             INTEGER NOT NULL,
	step_id         TEXT NOT NULL,
	tool            TEXT NOT NULL,
	state           INTEGER NOT NULL,
	idempotency_key TEXT NOT NULL DEFAULT '',
	decision_id     TEXT NOT NULL DEFAULT '',
	input_hash      TEXT NOT NULL DEFAULT '',
	output          BLOB,
	egress          BLOB,
	error           TEXT NOT NULL DEFAULT '',
	attempts        INTEGER NOT NULL DEFAULT 0,
	started_at      INTEGER,
	finished_at     INTEGER,
	PRIMARY KEY (run_id, idx)
) STRICT;
`

// The states, as stored.
const (
	queued    = contractualv1.RunState_RUN_STATE_QUEUED
	running   = contractualv1.RunState_RUN_STATE_RUNNING
	succeeded = contractualv1.RunState_RUN_STATE_SUCCEEDED
	failed    = contractualv1.RunState_RUN_STATE_FAILED
	stopped   = contractualv1.RunState_RUN_STATE_STOPPED

	stepRunning = contractualv1.StepState_STEP_STATE_RUNNING
	stepDone    = contractualv1.StepState_STEP_STATE_DONE
	stepFailed  = contractualv1.StepState_STEP_STATE_FAILED
)

// openDB opens the worker's store (worker.db in dir) and creates the
// schema.
func openDB(ctx context.Context, dir string) (*sql.DB, error) {
	return sqlitestore.Open(ctx, sqlitestore.Config{
		Service: "worker", Dir: dir, File: DBFile,
		Schema: schema, Version: schemaVersion,
		Pragmas: []string{"foreign_keys(1)"},
	})
}

// storeErr wraps a store failure as errs.Unavailable; nil and errs errors
// stay as they are.
func storeErr(err error, format string, args ...any) error {
	if err == nil {
		return nil
	}
	var e *errs.Error
	if errors.As(err, &e) {
		return err
	}
	return errs.Wrap(errs.Unavailable, err, "worker store: "+format, args...)
}

// newRun is a run to enqueue.
type newRun struct {
	id, job, digest, trigger, delivery, requestedBy string
	scheduled, now                                  time.Time
	payload                                         []byte // JSON
}

// insertRun enqueues r unless a run of its id exists; existed says which.
func insertRun(ctx context.Context, db *sql.DB, r newRun) (existed bool, err error) {
	res, err := db.ExecContext(ctx, `INSERT INTO runs
		(id, job_id, job_digest, trigger, scheduled_at, delivery_id, payload, requested_by, state, next_attempt_at, created_at)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO NOTHING`,
		r.id, r.job, r.digest, r.trigger, r.scheduled.UnixNano(), r.delivery, r.payload, r.requestedBy,
		int32(queued), r.now.UnixNano(), r.now.UnixNano())
	if err != nil {
		return false, storeErr(err, "enqueueing run %s", r.id)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return false, storeErr(err, "enqueueing run %s", r.id)
	}
	return n == 0, nil
}

// lease is a worker's claim on a run: gen is the fencing token.
type lease struct {
	run, owner string
	gen        int64
}

// claim takes the next due run for owner, if there is one: a queued run
// whose next attempt is due, or a running one whose lease expired, oldest
// due first. One statement, so two workers never take the same run with
// the same generation. A queued run's attempt counts up; a run taken over
// from a worker that died keeps its attempt.
func claim(ctx context.Context, db *sql.DB, owner string, now time.Time, d time.Duration) (*lease, error) {
	n := now.UnixNano()
	l := &lease{owner: owner}
	err := db.QueryRowContext(ctx, `UPDATE runs SET
			state = ?1, lease_owner = ?2, lease_expires = ?3, lease_gen = lease_gen + 1,
			attempt = attempt + (state = ?4),
			started_at = COALESCE(started_at, ?5)
		WHERE id = (SELECT id FROM runs
			WHERE (state = ?4 AND next_attempt_at <= ?5) OR (state = ?1 AND lease_expires <= ?5)
			ORDER BY next_attempt_at, seq LIMIT 1)
		RETURNING id, lease_gen`,
		int32(running), owner, n+int64(d), int32(queued), n).Scan(&l.run, &l.gen)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return nil, nil
	case err != nil:
		return nil, storeErr(err, "claiming a run")
	}
	return l, nil
}

// errLostLease is the error of a write by a worker that no longer holds
// the run's lease.
func errLostLease(l *lease) error {
	return errs.E(errs.FailedPrecondition, "worker %s lost the lease of run %s (generation %d): another worker took it over", l.owner, l.run, l.gen)
}

// fenced runs fn in a transaction if l still holds its run: the run is
// running under l's generation and, with live set, its lease has not
// expired at now (a worker about to start a side effect must still hold
// a valid lease; one recording what it did needs only that nobody took
// the run over).
func fenced(ctx context.Context, db *sql.DB, l *lease, now time.Time, live bool, fn func(*sql.Tx) error) error {
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return storeErr(err, "run %s", l.run)
	}
	defer tx.Rollback()
	var gen, expires int64
	var state int32
	err = tx.QueryRowContext(ctx, `SELECT lease_gen, lease_expires, state FROM runs WHERE id = ?`, l.run).Scan(&gen, &expires, &state)
	if err != nil {
		return storeErr(err, "reading run %s", l.run)
	}
	if gen != l.gen || contractualv1.RunState(state) != running || live && expires <= now.UnixNano() {
		return errLostLease(l)
	}
	if err := fn(tx); err != nil {
		return err
	}
	return storeErr(tx.Commit(), "run %s", l.run)
}

// renew extends l's lease to now + d.
func renew(ctx context.Context, db *sql.DB, l *lease, now time.Time, d time.Duration) error {
	return fenced(ctx, db, l, now, true, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `UPDATE runs SET lease_expires = ? WHERE id = ?`, now.Add(d).UnixNano(), l.run)
		return storeErr(err, "renewing run %s", l.run)
	})
}

// release gives l's run up at once, still running: the next claim takes it
// over (and runs a running step again, with its key) without waiting for
// the lease to expire.
func release(ctx context.Context, db *sql.DB, l *lease, now time.Time) error {
	return fenced(ctx, db, l, now, false, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `UPDATE runs SET lease_owner = '', lease_expires = 0 WHERE id = ?`, l.run)
		return storeErr(err, "releasing run %s", l.run)
	})
}

// stepStart is the outbox write before a step's call: the step is in
// st's state (running; or failed, for a step that failed before its call),
// with its key, decision and input hash, and the lease is renewed.
func stepStart(ctx context.Context, db *sql.DB, l *lease, now time.Time, d time.Duration, idx int, st *contractualv1.StepRun) error {
	return fenced(ctx, db, l, now, true, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `INSERT INTO steps
			(run_id, idx, step_id, tool, state, idempotency_key, decision_id, input_hash, attempts, started_at, error)
			VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, 1, ?9, ?10)
			ON CONFLICT (run_id, idx) DO UPDATE SET state = ?5, idempotency_key = ?6, decision_id = ?7,
				input_hash = ?8, attempts = attempts + 1, error = ?10, output = NULL, egress = NULL, finished_at = NULL`,
			l.run, idx, st.GetId(), st.GetTool(), int32(st.GetState()), st.GetIdempotencyKey(), st.GetDecisionId(),
			st.GetInputHash(), now.UnixNano(), st.GetError())
		if err != nil {
			return storeErr(err, "starting step %s of run %s", st.GetId(), l.run)
		}
		_, err = tx.ExecContext(ctx, `UPDATE runs SET lease_expires = ? WHERE id = ?`, now.Add(d).UnixNano(), l.run)
		return storeErr(err, "renewing run %s", l.run)
	})
}

// stepEnd records how a step ended (done with its output, or failed)
// and what the run has used so far, and renews the lease: nobody took the
// run over meanwhile, or the write fails.
func stepEnd(ctx context.Context, db *sql.DB, l *lease, now time.Time, d time.Duration, idx int, st *contractualv1.StepRun, output []byte, u *usage) error {
	eg, err := proto.Marshal(&contractualv1.StepRun{Egress: st.GetEgress()})
	if err != nil {
		return errs.Wrap(errs.Internal, err, "encoding the egress of step %s", st.GetId())
	}
	return fenced(ctx, db, l, now, false, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `UPDATE steps SET state = ?, output = ?, egress = ?, error = ?, finished_at = ?
			WHERE run_id = ? AND idx = ?`,
			int32(st.GetState()), output, eg, st.GetError(), now.UnixNano(), l.run, idx)
		if err != nil {
			return storeErr(err, "ending step %s of run %s", st.GetId(), l.run)
		}
		if _, err := tx.ExecContext(ctx, `UPDATE runs SET lease_expires = ? WHERE id = ?`, now.Add(d).UnixNano(), l.run); err != nil {
			return storeErr(err, "renewing run %s", l.run)
		}
		return u.save(ctx, tx, l.run)
	})
}

// finishRun ends l's run in state with err (empty on success).
func finishRun(ctx context.Context, db *sql.DB, l *lease, now time.Time, state contractualv1.RunState, msg string, u *usage) error {
	return fenced(ctx, db, l, now, false, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `UPDATE runs SET state = ?, error = ?, finished_at = ?, lease_owner = '', lease_expires = 0
			WHERE id = ?`, int32(state), msg, now.UnixNano(), l.run)
		if err != nil {
			return storeErr(err, "finishing run %s", l.run)
		}
		return u.save(ctx, tx, l.run)
	})
}

// requeue puts l's run back in the queue for another attempt at next.
func requeue(ctx context.Context, db *sql.DB, l *lease, now, next time.Time, msg string, u *usage) error {
	return fenced(ctx, db, l, now, false, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `UPDATE runs SET state = ?, error = ?, next_attempt_at = ?, lease_owner = '', lease_expires = 0
			WHERE id = ?`, int32(queued), msg, next.UnixNano(), l.run)
		if err != nil {
			return storeErr(err, "requeueing run %s", l.run)
		}
		return u.save(ctx, tx, l.run)
	})
}

// usage is what a run used: the budgets' fields, and the time run in
// nanoseconds.
type usage struct {
	b     *contractualv1.JobBudgets
	runNs int64
}

// save writes u to run.
func (u *usage) save(ctx context.Context, tx *sql.Tx, run string) error {
	u.b.RunTimeSeconds = uint32((u.runNs + int64(time.Second) - 1) / int64(time.Second))
	enc, err := proto.Marshal(u.b)
	if err != nil {
		return errs.Wrap(errs.Internal, err, "encoding the budgets of run %s", run)
	}
	_, err = tx.ExecContext(ctx, `UPDATE runs SET used = ?, run_ns = ? WHERE id = ?`, enc, u.runNs, run)
	return storeErr(err, "recording the budgets of run %s", run)
}

// stored is a run as stored, with what the worker needs beyond the API's
// JobRun.
type stored struct {
	run     *contractualv1.JobRun
	seq     int64
	payload []byte // JSON
	use     *usage
}

// runColumns are the columns scanRun reads.
const runColumns = `seq, id, job_id, job_digest, trigger, scheduled_at, payload, requested_by, state, attempt,
	error, used, run_ns, created_at, started_at, finished_at`

// scanner is a *sql.Row or *sql.Rows.
type scanner interface{ Scan(dest ...any) error }

func scanRun(row scanner) (*stored, error) {
	var (
		r                  = &contractualv1.JobRun{}
		st                 = &stored{run: r, use: &usage{b: &contractualv1.JobBudgets{}}}
		scheduled, created int64
		started, finished  sql.NullInt64
		state              int32
		attempt            int64
		used               []byte
	)
	err := row.Scan(&st.seq, &r.Id, &r.JobId, &r.JobDigest, &r.Trigger, &scheduled, &st.payload, &r.RequestedBy,
		&state, &attempt, &r.Error, &used, &st.use.runNs, &created, &started, &finished)
	if err != nil {
		return nil, err
	}
	if len(used) > 0 {
		if err := proto.Unmarshal(used, st.use.b); err != nil {
			return nil, errs.Wrap(errs.Internal, err, "worker: the budgets of run %s are damaged in the store", r.Id)
		}
	}
	r.State, r.Attempt, r.Used = contractualv1.RunState(state), uint32(attempt), proto.CloneOf(st.use.b)
	r.ScheduledAt, r.CreatedAt = ts(scheduled), ts(created)
	if started.Valid {
		r.StartedAt = ts(started.Int64)
	}
	if finished.Valid {
		r.FinishedAt = ts(finished.Int64)
	}
	r.Payload = new(structpb.Value)
	if err := protojson.Unmarshal(st.payload, r.Payload); err != nil {
		return nil, errs.Wrap(errs.Internal, err, "worker: the payload of run %s is damaged in the store", r.Id)
	}
	return st, nil
}

func ts(ns int64) *timestamppb.Timestamp { return timestamppb.New(time.Unix(0, ns)) }

// getRun reads a run with its steps; errs.NotFound if there is none.
func getRun(ctx context.Context, db *sql.DB, id string) (*stored, [][]byte, error) {
	st, err := scanRun(db.QueryRowContext(ctx, `SELECT `+runColumns+` FROM runs WHERE id = ?`, id))
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return nil, nil, errs.E(errs.NotFound, "no run %s", id)
	case err != nil:
		return nil, nil, storeErr(err, "reading run %s", id)
	}
	outputs, err := readSteps(ctx, db, st.run)
	if err != nil {
		return nil, nil, err
	}
	return st, outputs, nil
}

// readSteps reads r's steps into it, in order, and returns their raw
// outputs.
func readSteps(ctx context.Context, db *sql.DB, r *contractualv1.JobRun) ([][]byte, error) {
	rows, err := db.QueryContext(ctx, `SELECT step_id, tool, state, idempotency_key, decision_id, input_hash, output, egress,
		error, attempts, started_at, finished_at FROM steps WHERE run_id = ? ORDER BY idx`, r.GetId())
	if err != nil {
		return nil, storeErr(err, "reading the steps of run %s", r.GetId())
	}
	defer rows.Close()
	var outputs [][]byte
	for rows.Next() {
		var (
			s                 = &contractualv1.StepRun{}
			state             int32
			attempts          int64
			output, eg        []byte
			started, finished sql.NullInt64
		)
		if err := rows.Scan(&s.Id, &s.Tool, &state, &s.IdempotencyKey, &s.DecisionId, &s.InputHash, &output, &eg,
			&s.Error, &attempts, &started, &finished); err != nil {
			return nil, storeErr(err, "reading the steps of run %s", r.GetId())
		}
		s.State, s.Attempts = contractualv1.StepState(state), uint32(attempts)
		if len(eg) > 0 {
			var e contractualv1.StepRun
			if err := proto.Unmarshal(eg, &e); err != nil {
				return nil, errs.Wrap(errs.Internal, err, "worker: the egress of run %s is damaged in the store", r.GetId())
			}
			s.Egress = e.Egress
		}
		setOutput(s, output)
		if started.Valid {
			s.StartedAt = ts(started.Int64)
		}
		if finished.Valid {
			s.FinishedAt = ts(finished.Int64)
		}
		r.Steps = append(r.Steps, s)
		outputs = append(outputs, output)
	}
	return outputs, storeErr(rows.Err(), "reading the steps of run %s", r.GetId())
}

// setOutput sets s's output: a JSON value, or else text.
func setOutput(s *contractualv1.StepRun, out []byte) {
	if len(out) == 0 {
		return
	}
	if json.Valid(out) {
		v := new(structpb.Value)
		if protojson.Unmarshal(out, v) == nil {
			s.Output = v
			return
		}
	}
	s.OutputText = string(out)
}

// pageRuns returns up to n runs of job (with their steps), newest first,
// after the run of seq after (0: from the newest); more says whether
// another follows.
func pageRuns(ctx context.Context, db *sql.DB, job string, after int64, n int) (runs []*stored, more bool, err error) {
	q := `SELECT ` + runColumns + ` FROM runs WHERE job_id = ? AND (? = 0 OR seq < ?) ORDER BY seq DESC LIMIT ?`
	rows, err := db.QueryContext(ctx, q, job, after, after, n+1)
	if err != nil {
		return nil, false, storeErr(err, "listing runs")
	}
	defer rows.Close()
	for rows.Next() {
		st, err := scanRun(rows)
		if err != nil {
			return nil, false, storeErr(err, "listing runs")
		}
		runs = append(runs, st)
	}
	if err := rows.Err(); err != nil {
		return nil, false, storeErr(err, "listing runs")
	}
	rows.Close()
	if len(runs) > n {
		runs, more = runs[:n], true
	}
	for _, st := range runs {
		if _, err := readSteps(ctx, db, st.run); err != nil {
			return nil, false, err
		}
	}
	return runs, more, nil
}
