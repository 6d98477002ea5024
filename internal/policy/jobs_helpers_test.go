package policy

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/contractual/contractual/contracts/contract"
	contractualv1 "github.com/contractual/contractual/contracts/gen/contractual/v1"
	"github.com/contractual/contractual/internal/principal"
)

// meter returns a contract "meter" for hostile count.wasm whose tool
// count_vowels takes a text, a number, a mode and tags: a schema with a
// field for each kind of bound.
func meter(wasm []byte, version, risk string) []byte {
	return fmt.Appendf(nil, `module: %s
name: meter
version: %s
publisher: policy tests
tools:
  - export: count_vowels
    description: Count the ASCII vowels of a text.
    risk: %s
    input_schema:
      type: object
      properties:
        text: {type: string, maxLength: 100}
        n: {type: number}
        mode: {type: string}
        tags: {type: array, items: {type: string}}
      required: [text]
      additionalProperties: false
`, contract.ModuleDigest(wasm), version, risk)
}

// jobFile returns a job "nightly" with two steps: textkit.slugify pinned
// to slug, then meter.count_vowels pinned to meterDigest, each with
// bounds, and extra YAML appended (budgets, say).
func jobFile(slug, meterDigest, extra string) []byte {
	return fmt.Appendf(nil, `name: nightly
description: Slugify a title, then count its vowels.
trigger:
  cron: {expression: "0 2 * * *", time_zone: Europe/Berlin}
steps:
  - id: slug
    tool: textkit.slugify
    contract: %s
    input: {text: {$ref: trigger.payload.title}}
  - id: count
    tool: meter.count_vowels
    contract: %s
    input: {text: {$ref: steps.slug.output.slug}, n: 3, mode: fast, tags: [a]}
bounds:
  - tool: textkit.slugify
    inputs:
      - {pointer: /text, pattern: "[A-Za-z ]{1,20}"}
  - tool: meter.count_vowels
    inputs:
      - {pointer: /text, pattern: "[a-z-]+"}
      - {pointer: /n, minimum: 1, maximum: 10}
      - {pointer: /mode, allowed: [fast, slow]}
      - {pointer: /tags, max_length: 2}
%s`, slug, meterDigest, extra)
}

// jobFixture is a fixture with textkit and meter approved.
type jobFixture struct {
	*fixture
	textkit, meter string // the approved contracts' digests
	count          []byte // hostile count.wasm, meter's module
}

// newJobFixture approves textkit and meter 1.0.0.
func newJobFixture(t *testing.T) *jobFixture {
	t.Helper()
	f := &jobFixture{fixture: newFixture(t)}
	wasm, ct := textkit(t)
	f.textkit = f.approve(f.publish(wasm, ct).GetRecord().GetDigest()).GetDigest()
	f.count = hostile(t, "count")
	f.meter = f.approve(f.publish(f.count, meter(f.count, "1.0.0", "low")).GetRecord().GetDigest()).GetDigest()
	return f
}

// createJob creates a job as the owner and fails on error.
func (f *fixture) createJob(file []byte) *contractualv1.CreateJobResponse {
	f.t.Helper()
	resp, err := f.s.CreateJob(asOwner, &contractualv1.CreateJobRequest{Job: file, Filename: "nightly.yaml"})
	if err != nil {
		f.t.Fatalf("create job: %v", err)
	}
	return resp
}

// approveJob approves a job version as the owner and fails on error.
func (f *fixture) approveJob(digest string) *contractualv1.JobRecord {
	f.t.Helper()
	resp, err := f.s.ApproveJob(asOwner, &contractualv1.ApproveJobRequest{Digest: digest, Reason: "reviewed"})
	if err != nil {
		f.t.Fatalf("approve job: %v", err)
	}
	return resp.GetRecord()
}

// resumeJob resumes job id as the owner and fails on error.
func (f *fixture) resumeJob(id string) *contractualv1.ResumeJobResponse {
	f.t.Helper()
	resp, err := f.s.ResumeJob(asOwner, &contractualv1.ResumeJobRequest{Id: id, Reason: "checked"})
	if err != nil {
		f.t.Fatalf("resume job: %v", err)
	}
	return resp
}

// getJob returns job id's current version.
func (f *fixture) getJob(id string) *contractualv1.GetJobResponse {
	f.t.Helper()
	resp, err := f.s.GetJob(asOwner, &contractualv1.GetJobRequest{Id: id})
	if err != nil {
		f.t.Fatalf("get job %s: %v", id, err)
	}
	return resp
}

// jobCall evaluates a call of job id in run.
func (f *fixture) jobCall(id, run, tool, input string) (*contractualv1.EvaluateResponse, error) {
	return f.s.Evaluate(context.Background(), &contractualv1.EvaluateRequest{Tool: tool, Input: []byte(input), Principal: "job:" + id, RunId: run})
}

// asWorker is a context of the worker service, as authz makes it.
var asWorker = principal.With(context.Background(), "service:worker")

// goodCount is an input of meter.count_vowels inside the job's bounds.
const goodCount = `{"text": "hello-world", "n": 3, "mode": "fast", "tags": ["a"]}`

// actions lists the actions and outcomes of events, "action outcome" each.
func actions(evs []*contractualv1.AuditEvent) string {
	var out []string
	for _, ev := range evs {
		out = append(out, ev.GetAction()+" "+ev.GetOutcome())
	}
	return strings.Join(out, ", ")
}

// agentJobFile returns a job "triage" with one agent step that may propose
// textkit.slugify (pinned to slug) and meter.count_vowels (pinned to
// meterDigest), with bounds on both, and extra YAML appended.
func agentJobFile(slug, meterDigest, extra string) []byte {
	return fmt.Appendf(nil, `name: triage
trigger: {webhook: {secret: HOOK_KEY}}
steps:
  - id: agent
    input: {title: {$ref: trigger.payload.title}}
    agent:
      prompt: Slugify the title, then count its vowels.
      tools:
        - {tool: textkit.slugify, contract: %s}
        - {tool: meter.count_vowels, contract: %s}
bounds:
  - tool: textkit.slugify
    inputs:
      - {pointer: /text, pattern: "[A-Za-z ]{1,20}"}
  - tool: meter.count_vowels
    inputs:
      - {pointer: /text, pattern: "[a-z-]+"}
      - {pointer: /n, minimum: 1, maximum: 10}
      - {pointer: /mode, allowed: [fast, slow]}
      - {pointer: /tags, max_length: 2}
%s`, slug, meterDigest, extra)
}
