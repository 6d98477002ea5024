package deploytest_test

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/encoding/protojson"

	contractualv1 "github.com/contractual/contractual/contracts/gen/contractual/v1"
	"github.com/contractual/contractual/contracts/gen/contractual/v1/contractualv1connect"
	"github.com/contractual/contractual/internal/deploytest"
	"github.com/contractual/contractual/internal/rpc"
)

const (
	// chatModel is the model TestCompose's engine names
	// (CONTRACTUAL_MODEL); the stand-in for api.openai.com answers it alone.
	chatModel = "deploytest-model"
	// llmKey is the provider's API key the chat stores as LLM_API_KEY; the
	// stand-in answers only requests that carry it.
	llmKey = "sk-deploytest-llm-0123456789abcdefABCDEF"
)

// chat is a whole chat session through the gateway: the engine, on the
// internal network only, asks the model through the relay tool llm.chat
// (tools/llm, under its real contract), which the runner calls with the
// broker's LLM_API_KEY injected for api.openai.com; the model (the
// probe's stand-in) proposes textkit.slugify, policy allows it, the
// runner runs it and the model answers from its result. The key reaches
// the stand-in on every request, and appears in no event and no log; the
// engine itself cannot reach the stand-in.
func (d *deployment) chat(t *testing.T) {
	ctx := t.Context()
	token := d.token(t)

	eng, err := d.Container(ctx, "engine")
	if err != nil {
		t.Fatal(err)
	}
	for _, kv := range []string{"CONTRACTUAL_MODEL=" + chatModel, "CONTRACTUAL_MODEL_RELAY=llm.chat"} {
		if !slices.Contains(eng.Config.Env, kv) {
			t.Errorf("the engine's environment %v lacks %s", eng.Config.Env, kv)
		}
	}
	// (Not its API's path, so that the stand-in counts only the relay's
	// requests.)
	model := "https://" + d.modelIP + ":443/"
	// The control: the stand-in answers on its own network.
	if r := d.dial(t, []string{"--network", d.apiNet}, model)[0]; r.Status != http.StatusNotFound {
		t.Fatalf("from the stand-in's own network, %s answered %d (%s); the check below would prove nothing", model, r.Status, r.Error)
	}
	if r := d.dial(t, []string{"--network", "container:" + eng.ID}, model)[0]; r.Status != 0 || r.Error == "" {
		t.Errorf("from the engine's network namespace, %s answered %d %q; want no connection", model, r.Status, r.Body)
	}

	brk := contractualv1connect.NewBrokerServiceClient(http.DefaultClient, d.url, connect.WithInterceptors(bearer(token)))
	if _, err := brk.PutSecret(ctx, &contractualv1.PutSecretRequest{Name: "LLM_API_KEY", Value: []byte(llmKey)}); err != nil {
		t.Fatalf("PutSecret LLM_API_KEY: %v", err)
	}
	out := d.contractual(t, "", "publish", d.tool("llm", "llm.wasm"), "--contract", d.tool("llm", "contract.yaml"))
	d.contractual(t, "", "contracts", "approve", digestIn(t, out), "--reason", "deploytest: the engine's model relay")

	c := contractualv1connect.NewSessionServiceClient(http.DefaultClient, d.url, connect.WithInterceptors(rpc.Bearer(token)))
	open, err := c.OpenSession(ctx, &contractualv1.OpenSessionRequest{Tools: []string{"textkit.slugify"}, Title: "deploytest"})
	if err != nil {
		t.Fatalf("OpenSession: %v", err)
	}
	sess := open.GetSession()
	if !strings.HasPrefix(sess.GetPrincipal(), "session:") {
		t.Fatalf("session %v", sess)
	}
	sctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	st, err := c.Send(sctx, &contractualv1.SendRequest{SessionId: sess.GetId(), Text: "Hello, Compose World!"})
	if err != nil {
		t.Fatalf("Send: %v", err)
	}
	var evs []*contractualv1.SessionEvent
	for st.Receive() {
		evs = append(evs, st.Msg().GetEvent())
	}
	if err := st.Err(); err != nil {
		t.Fatalf("Send: %v after %s", err, kinds(evs))
	}
	st.Close()
	const want = "USER MODEL PROPOSAL DECISION RESULT MODEL ANSWER TURN_END"
	if got := kinds(evs); got != want {
		t.Fatalf("events %s, want %s:\n%s", got, want, eventsJSON(evs))
	}
	if p := evs[2]; p.GetTool() != "textkit.slugify" || !strings.Contains(p.GetInput(), "Hello, Compose World!") {
		t.Errorf("proposal %v", p)
	}
	if dec := evs[3]; dec.GetVerdict() != contractualv1.Verdict_VERDICT_ALLOW || dec.GetDecisionId() == "" {
		t.Errorf("decision %v", dec)
	}
	if r := evs[4]; r.GetError() || !strings.Contains(r.GetOutput(), "hello-compose-world") {
		t.Errorf("result %v", r)
	}
	if a := evs[6]; a.GetText() != "The slug is hello-compose-world." {
		t.Errorf("answer %q", a.GetText())
	}

	// The key: in no event of the turn, nor of the session as stored.
	got, err := c.GetSession(ctx, &contractualv1.GetSessionRequest{Id: sess.GetId()})
	if err != nil {
		t.Fatal(err)
	}
	if all := eventsJSON(append(evs, got.GetEvents()...)); strings.Contains(all, llmKey) {
		t.Error("the API key is in the session's events")
	}
	// The stand-in got two requests, both with the key, and refused none.
	logs, err := deploytest.Docker(ctx, "logs", d.Name+"-model")
	if err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(string(logs), ": answered"); n != 2 || strings.Contains(string(logs), "refused") {
		t.Errorf("the stand-in for api.openai.com answered %d requests, want 2, refusing none:\n%s", n, logs)
	}
	// Nor in the engine's log (which says what it serves), nor anyone's.
	elog, err := d.Logs(ctx, "engine")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(elog, `"msg":"serving"`) || strings.Contains(elog, llmKey) {
		t.Errorf("the engine's log (serving, and no key):\n%s", elog)
	}
	all, err := d.Compose(ctx, 2*time.Minute, "logs", "--no-color")
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(all), llmKey) {
		t.Error("the API key is in the services' logs")
	}
	// The engine records to audit, over mutual TLS.
	seen := false
	for _, e := range d.auditEvents(t, token) {
		seen = seen || e.GetService() == "engine"
	}
	if !seen {
		t.Error("no engine event in the audit log")
	}
}

