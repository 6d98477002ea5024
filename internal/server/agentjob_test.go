package server_test

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/structpb"

	contractualv1 "github.com/contractual/contractual/contracts/gen/contractual/v1"
	"github.com/contractual/contractual/contracts/gen/contractual/v1/contractualv1connect"
	"github.com/contractual/contractual/internal/engine/modeltest"
	"github.com/contractual/contractual/internal/server"
)

// agentJob is a job with one agent step: the model may propose
// textkit.slugify and textkit.json_pick, both pinned to digest, with the
// job's bounds on each; the trigger's title is its data.
func agentJob(digest string) []byte {
	return fmt.Appendf(nil, `name: titles-agent
trigger:
  cron: {expression: "0 2 * * *", time_zone: Europe/Berlin}
steps:
  - id: tidy
    input: {title: {$ref: trigger.payload.title}}
    agent:
      prompt: Make a URL slug of the title and say what it is.
      tools:
        - {tool: textkit.slugify, contract: %[1]s}
        - {tool: textkit.json_pick, contract: %[1]s}
      max_model_requests: 4
bounds:
  - tool: textkit.slugify
    inputs:
      - {pointer: /text, max_length: 40}
  - tool: textkit.json_pick
    inputs:
      - {pointer: /json/0, allowed: [ok]}
`, digest)
}

// agentWorld is an all-in-one server whose engine talks to the scripted
// model m, with textkit approved and the agent job approved, as the
// owner's device.
func agentWorld(t *testing.T, m *modeltest.Server) (*jobWorld, string) {
	t.Helper()
	var s *server.Server
	if m != nil {
		s, _ = startChat(t, m)
	} else {
		s, _ = start(t) // no model
	}
	tok, _ := owner(t, s)
	publishApproved(t, s, tok)
	opts := connect.WithInterceptors(bearer(tok))
	w := &jobWorld{
		s:    s,
		pol:  contractualv1connect.NewPolicyServiceClient(http.DefaultClient, s.URL, opts),
		jobs: contractualv1connect.NewJobServiceClient(http.DefaultClient, s.URL, opts),
		runs: contractualv1connect.NewJobRunServiceClient(http.DefaultClient, s.URL, opts),
	}
	list, err := w.pol.ListContracts(context.Background(), &contractualv1.ListContractsRequest{Name: "textkit"})
	if err != nil || len(list.GetRecords()) != 1 {
		t.Fatalf("contracts: %v, %v", list, err)
	}
	w.approveJob(t, agentJob(list.GetRecords()[0].GetDigest()))
	return w, tok
}

// runAgentJob runs the agent job now, with a title, and waits for the run.
func runAgentJob(t *testing.T, w *jobWorld) *contractualv1.JobRun {
	t.Helper()
	payload, err := structpb.NewValue(map[string]any{"title": "Hello World"})
	if err != nil {
		t.Fatal(err)
	}
	run, err := w.runs.RunJob(context.Background(), &contractualv1.RunJobRequest{Id: "titles-agent", Payload: payload})
	if err != nil {
		t.Fatal(err)
	}
	return w.finished(t, run.GetRun().GetId())
}

