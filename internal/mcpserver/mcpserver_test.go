package mcpserver

import (
	"encoding/json"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/modelcontextprotocol/go-sdk/mcp"
	"google.golang.org/protobuf/types/known/structpb"

	contractualv1 "github.com/contractual/contractual/contracts/gen/contractual/v1"
	"github.com/contractual/contractual/internal/errs"
)

func mustStruct(t *testing.T, js string) *structpb.Struct {
	t.Helper()
	var s structpb.Struct
	if err := s.UnmarshalJSON([]byte(js)); err != nil {
		t.Fatal(err)
	}
	return &s
}

// canon is JSON document js with its keys sorted and no spaces.
func canon(js string) string {
	var v any
	if err := json.Unmarshal([]byte(js), &v); err != nil {
		return "invalid JSON: " + js
	}
	b, _ := json.Marshal(v)
	return string(b)
}

// TestMCPTool: a tool is named as Invoke names it, keeps its contract's
// description and schemas, and a string-taking tool's schema is wrapped as
// one "input" argument, which arguments unwraps.
func TestMCPTool(t *testing.T) {
	k := &contractualv1.Contract{Name: "count-vowels2"}
	for _, tt := range []struct {
		name, schema string
		wrapped      bool
		args, input  string // a call's arguments, and the Invoke input they make ("" = refused)
	}{
		{"object", `{"type":"object","properties":{"text":{"type":"string"}}}`, false, `{"text":"hi"}`, `{"text":"hi"}`},
		{"object, no arguments", `{"type":"object"}`, false, ``, `{}`},
		{"string", `{"type":"string","maxLength":10}`, true, `{"input":"hi"}`, `"hi"`},
		{"string, no input", `{"type":"string"}`, true, `{"text":"hi"}`, ``},
		{"string, more arguments", `{"type":"string"}`, true, `{"input":"hi","x":1}`, ``},
	} {
		t.Run(tt.name, func(t *testing.T) {
			ct := &contractualv1.Tool{Export: "count_vowels", Description: "Counts.", Risk: contractualv1.Risk_RISK_HIGH,
				InputSchema: mustStruct(t, tt.schema), OutputSchema: mustStruct(t, `{"type":"object"}`)}
			tool, wrapped, err := mcpTool(k, ct)
			if err != nil {
				t.Fatal(err)
			}
			if tool.Name != "count-vowels2.count_vowels" || tool.Description != "Counts." || wrapped != tt.wrapped {
				t.Fatalf("tool %q %q, wrapped %v", tool.Name, tool.Description, wrapped)
			}
			if tool.Annotations == nil || tool.Annotations.DestructiveHint == nil || !*tool.Annotations.DestructiveHint {
				t.Errorf("a high-risk tool's annotations: %+v", tool.Annotations)
			}
			var in map[string]any
			if err := json.Unmarshal(tool.InputSchema.(json.RawMessage), &in); err != nil || in["type"] != "object" {
				t.Fatalf("input schema %s: %v", tool.InputSchema, err)
			}
			if tt.wrapped {
				inner, _ := json.Marshal(in["properties"].(map[string]any)[inputKey])
				if canon(string(inner)) != canon(tt.schema) || in["additionalProperties"] != false {
					t.Errorf("wrapped schema %s, want %s inside", tool.InputSchema, tt.schema)
				}
			} else if canon(string(tool.InputSchema.(json.RawMessage))) != canon(tt.schema) {
				t.Errorf("schema %s, want %s", tool.InputSchema, tt.schema)
			}
			if string(tool.OutputSchema.(json.RawMessage)) != `{"type":"object"}` {
				t.Errorf("output schema %s", tool.OutputSchema)
			}
			// The SDK takes it (it panics on a schema that is not an object's).
			mcp.NewServer(&mcp.Implementation{Name: "t", Version: "1"}, nil).AddTool(tool, nil)

			v, err := arguments(json.RawMessage(tt.args), wrapped)
			if tt.input == "" {
				if !errs.Is(err, errs.Invalid) {
					t.Fatalf("arguments %s: %v, want invalid", tt.args, err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			got, _ := v.MarshalJSON()
			if canon(string(got)) != canon(tt.input) {
				t.Errorf("input %s, want %s", got, tt.input)
			}
		})
	}
}

// TestResultCapped: a result over the cap is cut at a character boundary
// and says so; it then carries no structured content. One within it is
// whole, structured if the tool has an output schema.
func TestResultCapped(t *testing.T) {
	s := &Server{cfg: Config{MaxResultBytes: 64}}
	long := strings.Repeat("é", 100) // 200 bytes
	for _, tt := range []struct {
		name       string
		resp       *contractualv1.InvokeResponse
		structured bool
		cut        bool
	}{
		{"short JSON", &contractualv1.InvokeResponse{Output: structpb.NewStringValue("ok"), DecisionId: "d1"}, true, false},
		{"long JSON", &contractualv1.InvokeResponse{Output: structpb.NewStringValue(long)}, true, true},
		{"long text", &contractualv1.InvokeResponse{OutputText: long}, false, true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			res := s.result(tt.resp, tt.structured)
			txt := res.Content[0].(*mcp.TextContent).Text
			body, note, cut := strings.Cut(txt, "\n[truncated by Contractual")
			switch {
			case res.IsError:
				t.Fatal("an error")
			case cut != tt.cut:
				t.Fatalf("cut %v, want %v: %q", cut, tt.cut, txt)
			case !utf8.ValidString(body), len(body) > 64:
				t.Fatalf("body %q", body)
			case cut && (res.StructuredContent != nil || !strings.Contains(note, "over the 64 byte cap")):
				t.Fatalf("a cut result: structured %v, note %q", res.StructuredContent, note)
			case !cut && tt.structured && res.StructuredContent == nil:
				t.Fatal("no structured content")
			}
			if res.Meta[MetaDecision] != tt.resp.GetDecisionId() {
				t.Errorf("meta %v", res.Meta)
			}
		})
	}
}

// TestToolError: a refusal says what and why; an internal error says no
// more than that.
func TestToolError(t *testing.T) {
	for _, tt := range []struct {
		err  error
		want string
	}{
		{errs.E(errs.PermissionDenied, "x.y: denied: no"), "refused (permission_denied): x.y: denied: no"},
		{errs.E(errs.Internal, "db at /secret/path broke"), "refused (internal): internal error"},
	} {
		res := toolError(tt.err)
		if got := res.Content[0].(*mcp.TextContent).Text; !res.IsError || got != tt.want {
			t.Errorf("toolError(%v) = %v %q, want %q", tt.err, res.IsError, got, tt.want)
		}
	}
}
