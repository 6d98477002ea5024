package ui_test

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"

	"github.com/contractual/contractual/internal/audit"
	"github.com/contractual/contractual/internal/browsertest"
	"github.com/contractual/contractual/ui"
)

// checkpointAnswer is /ui/audit/checkpoint's answer.
type checkpointAnswer struct {
	OK         bool            `json:"ok"`
	Problem    string          `json:"problem"`
	Pruned     string          `json:"pruned"`
	Checkpoint json.RawMessage `json:"checkpoint"`
	Error      string          `json:"error"`
}

// seq is the seq of a checkpoint in its JSON form.
func seq(t *testing.T, c []byte) uint64 {
	t.Helper()
	var v struct {
		Seq uint64 `json:"seq,string"`
	}
	if err := json.Unmarshal(c, &v); err != nil || v.Seq == 0 {
		t.Fatalf("checkpoint %s: %v", c, err)
	}
	return v.Seq
}

// checkpointOf posts seen (may be empty) to the endpoint as b.
func (b *browser) checkpointOf(seen string) (int, checkpointAnswer) {
	b.e.t.Helper()
	r := b.postForm("/ui/audit/checkpoint", b.form("seen", seen))
	var a checkpointAnswer
	if err := json.Unmarshal([]byte(r.body), &a); err != nil {
		b.e.t.Fatalf("%d %s: %v", r.StatusCode, r.body, err)
	}
	return r.StatusCode, a
}

// tamper truncates the audit log in the env's directory after index idx
// and deletes the checkpoints after seq, as an attacker with the file can.
func (e *env) tamper(idx, seq uint64) {
	e.t.Helper()
	db, err := sql.Open("sqlite", filepath.Join(e.dir, "audit", audit.DBFile)+"?_pragma=busy_timeout(5000)")
	if err != nil {
		e.t.Fatal(err)
	}
	defer db.Close()
	for _, q := range []struct {
		sql string
		arg []any
	}{
		{`DROP TRIGGER IF EXISTS events_no_delete`, nil},
		{`DROP TRIGGER IF EXISTS checkpoints_no_delete`, nil},
		{`DELETE FROM events WHERE idx > ?`, []any{int64(idx)}},
		{`DELETE FROM checkpoints WHERE seq > ?`, []any{int64(seq)}},
	} {
		if _, err := db.Exec(q.sql, q.arg...); err != nil {
			e.t.Fatalf("%s: %v", q.sql, err)
		}
	}
}

// index is the index of a checkpoint in its JSON form.
func index(t *testing.T, c []byte) uint64 {
	t.Helper()
	var v struct {
		Index uint64 `json:"index,string"`
	}
	if err := json.Unmarshal(c, &v); err != nil || v.Index == 0 {
		t.Fatalf("checkpoint %s: %v", c, err)
	}
	return v.Index
}

