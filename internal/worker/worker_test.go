package worker

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	contractualv1 "github.com/contractual/contractual/contracts/gen/contractual/v1"
	"github.com/contractual/contractual/internal/decision"
	"github.com/contractual/contractual/internal/errs"
)

var t0 = time.Date(2026, 3, 1, 2, 0, 0, 0, time.UTC)

// TestEnqueueIdempotent: the same firing enqueued again is the same run,
// existed set; another time, trigger or delivery is another run; a
// malformed firing is refused.
func TestEnqueueIdempotent(t *testing.T) {
	dir := t.TempDir()
	sk := newSink(t)
	st := newStack(t, dir, sk.egress())
	rec := st.approveJob(t, chainJob(t, "nightly", ""))
	s := openWorker(t, dir, st, Config{Now: newClock(t0).now})

	first := enqueue(t, s, rec, t0, `{"repo": "one"}`)
	again := enqueue(t, s, rec, t0, `{"repo": "one"}`)
	if first.GetExisted() || !again.GetExisted() || again.GetRun().GetId() != first.GetRun().GetId() {
		t.Fatalf("enqueue twice: %v then %v", first, again)
	}
	if r := first.GetRun(); r.GetState() != queued || r.GetJobId() != "nightly" || r.GetPayload().GetStructValue().GetFields()["repo"].GetStringValue() != "one" {
		t.Fatalf("queued run: %v", r)
	}
	ids := map[string]bool{first.GetRun().GetId(): true}
	for _, req := range []*contractualv1.EnqueueRequest{
		{JobId: rec.GetId(), JobDigest: rec.GetDigest(), Trigger: "cron", ScheduledAt: timestamp(t0.Add(time.Hour))},
		{JobId: rec.GetId(), JobDigest: rec.GetDigest(), Trigger: "once", ScheduledAt: timestamp(t0)},
		{JobId: rec.GetId(), JobDigest: rec.GetDigest(), Trigger: "webhook", ScheduledAt: timestamp(t0), DeliveryId: "d1"},
		{JobId: rec.GetId(), JobDigest: rec.GetDigest(), Trigger: "webhook", ScheduledAt: timestamp(t0), DeliveryId: "d2"},
	} {
		resp, err := s.Enqueue(context.Background(), req)
		if err != nil || resp.GetExisted() || ids[resp.GetRun().GetId()] {
			t.Fatalf("enqueue %v: %v, %v", req, resp, err)
		}
		ids[resp.GetRun().GetId()] = true
	}
	for name, req := range map[string]*contractualv1.EnqueueRequest{
		"no job":        {JobDigest: rec.GetDigest(), Trigger: "cron", ScheduledAt: timestamp(t0)},
		"bad digest":    {JobId: "nightly", JobDigest: "sha256:12", Trigger: "cron", ScheduledAt: timestamp(t0)},
		"manual":        {JobId: "nightly", JobDigest: rec.GetDigest(), Trigger: "manual", ScheduledAt: timestamp(t0)},
		"no time":       {JobId: "nightly", JobDigest: rec.GetDigest(), Trigger: "cron"},
		"long delivery": {JobId: "nightly", JobDigest: rec.GetDigest(), Trigger: "webhook", ScheduledAt: timestamp(t0), DeliveryId: strings.Repeat("d", 257)},
	} {
		if _, err := s.Enqueue(context.Background(), req); !errs.Is(err, errs.Invalid) {
			t.Errorf("%s: %v, want Invalid", name, err)
		}
	}
}

