package policy

import (
	"context"
	"strings"
	"testing"

	contractualv1 "github.com/contractual/contractual/contracts/gen/contractual/v1"
	"github.com/contractual/contractual/internal/errs"
)

// TestEvaluateJobAgent: an agent step's tools are the job's tools, decided
// exactly like a tool step's: a call inside the bounds is allowed (naming
// the agent step), a call outside them, of a tool the step does not list
// or of a high-risk tool pauses the job at the agent step.
func TestEvaluateJobAgent(t *testing.T) {
	f := newJobFixture(t)
	created := f.createJob(agentJobFile(f.textkit, f.meter, "budgets: {tool_calls_per_run: 3}\n"))
	for _, want := range []string{
		"an agent step (step agent): the model, told \"Slugify the title, then count its vowels.\", may propose calls of",
		"meter.count_vowels, pinned to contract " + f.meter,
		"textkit.slugify, pinned to contract " + f.textkit,
		"anything but allow pauses the job",
	} {
		if !strings.Contains(created.GetCard(), want) {
			t.Errorf("card lacks %q:\n%s", want, created.GetCard())
		}
	}
	f.approveJob(created.GetRecord().GetDigest())
	call := func(run, step, tool, input string) (*contractualv1.EvaluateResponse, error) {
		return f.s.Evaluate(context.Background(), &contractualv1.EvaluateRequest{Tool: tool, Input: []byte(input), Principal: "job:triage", RunId: run, Step: step})
	}
	for _, tc := range []struct{ tool, input string }{
		{"textkit.slugify", `{"text": "Hello World"}`},
		{"meter.count_vowels", goodCount},
	} {
		resp, err := call("r1", "agent", tc.tool, tc.input)
		if err != nil {
			t.Fatal(err)
		}
		if d := resp.GetDecision(); d.GetVerdict() != contractualv1.Verdict_VERDICT_ALLOW || d.GetStep() != "agent" || d.GetRunId() != "r1" {
			t.Fatalf("%s: decision %v", tc.tool, d)
		}
	}

	for _, tc := range []struct {
		name, step, tool, input string
		kind                    errs.Kind // 0: a deny
		msg                     string
	}{
		{name: "outside the bounds", step: "agent", tool: "textkit.slugify", input: `{"text": "Hello, World"}`,
			msg: `/text is "Hello, World", which does not match`},
		{name: "a tool the step does not list", step: "agent", tool: "textkit.word_count", input: `{"text": "a b"}`, kind: errs.Invalid,
			msg: `job triage has no step "agent" calling textkit.word_count`},
		{name: "a tool no step lists", tool: "textkit.word_count", input: `{"text": "a b"}`,
			msg: "job triage does not call textkit.word_count: its steps call meter.count_vowels, textkit.slugify"},
		{name: "another step's name", step: "other", tool: "textkit.slugify", input: `{"text": "Hello"}`, kind: errs.Invalid,
			msg: `job triage has no step "other" calling textkit.slugify`},
		{name: "over the run's calls", step: "agent", tool: "textkit.slugify", input: `{"text": "Hello"}`,
			msg: "made its call 3: its budget is 3 tool calls per run"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			run := "r1"
			if tc.name != "over the run's calls" {
				run = "r-" + strings.NewReplacer(" ", "-", "'", "").Replace(tc.name)
			} else if _, err := call(run, "agent", "textkit.slugify", `{"text": "Hi"}`); err != nil {
				t.Fatal(err) // call 3 of 3: allowed
			}
			if tc.name == "over the run's calls" {
				// The budget counts the agent's calls like any step's:
				// the fourth is denied.
				tc.msg = "made its call 4: its budget is 3 tool calls per run"
			}
			resp, err := call(run, tc.step, tc.tool, tc.input)
			var text string
			if tc.kind != 0 {
				wantErr(t, err, tc.kind)
				text = err.Error()
			} else {
				if err != nil {
					t.Fatal(err)
				}
				d := resp.GetDecision()
				if d.GetVerdict() != contractualv1.Verdict_VERDICT_DENY {
					t.Fatalf("decision %v", d)
				}
				text = d.GetReason()
			}
			if !strings.Contains(text, tc.msg) || !strings.Contains(text, "job triage is paused") {
				t.Fatalf("%q lacks %q or the pause", text, tc.msg)
			}
			rec := f.getJob("triage").GetRecord()
			p := rec.GetPause()
			wantStep := tc.step // a call naming no step of a tool no step calls pauses at no step
			defer f.resumeJob("triage")
			if rec.GetState() != jobPaused || p.GetKind() != contractualv1.PauseKind_PAUSE_KIND_DECISION || p.GetRunId() != run || p.GetStep() != wantStep {
				t.Fatalf("job after the call: %v", rec)
			}
		})
	}
}