// TestAuditCheckpoint: the endpoint through which a browser has the log
// checked against the newest checkpoint it saw answers the newest one,
// says the log extends what was seen, and reports a rollback as tampering,
// with the newest checkpoint it has but ok false.
func TestAuditCheckpoint(t *testing.T) {
	e := newEnv(t)
	a := e.pairFirst("laptop")
	// Pairing the browser recorded events: the first ask seals them.
	status, paired := a.checkpointOf("")
	if status != http.StatusOK || !paired.OK || paired.Checkpoint == nil {
		t.Fatalf("after pairing: %d %+v", status, paired)
	}
	e.publish("textkit", nil) // an event, sealed when the browser asks

	status, first := a.checkpointOf("")
	if status != http.StatusOK || !first.OK || first.Checkpoint == nil || index(t, first.Checkpoint) <= index(t, paired.Checkpoint) {
		t.Fatalf("first: %d %+v", status, first)
	}
	if _, same := a.checkpointOf(string(first.Checkpoint)); !same.OK || seq(t, same.Checkpoint) != seq(t, first.Checkpoint) {
		t.Fatalf("the same again: %+v", same)
	}
	e.publish("greeter", nil) // a new event: a new checkpoint when the browser asks
	_, grown := a.checkpointOf(string(first.Checkpoint))
	if !grown.OK || seq(t, grown.Checkpoint) <= seq(t, first.Checkpoint) {
		t.Fatalf("after growth: %+v", grown)
	}

	e.tamper(index(t, first.Checkpoint), seq(t, first.Checkpoint))
	status, rolled := a.checkpointOf(string(grown.Checkpoint))
	if status != http.StatusOK || rolled.OK || !strings.HasPrefix(rolled.Problem, fmt.Sprintf("rollback: the log's newest checkpoint is %d", seq(t, first.Checkpoint))) {
		t.Fatalf("after a rollback: %d %+v", status, rolled)
	}
	if seq(t, rolled.Checkpoint) != seq(t, first.Checkpoint) {
		t.Fatalf("the newest checkpoint after the rollback: %s", rolled.Checkpoint)
	}

	// Refused: no CSRF token, not signed in, not a form, not a checkpoint.
	r := a.postForm("/ui/audit/checkpoint", url.Values{"seen": {string(grown.Checkpoint)}})
	if r.StatusCode != http.StatusForbidden || !strings.Contains(r.body, `"error"`) {
		t.Errorf("without CSRF: %d %s", r.StatusCode, r.body)
	}
	if r := e.newBrowser().postForm("/ui/audit/checkpoint", url.Values{}); r.StatusCode != http.StatusUnauthorized || !strings.Contains(r.body, `"error"`) {
		t.Errorf("signed out: %d %s", r.StatusCode, r.body)
	}
	if r := a.postJSON("/ui/audit/checkpoint", `{}`); r.StatusCode != http.StatusUnsupportedMediaType {
		t.Errorf("JSON body: %d %s", r.StatusCode, r.body)
	}
	if status, bad := a.checkpointOf(`{"seq": "one"}`); status != http.StatusBadRequest || !strings.Contains(bad.Error, "seen is not a checkpoint") {
		t.Errorf("malformed: %d %+v", status, bad)
	}
	if r := a.get("/ui/audit/checkpoint"); r.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("GET: %d", r.StatusCode)
	}

	// The pages that show verification carry the element the script fills.
	for _, page := range []string{"/ui/", "/ui/runs"} {
		if body := a.get(page).body; !strings.Contains(body, `id="audit-consistency"`) || !strings.Contains(body, `data-csrf="`+a.csrf()+`"`) {
			t.Errorf("%s lacks #audit-consistency with the CSRF token", page)
		}
	}
}

// TestAuditCheckpointPruned: a browser whose checkpoint is older than a
// prune is told the range was pruned and which export holds it, not that
// the log was tampered with; it then remembers the newest checkpoint, and
// the runs page says where verification starts.
func TestAuditCheckpointPruned(t *testing.T) {
	e := newEnv(t)
	a := e.pairFirst("laptop")
	e.publish("textkit", nil)
	_, first := a.checkpointOf("")
	e.publish("greeter", nil)
	_, grown := a.checkpointOf("")
	st := e.audit.Store()
	cut := seq(t, grown.Checkpoint)
	digest, err := st.Segment(context.Background(), io.Discard, 0, cut)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.RecordExport(context.Background(), 0, cut, digest, "old.bin"); err != nil {
		t.Fatal(err)
	}
	if _, _, err := st.Prune(context.Background(), cut, time.Time{}); err != nil {
		t.Fatal(err)
	}
	status, ans := a.checkpointOf(string(first.Checkpoint))
	want := fmt.Sprintf("were pruned; the live log starts at checkpoint %d (index %d); exported as old.bin (checkpoints 0..%d, %s)",
		cut, index(t, grown.Checkpoint), cut, digest)
	if status != http.StatusOK || !ans.OK || !strings.Contains(ans.Pruned, want) || seq(t, ans.Checkpoint) <= cut {
		t.Fatalf("pruned: %d %+v\nwant %q", status, ans, want)
	}
	if _, again := a.checkpointOf(string(ans.Checkpoint)); !again.OK || again.Pruned != "" {
		t.Fatalf("after remembering the newest: %+v", again)
	}
	if body := a.get("/ui/runs").body; !strings.Contains(body, fmt.Sprintf("from index %d (the events before it were exported and pruned)", index(t, grown.Checkpoint))) {
		t.Errorf("the runs page does not say where verification starts: %s", regexp.MustCompile(`<p id="audit-status".*</p>`).FindString(body))
	}
}

// swap serves the current UI; a test replaces it as a restart would.
type swap struct {
	mu sync.Mutex
	h  http.Handler
}

func (s *swap) set(h http.Handler) { s.mu.Lock(); s.h = h; s.mu.Unlock() }

func (s *swap) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	h := s.h
	s.mu.Unlock()
	h.ServeHTTP(w, r)
}