// TestRunTemplatesSteps: a run executes its steps in order through real
// policy and the runner, each input rendered from the trigger's payload
// and the step before's output, and records outputs, keys, budgets used
// and audit events (with input hashes, never inputs).
func TestRunTemplatesSteps(t *testing.T) {
	dir := t.TempDir()
	sk := newSink(t)
	sk.chained()
	st := newStack(t, dir, sk.egress())
	rec := st.approveJob(t, chainJob(t, "chain", ""))
	s := openWorker(t, dir, st, Config{Now: newClock(t0).now})
	id := enqueue(t, s, rec, t0, `{"repo": "one"}`).GetRun().GetId()
	drain(t, s, "w")

	r := run(t, s, id)
	if r.GetState() != succeeded || stepSummary(r) != "one:done:1 two:done:1 three:done:1" {
		t.Fatalf("run %v: %s %s", r.GetState(), stepSummary(r), r.GetError())
	}
	for i, want := range []string{"two", "three", "three"} {
		step := r.GetSteps()[i]
		if got := step.GetOutput().GetStructValue().GetFields()["full_name"].GetStringValue(); got != want {
			t.Errorf("step %s output %v, want full_name %s", step.GetId(), step.GetOutput(), want)
		}
		in := fmt.Sprintf(`{"owner":"o","repo":%q}`, []string{"one", "two", "three"}[i])
		if step.GetInputHash() != decision.Hash([]byte(in)) {
			t.Errorf("step %s input hash %s, want that of %s", step.GetId(), step.GetInputHash(), in)
		}
		if step.GetIdempotencyKey() != decision.ActionKey(id, step.GetId(), "ghstars.repo_stars", step.GetInputHash()) || len(step.GetEgress()) != 1 {
			t.Errorf("step %s: key %q, egress %v", step.GetId(), step.GetIdempotencyKey(), step.GetEgress())
		}
	}
	for _, repo := range []string{"one", "two", "three"} {
		key, seen, _ := sk.counts(repo)
		if seen != 1 || !strings.HasPrefix(key, id+".") {
			t.Errorf("%s: key %q seen %d times", repo, key, seen)
		}
	}
	if u := r.GetUsed(); u.GetToolCallsPerRun() != 3 || u.GetEgressRequests() != 3 || u.GetEgressBytes() == 0 || u.GetOutputBytes() == 0 {
		t.Errorf("used %v", u)
	}
	events, err := st.audit.Tail(context.Background(), &contractualv1.TailRequest{Limit: 1000})
	if err != nil {
		t.Fatal(err)
	}
	var actions []string
	for _, ev := range events.GetEvents() {
		if ev.GetService() != "worker" {
			continue
		}
		actions = append(actions, ev.GetAction()+"/"+ev.GetOutcome())
		if ev.GetPrincipal() != "job:chain" || strings.Contains(ev.GetDetail(), `"repo"`) {
			t.Errorf("event %v", ev)
		}
		if strings.HasPrefix(ev.GetAction(), "step.") && (ev.GetInputHash() == "" || !strings.Contains(ev.GetDetail(), "idempotency key "+id+".")) {
			t.Errorf("step event without input hash or key: %v", ev)
		}
	}
	want := "run.started/ok step.started/ok step.finished/ok step.started/ok step.finished/ok step.started/ok step.finished/ok run.finished/succeeded"
	if strings.Join(actions, " ") != want {
		t.Errorf("audit: %s\nwant %s", strings.Join(actions, " "), want)
	}
}

// TestTemplateMissingPath: a reference to a path that is not there fails
// the step, before policy is asked, with an error naming it.
func TestTemplateMissingPath(t *testing.T) {
	dir := t.TempDir()
	sk := newSink(t)
	st := newStack(t, dir, sk.egress())
	rec := st.approveJob(t, chainJob(t, "chain", "retry: {attempts: 3}\n"))
	s := openWorker(t, dir, st, Config{Now: newClock(t0).now})
	id := enqueue(t, s, rec, t0, `{"rep": "one"}`).GetRun().GetId()
	drain(t, s, "w")
	r := run(t, s, id)
	if r.GetState() != failed || r.GetAttempt() != 1 || stepSummary(r) != "one:failed:1" ||
		!strings.Contains(r.GetError(), `reference "trigger.payload.repo": trigger.payload has no key "repo"`) {
		t.Fatalf("run %v attempt %d: %s: %s", r.GetState(), r.GetAttempt(), stepSummary(r), r.GetError())
	}
	if sk.total.Load() != 0 {
		t.Errorf("the sink saw %d requests", sk.total.Load())
	}
}