// TestEvaluateJobAgentHighRisk: a high-risk tool an agent step lists is
// noted on the card, and its call pauses the job without asking the owner
// for anything.
func TestEvaluateJobAgentHighRisk(t *testing.T) {
	f := newJobFixture(t)
	high := f.approve(f.publish(f.count, meter(f.count, "2.0.0", "high")).GetRecord().GetDigest()).GetDigest()
	created := f.createJob(agentJobFile(f.textkit, high, ""))
	if !strings.Contains(created.GetCard(), "Note: meter.count_vowels (step agent) is a high-risk tool") {
		t.Fatalf("card:\n%s", created.GetCard())
	}
	f.approveJob(created.GetRecord().GetDigest())
	resp, err := f.s.Evaluate(context.Background(), &contractualv1.EvaluateRequest{Tool: "meter.count_vowels", Input: []byte(goodCount), Principal: "job:triage", RunId: "r1", Step: "agent"})
	if err != nil {
		t.Fatal(err)
	}
	if d := resp.GetDecision(); d.GetVerdict() != contractualv1.Verdict_VERDICT_APPROVAL_REQUIRED || d.GetApprovalId() != "" {
		t.Fatalf("decision %v", d)
	}
	if rec := f.getJob("triage").GetRecord(); rec.GetState() != jobPaused || rec.GetPause().GetStep() != "agent" {
		t.Fatalf("job %v", rec)
	}
}

// TestCreateJobAgentPins: create checks an agent step's pins against the
// contracts policy knows, each problem at its agent tool's path.
func TestCreateJobAgentPins(t *testing.T) {
	f := newJobFixture(t)
	unknown := "sha256:" + strings.Repeat("c", 64)
	_, err := f.s.CreateJob(asOwner, &contractualv1.CreateJobRequest{Job: agentJobFile(f.textkit, unknown, ""), Filename: "triage.yaml"})
	wantErr(t, err, errs.Invalid, "steps[0].agent.tools[1].contract: no contract "+unknown+" is known to policy")
	_, err = f.s.CreateJob(asOwner, &contractualv1.CreateJobRequest{Job: agentJobFile(f.meter, f.meter, ""), Filename: "triage.yaml"})
	wantErr(t, err, errs.Invalid, "steps[0].agent.tools[0].contract: "+f.meter+` is a contract of "meter", not of "textkit"`)
}

// TestDriftAgent: a new version of a contract an agent step pins pauses
// the job; the resume re-pins the agent step's tool, and its calls run
// under the new contract.
func TestDriftAgent(t *testing.T) {
	f := newJobFixture(t)
	f.approveJob(f.createJob(agentJobFile(f.textkit, f.meter, "")).GetRecord().GetDigest())
	m2 := f.approve(f.publish(f.count, meter(f.count, "2.0.0", "low")).GetRecord().GetDigest()).GetDigest()
	rec := f.getJob("triage").GetRecord()
	if p := rec.GetPause(); rec.GetState() != jobPaused || p.GetKind() != contractualv1.PauseKind_PAUSE_KIND_CONTRACT_CHANGED ||
		p.GetPinnedDigest() != f.meter || p.GetApprovedDigest() != m2 {
		t.Fatalf("job after the new contract: %v", rec)
	}
	_, err := f.s.Evaluate(context.Background(), &contractualv1.EvaluateRequest{Tool: "meter.count_vowels", Input: []byte(goodCount), Principal: "job:triage", RunId: "r1", Step: "agent"})
	wantErr(t, err, errs.FailedPrecondition, "job triage is paused (contract_changed")
	v2 := f.resumeJob("triage").GetRecord()
	pins := map[string]string{}
	for _, at := range v2.GetJob().GetSteps()[0].GetAgent().GetTools() {
		pins[at.GetTool()] = at.GetContract()
	}
	if pins["meter.count_vowels"] != m2 || pins["textkit.slugify"] != f.textkit {
		t.Fatalf("resumed pins: %v", pins)
	}
	resp, err := f.s.Evaluate(context.Background(), &contractualv1.EvaluateRequest{Tool: "meter.count_vowels", Input: []byte(goodCount), Principal: "job:triage", RunId: "r2", Step: "agent"})
	if err != nil || resp.GetDecision().GetVerdict() != contractualv1.Verdict_VERDICT_ALLOW || resp.GetDecision().GetContractDigest() != m2 {
		t.Fatalf("call after the resume: %v, %v", resp.GetDecision(), err)
	}
	// Revoked: paused again.
	if _, err := f.s.Revoke(asOwner, &contractualv1.RevokeRequest{Digest: m2, Reason: "leaks"}); err != nil {
		t.Fatal(err)
	}
	if p := f.getJob("triage").GetRecord().GetPause(); p.GetKind() != contractualv1.PauseKind_PAUSE_KIND_CONTRACT_REVOKED || p.GetPinnedDigest() != m2 {
		t.Fatalf("pause after the revocation: %v", p)
	}
}
