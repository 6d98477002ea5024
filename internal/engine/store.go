package engine

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	contractualv1 "github.com/contractual/contractual/contracts/gen/contractual/v1"
	"github.com/contractual/contractual/internal/engine/model"
	"github.com/contractual/contractual/internal/errs"
	"github.com/contractual/contractual/internal/sqlitestore"
)

// DBFile is the engine's store in its directory.
const DBFile = "engine.db"

const schemaVersion = 1

// The store: a session's record (the Session message: budget, usage,
// state) and its tools with their input schemas, fixed at open; its events
// in order; the conversation as the model sees it; and its artifacts.
const schema = `
CREATE TABLE IF NOT EXISTS sessions (
	id         TEXT PRIMARY KEY,
	device     TEXT NOT NULL,
	created_ns INTEGER NOT NULL,
	state      INTEGER NOT NULL,
	record     BLOB NOT NULL,
	tools      BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS sessions_by_device ON sessions (device, created_ns DESC, id DESC);
CREATE INDEX IF NOT EXISTS sessions_by_state ON sessions (state);
CREATE TABLE IF NOT EXISTS events (
	session TEXT NOT NULL REFERENCES sessions (id),
	seq     INTEGER NOT NULL,
	event   BLOB NOT NULL,
	PRIMARY KEY (session, seq)
);
CREATE TABLE IF NOT EXISTS messages (
	session TEXT NOT NULL REFERENCES sessions (id),
	n       INTEGER NOT NULL,
	role    TEXT NOT NULL,
	content TEXT NOT NULL,
	PRIMARY KEY (session, n)
);
CREATE TABLE IF NOT EXISTS artifacts (
	session    TEXT NOT NULL REFERENCES sessions (id),
	digest     TEXT NOT NULL,
	content    BLOB NOT NULL,
	expires_ns INTEGER NOT NULL,
	PRIMARY KEY (session, digest)
);
CREATE INDEX IF NOT EXISTS artifacts_by_expiry ON artifacts (expires_ns);
`

func openDB(ctx context.Context, dir string) (*sql.DB, error) {
	return sqlitestore.Open(ctx, sqlitestore.Config{
		Service: "engine", Dir: dir, File: DBFile,
		Schema: schema, Version: schemaVersion,
		Pragmas: []string{"foreign_keys(1)"},
	})
}

// storeErr wraps a store failure as errs.Unavailable; nil and errs errors
// stay as they are.
func storeErr(err error, what string) error {
	if err == nil {
		return nil
	}
	var e *errs.Error
	if errors.As(err, &e) {
		return err
	}
	return errs.Wrap(errs.Unavailable, err, "engine store: %s", what)
}

// stored is a session as the store keeps it.
type stored struct {
	rec   *contractualv1.Session
	tools []model.Tool
}

func (s *Service) insertSession(ctx context.Context, st *stored) error {
	rec, err := proto.Marshal(st.rec)
	if err != nil {
		return errs.Wrap(errs.Internal, err, "engine: encoding a session")
	}
	tools, err := json.Marshal(st.tools)
	if err != nil {
		return errs.Wrap(errs.Internal, err, "engine: encoding a session's tools")
	}
	_, err = s.db.ExecContext(ctx, `INSERT INTO sessions (id, device, created_ns, state, record, tools) VALUES (?, ?, ?, ?, ?, ?)`,
		st.rec.GetId(), st.rec.GetDevice(), st.rec.GetCreatedAt().AsTime().UnixNano(), int32(st.rec.GetState()), rec, tools)
	return storeErr(err, "inserting a session")
}

// getSession returns session id, NotFound if there is none.
func (s *Service) getSession(ctx context.Context, id string) (*stored, error) {
	var rec, tools []byte
	err := s.db.QueryRowContext(ctx, `SELECT record, tools FROM sessions WHERE id = ?`, id).Scan(&rec, &tools)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, errs.E(errs.NotFound, "no session %q", clip(id, 100))
	}
	if err != nil {
		return nil, storeErr(err, "reading a session")
	}
	st := &stored{rec: new(contractualv1.Session)}
	if err := proto.Unmarshal(rec, st.rec); err != nil {
		return nil, errs.Wrap(errs.Internal, err, "engine store: session %s does not decode", id)
	}
	if err := json.Unmarshal(tools, &st.tools); err != nil {
		return nil, errs.Wrap(errs.Internal, err, "engine store: the tools of session %s do not decode", id)
	}
	return st, nil
}

