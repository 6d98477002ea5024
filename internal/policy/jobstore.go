package policy

import (
	"context"
	"database/sql"
	"fmt"
	"strings"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	contractualv1 "github.com/contractual/contractual/contracts/gen/contractual/v1"
	"github.com/contractual/contractual/contracts/job"
	"github.com/contractual/contractual/internal/errs"
)

// Job states, as the store keeps them.
const (
	jobPending    = contractualv1.JobState_JOB_STATE_PENDING
	jobApproved   = contractualv1.JobState_JOB_STATE_APPROVED
	jobPaused     = contractualv1.JobState_JOB_STATE_PAUSED
	jobRejected   = contractualv1.JobState_JOB_STATE_REJECTED
	jobSuperseded = contractualv1.JobState_JOB_STATE_SUPERSEDED
	jobDeleted    = contractualv1.JobState_JOB_STATE_DELETED
)

// jobSchema is the jobs' part of policy's store (schema version 2).
//
// jobs holds every version of every job, as the canonical encoding of its
// normal form (the bytes its digest hashes); seq is the creation order.
// A job's live version is its approved or paused one: the partial unique
// index makes "at most one per job" a property of the store. pause is the
// encoded JobPause of a paused version.
//
// job_pins lists the contract digests each version pins, so that a change
// of a contract finds the jobs it drifts in one indexed query.
//
// job_runs counts each run's calls (for tool_calls_per_run) and keeps the
// UTC day of its first call (for runs_per_day).
const jobSchema = `
CREATE TABLE IF NOT EXISTS jobs (
	seq        INTEGER PRIMARY KEY,
	digest     TEXT NOT NULL UNIQUE,
	id         TEXT NOT NULL,
	job        BLOB NOT NULL,
	state      INTEGER NOT NULL,
	created_by TEXT NOT NULL,
	created_at INTEGER NOT NULL,
	decided_by TEXT NOT NULL DEFAULT '',
	decided_at INTEGER,
	reason     TEXT NOT NULL DEFAULT '',
	pause      BLOB
) STRICT;
CREATE INDEX IF NOT EXISTS jobs_by_id ON jobs(id, seq);
CREATE UNIQUE INDEX IF NOT EXISTS jobs_one_live ON jobs(id) WHERE state IN (2, 3);
CREATE TABLE IF NOT EXISTS job_pins (
	contract TEXT NOT NULL,
	job      TEXT NOT NULL REFERENCES jobs(digest),
	PRIMARY KEY (contract, job)
) STRICT, WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS job_runs (
	job    TEXT NOT NULL,
	run_id TEXT NOT NULL,
	day    TEXT NOT NULL,
	calls  INTEGER NOT NULL,
	PRIMARY KEY (job, run_id)
) STRICT, WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS job_runs_by_day ON job_runs(job, day);
`

// jobColumns are the columns scanJob reads, in order; jobColumnsJ the
// same of the table named j.
const (
	jobColumns  = `seq, digest, job, state, created_by, created_at, decided_by, decided_at, reason, pause`
	jobColumnsJ = `j.seq, j.digest, j.job, j.state, j.created_by, j.created_at, j.decided_by, j.decided_at, j.reason, j.pause`
)

// scanJob reads one row of jobColumns, checking that the stored job still
// hashes to its digest: a damaged or edited store cannot make a job run
// what the owner did not approve.
func scanJob(row scanner) (*contractualv1.JobRecord, int64, error) {
	var (
		seq, at                 int64
		digest, by, dBy, reason string
		enc, pause              []byte
		state                   int32
		decidedAt               sql.NullInt64
	)
	if err := row.Scan(&seq, &digest, &enc, &state, &by, &at, &dBy, &decidedAt, &reason, &pause); err != nil {
		return nil, 0, err
	}
	j := new(contractualv1.Job)
	if err := proto.Unmarshal(enc, j); err != nil {
		return nil, 0, errs.Wrap(errs.Internal, err, "policy: job %s is damaged in the store", digest)
	}
	if d, err := job.Digest(j); err != nil || d != digest {
		return nil, 0, errs.E(errs.FailedPrecondition, "policy: job %s in the store does not hash to its digest (got %s): the store is damaged", digest, d)
	}
	rec := &contractualv1.JobRecord{
		Id: j.GetName(), Digest: digest, Job: j, State: contractualv1.JobState(state),
		CreatedBy: by, CreatedAt: timestamppb.New(time.Unix(0, at)), DecidedBy: dBy, Reason: reason,
	}
	if decidedAt.Valid {
		rec.DecidedAt = timestamppb.New(time.Unix(0, decidedAt.Int64))
	}
	if pause != nil {
		rec.Pause = new(contractualv1.JobPause)
		if err := proto.Unmarshal(pause, rec.Pause); err != nil {
			return nil, 0, errs.Wrap(errs.Internal, err, "policy: the pause of job %s is damaged in the store", digest)
		}
	}
	return rec, seq, nil
}

