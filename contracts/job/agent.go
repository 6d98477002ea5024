package job

import (
	"cmp"
	"encoding/json"
	"fmt"
	"math"
	"slices"
	"unicode/utf8"

	contractualv1 "github.com/contractual/contractual/contracts/gen/contractual/v1"
)

// Agent steps. A step is a tool step (tool, contract, input) or an agent
// step (agent: prompt, tools, max_model_requests; input optional, the
// data the agent is given). An agent step's tools are pinned like a tool
// step's tool, the job's bounds hold for them, and each call the model
// proposes is decided by policy for the job like a tool step's.
const (
	// DefaultMaxModelRequests is an agent step's max_model_requests when
	// it sets none.
	DefaultMaxModelRequests = 8
	// MaxModelRequests is the most an agent step may set.
	MaxModelRequests = 64
	// MaxPromptBytes bounds an agent step's prompt.
	MaxPromptBytes = 16 << 10
	// maxAgentTools bounds an agent step's tools.
	maxAgentTools = 64
	// maxToolCallsPerRun is tool_calls_per_run's upper bound.
	maxToolCallsPerRun = 1000
)

// IsAgent reports whether s is an agent step.
func IsAgent(s *contractualv1.JobStep) bool { return s.GetAgent() != nil }

// Call is one tool a job's step may call, and the contract digest the
// step pins it to.
type Call struct {
	// Step is the step's id.
	Step string
	// Tool is "<contract name>.<export>"; Contract the pinned digest.
	Tool, Contract string
	// Agent is true for a tool an agent step lists.
	Agent bool
	// Path is where the pin is written: "steps[2]" for a tool step,
	// "steps[2].agent.tools[1]" for an agent step's tool.
	Path string
}

// Calls returns every tool j's steps may call, with its pin, in step
// order: a tool step's tool, then each tool an agent step lists. A tool
// may appear more than once (two steps calling it).
func Calls(j *contractualv1.Job) []Call {
	var out []Call
	for i, s := range j.GetSteps() {
		out = append(out, StepCalls(i, s)...)
	}
	return out
}

// StepCalls returns the tools step i, s, may call, with their pins.
func StepCalls(i int, s *contractualv1.JobStep) []Call {
	path := fmt.Sprintf("steps[%d]", i)
	if a := s.GetAgent(); a != nil {
		out := make([]Call, 0, len(a.GetTools()))
		for k, t := range a.GetTools() {
			out = append(out, Call{Step: s.GetId(), Tool: t.GetTool(), Contract: t.GetContract(), Agent: true, Path: fmt.Sprintf("%s.agent.tools[%d]", path, k)})
		}
		return out
	}
	return []Call{{Step: s.GetId(), Tool: s.GetTool(), Contract: s.GetContract(), Path: path}}
}

// Repin sets every pin of j to the digest pin returns for its tool (and
// the digest it has now).
func Repin(j *contractualv1.Job, pin func(tool, digest string) string) {
	for _, s := range j.GetSteps() {
		if a := s.GetAgent(); a != nil {
			for _, t := range a.GetTools() {
				t.Contract = pin(t.GetTool(), t.GetContract())
			}
			continue
		}
		s.Contract = pin(s.GetTool(), s.GetContract())
	}
}

