package contract

import (
	"strings"
	"testing"

	contractualv1 "github.com/contractual/contractual/contracts/gen/contractual/v1"
	"github.com/contractual/contractual/internal/errs"
)

func TestCheckInput(t *testing.T) {
	tool := weather().Tools[0] // {city: string}, required, no other properties
	tests := []struct {
		input string
		want  string // empty: accepted
	}{
		{`{"city": "Oslo"}`, ""},
		{` {"city": "Oslo"} `, ""},
		{`{"city": 1}`, "input of forecast does not meet its schema: at /city: got number, want string"},
		{`{}`, "input of forecast does not meet its schema: at /: missing property 'city'"},
		{`{"city": "Oslo", "x": 1}`, "input of forecast does not meet its schema: at /: additional properties 'x' not allowed"},
		{`["Oslo"]`, "input of forecast does not meet its schema: at /: got array, want object"},
		{`{"city": "Oslo"} {}`, "input of forecast is not JSON: invalid character after top-level value"},
		{`{"city": `, "input of forecast is not JSON: unexpected EOF"},
		{``, "input of forecast is not JSON: EOF"},
	}
	for _, tt := range tests {
		err := CheckInput(tool, []byte(tt.input))
		switch {
		case tt.want == "" && err != nil:
			t.Errorf("CheckInput(%s) = %v, want nil", tt.input, err)
		case tt.want != "" && (err == nil || err.Error() != tt.want):
			t.Errorf("CheckInput(%s) = %v, want %s", tt.input, err, tt.want)
		case err != nil && errs.KindOf(err) != errs.Invalid:
			t.Errorf("CheckInput(%s): kind %v, want invalid", tt.input, errs.KindOf(err))
		}
	}
}

func TestCheckInputListsFewFailures(t *testing.T) {
	tool := &contractualv1.Tool{Export: "f", InputSchema: mustStruct(map[string]any{
		"type": "object", "additionalProperties": map[string]any{"type": "string"},
	})}
	err := CheckInput(tool, []byte(`{"a":1,"b":2,"c":3,"d":4,"e":5,"f":6,"g":7}`))
	if err == nil || strings.Count(err.Error(), "at /") != maxCallProblems || !strings.HasSuffix(err.Error(), "; …") {
		t.Errorf("CheckInput = %v, want %d failures and an ellipsis", err, maxCallProblems)
	}
}

func TestCheckOutput(t *testing.T) {
	tool := weather().Tools[0] // output: {type: object}
	if err := CheckOutput(tool, []byte(`{"temp": 3}`)); err != nil {
		t.Errorf("CheckOutput(object) = %v", err)
	}
	err := CheckOutput(tool, []byte(`"sunny"`))
	if want := "output of forecast does not meet its schema: at /: got string, want object"; err == nil || err.Error() != want {
		t.Errorf("CheckOutput(string) = %v, want %s", err, want)
	}
	if errs.KindOf(err) != errs.ToolFailed {
		t.Errorf("CheckOutput kind = %v, want tool_failed", errs.KindOf(err))
	}
	tool.OutputSchema = nil
	if err := CheckOutput(tool, []byte("not json")); err != nil {
		t.Errorf("CheckOutput without a schema = %v, want nil", err)
	}
}

func TestCheckInputUnvalidatedContract(t *testing.T) {
	tool := &contractualv1.Tool{Export: "f"}
	if err := CheckInput(tool, []byte(`{}`)); err == nil || errs.KindOf(err) != errs.Invalid {
		t.Errorf("CheckInput without schema = %v, want an invalid error", err)
	}
	tool.InputSchema = mustStruct(map[string]any{"type": 1})
	if err := CheckInput(tool, []byte(`{}`)); err == nil || !strings.Contains(err.Error(), "input schema") {
		t.Errorf("CheckInput with a broken schema = %v", err)
	}
}

func TestModuleInput(t *testing.T) {
	tool := func(f contractualv1.InputFormat) *contractualv1.Tool {
		return &contractualv1.Tool{Export: "f", InputFormat: f}
	}
	const (
		unset = contractualv1.InputFormat_INPUT_FORMAT_UNSPECIFIED
		json  = contractualv1.InputFormat_INPUT_FORMAT_JSON
		text  = contractualv1.InputFormat_INPUT_FORMAT_STRING
		bin   = contractualv1.InputFormat_INPUT_FORMAT_BYTES
	)
	tests := []struct {
		format      contractualv1.InputFormat
		input, want string
		err         string
	}{
		{unset, `{"text":"Hello"}`, `{"text":"Hello"}`, ""},
		{json, `{"text":"Hello"}`, `{"text":"Hello"}`, ""},
		{text, `"Hello, \"World\"\n"`, "Hello, \"World\"\n", ""},
		{text, `"\u00e9t\u00e9 \ud83d\ude00"`, "été 😀", ""},
		{text, `""`, "", ""},
		{text, `{"text":"Hello"}`, "", "tool f takes its input as a JSON string (input_format string), not an object"},
		{text, `42`, "", "not a number"},
		{bin, `"AAEC/w=="`, "\x00\x01\x02\xff", ""},
		{bin, `"AAEC/w"`, "\x00\x01\x02\xff", ""},
		{bin, `"AAEC_w"`, "\x00\x01\x02\xff", ""},
		{bin, `"AAEC/w=x"`, "", "not valid base64"},
		{bin, `"AAEC_w+/"`, "", "not valid base64"},
		{bin, `["AAEC"]`, "", "not an array"},
		{9, `"x"`, "", "unknown input format 9"},
	}
	for _, tt := range tests {
		got, err := ModuleInput(tool(tt.format), []byte(tt.input))
		switch {
		case tt.err == "" && (err != nil || string(got) != tt.want):
			t.Errorf("ModuleInput(%v, %s) = %q, %v; want %q", tt.format, tt.input, got, err, tt.want)
		case tt.err != "" && (err == nil || !strings.Contains(err.Error(), tt.err) || errs.KindOf(err) != errs.Invalid):
			t.Errorf("ModuleInput(%v, %s) = %q, %v; want an invalid error with %q", tt.format, tt.input, got, err, tt.err)
		}
	}
}

func TestCheckInputText(t *testing.T) {
	tool := &contractualv1.Tool{Export: "f", InputFormat: contractualv1.InputFormat_INPUT_FORMAT_BYTES,
		InputSchema: mustStruct(map[string]any{"type": "string"})}
	if err := CheckInput(tool, []byte(`"AAEC"`)); err != nil {
		t.Errorf("CheckInput(base64) = %v", err)
	}
	if err := CheckInput(tool, []byte(`"not base64!"`)); err == nil || !strings.Contains(err.Error(), "base64") {
		t.Errorf("CheckInput(not base64) = %v, want a base64 error", err)
	}
}
