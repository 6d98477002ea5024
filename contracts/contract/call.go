package contract

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"strings"

	"github.com/santhosh-tekuri/jsonschema/v6"
	"google.golang.org/protobuf/types/known/structpb"

	contractualv1 "github.com/contractual/contractual/contracts/gen/contractual/v1"
	"github.com/contractual/contractual/internal/errs"
)

// maxCallProblems bounds how many schema failures a call error lists.
const maxCallProblems = 5

// CheckInput checks the input of a call of tool t: one JSON value that meets
// t's input schema and that t's input format can hand to the module. The
// error is errs.Invalid, and says where the input fails the schema.
func CheckInput(t *contractualv1.Tool, input []byte) error {
	if t.GetInputSchema() == nil {
		return errs.E(errs.Invalid, "tool %s has no input schema", t.GetExport())
	}
	if err := checkCall(errs.Invalid, "input", t, t.GetInputSchema(), input); err != nil {
		return err
	}
	_, err := ModuleInput(t, input)
	return err
}

// ModuleInput returns the bytes the module receives for a call of tool t
// whose input is the JSON value input, as t's input format says: the JSON
// itself; the text of a JSON string; or the bytes of a base64 JSON string.
// The runner and `contractual run` both hand the module exactly this. The
// error is errs.Invalid.
func ModuleInput(t *contractualv1.Tool, input []byte) ([]byte, error) {
	format := t.GetInputFormat()
	if format == contractualv1.InputFormat_INPUT_FORMAT_UNSPECIFIED || format == contractualv1.InputFormat_INPUT_FORMAT_JSON {
		return input, nil
	}
	var s string
	if err := json.Unmarshal(input, &s); err != nil {
		return nil, errs.E(errs.Invalid, "tool %s takes its input as a JSON string (input_format %s), not %s",
			t.GetExport(), inputFormatName(format), jsonKind(input))
	}
	switch format {
	case contractualv1.InputFormat_INPUT_FORMAT_STRING:
		return []byte(s), nil
	case contractualv1.InputFormat_INPUT_FORMAT_BYTES:
		b, err := decodeBase64(s)
		if err != nil {
			return nil, errs.E(errs.Invalid, "tool %s takes its input as base64 (input_format bytes): %v", t.GetExport(), err)
		}
		return b, nil
	}
	return nil, errs.E(errs.Invalid, "tool %s has an unknown input format %d", t.GetExport(), format)
}

// decodeBase64 decodes standard or URL-alphabet base64, padded or not.
func decodeBase64(s string) ([]byte, error) {
	enc := base64.StdEncoding
	if strings.ContainsAny(s, "-_") {
		enc = base64.URLEncoding
	}
	b, err := enc.WithPadding(base64.NoPadding).Strict().DecodeString(strings.TrimRight(s, "="))
	if err != nil {
		return nil, errors.New("not valid base64 (standard or URL alphabet)")
	}
	return b, nil
}

// jsonKind names the kind of JSON value data holds, for errors.
func jsonKind(data []byte) string {
	var v any
	if json.Unmarshal(data, &v) != nil {
		return "invalid JSON"
	}
	switch v.(type) {
	case map[string]any:
		return "an object"
	case []any:
		return "an array"
	case float64:
		return "a number"
	case bool:
		return "a boolean"
	case nil:
		return "null"
	}
	return "a string"
}

// CheckOutput checks the output of a call of tool t against t's output
// schema; a tool without one may return anything. The error is
// errs.ToolFailed: the tool broke its contract.
func CheckOutput(t *contractualv1.Tool, output []byte) error {
	if t.GetOutputSchema() == nil {
		return nil
	}
	return checkCall(errs.ToolFailed, "output", t, t.GetOutputSchema(), output)
}

// checkCall checks that data is JSON that meets schema s of tool t.
func checkCall(kind errs.Kind, what string, t *contractualv1.Tool, s *structpb.Struct, data []byte) error {
	sch, problems := compileSchema(s)
	if problems != nil {
		// Validate refuses such contracts; this one was not validated.
		return errs.E(errs.Invalid, "tool %s: %s schema: %s", t.GetExport(), what, problems[0].msg)
	}
	v, err := jsonschema.UnmarshalJSON(bytes.NewReader(data))
	if err != nil {
		return errs.E(kind, "%s of %s is not JSON: %v", what, t.GetExport(), err)
	}
	err = sch.Validate(v)
	var verr *jsonschema.ValidationError
	switch {
	case err == nil:
		return nil
	case !errors.As(err, &verr):
		return errs.E(kind, "%s of %s: %v", what, t.GetExport(), err)
	}
	var msgs []string
	for _, p := range leaves(verr) {
		if len(msgs) == maxCallProblems {
			msgs = append(msgs, "…")
			break
		}
		msgs = append(msgs, "at "+pointer(p.loc)+": "+p.msg)
	}
	return errs.E(kind, "%s of %s does not meet its schema: %s", what, t.GetExport(), strings.Join(msgs, "; "))
}

// pointer renders a location as a JSON Pointer: "/items/0", or "/" for the
// whole value.
func pointer(loc []string) string {
	if len(loc) == 0 {
		return "/"
	}
	r := strings.NewReplacer("~", "~0", "/", "~1")
	var b strings.Builder
	for _, seg := range loc {
		b.WriteByte('/')
		b.WriteString(r.Replace(seg))
	}
	return b.String()
}