// putRecord replaces a session's record.
func (s *Service) putRecord(ctx context.Context, rec *contractualv1.Session) error {
	rec.UpdatedAt = timestamppb.New(s.cfg.Now())
	b, err := proto.Marshal(rec)
	if err != nil {
		return errs.Wrap(errs.Internal, err, "engine: encoding a session")
	}
	_, err = s.db.ExecContext(ctx, `UPDATE sessions SET record = ?, state = ? WHERE id = ?`, b, int32(rec.GetState()), rec.GetId())
	return storeErr(err, "updating a session")
}

// appendEvent stores ev as the session's next event, setting its seq and
// time.
func (s *Service) appendEvent(ctx context.Context, session string, ev *contractualv1.SessionEvent) error {
	ev.Time = timestamppb.New(s.cfg.Now())
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return storeErr(err, "starting a transaction")
	}
	defer tx.Rollback()
	var last int64
	if err := tx.QueryRowContext(ctx, `SELECT COALESCE(MAX(seq), 0) FROM events WHERE session = ?`, session).Scan(&last); err != nil {
		return storeErr(err, "reading a session's events")
	}
	ev.Seq = last + 1
	b, err := proto.Marshal(ev)
	if err != nil {
		return errs.Wrap(errs.Internal, err, "engine: encoding an event")
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO events (session, seq, event) VALUES (?, ?, ?)`, session, ev.Seq, b); err != nil {
		return storeErr(err, "adding an event")
	}
	return storeErr(tx.Commit(), "adding an event")
}

// events returns the session's events after seq, in order, at most limit
// (0: all).
func (s *Service) events(ctx context.Context, session string, after int64, limit int) ([]*contractualv1.SessionEvent, error) {
	q := `SELECT event FROM events WHERE session = ? AND seq > ? ORDER BY seq`
	args := []any{session, after}
	if limit > 0 {
		q += ` LIMIT ?`
		args = append(args, limit)
	}
	rows, err := s.db.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, storeErr(err, "reading events")
	}
	defer rows.Close()
	var out []*contractualv1.SessionEvent
	for rows.Next() {
		var b []byte
		if err := rows.Scan(&b); err != nil {
			return nil, storeErr(err, "reading events")
		}
		ev := new(contractualv1.SessionEvent)
		if err := proto.Unmarshal(b, ev); err != nil {
			return nil, errs.Wrap(errs.Internal, err, "engine store: an event of session %s does not decode", session)
		}
		out = append(out, ev)
	}
	return out, storeErr(rows.Err(), "reading events")
}

// messages returns the conversation of a session, in order.
func (s *Service) messages(ctx context.Context, session string) ([]model.Message, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT role, content FROM messages WHERE session = ? ORDER BY n`, session)
	if err != nil {
		return nil, storeErr(err, "reading the conversation")
	}
	defer rows.Close()
	var out []model.Message
	for rows.Next() {
		var m model.Message
		if err := rows.Scan(&m.Role, &m.Content); err != nil {
			return nil, storeErr(err, "reading the conversation")
		}
		out = append(out, m)
	}
	return out, storeErr(rows.Err(), "reading the conversation")
}

// addMessages appends msgs to a session's conversation.
func (s *Service) addMessages(ctx context.Context, session string, msgs ...model.Message) error {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return storeErr(err, "starting a transaction")
	}
	defer tx.Rollback()
	var n int64
	if err := tx.QueryRowContext(ctx, `SELECT COALESCE(MAX(n), 0) FROM messages WHERE session = ?`, session).Scan(&n); err != nil {
		return storeErr(err, "reading the conversation")
	}
	for _, m := range msgs {
		n++
		if _, err := tx.ExecContext(ctx, `INSERT INTO messages (session, n, role, content) VALUES (?, ?, ?, ?)`, session, n, string(m.Role), m.Content); err != nil {
			return storeErr(err, "adding to the conversation")
		}
	}
	return storeErr(tx.Commit(), "adding to the conversation")
}

