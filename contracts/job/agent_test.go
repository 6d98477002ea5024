package job

import (
	"encoding/json"
	"strings"
	"testing"

	"google.golang.org/protobuf/types/known/structpb"

	"github.com/contractual/contractual/contracts/contract"
	contractualv1 "github.com/contractual/contractual/contracts/gen/contractual/v1"
)

// agentBase is a valid job with a tool step and an agent step; its agent
// step starts at line 8.
const agentBase = `name: triage
trigger: {webhook: {secret: HOOK_KEY}}
steps:
  - id: fetch
    tool: feeds.fetch
    contract: ` + pinA + `
    input: {urls: {$ref: trigger.payload.urls}}
  - id: summarize
    input: {items: {$ref: steps.fetch.output.items}}
    agent:
      prompt: Summarize the items and post the summary.
      tools:
        - {tool: chat.post, contract: ` + pinB + `}
        - {tool: chat.list, contract: ` + pinB + `}
bounds:
  - tool: chat.post
    inputs:
      - {pointer: /channel, allowed: [news]}
`

func agentEdit(t *testing.T, old, new string) string {
	t.Helper()
	if old == "" {
		return agentBase + new
	}
	if !strings.Contains(agentBase, old) {
		t.Fatalf("agentBase has no %q", old)
	}
	return strings.Replace(agentBase, old, new, 1)
}

func loadAgent(t *testing.T, src string) *contractualv1.Job {
	t.Helper()
	j, err := Load([]byte(src), "agent.yaml")
	if err != nil {
		t.Fatal(err)
	}
	return j
}

func TestAgentLoadAndNormalize(t *testing.T) {
	j := loadAgent(t, agentBase)
	Normalize(j)
	a := j.GetSteps()[1].GetAgent()
	if a.GetMaxModelRequests() != DefaultMaxModelRequests {
		t.Errorf("max_model_requests = %d, want the default %d", a.GetMaxModelRequests(), DefaultMaxModelRequests)
	}
	if a.GetTools()[0].GetTool() != "chat.list" {
		t.Errorf("tools not sorted: %v", a.GetTools())
	}
	// One tool step and one agent step of 8 model requests.
	if got := j.GetBudgets().GetToolCallsPerRun(); got != 1+DefaultMaxModelRequests {
		t.Errorf("tool_calls_per_run default = %d, want %d", got, 1+DefaultMaxModelRequests)
	}
	// The tools' order is not part of the digest.
	swapped := loadAgent(t, strings.Replace(strings.Replace(agentBase, "chat.post, contract", "chat.tmp, contract", 1), "chat.list, contract", "chat.post, contract", 1))
	swapped.GetSteps()[1].GetAgent().GetTools()[1].Tool = "chat.list"
	d1, _ := Digest(loadAgent(t, agentBase))
	d2, _ := Digest(swapped)
	if d1 != d2 {
		t.Errorf("digests differ with the tools reordered: %s, %s", d1, d2)
	}
	// Only tool steps need a call each: one tool step, two steps.
	only := loadAgent(t, agentEdit(t, "", "budgets: {tool_calls_per_run: 1}\n"))
	if only == nil {
		t.Fatal("no job")
	}
	calls := Calls(j)
	want := []Call{
		{Step: "fetch", Tool: "feeds.fetch", Contract: pinA, Path: "steps[0]"},
		{Step: "summarize", Tool: "chat.list", Contract: pinB, Agent: true, Path: "steps[1].agent.tools[0]"},
		{Step: "summarize", Tool: "chat.post", Contract: pinB, Agent: true, Path: "steps[1].agent.tools[1]"},
	}
	if len(calls) != len(want) {
		t.Fatalf("Calls = %+v", calls)
	}
	for i := range want {
		if calls[i] != want[i] {
			t.Errorf("Calls[%d] = %+v, want %+v", i, calls[i], want[i])
		}
	}
	Repin(j, func(tool, digest string) string {
		if strings.HasPrefix(tool, "chat.") {
			return pinA
		}
		return digest
	})
	for _, c := range Calls(j) {
		if c.Contract != pinA {
			t.Errorf("after Repin %s is pinned to %s", c.Tool, c.Contract)
		}
	}
}

