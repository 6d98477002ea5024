package worker

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strconv"

	"google.golang.org/protobuf/types/known/structpb"

	"github.com/contractual/contractual/contracts/job"
	"github.com/contractual/contractual/internal/errs"
)

// scope is what a step's input template may refer to: the trigger's
// payload and the outputs of the steps before it, decoded from JSON (an
// output that is not JSON is its text).
type scope struct {
	payload any
	outputs map[string]any
}

// decodeJSON decodes b keeping numbers as written.
func decodeJSON(b []byte) (any, error) {
	d := json.NewDecoder(bytes.NewReader(b))
	d.UseNumber()
	var v any
	if err := d.Decode(&v); err != nil {
		return nil, err
	}
	if d.More() {
		return nil, fmt.Errorf("trailing data after the JSON value")
	}
	return v, nil
}

// output is a step's output as a template sees it.
func output(b []byte) any {
	if v, err := decodeJSON(b); err == nil {
		return v
	}
	return string(b)
}

// render fills in the template's references and returns the input as
// JSON. A reference to a step that has not run, or a path that is not in
// the value, is an errs.Invalid error naming it.
func (sc *scope) render(tmpl *structpb.Value) ([]byte, error) {
	v, err := sc.fill(tmpl)
	if err != nil {
		return nil, err
	}
	b, err := json.Marshal(v)
	if err != nil {
		return nil, errs.Wrap(errs.Internal, err, "encoding the input")
	}
	return b, nil
}

// fill returns v with its references replaced.
func (sc *scope) fill(v *structpb.Value) (any, error) {
	switch k := v.GetKind().(type) {
	case *structpb.Value_StructValue:
		fields := k.StructValue.GetFields()
		if ref, ok := fields[job.RefKey]; ok && len(fields) == 1 {
			return sc.resolve(ref.GetStringValue())
		}
		out := make(map[string]any, len(fields))
		for key, f := range fields {
			x, err := sc.fill(f)
			if err != nil {
				return nil, err
			}
			out[key] = x
		}
		return out, nil
	case *structpb.Value_ListValue:
		out := make([]any, len(k.ListValue.GetValues()))
		for i, el := range k.ListValue.GetValues() {
			x, err := sc.fill(el)
			if err != nil {
				return nil, err
			}
			out[i] = x
		}
		return out, nil
	}
	return v.AsInterface(), nil
}

// resolve returns the value a reference names.
func (sc *scope) resolve(s string) (any, error) {
	r, err := job.ParseRef(s)
	if err != nil {
		return nil, errs.E(errs.Invalid, "reference %q: %v", s, err)
	}
	cur := sc.payload
	if r.Step != "" {
		out, ok := sc.outputs[r.Step]
		if !ok {
			return nil, errs.E(errs.Invalid, "reference %q: step %s has no output before this step", s, r.Step)
		}
		cur = out
	}
	at := job.Ref{Step: r.Step}
	for _, seg := range r.Path {
		switch c := cur.(type) {
		case map[string]any:
			next, ok := c[seg]
			if !ok {
				return nil, errs.E(errs.Invalid, "reference %q: %s has no key %q", s, at, seg)
			}
			cur = next
		case []any:
			i, err := strconv.Atoi(seg)
			if err != nil || i < 0 || i >= len(c) {
				return nil, errs.E(errs.Invalid, "reference %q: %s is an array of %d, without an element %q", s, at, len(c), seg)
			}
			cur = c[i]
		default:
			return nil, errs.E(errs.Invalid, "reference %q: %s is not an object or an array", s, at)
		}
		at.Path = append(at.Path, seg)
	}
	return cur, nil
}