// TestRollbackAlertInBrowser: in real Chromium, the page remembers the
// newest checkpoint it saw; after the log was truncated behind the
// server's back and the audit service restarted on it (so that the
// server's own verification finds nothing wrong), the page shows a
// tampering alert and keeps the checkpoint it saw.
func TestRollbackAlertInBrowser(t *testing.T) {
	b := browsertest.New(t)
	e := newEnv(t)
	a := e.pairFirst("laptop")
	e.publish("textkit", nil) // an event, sealed when the browser asks
	sw := &swap{h: e.ui}
	mux := http.NewServeMux()
	mux.Handle("/ui/", sw)
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	httpOnly := true
	if _, err := chromedp.Call(b.Ctx(), network.SetCookie, network.SetCookieParams{
		Name: "contractual_session", Value: a.cookie(), URL: srv.URL + "/", Path: "/",
		HTTPOnly: &httpOnly, SameSite: network.CookieSameSiteStrict,
	}); err != nil {
		t.Fatal(err)
	}
	css := func(sel string) chromedp.CSS { return chromedp.CSS(sel) }
	const key = `localStorage.getItem("contractual.audit.checkpoint.v1")`
	remembered := func() []byte {
		t.Helper()
		v, err := chromedp.Run(b.Ctx(), chromedp.Evaluate[string](key))
		if err != nil {
			t.Fatal(err)
		}
		return []byte(v)
	}

	b.Run(chromedp.Navigate(srv.URL+"/ui/"), chromedp.WaitVisible(css("#audit-consistency.ok")))
	if msg := b.Text("#audit-consistency"); !strings.Contains(msg, "the first it has seen") {
		t.Errorf("first visit: %q", msg)
	}
	first := remembered()

	e.publish("greeter", nil)
	b.Run(chromedp.Navigate(srv.URL+"/ui/runs"), chromedp.WaitVisible(css("#audit-consistency.ok")))
	if msg := b.Text("#audit-consistency"); !strings.Contains(msg, "the log extends the checkpoint it saw before") {
		t.Errorf("after growth: %q", msg)
	}
	seen := remembered()
	if seq(t, seen) <= seq(t, first) {
		t.Fatalf("remembered %s after %s", seen, first)
	}
	b.Screenshot("audit-consistency-ok")

	// Restart the audit service on a copy truncated back to the first
	// checkpoint, with the last checkpoints deleted.
	if err := e.audit.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	e.tamper(index(t, first), seq(t, first))
	restarted, err := audit.OpenService(context.Background(), audit.Config{Dir: filepath.Join(e.dir, "audit")}, audit.Deps{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { restarted.Close(context.Background()) })
	u, err := ui.New(ui.Config{
		Policy: e.policy, Pairing: e.pairing, Broker: e.broker, Audit: restarted, Auth: e.store,
		KeyFile: filepath.Join(e.dir, "gateway", "ui.key"),
	})
	if err != nil {
		t.Fatal(err)
	}
	sw.set(u)

	b.Run(chromedp.Navigate(srv.URL+"/ui/"), chromedp.WaitVisible(css("#audit-consistency.bad")))
	b.Screenshot("audit-consistency-tampering")
	msg := b.Text("#audit-consistency")
	for _, want := range []string{"TAMPERING", fmt.Sprintf("rollback: the log's newest checkpoint is %d", seq(t, first)), fmt.Sprintf("This browser keeps the checkpoint %d", seq(t, seen))} {
		if !strings.Contains(msg, want) {
			t.Errorf("the alert %q lacks %q", msg, want)
		}
	}
	if role, _ := chromedp.Run(b.Ctx(), chromedp.Evaluate[string](`document.getElementById("audit-consistency").getAttribute("role")`)); role != "alert" {
		t.Errorf("role %q", role)
	}
	if cls, _ := chromedp.Run(b.Ctx(), chromedp.Evaluate[string](`document.getElementById("audit-status").className`)); !strings.Contains(cls, "ok") {
		t.Errorf("the server's own verification is %q: then this test does not show what only the browser's memory catches", cls)
	}
	if got := remembered(); string(got) != string(seen) {
		t.Errorf("the browser now remembers %s, not %s", got, seen)
	}
	if errs := b.ConsoleErrors(); len(errs) > 0 {
		t.Errorf("console errors (a CSP violation?): %q", errs)
	}
}