// kinds names the events' kinds, for messages.
func kinds(evs []*contractualv1.SessionEvent) string {
	var k []string
	for _, e := range evs {
		k = append(k, strings.TrimPrefix(e.GetKind().String(), "SESSION_EVENT_KIND_"))
	}
	return strings.Join(k, " ")
}

// eventsJSON is the events as JSON lines.
func eventsJSON(evs []*contractualv1.SessionEvent) string {
	var b strings.Builder
	for _, e := range evs {
		j, _ := protojson.Marshal(e)
		b.Write(j)
		b.WriteByte('\n')
	}
	return b.String()
}

// TestComposeEngine: the compose file's engine runs as 10002 in group
// 10000, hardened like every service, on the internal network alone, with
// its store and its certificate (which ca-init issues and ca renews); its
// model comes from CONTRACTUAL_MODEL, through the relay llm.chat unless
// CONTRACTUAL_MODEL_RELAY names another; without a model, no relay either
// (the engine starts, and refuses sessions).
func TestComposeEngine(t *testing.T) {
	deploytest.RequireCompose(t)
	c := config(t, nil)
	e, ok := c.Services["engine"]
	if !ok {
		t.Fatal("no engine service")
	}
	if e.User != "10002:10000" || !e.ReadOnly || !slices.Equal(e.CapDrop, []string{"ALL"}) || !slices.Contains(e.Security, "no-new-privileges:true") {
		t.Errorf("engine: user %q, read-only %v, cap_drop %v, security_opt %v", e.User, e.ReadOnly, e.CapDrop, e.Security)
	}
	if nets := slices.Sorted(func(yield func(string) bool) {
		for n := range e.Networks {
			if !yield(n) {
				return
			}
		}
	}); !slices.Equal(nets, []string{"internal"}) {
		t.Errorf("engine's networks %v, want [internal]", nets)
	}
	var vols []string
	for _, v := range e.Volumes {
		vols = append(vols, v.Source+":"+v.Target)
	}
	if !slices.Equal(vols, []string{"engine-data:/data", "engine-certs:/run/certs"}) {
		t.Errorf("engine's volumes %v", vols)
	}
	if len(e.Secrets) != 0 {
		t.Errorf("engine's secrets %v, want none", e.Secrets)
	}
	for _, s := range []string{"ca-init", "ca"} {
		if !slices.ContainsFunc(c.Services[s].Command, func(a string) bool {
			return strings.HasPrefix(a, "--services=") && slices.Contains(strings.Split(strings.TrimPrefix(a, "--services="), ","), "engine")
		}) {
			t.Errorf("%s's command %v does not issue the engine's certificate", s, c.Services[s].Command)
		}
	}
	for _, tc := range []struct {
		env          []string
		model, relay string
	}{
		{nil, "", ""},
		{[]string{"CONTRACTUAL_MODEL=gpt-4.1-mini"}, "gpt-4.1-mini", "llm.chat"},
		{[]string{"CONTRACTUAL_MODEL=gpt-4.1-mini", "CONTRACTUAL_MODEL_RELAY=myllm.chat"}, "gpt-4.1-mini", "myllm.chat"},
	} {
		env := config(t, tc.env).Services["engine"].Environment
		str := func(p *string) string {
			if p == nil {
				return "<unset>"
			}
			return *p
		}
		if m, r := str(env["CONTRACTUAL_MODEL"]), str(env["CONTRACTUAL_MODEL_RELAY"]); m != tc.model || r != tc.relay {
			t.Errorf("with %v: CONTRACTUAL_MODEL %q, CONTRACTUAL_MODEL_RELAY %q; want %q, %q", tc.env, m, r, tc.model, tc.relay)
		}
	}
}

