package job

import (
	"fmt"
	"regexp"
	"slices"
	"strings"

	"google.golang.org/protobuf/types/known/structpb"
)

// A step's input is a JSON value in which an object {"$ref": "<ref>"} stands
// for the value the reference names. References are data, not code: there
// is no expression language to escape from, nothing is evaluated, and the
// set of values a step can see is exactly the trigger's payload and the
// outputs of the steps before it.

// RefKey is the key that makes an object in an input template a reference.
const RefKey = "$ref"

// Ref is a parsed reference.
type Ref struct {
	// Step is the id of the step whose output is referred to, or "" for the
	// trigger's payload.
	Step string
	// Path selects inside the value: object keys, or array indexes written
	// in decimal.
	Path []string
}

// String returns the reference as written: "trigger.payload.items" or
// "steps.fetch.output.items.0".
func (r Ref) String() string {
	s := "trigger.payload"
	if r.Step != "" {
		s = "steps." + r.Step + ".output"
	}
	for _, p := range r.Path {
		s += "." + p
	}
	return s
}

// refSegmentRE is one segment of a reference's path.
var refSegmentRE = regexp.MustCompile(`^[A-Za-z0-9_-]{1,128}$`)

// ParseRef parses a reference: "trigger.payload" or "steps.<id>.output",
// either followed by ".<key>" or ".<index>" segments (letters, digits, '_'
// and '-').
func ParseRef(s string) (Ref, error) {
	parts := strings.Split(s, ".")
	var r Ref
	switch {
	case len(parts) >= 2 && parts[0] == "trigger" && parts[1] == "payload":
		r.Path = parts[2:]
	case len(parts) >= 3 && parts[0] == "steps" && parts[2] == "output":
		if !stepIDRE.MatchString(parts[1]) {
			return Ref{}, fmt.Errorf("%q is not a step id", parts[1])
		}
		r.Step, r.Path = parts[1], parts[3:]
	default:
		return Ref{}, fmt.Errorf(`must start with "trigger.payload" or "steps.<id>.output"`)
	}
	for _, p := range r.Path {
		if !refSegmentRE.MatchString(p) {
			return Ref{}, fmt.Errorf("segment %q: use keys of letters, digits, _ and - (at most 128), or indexes", p)
		}
	}
	r.Path = slices.Clip(r.Path)
	return r, nil
}

// refs calls fn with each reference in an input template and its field
// path; the problems it finds with the template's references go to bad.
func refs(v *structpb.Value, path string, fn func(path string, r Ref), bad func(path, msg string)) {
	switch k := v.GetKind().(type) {
	case *structpb.Value_StructValue:
		fields := k.StructValue.GetFields()
		if ref, ok := fields[RefKey]; ok {
			rpath := path + `["` + RefKey + `"]`
			switch {
			case len(fields) != 1:
				bad(path, `an object with "$ref" is a reference and may have no other key`)
			case ref.GetStringValue() == "":
				bad(rpath, "a reference is a non-empty string")
			default:
				r, err := ParseRef(ref.GetStringValue())
				if err != nil {
					bad(rpath, fmt.Sprintf("%q: %v", ref.GetStringValue(), err))
					return
				}
				fn(rpath, r)
			}
			return
		}
		for _, key := range sortedKeys(fields) {
			refs(fields[key], joinKey(path, key), fn, bad)
		}
	case *structpb.Value_ListValue:
		for i, el := range k.ListValue.GetValues() {
			refs(el, fmt.Sprintf("%s[%d]", path, i), fn, bad)
		}
	}
}

// identRE matches object keys that need no quoting in a field path.
var identRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

// joinKey returns the path of key in the object at parent, as the contract
// package writes it.
func joinKey(parent, key string) string {
	if identRE.MatchString(key) {
		return parent + "." + key
	}
	return fmt.Sprintf("%s[%q]", parent, key)
}

// sortedKeys returns m's keys in order.
func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