// TestAgentJob: an agent step end to end. The model proposes slugify
// (within the job's bound), policy allows it as the job's call, the runner
// runs it, the model answers from the result, and the answer is the
// step's output.
func TestAgentJob(t *testing.T) {
	m := modeltest.New(t,
		modeltest.Turn{Content: `{"answer": null, "calls": [{"tool": "textkit.slugify", "input": "{\"text\": \"Hello World\"}"}]}`, PromptTokens: 100, CompletionTokens: 20},
		modeltest.Turn{Content: `{"answer": "The slug is hello-world.", "calls": []}`, PromptTokens: 150, CompletionTokens: 10},
	)
	w, tok := agentWorld(t, m)
	r := runAgentJob(t, w)
	if r.GetState() != contractualv1.RunState_RUN_STATE_SUCCEEDED || len(r.GetSteps()) != 1 {
		t.Fatalf("run %v: %s, steps %v", r.GetState(), r.GetError(), r.GetSteps())
	}
	st := r.GetSteps()[0]
	if st.GetState() != contractualv1.StepState_STEP_STATE_DONE || st.GetOutput().GetStructValue().GetFields()["answer"].GetStringValue() != "The slug is hello-world." ||
		st.GetIdempotencyKey() == "" || !strings.HasPrefix(st.GetIdempotencyKey(), r.GetId()+".") {
		t.Fatalf("step %v", st)
	}
	if got := r.GetUsed().GetToolCallsPerRun(); got != 1 {
		t.Errorf("tool calls used %d, want 1", got)
	}
	if rec := w.job(t, "titles-agent"); rec.GetState() != contractualv1.JobState_JOB_STATE_APPROVED {
		t.Errorf("job %v", rec.GetState())
	}

	reqs := m.Requests()
	if len(reqs) != 2 {
		t.Fatalf("%d model requests", len(reqs))
	}
	// The first request: the owner's prompt, the data fenced as untrusted,
	// and the tools' schemas narrowed by the job's bounds.
	first := reqs[0].Messages
	task := first[len(first)-1].Content
	if !strings.Contains(task, "Make a URL slug of the title") ||
		!strings.Contains(task, `<tool-output call="data" tool="job" status="ok" trust="untrusted">`) || !strings.Contains(task, `"title":"Hello World"`) {
		t.Errorf("the step's task: %s", task)
	}
	if !strings.Contains(string(reqs[0].ResponseFormat), `\"maxLength\":40`) {
		t.Errorf("the response format has no narrowed slugify schema: %s", reqs[0].ResponseFormat)
	}
	last := reqs[1].Messages[len(reqs[1].Messages)-1]
	if last.Role != "user" || !strings.Contains(last.Content, `tool="textkit.slugify" status="ok" trust="untrusted">`) || !strings.Contains(last.Content, "hello-world") {
		t.Errorf("the result's message to the model: %s", last.Content)
	}

	// The audit log has the proposal and its result, as the job.
	au := contractualv1connect.NewAuditServiceClient(http.DefaultClient, w.s.URL, connect.WithInterceptors(bearer(tok)))
	tail, err := au.Tail(context.Background(), &contractualv1.TailRequest{Limit: 200})
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, ev := range tail.GetEvents() {
		if ev.GetPrincipal() == "job:titles-agent" {
			seen[ev.GetAction()+" "+ev.GetOutcome()] = true
		}
	}
	for _, want := range []string{"job.agent.proposal ok", "job.agent.result ok", "job.agent.step ok", "call.decision allow"} {
		if !seen[want] {
			t.Errorf("no audit event %q for the job; saw %v", want, seen)
		}
	}
}

// TestAgentJobPauses: the model proposes a call outside the job's bounds
// (a bound on an array's element, which the model's schema cannot carry):
// policy denies it and pauses the job (kind decision, at the agent step),
// the step ends at once without running the call or asking the model
// again, and the run stops. Nothing waits.
func TestAgentJobPauses(t *testing.T) {
	m := modeltest.New(t,
		modeltest.Turn{Content: `{"answer": null, "calls": [{"tool": "textkit.json_pick", "input": "{\"json\": [\"bad\"], \"path\": \"0\"}"}]}`},
		modeltest.Turn{Content: `{"answer": "never asked", "calls": []}`},
	)
	w, _ := agentWorld(t, m)
	r := runAgentJob(t, w)
	if r.GetState() != contractualv1.RunState_RUN_STATE_STOPPED || !strings.Contains(r.GetError(), "step tidy") ||
		!strings.Contains(r.GetError(), "outside job titles-agent's bounds") || !strings.Contains(r.GetError(), "never waits") {
		t.Fatalf("run %v: %s", r.GetState(), r.GetError())
	}
	if st := r.GetSteps()[0]; st.GetState() != contractualv1.StepState_STEP_STATE_FAILED || st.GetOutput() != nil {
		t.Fatalf("step %v", st)
	}
	rec := w.job(t, "titles-agent")
	if p := rec.GetPause(); rec.GetState() != contractualv1.JobState_JOB_STATE_PAUSED || p.GetKind() != contractualv1.PauseKind_PAUSE_KIND_DECISION ||
		p.GetRunId() != r.GetId() || p.GetStep() != "tidy" || p.GetPausedBy() != "job:titles-agent" {
		t.Fatalf("job %v, pause %v", rec.GetState(), p)
	}
	if n := len(m.Requests()); n != 1 {
		t.Errorf("the model was asked %d times; the step should end at the denial", n)
	}
	if got := r.GetUsed().GetToolCallsPerRun(); got != 0 {
		t.Errorf("tool calls used %d: nothing should have run", got)
	}
}

// TestAgentJobNoModel: an engine without a model fails the agent step,
// saying how to configure one; the run stops, nothing is retried.
func TestAgentJobNoModel(t *testing.T) {
	w, _ := agentWorld(t, nil)
	r := runAgentJob(t, w)
	if r.GetState() != contractualv1.RunState_RUN_STATE_STOPPED || !strings.Contains(r.GetError(), "the engine has no model") || !strings.Contains(r.GetError(), "--model") {
		t.Fatalf("run %v: %s", r.GetState(), r.GetError())
	}
}
