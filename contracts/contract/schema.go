package contract

import (
	"bytes"
	"errors"
	"fmt"
	"maps"
	"math"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/santhosh-tekuri/jsonschema/v6"
	"golang.org/x/text/language"
	"golang.org/x/text/message"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/structpb"
)

// schemaURL is where a schema under test is registered in the compiler. It
// is absolute, so the compiler does not consult the working directory.
const schemaURL = "contract:///schema.json"

// schemaProblem is one reason a schema does not compile, at loc, the path of
// keys and indexes to the offending value inside the schema.
type schemaProblem struct {
	loc []string
	msg string
}

// compileSchema checks that s is a JSON Schema that compiles: draft 2020-12
// unless "$schema" names another draft the compiler knows. References must
// stay inside the schema: nothing is loaded from files or the network.
func compileSchema(s *structpb.Struct) (*jsonschema.Schema, []schemaProblem) {
	if ps := checkJSONValue(structpb.NewStructValue(s)); len(ps) > 0 {
		return nil, ps
	}
	b, err := protojson.Marshal(s)
	if err != nil {
		return nil, []schemaProblem{{msg: "cannot be written as JSON"}}
	}
	doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(b))
	if err != nil {
		return nil, []schemaProblem{{msg: err.Error()}}
	}
	c := jsonschema.NewCompiler()
	c.DefaultDraft(jsonschema.Draft2020)
	c.UseLoader(noLoader{})
	if err := c.AddResource(schemaURL, doc); err != nil {
		return nil, []schemaProblem{{msg: err.Error()}}
	}
	sch, err := c.Compile(schemaURL)
	if err != nil {
		return nil, schemaProblems(err)
	}
	return sch, nil
}

// errNoLoad is why a reference to another document fails.
var errNoLoad = errors.New("a schema must be self-contained")

// noLoader refuses to load any schema document. The meta-schemas of the
// known drafts are built into the compiler and need no loader.
type noLoader struct{}

func (noLoader) Load(string) (any, error) { return nil, errNoLoad }

var english = message.NewPrinter(language.English)

// schemaProblems turns a compile error into problems: for a schema that
// breaks its meta-schema, one per failed keyword, at its place; else one.
func schemaProblems(err error) []schemaProblem {
	var lerr *jsonschema.LoadURLError
	if errors.As(err, &lerr) && errors.Is(lerr.Err, errNoLoad) {
		return []schemaProblem{{msg: fmt.Sprintf("cannot load %q: %v", lerr.URL, errNoLoad)}}
	}
	var serr *jsonschema.SchemaValidationError
	var verr *jsonschema.ValidationError
	if !errors.As(err, &serr) || !errors.As(serr.Err, &verr) {
		msg := strings.ReplaceAll(err.Error(), schemaURL, "")
		return []schemaProblem{{msg: strings.Join(strings.Fields(msg), " ")}}
	}
	return leaves(verr)
}

// leaves returns the innermost failures in a validation error: the ones
// that say what is wrong, not which combinator gave up.
func leaves(e *jsonschema.ValidationError) []schemaProblem {
	if len(e.Causes) == 0 {
		return []schemaProblem{{loc: e.InstanceLocation, msg: e.ErrorKind.LocalizedString(english)}}
	}
	var ps []schemaProblem
	for _, c := range e.Causes {
		ps = append(ps, leaves(c)...)
	}
	return ps
}

// schemaPath returns the field path of loc inside the schema s at base,
// using the schema to tell list indexes from object keys.
func schemaPath(base string, s *structpb.Struct, loc []string) string {
	path, v := base, structpb.NewStructValue(s)
	for _, seg := range loc {
		if l := v.GetListValue(); l != nil {
			i, err := strconv.Atoi(seg)
			if err != nil || i < 0 || i >= len(l.GetValues()) {
				return path
			}
			path, v = joinIndex(path, i), l.GetValues()[i]
			continue
		}
		next, ok := v.GetStructValue().GetFields()[seg]
		if !ok {
			return path
		}
		path, v = joinKey(path, seg), next
	}
	return path
}

// maxSchemaValues bounds the JSON values in one schema. Real schemas have
// a few hundred; the bound keeps compiling cheap (the compiler is quadratic
// in the number of subschemas).
const maxSchemaValues = 4096

// jsonCheck finds what JSON cannot hold (numbers that are not finite,
// strings that are not UTF-8: these can only come through the API), and
// schemas too deep or too large to compile.
type jsonCheck struct {
	values   int
	problems []schemaProblem
}

// checkJSONValue returns the problems of v as a schema, or nil.
func checkJSONValue(v *structpb.Value) []schemaProblem {
	var c jsonCheck
	c.value(v, nil)
	if c.values > maxSchemaValues {
		return []schemaProblem{{msg: fmt.Sprintf("has more than %d values", maxSchemaValues)}}
	}
	return c.problems
}

// value checks v, at loc.
func (c *jsonCheck) value(v *structpb.Value, loc []string) {
	if c.values++; c.values > maxSchemaValues {
		return
	}
	if len(loc) > maxJSONDepth {
		c.problems = append(c.problems, schemaProblem{loc: loc, msg: fmt.Sprintf("nested more than %d levels deep", maxJSONDepth)})
		return
	}
	switch k := v.GetKind().(type) {
	case *structpb.Value_NumberValue:
		if math.IsNaN(k.NumberValue) || math.IsInf(k.NumberValue, 0) {
			c.problems = append(c.problems, schemaProblem{loc: loc, msg: "numbers must be finite"})
		}
	case *structpb.Value_StringValue:
		if !utf8.ValidString(k.StringValue) {
			c.problems = append(c.problems, schemaProblem{loc: loc, msg: "strings must be valid UTF-8"})
		}
	case *structpb.Value_ListValue:
		for i, el := range k.ListValue.GetValues() {
			c.value(el, append(slices.Clip(loc), strconv.Itoa(i)))
		}
	case *structpb.Value_StructValue:
		fields := k.StructValue.GetFields()
		for _, key := range slices.Sorted(maps.Keys(fields)) {
			if !utf8.ValidString(key) {
				c.problems = append(c.problems, schemaProblem{loc: loc, msg: "keys must be valid UTF-8"})
				continue
			}
			c.value(fields[key], append(slices.Clip(loc), key))
		}
	}
}
