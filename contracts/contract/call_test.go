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