// queryJobs runs a query selecting jobColumns and reads every row.
func queryJobs(ctx context.Context, q querier, query string, args ...any) ([]*contractualv1.JobRecord, []int64, error) {
	rows, err := q.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, nil, storeErr(err, "reading jobs")
	}
	defer rows.Close()
	var (
		out  []*contractualv1.JobRecord
		seqs []int64
	)
	for rows.Next() {
		rec, seq, err := scanJob(rows)
		if err != nil {
			return nil, nil, storeErr(err, "reading jobs")
		}
		out, seqs = append(out, rec), append(seqs, seq)
	}
	if err := rows.Err(); err != nil {
		return nil, nil, storeErr(err, "reading jobs")
	}
	return out, seqs, nil
}

// getJob reads the job version digest; errs.NotFound if there is none.
func getJob(ctx context.Context, q querier, digest string) (*contractualv1.JobRecord, error) {
	recs, _, err := queryJobs(ctx, q, `SELECT `+jobColumns+` FROM jobs WHERE digest = ?`, digest)
	switch {
	case err != nil:
		return nil, err
	case len(recs) == 0:
		return nil, errs.E(errs.NotFound, "no job version %s", digest)
	}
	return recs[0], nil
}

// liveJob returns the approved or paused version of job id, or nil.
func liveJob(ctx context.Context, q querier, id string) (*contractualv1.JobRecord, error) {
	recs, _, err := queryJobs(ctx, q, `SELECT `+jobColumns+` FROM jobs WHERE id = ? AND state IN (2, 3)`, id)
	if err != nil || len(recs) == 0 {
		return nil, err
	}
	return recs[0], nil
}

// currentJob returns job id's current version: its live one, else its
// newest version that is not deleted; errs.NotFound if there is none.
func currentJob(ctx context.Context, q querier, id string) (*contractualv1.JobRecord, error) {
	recs, _, err := queryJobs(ctx, q, `SELECT `+jobColumns+` FROM jobs WHERE id = ? AND state != 6
		ORDER BY state IN (2, 3) DESC, seq DESC LIMIT 1`, id)
	switch {
	case err != nil:
		return nil, err
	case len(recs) == 0:
		return nil, errs.E(errs.NotFound, "no job %q", clip(id, 100))
	}
	return recs[0], nil
}

// jobVersions returns every version of job id, newest first.
func jobVersions(ctx context.Context, q querier, id string) ([]*contractualv1.JobRecord, error) {
	recs, _, err := queryJobs(ctx, q, `SELECT `+jobColumns+` FROM jobs WHERE id = ? ORDER BY seq DESC`, id)
	return recs, err
}

// pageJobs returns up to n jobs, one record per job, newest first, after
// the record with seq after (0: from the newest); more tells whether
// another follows. Without a state, a job's record is its current version
// (currentJob); with one, its newest version in that state. Jobs are few
// (each one is reviewed by a person): the per-job subquery is cheap.
func pageJobs(ctx context.Context, q querier, state contractualv1.JobState, after int64, n int) ([]*contractualv1.JobRecord, int64, bool, error) {
	pick := `SELECT k.seq FROM jobs k WHERE k.id = j.id AND k.state != 6 ORDER BY k.state IN (2, 3) DESC, k.seq DESC LIMIT 1`
	args := []any{}
	if state != contractualv1.JobState_JOB_STATE_UNSPECIFIED {
		pick = `SELECT max(k.seq) FROM jobs k WHERE k.id = j.id AND k.state = ?`
		args = append(args, int32(state))
	}
	where := "j.seq = (" + pick + ")"
	if after > 0 {
		where, args = where+" AND j.seq < ?", append(args, after)
	}
	recs, seqs, err := queryJobs(ctx, q, `SELECT `+jobColumnsJ+` FROM jobs j WHERE `+where+
		fmt.Sprintf(` ORDER BY j.seq DESC LIMIT %d`, n+1), args...)
	if err != nil {
		return nil, 0, false, err
	}
	if len(recs) > n {
		return recs[:n], seqs[n-1], true, nil
	}
	return recs, 0, false, nil
}

// approvedJobs returns every approved (running) job version.
func approvedJobs(ctx context.Context, q querier) ([]*contractualv1.JobRecord, error) {
	recs, _, err := queryJobs(ctx, q, `SELECT `+jobColumns+` FROM jobs WHERE state = 2 ORDER BY seq DESC`)
	return recs, err
}