func TestAgentProblems(t *testing.T) {
	for _, tc := range []struct {
		name, old, new, want string
	}{
		{"tool and agent", "  - id: summarize\n", "  - id: summarize\n    tool: chat.post\n", "9:11: steps[1].tool: an agent step names its tools in agent.tools"},
		{"contract and agent", "  - id: summarize\n", "  - id: summarize\n    contract: " + pinB + "\n", "9:15: steps[1].contract: an agent step pins its tools in agent.tools"},
		{"no prompt", "      prompt: Summarize the items and post the summary.\n", "", "11:7: steps[1].agent.prompt: required"},
		{"no tools", "      tools:\n        - {tool: chat.post, contract: " + pinB + "}\n        - {tool: chat.list, contract: " + pinB + "}\n", "      tools: []\n", "12:14: steps[1].agent.tools: at least one tool is required"},
		{"tool twice", "{tool: chat.list,", "{tool: chat.post,", `14:18: steps[1].agent.tools[1].tool: "chat.post" is already listed at tools[0]`},
		{"tool name", "{tool: chat.list,", "{tool: chat,", `14:18: steps[1].agent.tools[1].tool: "chat": name a tool as`},
		{"tool pin", "{tool: chat.list, contract: " + pinB, "{tool: chat.list, contract: sha256:1", "14:39: steps[1].agent.tools[1].contract: must be the tool contract's digest"},
		{"tool without pin", "{tool: chat.list, contract: " + pinB + "}", "{tool: chat.list}", "14:11: steps[1].agent.tools[1].contract: required"},
		{"max model requests", "      tools:\n", "      max_model_requests: 65\n      tools:\n", "12:27: steps[1].agent.max_model_requests: 65 is out of range 1..64"},
		{"bounds on an unlisted tool", "  - tool: chat.post\n    inputs", "  - tool: chat.send\n    inputs", `16:11: bounds[0].tool: "chat.send" is not called by any step`},
		{"step with nothing", "    input: {items: {$ref: steps.fetch.output.items}}\n    agent:\n      prompt: Summarize the items and post the summary.\n      tools:\n        - {tool: chat.post, contract: " + pinB + "}\n        - {tool: chat.list, contract: " + pinB + "}\n", "", "8:5: steps[1]: set tool, contract and input (a tool step) or agent (an agent step)"},
		{"agent data ref", "$ref: steps.fetch.output.items", "$ref: steps.summarize.output", `9:27: steps[1].input.items["$ref"]: "steps.summarize.output": no earlier step has id "summarize"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Load([]byte(agentEdit(t, tc.old, tc.new)), "job.yaml")
			if err == nil {
				t.Fatalf("no error; want %q", tc.want)
			}
			// A step without tools leaves the bounds on its tools
			// without a step: that is a second problem.
			lines := problemLines(t, err)
			if !strings.HasPrefix(lines[0], tc.want) || len(lines) > 2 || len(lines) == 2 && !strings.Contains(lines[1], "is not called by any step") {
				t.Fatalf("problems:\n\t%s\nwant one starting with\n\t%s", strings.Join(lines, "\n\t"), tc.want)
			}
		})
	}
	// An agent step without data is valid.
	loadAgent(t, agentEdit(t, "    input: {items: {$ref: steps.fetch.output.items}}\n", ""))
	// Bounds may name an agent step's tool.
	loadAgent(t, agentEdit(t, "", "  - {tool: chat.list, inputs: [{pointer: /limit, maximum: 10}]}\n"))
}

func TestAgentCard(t *testing.T) {
	j := loadAgent(t, agentBase)
	Normalize(j)
	var b strings.Builder
	if err := NewCard(j).WriteText(&b); err != nil {
		t.Fatal(err)
	}
	want := `  2. an agent step (step summarize): the model, told "Summarize the items and post the summary.", may propose calls of
       chat.list, pinned to contract ` + pinB + `
         any input the tool's schema accepts
       chat.post, pinned to contract ` + pinB + `
         /channel: one of "news"
       in at most 8 model requests; each call is decided like a step's, and anything but allow pauses the job
`
	if !strings.Contains(b.String(), want) {
		t.Errorf("card:\n%s\nwant it to contain:\n%s", b.String(), want)
	}
	c := NewCard(j)
	if a := c.Steps[1].Agent; a == nil || len(a.Tools) != 2 || a.Tools[1].Bounds[0] != `/channel: one of "news"` {
		t.Errorf("card step = %+v", c.Steps[1])
	}
}

func TestAgentDiff(t *testing.T) {
	old := loadAgent(t, agentBase)
	for _, tc := range []struct {
		name, from, to string
		want           []Change
	}{
		{"tool added", "        - {tool: chat.list, contract: " + pinB + "}\n", "        - {tool: chat.list, contract: " + pinB + "}\n        - {tool: chat.edit, contract: " + pinB + "}\n",
			[]Change{{Kind: contract.Widened, Path: "steps[summarize].agent.tools[chat.edit]", New: pinB}, {Kind: contract.Widened, Path: "budgets.tool_calls_per_run", Old: "9", New: "9"}}},
		{"tool removed", "        - {tool: chat.list, contract: " + pinB + "}\n", "",
			[]Change{{Kind: contract.Narrowed, Path: "steps[summarize].agent.tools[chat.list]", Old: pinB}}},
		{"pin changed", "{tool: chat.list, contract: " + pinB, "{tool: chat.list, contract: " + pinA,
			[]Change{{Kind: contract.Changed, Path: "steps[summarize].agent.tools[chat.list].contract", Old: pinB, New: pinA}}},
		{"prompt changed", "post the summary.", "post it.",
			[]Change{{Kind: contract.Changed, Path: "steps[summarize].agent.prompt", Old: `"Summarize the items and post the summary."`, New: `"Summarize the items and post it."`}}},
		{"more model requests", "      tools:\n", "      max_model_requests: 9\n      tools:\n",
			[]Change{{Kind: contract.Widened, Path: "steps[summarize].agent.max_model_requests", Old: "8", New: "9"}, {Kind: contract.Widened, Path: "budgets.tool_calls_per_run", Old: "9", New: "10"}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := Diff(old, loadAgent(t, agentEdit(t, tc.from, tc.to)))
			var want []Change
			for _, c := range tc.want {
				if c.Path == "budgets.tool_calls_per_run" && c.Old == c.New {
					continue // no change to the budget
				}
				want = append(want, c)
			}
			if len(got) != len(want) {
				t.Fatalf("Diff = %+v\nwant %+v", got, want)
			}
			for i := range want {
				if got[i] != want[i] {
					t.Errorf("change %d = %+v, want %+v", i, got[i], want[i])
				}
			}
		})
	}
	// A tool step becoming an agent step widens.
	tool := loadAgent(t, agentBase)
	st := tool.GetSteps()[1]
	st.Agent, st.Tool, st.Contract = nil, "chat.post", pinB
	got := Diff(tool, old)
	if len(got) == 0 || got[0].Kind != contract.Widened || got[0].Path != "steps[summarize]" {
		t.Errorf("Diff tool → agent = %+v", got)
	}
}

func TestNarrowSchema(t *testing.T) {
	schema := map[string]any{
		"type": "object",
		"properties": map[string]any{
			"text":  map[string]any{"type": "string", "maxLength": float64(100)},
			"n":     map[string]any{"type": "integer", "minimum": float64(0)},
			"color": map[string]any{"type": "string", "enum": []any{"red", "green", "blue"}},
			"tags":  map[string]any{"type": "array", "items": map[string]any{"type": "string"}},
			"name":  map[string]any{"type": "string", "pattern": "^[a-z]+$"},
		},
		"required":             []any{"text"},
		"additionalProperties": false,
	}
	f := func(v float64) *float64 { return &v }
	u := func(v uint64) *uint64 { return &v }
	bounds := []*contractualv1.InputBound{
		{Pointer: "/text", MaxLength: u(40), Pattern: "[A-Za-z ]+"},
		{Pointer: "/n", Minimum: f(-5), Maximum: f(10)},
		{Pointer: "/color", Allowed: structValues(t, "red", "purple")},
		{Pointer: "/tags", MaxLength: u(3)},
		{Pointer: "/tags/0", Pattern: "x"},
		{Pointer: "/name", Pattern: "bob"},
		{Pointer: "/extra"},
	}
	got := NarrowSchema(schema, bounds)
	want := `{"additionalProperties":false,"properties":{` +
		`"color":{"enum":["red"],"type":"string"},` +
		`"extra":{},` +
		`"n":{"maximum":10,"minimum":0,"type":"integer"},` +
		`"name":{"allOf":[{"pattern":"^(?:bob)$"}],"pattern":"^[a-z]+$","type":"string"},` +
		`"tags":{"items":{"type":"string"},"maxItems":3,"maxLength":3,"type":"array"},` +
		`"text":{"maxItems":40,"maxLength":40,"pattern":"^(?:[A-Za-z ]+)$","type":"string"}},` +
		`"required":["text","n","color","tags","name","extra"],"type":"object"}`
	b, _ := json.Marshal(got)
	if string(b) != want {
		t.Errorf("NarrowSchema =\n%s\nwant\n%s", b, want)
	}
	// The tool's schema itself is not changed.
	if b, _ := json.Marshal(schema["properties"].(map[string]any)["text"]); string(b) != `{"maxLength":100,"type":"string"}` {
		t.Errorf("the original schema changed: %s", b)
	}
	// The whole input.
	whole := NarrowSchema(map[string]any{"type": "string"}, []*contractualv1.InputBound{{Pointer: "", MaxLength: u(5)}})
	if b, _ := json.Marshal(whole); string(b) != `{"maxItems":5,"maxLength":5,"type":"string"}` {
		t.Errorf("whole input: %s", b)
	}
}

func structValues(t *testing.T, vs ...any) []*structpb.Value {
	t.Helper()
	out := make([]*structpb.Value, len(vs))
	for i, v := range vs {
		sv, err := structpb.NewValue(v)
		if err != nil {
			t.Fatal(err)
		}
		out[i] = sv
	}
	return out
}
