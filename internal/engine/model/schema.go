package model

import (
	"bytes"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/santhosh-tekuri/jsonschema/v6"

	"github.com/contractual/contractual/internal/errs"
)

// Tool is one tool the session may propose: its name and its input's JSON
// Schema (as the contract declares it, narrowed by any bounds).
type Tool struct {
	Name        string
	InputSchema json.RawMessage
}

// toolSchema is a tool prepared for one Propose call.
type toolSchema struct {
	name string
	// encoded is true when the tool's input schema does not satisfy strict
	// mode's rules: the model is then asked for the input as a JSON-encoded
	// string, which is decoded and validated against compiled afterwards.
	encoded  bool
	compiled *jsonschema.Schema
	raw      map[string]any
}

// schema is the response format of one Propose call and what validates it.
type schema struct {
	doc      map[string]any // sent to the provider as response_format's schema
	envelope *jsonschema.Schema
	tools    map[string]*toolSchema
}

const schemaName = "proposal"

// buildSchema builds the strict response schema for tools:
//
//	{"answer": string|null, "calls": [{"tool": <enum>, "input": <tool's input schema>}]}
//
// Each call is an anyOf branch per tool, so a tool's input is checked against
// its own schema; the tool names together are the enum of the session's tools.
// A tool whose input schema breaks strict mode's rules (an object without
// additionalProperties: false or with an optional property, or a keyword
// strict mode does not take) gets {"type": "string"} as its input instead:
// the model writes the input JSON-encoded, and the client decodes it and
// validates it against the tool's full schema after the response arrives.
func buildSchema(tools []Tool) (*schema, error) {
	s := &schema{tools: make(map[string]*toolSchema, len(tools))}
	var branches []any
	for _, t := range tools {
		if t.Name == "" {
			return nil, errs.E(errs.Invalid, "model: a tool without a name")
		}
		if _, dup := s.tools[t.Name]; dup {
			return nil, errs.E(errs.Invalid, "model: tool %q listed twice", t.Name)
		}
		var raw map[string]any
		if err := json.Unmarshal(t.InputSchema, &raw); err != nil {
			return nil, errs.E(errs.Invalid, "model: tool %q: input schema is not a JSON object: %w", t.Name, err)
		}
		compiled, err := compile(t.InputSchema)
		if err != nil {
			return nil, errs.E(errs.Invalid, "model: tool %q: input schema: %w", t.Name, err)
		}
		ts := &toolSchema{name: t.Name, compiled: compiled, raw: raw, encoded: strictProblem(raw) != ""}
		s.tools[t.Name] = ts
		input := any(raw)
		if ts.encoded {
			input = map[string]any{
				"type":        "string",
				"description": "The input of " + t.Name + " as a JSON-encoded string, valid against: " + string(t.InputSchema),
			}
		}
		branches = append(branches, map[string]any{
			"type":                 "object",
			"additionalProperties": false,
			"required":             []any{"tool", "input"},
			"properties": map[string]any{
				"tool":  map[string]any{"type": "string", "enum": []any{t.Name}},
				"input": input,
			},
		})
	}
	items := map[string]any{"anyOf": branches}
	calls := map[string]any{
		"type":        "array",
		"description": "Tool calls to propose; empty when answering.",
		"items":       items,
	}
	if len(branches) == 0 { // a turn without tools can only answer
		calls = map[string]any{"type": "array", "maxItems": 0, "items": map[string]any{"type": "object", "additionalProperties": false, "properties": map[string]any{}, "required": []any{}}}
	}
	s.doc = map[string]any{
		"type":                 "object",
		"additionalProperties": false,
		"required":             []any{"answer", "calls"},
		"properties": map[string]any{
			"answer": map[string]any{
				"type":        []any{"string", "null"},
				"description": "The final answer to the user, or null when proposing tool calls.",
			},
			"calls": calls,
		},
	}
	b, err := json.Marshal(s.doc)
	if err != nil {
		return nil, errs.E(errs.Internal, "model: encoding the response schema: %w", err)
	}
	if s.envelope, err = compile(b); err != nil {
		return nil, errs.E(errs.Internal, "model: compiling the response schema: %w", err)
	}
	return s, nil
}

// strictKeywords are the keywords strict structured outputs take.
var strictKeywords = map[string]bool{
	"type": true, "properties": true, "required": true, "additionalProperties": true,
	"items": true, "enum": true, "const": true, "anyOf": true, "description": true,
	"title": true, "$defs": true, "$ref": true, "pattern": true, "format": true,
	"minimum": true, "maximum": true, "exclusiveMinimum": true, "exclusiveMaximum": true,
	"multipleOf": true, "minItems": true, "maxItems": true, "$schema": true,
}