// jobsPinning returns the approved job versions that pin contract.
func jobsPinning(ctx context.Context, q querier, contract string) ([]*contractualv1.JobRecord, error) {
	recs, _, err := queryJobs(ctx, q, `SELECT `+jobColumnsJ+` FROM jobs j JOIN job_pins p ON p.job = j.digest
		WHERE p.contract = ? AND j.state = 2 ORDER BY j.seq`, contract)
	return recs, err
}

// insertJob stores a new job version and its pins.
func insertJob(ctx context.Context, tx *sql.Tx, rec *contractualv1.JobRecord) error {
	enc, err := job.Canonical(rec.GetJob())
	if err != nil {
		return err
	}
	var decidedAt any
	if rec.GetDecidedAt() != nil {
		decidedAt = rec.GetDecidedAt().AsTime().UnixNano()
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO jobs (digest, id, job, state, created_by, created_at, decided_by, decided_at, reason)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`,
		rec.GetDigest(), rec.GetId(), enc, int32(rec.GetState()), rec.GetCreatedBy(), rec.GetCreatedAt().AsTime().UnixNano(),
		rec.GetDecidedBy(), decidedAt, rec.GetReason()); err != nil {
		return storeErr(err, "storing job %s", rec.GetDigest())
	}
	for _, c := range job.Calls(rec.GetJob()) {
		if _, err := tx.ExecContext(ctx, `INSERT INTO job_pins (contract, job) VALUES (?, ?) ON CONFLICT DO NOTHING`,
			c.Contract, rec.GetDigest()); err != nil {
			return storeErr(err, "storing job %s", rec.GetDigest())
		}
	}
	return nil
}

// updateJob writes rec's state, decision, reason and pause, if the version
// is in one of the states from.
func updateJob(ctx context.Context, tx *sql.Tx, rec *contractualv1.JobRecord, from ...contractualv1.JobState) error {
	var pause []byte
	if rec.GetPause() != nil {
		var err error
		if pause, err = proto.Marshal(rec.GetPause()); err != nil {
			return errs.Wrap(errs.Internal, err, "policy: encoding the pause of job %s", rec.GetDigest())
		}
	}
	var decidedAt any
	if rec.GetDecidedAt() != nil {
		decidedAt = rec.GetDecidedAt().AsTime().UnixNano()
	}
	states := make([]any, 0, 4)
	for _, st := range from {
		states = append(states, int32(st))
	}
	for len(states) < 4 {
		states = append(states, int32(-1))
	}
	res, err := tx.ExecContext(ctx, `UPDATE jobs SET state = ?, decided_by = ?, decided_at = ?, reason = ?, pause = ?
		WHERE digest = ? AND state IN (?, ?, ?, ?)`,
		append([]any{int32(rec.GetState()), rec.GetDecidedBy(), decidedAt, rec.GetReason(), pause, rec.GetDigest()}, states...)...)
	if err != nil {
		return storeErr(err, "updating job %s", rec.GetDigest())
	}
	if n, err := res.RowsAffected(); err != nil || n != 1 {
		return errs.E(errs.Internal, "policy: job %s changed state while it was updated", rec.GetDigest())
	}
	return nil
}

// countCall counts one call of run runID of job id, on day (its UTC date,
// "2006-01-02", used if this is the run's first call), and returns the
// run's calls so far, this one included, and whether this is its first.
func countCall(ctx context.Context, tx *sql.Tx, id, runID, day string) (calls int64, first bool, err error) {
	err = tx.QueryRowContext(ctx, `INSERT INTO job_runs (job, run_id, day, calls) VALUES (?, ?, ?, 1)
		ON CONFLICT (job, run_id) DO UPDATE SET calls = calls + 1 RETURNING calls`, id, runID, day).Scan(&calls)
	if err != nil {
		return 0, false, storeErr(err, "counting the calls of run %s", runID)
	}
	return calls, calls == 1, nil
}

// runsOn counts the runs of job id whose first call was on day.
func runsOn(ctx context.Context, tx *sql.Tx, id, day string) (int64, error) {
	var n int64
	err := tx.QueryRowContext(ctx, `SELECT count(*) FROM job_runs WHERE job = ? AND day = ?`, id, day).Scan(&n)
	return n, storeErr(err, "counting the runs of job %s", id)
}

// contractName returns the contract name of a tool "<name>.<export>".
func contractName(tool string) string {
	name, _, _ := strings.Cut(tool, ".")
	return name
}