// TestTemplate covers the reference forms: nested keys, array indexes,
// whole values, and the errors.
func TestTemplate(t *testing.T) {
	sc := &scope{outputs: map[string]any{}}
	var err error
	if sc.payload, err = decodeJSON([]byte(`{"a": {"b": [10, {"c": "x"}]}, "n": 1.50}`)); err != nil {
		t.Fatal(err)
	}
	sc.outputs["s"] = output([]byte(`{"items": ["p", "q"]}`))
	sc.outputs["text"] = output([]byte(`not json`))
	tests := []struct{ tmpl, want, err string }{
		{`{"x": {"$ref": "trigger.payload.a.b.1.c"}}`, `{"x":"x"}`, ""},
		{`{"n": {"$ref": "trigger.payload.n"}, "k": [1, {"$ref": "steps.s.output.items.0"}]}`, `{"k":[1,"p"],"n":1.50}`, ""},
		{`{"$ref": "steps.s.output"}`, `{"items":["p","q"]}`, ""},
		{`{"t": {"$ref": "steps.text.output"}}`, `{"t":"not json"}`, ""},
		{`{"x": {"$ref": "trigger.payload.a.b.2"}}`, "", `trigger.payload.a.b is an array of 2, without an element "2"`},
		{`{"x": {"$ref": "trigger.payload.n.m"}}`, "", `trigger.payload.n is not an object or an array`},
		{`{"x": {"$ref": "steps.later.output"}}`, "", `step later has no output before this step`},
		{`{"x": {"$ref": "steps.s.output.nope"}}`, "", `steps.s.output has no key "nope"`},
	}
	for _, tt := range tests {
		got, err := sc.render(jsonValue(t, tt.tmpl))
		switch {
		case tt.err != "" && (!errs.Is(err, errs.Invalid) || !strings.Contains(err.Error(), tt.err)):
			t.Errorf("%s: %v, want an error with %q", tt.tmpl, err, tt.err)
		case tt.err == "" && (err != nil || string(got) != tt.want):
			t.Errorf("%s: %s, %v; want %s", tt.tmpl, got, err, tt.want)
		}
	}
}

// TestSameCallTwoSteps: two steps of one job making the same call (same
// tool, same input) are two side effects: the step is part of their
// idempotency keys (policy signs it into the decision), so each step's
// request carries its own key and the sink, applying each key once,
// applies both.
func TestSameCallTwoSteps(t *testing.T) {
	dir := t.TempDir()
	sk := newSink(t)
	st := newStack(t, dir, sk.egress())
	rec := st.approveJob(t, fmt.Sprintf(`name: twice
trigger: {cron: {expression: "0 2 * * *", time_zone: UTC}}
steps:
  - {id: first, tool: ghstars.repo_stars, contract: %[1]s, input: {owner: o, repo: one}}
  - {id: again, tool: ghstars.repo_stars, contract: %[1]s, input: {owner: o, repo: one}}
`, ghstarsDigest(t)))
	s := openWorker(t, dir, st, Config{Now: newClock(t0).now})
	id := enqueue(t, s, rec, t0, "").GetRun().GetId()
	drain(t, s, "w")
	r := run(t, s, id)
	if r.GetState() != succeeded || stepSummary(r) != "first:done:1 again:done:1" {
		t.Fatalf("run %v: %s: %s", r.GetState(), stepSummary(r), r.GetError())
	}
	a, b := r.GetSteps()[0], r.GetSteps()[1]
	if a.GetInputHash() != b.GetInputHash() || a.GetIdempotencyKey() == b.GetIdempotencyKey() {
		t.Fatalf("steps' input hashes %s, %s; keys %s, %s: want one hash, two keys", a.GetInputHash(), b.GetInputHash(), a.GetIdempotencyKey(), b.GetIdempotencyKey())
	}
	sk.mu.Lock()
	defer sk.mu.Unlock()
	for _, step := range r.GetSteps() {
		key := decision.RequestKey(step.GetIdempotencyKey(), 1)
		if sk.seen[key] != 1 || sk.applied[key] != 1 {
			t.Errorf("step %s: key %s seen %d times, applied %d", step.GetId(), key, sk.seen[key], sk.applied[key])
		}
	}
	if len(sk.applied) != 2 {
		t.Errorf("the sink applied %d side effects, want 2: %v", len(sk.applied), sk.applied)
	}
}
