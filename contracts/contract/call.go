package contract

import (
	"bytes"
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
// t's input schema. The error is errs.Invalid, and says where the input
// fails the schema.
func CheckInput(t *contractualv1.Tool, input []byte) error {
	if t.GetInputSchema() == nil {
		return errs.E(errs.Invalid, "tool %s has no input schema", t.GetExport())
	}
	return checkCall(errs.Invalid, "input", t, t.GetInputSchema(), input)
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
