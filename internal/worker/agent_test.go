package worker

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	"github.com/contractual/contractual/internal/engine"
	"github.com/contractual/contractual/internal/engine/modeltest"
)

// agentJob is a job whose one agent step may propose ghstars.repo_stars,
// owner bounded to "o", given the trigger's repo as its data.
func agentJob(t testing.TB, extra string) string {
	return fmt.Sprintf(`name: stars-agent
trigger: {cron: {expression: "0 2 * * *", time_zone: UTC}}
steps:
  - id: ask
    input: {repo: {$ref: trigger.payload.repo}}
    agent:
      prompt: How many stars has the repository?
      tools: [{tool: ghstars.repo_stars, contract: %s}]
bounds:
  - tool: ghstars.repo_stars
    inputs: [{pointer: /owner, allowed: [o]}]
%s`, ghstarsDigest(t), extra)
}

// openEngine opens a real engine on the stack, talking to the scripted
// model m.
func openEngine(t testing.TB, dir string, st *stack, m *modeltest.Server) *engine.Service {
	t.Helper()
	e, err := engine.Open(context.Background(), engine.Config{Dir: filepath.Join(dir, "engine"), Model: engine.ModelConfig{Model: "scripted", BaseURL: m.URL}},
		engine.Deps{Policy: st.policy, Contracts: st.policy, Runner: st.runner, Audit: st.audit})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Close(context.Background()) })
	return e
}

// TestAgentStep: an agent step runs through the engine: the model's call
// is decided for the job with the run and the step, its HTTP request
// carries the run's idempotency key, the budgets count it, and the
// model's answer is the step's output, which later steps may use.
func TestAgentStep(t *testing.T) {
	dir := t.TempDir()
	sk := newSink(t)
	st := newStack(t, dir, sk.egress())
	m := modeltest.New(t,
		modeltest.Turn{Content: `{"answer": null, "calls": [{"tool": "ghstars.repo_stars", "input": {"owner": "o", "repo": "one"}}]}`},
		modeltest.Turn{Content: `{"answer": "one has 7 stars", "calls": []}`},
	)
	e := openEngine(t, dir, st, m)
	rec := st.approveJob(t, agentJob(t, ""))
	s, err := open(context.Background(), Config{Dir: filepath.Join(dir, "worker"), Now: newClock(t0).now},
		Deps{Policy: st.policy, Runner: st.runner, Jobs: st.jobs(), Audit: st.audit, Engine: e})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close(context.Background()) })
	id := enqueue(t, s, rec, t0, `{"repo": "one"}`).GetRun().GetId()
	drain(t, s, "w1")
	r := run(t, s, id)
	if r.GetState() != succeeded || stepSummary(r) != "ask:done:1" {
		t.Fatalf("run %v: %s; %s", r.GetState(), r.GetError(), stepSummary(r))
	}
	step := r.GetSteps()[0]
	if got := step.GetOutput().GetStructValue().GetFields()["answer"].GetStringValue(); got != "one has 7 stars" {
		t.Errorf("output %v", step.GetOutput())
	}
	key, seen, applied := sk.counts("one")
	if !strings.HasPrefix(key, id+".") || seen != 1 || applied != 1 {
		t.Errorf("the sink saw key %q %d times, applied %d", key, seen, applied)
	}
	if u := r.GetUsed(); u.GetToolCallsPerRun() != 1 || u.GetEgressRequests() != 1 || len(step.GetEgress()) != 1 {
		t.Errorf("used %v, egress %v", u, step.GetEgress())
	}
	if task := m.Requests()[0].Messages[1].Content; !strings.Contains(task, "How many stars") || !strings.Contains(task, `{"repo":"one"}`) {
		t.Errorf("task %s", task)
	}
}

// TestAgentStepNoEngine: a worker without an engine fails an agent step,
// saying why; nothing is called.
func TestAgentStepNoEngine(t *testing.T) {
	dir := t.TempDir()
	sk := newSink(t)
	st := newStack(t, dir, sk.egress())
	rec := st.approveJob(t, agentJob(t, ""))
	s := openWorker(t, dir, st, Config{Now: newClock(t0).now})
	id := enqueue(t, s, rec, t0, `{"repo": "one"}`).GetRun().GetId()
	drain(t, s, "w1")
	r := run(t, s, id)
	if r.GetState() != failed || !strings.Contains(r.GetError(), "step ask is an agent step, and this worker has no engine") || sk.total.Load() != 0 {
		t.Fatalf("run %v: %s; %d requests", r.GetState(), r.GetError(), sk.total.Load())
	}
}