// agentStep checks an agent step at path; the input is checked by the
// caller, as a tool step's.
func (ps *problems) agentStep(path string, s *contractualv1.JobStep) {
	a := s.GetAgent()
	if s.GetTool() != "" {
		ps.addf(path+".tool", "an agent step names its tools in agent.tools: set tool or agent, not both")
	}
	if s.GetContract() != "" {
		ps.addf(path+".contract", "an agent step pins its tools in agent.tools: set contract or agent, not both")
	}
	apath := path + ".agent"
	switch p := a.GetPrompt(); {
	case p == "":
		ps.addf(apath+".prompt", "required: the instruction the model follows")
	case !utf8.ValidString(p) || len(p) > MaxPromptBytes:
		ps.addf(apath+".prompt", "must be UTF-8 text of at most %d bytes", MaxPromptBytes)
	}
	switch n := len(a.GetTools()); {
	case n == 0:
		ps.addf(apath+".tools", "at least one tool is required: the tools the model may propose")
	case n > maxAgentTools:
		ps.addf(apath+".tools", "%d tools; at most %d", n, maxAgentTools)
	}
	seen := make(map[string]int)
	for k, t := range a.GetTools() {
		tpath := fmt.Sprintf("%s.tools[%d]", apath, k)
		if ps.required(tpath+".tool", t.GetTool()) {
			if !toolRE.MatchString(t.GetTool()) {
				ps.addf(tpath+".tool", `%q: name a tool as "<contract name>.<export>", e.g. "ghstars.repo_stars"`, t.GetTool())
			} else if first, ok := seen[t.GetTool()]; ok {
				ps.addf(tpath+".tool", "%q is already listed at tools[%d]", t.GetTool(), first)
			} else {
				seen[t.GetTool()] = k
			}
		}
		if ps.required(tpath+".contract", t.GetContract()) && !digestRE.MatchString(t.GetContract()) {
			ps.addf(tpath+".contract", `must be the tool contract's digest: "sha256:" and 64 lowercase hex digits`)
		}
	}
	if m := a.GetMaxModelRequests(); m > MaxModelRequests {
		ps.addf(apath+".max_model_requests", "%d is out of range 1..%d", m, MaxModelRequests)
	}
}

// normalizeAgent writes an agent step's default and sorts its tools (their
// order carries no meaning).
func normalizeAgent(a *contractualv1.AgentStep) {
	if a.GetMaxModelRequests() == 0 {
		a.MaxModelRequests = DefaultMaxModelRequests
	}
	slices.SortStableFunc(a.Tools, func(x, y *contractualv1.AgentTool) int { return cmp.Compare(x.GetTool(), y.GetTool()) })
}

// defaultToolCalls is tool_calls_per_run's default: one for each tool
// step, and each agent step's max_model_requests (a model request that
// proposes calls proposes at least one), at most the budget's maximum.
func defaultToolCalls(steps []*contractualv1.JobStep) uint32 {
	var n uint64
	for _, s := range steps {
		if a := s.GetAgent(); a != nil {
			n += uint64(cmp.Or(a.GetMaxModelRequests(), DefaultMaxModelRequests))
		} else {
			n++
		}
	}
	return uint32(min(n, maxToolCallsPerRun))
}

// toolSteps counts the tool steps: each makes one call, which the
// tool_calls_per_run budget must cover. An agent step may make none.
func toolSteps(steps []*contractualv1.JobStep) int {
	n := 0
	for _, s := range steps {
		if !IsAgent(s) {
			n++
		}
	}
	return n
}

// NarrowSchema returns a copy of a tool's input schema narrowed by the
// job's bounds on the tool, where JSON Schema can say them: allowed
// becomes enum (intersected with one there), pattern an anchored pattern
// (an allOf branch if the place has one already), minimum and maximum the
// tighter of the two, max_length maxLength and maxItems (each applies only
// to its type), and the bounded place required in its parent object. A
// place the pointer reaches through an array index is left as it is.
// Policy checks every bound whatever the schema says: this only tells the
// model what would be refused.
func NarrowSchema(schema map[string]any, bounds []*contractualv1.InputBound) map[string]any {
	out, _ := deepCopy(schema).(map[string]any)
	if out == nil {
		out = map[string]any{}
	}
	for _, in := range bounds {
		if node := reach(out, in.GetPointer()); node != nil {
			narrow(node, in)
		}
	}
	return out
}