// agentStep is a job's agent step across the containers: the worker runs
// it through the engine (RunAgentStep, on the worker's certificate), whose
// model (the stand-in, through the relay llm.chat as in chat) proposes
// textkit.slugify, which policy decides as the job, within its pin and
// bounds, and the runner runs; the step's output is the model's answer.
func (d *deployment) agentStep(t *testing.T) {
	ctx := t.Context()
	if d.textkit == "" {
		t.Fatal("the flow did not approve textkit")
	}
	src := fmt.Sprintf(`name: deploytest-agent
description: The compose test's agent step.
trigger: {once: {at: "2099-01-01T00:00:00Z"}}
steps:
  - id: brief
    agent:
      prompt: Make a slug.
      tools:
        - {tool: textkit.slugify, contract: %s}
      max_model_requests: 4
bounds:
  - tool: textkit.slugify
    inputs:
      - {pointer: /text, max_length: 500}
`, d.textkit)
	path := filepath.Join(d.dir, "deploytest-agent.yaml")
	if err := os.WriteFile(path, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	out := d.contractual(t, "", "jobs", "create", path)
	d.contractual(t, "", "jobs", "approve", digestIn(t, out), "--reason", "deploytest: an agent step")

	runs := contractualv1connect.NewJobRunServiceClient(http.DefaultClient, d.url, connect.WithInterceptors(bearer(d.token(t))))
	resp, err := runs.RunJob(ctx, &contractualv1.RunJobRequest{Id: "deploytest-agent"})
	if err != nil {
		t.Fatalf("RunJob through the gateway: %v", err)
	}
	run := waitRun(t, runs, resp.GetRun().GetId(), 5*time.Minute)
	if run.GetState() != contractualv1.RunState_RUN_STATE_SUCCEEDED || len(run.GetSteps()) != 1 {
		t.Fatalf("agent run: %s, %d steps, error %q", run.GetState(), len(run.GetSteps()), run.GetError())
	}
	step := run.GetSteps()[0]
	answer := step.GetOutput().GetStructValue().GetFields()["answer"].GetStringValue()
	if step.GetId() != "brief" || step.GetState() != contractualv1.StepState_STEP_STATE_DONE || !strings.HasPrefix(answer, "The slug is the-owner-s-instruction") {
		t.Errorf("agent step: %v; want brief done with the stand-in's answer from the slug it proposed", step)
	}
	// The engine proposed, policy decided as the job, the runner ran.
	audit := contractualv1connect.NewAuditServiceClient(http.DefaultClient, d.url, connect.WithInterceptors(bearer(d.token(t))))
	tail, err := audit.Tail(ctx, &contractualv1.TailRequest{Limit: 200})
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, ev := range tail.GetEvents() {
		if ev.GetPrincipal() == "job:deploytest-agent" {
			seen[ev.GetService()+" "+ev.GetAction()] = true
		}
	}
	for _, want := range []string{"engine job.agent.proposal", "policy call.decision", "runner call.run", "engine job.agent.result"} {
		if !seen[want] {
			t.Errorf("the audit log has no %s for job:deploytest-agent (it has %v)", want, seen)
		}
	}
}