// putArtifact stores content under digest for the session until expires
// (a second store of the same content extends its retention).
func (s *Service) putArtifact(ctx context.Context, session, digest string, content []byte, expires time.Time) error {
	_, err := s.db.ExecContext(ctx, `INSERT INTO artifacts (session, digest, content, expires_ns) VALUES (?, ?, ?, ?)
		ON CONFLICT (session, digest) DO UPDATE SET expires_ns = MAX(expires_ns, excluded.expires_ns)`,
		session, digest, content, expires.UnixNano())
	return storeErr(err, "storing an artifact")
}

// getArtifact returns a session's unexpired artifact.
func (s *Service) getArtifact(ctx context.Context, session, digest string) ([]byte, time.Time, error) {
	var content []byte
	var exp int64
	err := s.db.QueryRowContext(ctx, `SELECT content, expires_ns FROM artifacts WHERE session = ? AND digest = ? AND expires_ns > ?`,
		session, digest, s.cfg.Now().UnixNano()).Scan(&content, &exp)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, time.Time{}, errs.E(errs.NotFound, "session %s has no artifact %s (never stored, or past its retention)", session, clip(digest, 80))
	}
	if err != nil {
		return nil, time.Time{}, storeErr(err, "reading an artifact")
	}
	return content, time.Unix(0, exp), nil
}

// pruneArtifacts deletes the artifacts past their retention.
func (s *Service) pruneArtifacts(ctx context.Context) (int64, error) {
	res, err := s.db.ExecContext(ctx, `DELETE FROM artifacts WHERE expires_ns <= ?`, s.cfg.Now().UnixNano())
	if err != nil {
		return 0, storeErr(err, "deleting expired artifacts")
	}
	n, _ := res.RowsAffected()
	return n, nil
}

// listSessions returns a page of device's sessions, newest first, after
// the cursor (created_ns, id), and whether there are more.
func (s *Service) listSessions(ctx context.Context, device string, cursor *listKey, size int) ([]*contractualv1.Session, bool, error) {
	q := `SELECT record FROM sessions WHERE device = ?`
	args := []any{device}
	if cursor != nil {
		q += ` AND (created_ns < ? OR (created_ns = ? AND id < ?))`
		args = append(args, cursor.Created, cursor.Created, cursor.ID)
	}
	q += ` ORDER BY created_ns DESC, id DESC LIMIT ?`
	args = append(args, size+1)
	rows, err := s.db.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, false, storeErr(err, "listing sessions")
	}
	defer rows.Close()
	var out []*contractualv1.Session
	for rows.Next() {
		var b []byte
		if err := rows.Scan(&b); err != nil {
			return nil, false, storeErr(err, "listing sessions")
		}
		rec := new(contractualv1.Session)
		if err := proto.Unmarshal(b, rec); err != nil {
			return nil, false, errs.Wrap(errs.Internal, err, "engine store: a session does not decode")
		}
		out = append(out, rec)
	}
	if err := rows.Err(); err != nil {
		return nil, false, storeErr(err, "listing sessions")
	}
	more := len(out) > size
	if more {
		out = out[:size]
	}
	return out, more, nil
}

// listKey is the sort key of ListSessions' pages.
type listKey struct {
	Created int64  `json:"c"`
	ID      string `json:"i"`
}

// recover records the turns that were running when the engine stopped as
// failed, and their sessions as idle.
func (s *Service) recover(ctx context.Context) error {
	rows, err := s.db.QueryContext(ctx, `SELECT id FROM sessions WHERE state = ?`, int32(running))
	if err != nil {
		return storeErr(err, "reading sessions")
	}
	var ids []string
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			rows.Close()
			return storeErr(err, "reading sessions")
		}
		ids = append(ids, id)
	}
	rows.Close()
	for _, id := range ids {
		st, err := s.getSession(ctx, id)
		if err != nil {
			return err
		}
		if st.rec.GetState() != contractualv1.SessionState_SESSION_STATE_RUNNING {
			continue
		}
		st.rec.State = contractualv1.SessionState_SESSION_STATE_IDLE
		if err := s.putRecord(ctx, st.rec); err != nil {
			return err
		}
		if err := s.appendEvent(ctx, id, &contractualv1.SessionEvent{
			Kind: contractualv1.SessionEventKind_SESSION_EVENT_KIND_TURN_FAILED,
			Text: "the engine stopped during this turn", Usage: st.rec.GetUsage(),
		}); err != nil {
			return err
		}
	}
	return nil
}

// clip shortens s for a message.
func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