// reach returns the subschema at pointer p, creating it under properties
// (and making it required) where the schema does not describe it, or nil
// where it cannot be said (an array index, a schema that is not an object).
func reach(root map[string]any, p string) map[string]any {
	node := root
	for _, tok := range pointerTokens(p) {
		if _, isArray := node["items"]; isArray {
			return nil
		}
		props, _ := node["properties"].(map[string]any)
		if props == nil {
			if _, ok := node["properties"]; ok {
				return nil
			}
			props = map[string]any{}
			node["properties"] = props
		}
		child, _ := props[tok].(map[string]any)
		if child == nil {
			if _, ok := props[tok]; ok {
				return nil // a boolean schema
			}
			child = map[string]any{}
			props[tok] = child
		}
		req, _ := node["required"].([]any)
		if !slices.Contains(req, any(tok)) {
			node["required"] = append(req, tok)
		}
		node = child
	}
	return node
}

// narrow applies one bound's checks to the subschema node.
func narrow(node map[string]any, in *contractualv1.InputBound) {
	if len(in.GetAllowed()) > 0 {
		var vals []any
		for _, v := range in.GetAllowed() {
			vals = append(vals, v.AsInterface())
		}
		if old, ok := node["enum"].([]any); ok {
			vals = slices.DeleteFunc(vals, func(v any) bool {
				return !slices.ContainsFunc(old, func(o any) bool { return sameJSON(o, v) })
			})
		}
		node["enum"] = vals
	}
	if p := in.GetPattern(); p != "" {
		anchored := `^(?:` + p + `)$`
		if _, ok := node["pattern"]; ok {
			all, _ := node["allOf"].([]any)
			node["allOf"] = append(all, map[string]any{"pattern": anchored})
		} else {
			node["pattern"] = anchored
		}
	}
	if in.Minimum != nil {
		tighten(node, "minimum", in.GetMinimum(), math.Max)
	}
	if in.Maximum != nil {
		tighten(node, "maximum", in.GetMaximum(), math.Min)
	}
	if in.MaxLength != nil {
		n := float64(in.GetMaxLength())
		tighten(node, "maxLength", n, math.Min)
		tighten(node, "maxItems", n, math.Min)
	}
}

// tighten sets node[key] to v, or to pick(old, v) if it has a number there.
func tighten(node map[string]any, key string, v float64, pick func(float64, float64) float64) {
	if old, ok := toFloat(node[key]); ok {
		v = pick(old, v)
	}
	node[key] = v
}

func toFloat(v any) (float64, bool) {
	switch x := v.(type) {
	case float64:
		return x, true
	case json.Number:
		f, err := x.Float64()
		return f, err == nil
	case int:
		return float64(x), true
	}
	return 0, false
}

func sameJSON(a, b any) bool {
	x, err1 := json.Marshal(a)
	y, err2 := json.Marshal(b)
	return err1 == nil && err2 == nil && string(x) == string(y)
}

func deepCopy(v any) any {
	switch x := v.(type) {
	case map[string]any:
		m := make(map[string]any, len(x))
		for k, e := range x {
			m[k] = deepCopy(e)
		}
		return m
	case []any:
		s := make([]any, len(x))
		for i, e := range x {
			s[i] = deepCopy(e)
		}
		return s
	}
	return v
}

// pointerTokens splits a JSON Pointer (RFC 6901) into its unescaped
// reference tokens; "" has none.
func pointerTokens(p string) []string {
	if p == "" {
		return nil
	}
	var toks []string
	cur := []byte{}
	for i := 1; i < len(p); i++ {
		switch {
		case p[i] == '/':
			toks = append(toks, string(cur))
			cur = cur[:0]
		case p[i] == '~' && i+1 < len(p) && p[i+1] == '0':
			cur = append(cur, '~')
			i++
		case p[i] == '~' && i+1 < len(p) && p[i+1] == '1':
			cur = append(cur, '/')
			i++
		default:
			cur = append(cur, p[i])
		}
	}
	return append(toks, string(cur))
}
