package server_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"

	contractualv1 "github.com/contractual/contractual/contracts/gen/contractual/v1"
	"github.com/contractual/contractual/contracts/gen/contractual/v1/contractualv1connect"
	"github.com/contractual/contractual/internal/scheduler"
	"github.com/contractual/contractual/internal/server"
)

// hookJob is the nightly digest as a webhook job: a delivery signed with
// HOOK_KEY runs it, and its post step sends the delivery's text.
func hookJob(t *testing.T) []byte {
	return digestFile(t, "name: nightly-digest", "name: hook",
		`cron: {expression: "0 2 * * *", time_zone: Europe/Berlin}`, `webhook: {secret: HOOK_KEY, replay_window_seconds: 300}`,
		`input: {text: {$ref: steps.digest.output.text}}`, `input: {text: {$ref: trigger.payload.text}}`,
		"misfire: {policy: catch_up, max_catch_up: 1}\n", "")
}

// TestWebhook POSTs signed deliveries to a real server over HTTP: the
// broker checks the signature under the secret the owner put, the
// scheduler enqueues the run with the body as payload, and the worker runs
// it once, through policy and the runner, to the ntfy sink; a bad signature, a
// stale timestamp, a replayed delivery id, an unknown job, a job without a
// webhook trigger, a body that is not JSON and an oversized one are
// refused, with the status a sender needs, audited, and enqueue nothing.
func TestWebhook(t *testing.T) {
	w := newJobWorld(t)
	s := w.s
	hook := w.approveJob(t, hookJob(t))
	// The scheduler takes the jobs in the order of their approvals: when it
	// waits for the cron job's 02:00 it has the webhook job too.
	due := nextBerlin2(t, w.approveJob(t, digestFile(t)).GetDecidedAt().AsTime())
	w.clock.WaitFor(t, due, patience)
	tok, _ := owner(t, s)
	opts := connect.WithInterceptors(bearer(tok))
	const key = "whsec-0123456789abcdef"
	if _, err := w.broker.PutSecret(context.Background(), &contractualv1.PutSecretRequest{Name: "HOOK_KEY", Value: []byte(key)}); err != nil {
		t.Fatal(err)
	}

	type delivery struct {
		job, ts, id, sig string
		body             []byte
	}
	now := strconv.FormatInt(time.Now().Unix(), 10)
	signed := func(job, ts, id, body, k string) delivery {
		return delivery{job, ts, id, scheduler.Sign([]byte(k), ts, id, []byte(body)), []byte(body)}
	}
	post := func(d delivery) (int, string) {
		t.Helper()
		req, err := http.NewRequest(http.MethodPost, s.URL+"/hooks/"+d.job, bytes.NewReader(d.body))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set(scheduler.HeaderTimestamp, d.ts)
		req.Header.Set(scheduler.HeaderDelivery, d.id)
		req.Header.Set(scheduler.HeaderSignature, d.sig)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}

	good := signed("hook", now, "d-1", `{"text": "octo starred contractual"}`, key)
	code, body := post(good)
	var accepted struct {
		RunID string `json:"run_id"`
	}
	if err := json.Unmarshal([]byte(body), &accepted); code != http.StatusAccepted || err != nil || accepted.RunID == "" {
		t.Fatalf("a good delivery: %d %s", code, body)
	}
	c := w.finished(t, accepted.RunID)
	if c.GetState() != contractualv1.RunState_RUN_STATE_SUCCEEDED || c.GetJobId() != "hook" || c.GetTrigger() != "webhook" || c.GetJobDigest() != hook.GetDigest() ||
		c.GetPayload().GetStructValue().GetFields()["text"].GetStringValue() != "octo starred contractual" || strconv.FormatInt(c.GetScheduledAt().GetSeconds(), 10) != now {
		t.Fatalf("the delivery's run: %v", c)
	}
	if p := w.sinks.ntfy(); len(p) != 1 || p[0].Body != "octo starred contractual" {
		t.Fatalf("ntfy got %v", p)
	}

	stale := strconv.FormatInt(time.Now().Add(-time.Hour).Unix(), 10)
	for _, c := range []struct {
		name string
		d    delivery
		code int
		msg  string
	}{
		{"bad signature", signed("hook", now, "d-2", `{"owner": "octo"}`, "not the key"), http.StatusUnauthorized, "signature does not verify"},
		{"body changed", delivery{"hook", now, "d-3", good.sig, []byte(`{"owner": "evil"}`)}, http.StatusUnauthorized, "signature does not verify"},
		{"stale timestamp", signed("hook", stale, "d-4", `{"owner": "octo"}`, key), http.StatusForbidden, "outside the replay window"},
		{"replayed", good, http.StatusForbidden, "already received"},
		{"replayed id, new signature", signed("hook", now, "d-1", `{"owner": "other"}`, key), http.StatusForbidden, "already received"},
		{"unknown job", signed("nope", now, "d-5", `{}`, key), http.StatusUnauthorized, "signature does not verify"},
		{"not a webhook job", signed("nightly-digest", now, "d-6", `{}`, key), http.StatusUnauthorized, "signature does not verify"},
		{"not JSON", signed("hook", now, "d-7", `owner=octo`, key), http.StatusBadRequest, "must be a JSON value"},
		{"no signature", delivery{"hook", now, "d-8", "", []byte(`{}`)}, http.StatusBadRequest, "Contractual-Signature"},
		{"oversized", signed("hook", now, "d-9", `{"x": "`+strings.Repeat("a", 300<<10)+`"}`, key), http.StatusBadRequest, "byte limit"},
	} {
		code, body := post(c.d)
		if code != c.code || !strings.Contains(body, c.msg) {
			t.Errorf("%s: %d %s; want %d and %q", c.name, code, body, c.code, c.msg)
		}
		// The unknown job and the wrong key answer alike.
		if strings.Contains(body, "no approved job of that id") || strings.Contains(body, "HOOK_KEY") {
			t.Errorf("%s: the answer tells which check failed: %s", c.name, body)
		}
	}
	if runs := append(w.listRuns(t, "hook"), w.listRuns(t, "nightly-digest")...); len(runs) != 1 {
		t.Fatalf("refused deliveries enqueued runs: %d in all", len(runs))
	}
	if n := len(w.sinks.ntfy()); n != 1 {
		t.Fatalf("ntfy got %d posts", n)
	}

	// The refusals past the gateway's own checks are audited, with their
	// reasons; the broker recorded every signature check.
	tail, err := contractualv1connect.NewAuditServiceClient(http.DefaultClient, s.URL, opts).Tail(context.Background(), &contractualv1.TailRequest{Limit: 1000})
	if err != nil {
		t.Fatal(err)
	}
	count := map[string]int{}
	var reasons []string
	for _, ev := range tail.GetEvents() {
		count[ev.GetAction()+" "+ev.GetOutcome()]++
		if ev.GetAction() == "webhook.refused" {
			reasons = append(reasons, ev.GetDetail())
		}
	}
	want := map[string]int{
		"trigger.fired ok": 1, "webhook.refused unauthenticated": 4, "webhook.refused permission_denied": 3,
		"webhook.refused invalid": 2, "secret.verify_mac ok": 4, "secret.verify_mac mismatch": 2,
	}
	for k, n := range want {
		if count[k] != n {
			t.Errorf("%d %q events, want %d (all: %v)", count[k], k, n, count)
		}
	}
	joined := strings.Join(reasons, "\n")
	for _, r := range []string{"no approved job of that id", "not a webhook", "does not verify under secret HOOK_KEY", "a replayed delivery id", "stale or future timestamp"} {
		if !strings.Contains(joined, r) {
			t.Errorf("no refusal audited as %q in:\n%s", r, joined)
		}
	}
	if strings.Contains(fmt.Sprint(tail.GetEvents()), key) {
		t.Error("the audit log holds the webhook key")
	}
}

// TestWebhookLimits: deliveries are POSTs, and each source gets
// Limits.WebhooksPerMinute of them a minute, refused with 429 beyond.
func TestWebhookLimits(t *testing.T) {
	s, err := server.Start(context.Background(), server.Config{
		DataDir: t.TempDir(), Addr: "127.0.0.1:0", Limits: server.Limits{WebhooksPerMinute: 2},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close(context.Background())
	resp, err := http.Get(s.URL + "/hooks/hook")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest || resp.Header.Get("Allow") != http.MethodPost {
		t.Errorf("GET: %d, Allow %q", resp.StatusCode, resp.Header.Get("Allow"))
	}
	for i, want := range []int{http.StatusBadRequest, http.StatusBadRequest, http.StatusTooManyRequests} {
		resp, err := http.Post(s.URL+"/hooks/hook", "application/json", strings.NewReader(`{}`))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Errorf("POST #%d: %d, want %d", i+1, resp.StatusCode, want)
		}
	}
}