// strictProblem returns why s breaks strict mode's rules, or "".
func strictProblem(s map[string]any) string {
	for _, k := range slices.Sorted(maps.Keys(s)) {
		if !strictKeywords[k] {
			return "keyword " + k
		}
	}
	if t, _ := s["type"].(string); t == "object" || s["properties"] != nil {
		if ap, ok := s["additionalProperties"].(bool); !ok || ap {
			return "an object without additionalProperties: false"
		}
		props, _ := s["properties"].(map[string]any)
		req, _ := s["required"].([]any)
		if len(req) != len(props) {
			return "an optional property"
		}
		for _, r := range req {
			if name, _ := r.(string); props[name] == nil {
				return "a required property that is not declared"
			}
		}
		for _, k := range slices.Sorted(maps.Keys(props)) {
			sub, ok := props[k].(map[string]any)
			if !ok {
				return "property " + k + " is not a schema object"
			}
			if p := strictProblem(sub); p != "" {
				return p
			}
		}
	}
	if items, ok := s["items"].(map[string]any); ok {
		if p := strictProblem(items); p != "" {
			return p
		}
	}
	for _, key := range []string{"anyOf"} {
		list, _ := s[key].([]any)
		for _, e := range list {
			sub, ok := e.(map[string]any)
			if !ok {
				return key + " entry is not a schema object"
			}
			if p := strictProblem(sub); p != "" {
				return p
			}
		}
	}
	if defs, ok := s["$defs"].(map[string]any); ok {
		for _, k := range slices.Sorted(maps.Keys(defs)) {
			sub, ok := defs[k].(map[string]any)
			if !ok {
				return "$defs entry is not a schema object"
			}
			if p := strictProblem(sub); p != "" {
				return p
			}
		}
	}
	return ""
}

const schemaURL = "mem:///schema.json"

type noLoader struct{}

func (noLoader) Load(url string) (any, error) {
	return nil, fmt.Errorf("schema references %s: external references are not loaded", url)
}

func compile(b []byte) (*jsonschema.Schema, error) {
	doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(b))
	if err != nil {
		return nil, err
	}
	c := jsonschema.NewCompiler()
	c.DefaultDraft(jsonschema.Draft2020)
	c.UseLoader(noLoader{})
	if err := c.AddResource(schemaURL, doc); err != nil {
		return nil, err
	}
	return c.Compile(schemaURL)
}

// Call is one validated tool call proposal.
type Call struct {
	Tool  string
	Input json.RawMessage
}

// parse validates content against the schema and returns the answer or calls.
// Its error says, for the corrective message, what was wrong; it never
// contains more than the model's own output.
func (s *schema) parse(content string) (answer string, calls []Call, err error) {
	v, err := jsonschema.UnmarshalJSON(strings.NewReader(content))
	if err != nil {
		return "", nil, fmt.Errorf("the response is not valid JSON: %v", err)
	}
	if err := s.envelope.Validate(v); err != nil {
		return "", nil, fmt.Errorf("the response does not match the schema: %v", err)
	}
	var env struct {
		Answer *string `json:"answer"`
		Calls  []struct {
			Tool  string          `json:"tool"`
			Input json.RawMessage `json:"input"`
		} `json:"calls"`
	}
	if err := json.Unmarshal([]byte(content), &env); err != nil {
		return "", nil, fmt.Errorf("the response does not match the schema: %v", err)
	}
	hasAnswer := env.Answer != nil && strings.TrimSpace(*env.Answer) != ""
	switch {
	case hasAnswer && len(env.Calls) > 0:
		return "", nil, fmt.Errorf("the response has both an answer and calls: give one of them, and answer null when calling tools")
	case !hasAnswer && len(env.Calls) == 0:
		return "", nil, fmt.Errorf("the response has neither an answer nor calls")
	case hasAnswer:
		return *env.Answer, nil, nil
	}
	for i, c := range env.Calls {
		ts := s.tools[c.Tool]
		if ts == nil { // the envelope's enum already refuses it; kept as a guard
			return "", nil, fmt.Errorf("calls[%d]: tool %q is not one of the session's tools", i, c.Tool)
		}
		input := []byte(c.Input)
		if ts.encoded {
			var str string
			if err := json.Unmarshal(c.Input, &str); err != nil {
				return "", nil, fmt.Errorf("calls[%d]: the input of %s must be a JSON-encoded string", i, c.Tool)
			}
			input = []byte(str)
		}
		iv, err := jsonschema.UnmarshalJSON(bytes.NewReader(input))
		if err != nil {
			return "", nil, fmt.Errorf("calls[%d]: the input of %s is not valid JSON: %v", i, c.Tool, err)
		}
		if err := ts.compiled.Validate(iv); err != nil {
			return "", nil, fmt.Errorf("calls[%d]: the input of %s does not match its schema: %v", i, c.Tool, err)
		}
		var compact bytes.Buffer
		if err := json.Compact(&compact, input); err != nil {
			return "", nil, fmt.Errorf("calls[%d]: the input of %s is not valid JSON: %v", i, c.Tool, err)
		}
		calls = append(calls, Call{Tool: c.Tool, Input: compact.Bytes()})
	}
	return "", calls, nil
}
