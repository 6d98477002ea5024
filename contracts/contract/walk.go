package contract

import (
	"fmt"
	"math"
	"regexp"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/structpb"
)

// The walker checks the YAML tree of a contract file against the message
// descriptors before protoyaml decodes it. It exists because protoyaml (like
// YAML itself) is lenient in ways a security document must not be: it keeps
// the last of duplicate keys, takes only the first of several documents,
// reads `name: null` as the string "null" and `log:` as a grant. The walker
// refuses all of those with the field path and position, and records the
// position of every field so that later problems can point into the file.

// maxJSONDepth bounds the nesting of JSON values (the schemas).
const maxJSONDepth = 64

// maxSafeInt is the largest integer a JSON number (a float64) holds exactly.
const maxSafeInt = 1 << 53

// jsonNumberRE is JSON's number grammar; numbers inside schemas must use it,
// so that YAML-only spellings (0x1F, 1_000, .inf, +1) cannot mean one thing
// to YAML and another to protoyaml.
var jsonNumberRE = regexp.MustCompile(`^-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][-+]?[0-9]+)?$`)

// coreTags are the explicit YAML tags a contract may use.
var coreTags = map[string]bool{
	"!!str": true, "!!int": true, "!!float": true, "!!bool": true,
	"!!null": true, "!!map": true, "!!seq": true,
}

var (
	structFullName = (&structpb.Struct{}).ProtoReflect().Descriptor().FullName()
	valueFullName  = (&structpb.Value{}).ProtoReflect().Descriptor().FullName()
)

// walker records positions and problems; see the comment above.
type walker struct {
	pos      map[string]Position
	problems []Problem
}

func newWalker() *walker {
	return &walker{pos: make(map[string]Position)}
}

// addf records a problem at node n, which is at path.
func (w *walker) addf(n *yaml.Node, path, format string, args ...any) {
	if w.full() {
		return
	}
	w.problems = append(w.problems, Problem{
		Path: path, Line: n.Line, Col: n.Column,
		Msg: fmt.Sprintf(format, args...),
	})
}

// full reports whether the walker has found so many problems that it
// stops looking: a file that bad is probably not a contract at all.
func (w *walker) full() bool {
	return len(w.problems) >= maxProblems
}

// record notes that path is at node n.
func (w *walker) record(n *yaml.Node, path string) {
	w.pos[path] = Position{n.Line, n.Column}
}

// node records that path is at n and reports whether n may be read at all:
// aliases and unusual tags may not.
func (w *walker) node(n *yaml.Node, path string) bool {
	w.record(n, path)
	return w.plain(n, path)
}

// plain reports whether n is free of aliases and unusual tags, recording a
// problem at path if not.
func (w *walker) plain(n *yaml.Node, path string) bool {
	if n.Kind == yaml.AliasNode {
		w.addf(n, path, "YAML aliases (*%s) are not allowed: write the value out, so the approver sees it", n.Value)
		return false
	}
	if n.Style&yaml.TaggedStyle != 0 && !coreTags[n.Tag] {
		w.addf(n, path, "YAML tag %s is not allowed", n.Tag)
		return false
	}
	return true
}

// message checks a mapping that holds the fields of md.
func (w *walker) message(n *yaml.Node, md protoreflect.MessageDescriptor, path string) {
	if n.Kind != yaml.MappingNode {
		w.addf(n, path, "expected a mapping of %s fields, got %s", md.Name(), describe(n))
		return
	}
	seen := make(map[protoreflect.FieldNumber]*yaml.Node)
	for i := 0; i+1 < len(n.Content) && !w.full(); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		if !w.key(k, path) {
			continue
		}
		fd := lookupField(md, k.Value)
		if fd == nil {
			w.addf(k, joinKey(path, k.Value), "unknown field%s", suggest(md, k.Value))
			continue
		}
		fpath := joinField(path, string(fd.Name()))
		if first, ok := seen[fd.Number()]; ok {
			if first.Value != k.Value {
				w.addf(k, fpath, "given twice (as %s at line %d, and as %s)", first.Value, first.Line, k.Value)
			} else {
				w.addf(k, fpath, "given twice (first at line %d)", first.Line)
			}
			continue
		}
		seen[fd.Number()] = k
		w.field(v, fd, fpath)
	}
}

// key checks that mapping key k is a plain scalar.
func (w *walker) key(k *yaml.Node, path string) bool {
	if !w.plain(k, path) {
		return false
	}
	switch {
	case k.Tag == "!!merge":
		w.addf(k, path, "YAML merge keys (<<) are not allowed: write the fields out, so the approver sees them")
		return false
	case k.Kind != yaml.ScalarNode || k.Tag == "!!null":
		w.addf(k, path, "keys must be strings, got %s", describe(k))
		return false
	}
	return true
}

// field checks the value of one field.
func (w *walker) field(n *yaml.Node, fd protoreflect.FieldDescriptor, path string) {
	switch {
	case !w.node(n, path):
	case fd.IsList():
		w.list(n, fd, path)
	case fd.IsMap():
		w.stringMap(n, fd, path)
	case fd.Message() != nil:
		w.singular(n, fd.Message(), path)
	default:
		w.scalar(n, fd, path)
	}
}

// singular checks a singular message field, which must be a mapping: a
// null would decode as a present, empty message (granting a capability
// without saying so).
func (w *walker) singular(n *yaml.Node, md protoreflect.MessageDescriptor, path string) {
	if n.Kind == yaml.ScalarNode && n.Tag == "!!null" {
		w.addf(n, path, "null is not allowed here: write {} for an empty value, or leave the field out")
		return
	}
	switch md.FullName() {
	case structFullName:
		w.object(n, path, 0)
		return
	case valueFullName:
		w.jsonValue(n, path, 0)
		return
	}
	w.message(n, md, path)
}

// list checks a repeated field.
func (w *walker) list(n *yaml.Node, fd protoreflect.FieldDescriptor, path string) {
	if n.Kind != yaml.SequenceNode {
		w.addf(n, path, "expected a list, got %s", describe(n))
		return
	}
	for i, el := range n.Content {
		epath := joinIndex(path, i)
		switch {
		case !w.node(el, epath):
		case fd.Message() != nil:
			w.singular(el, fd.Message(), epath)
		default:
			w.scalar(el, fd, epath)
		}
	}
}

// stringMap checks a map<string, string> field.
func (w *walker) stringMap(n *yaml.Node, fd protoreflect.FieldDescriptor, path string) {
	if n.Kind != yaml.MappingNode {
		w.addf(n, path, "expected a mapping, got %s", describe(n))
		return
	}
	seen := make(map[string]*yaml.Node)
	for i := 0; i+1 < len(n.Content) && !w.full(); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		if !w.key(k, path) {
			continue
		}
		vpath := joinKey(path, k.Value)
		if first, ok := seen[k.Value]; ok {
			w.addf(k, vpath, "key given twice (first at line %d)", first.Line)
			continue
		}
		seen[k.Value] = k
		if w.node(v, vpath) {
			w.scalar(v, fd.MapValue(), vpath)
		}
	}
}

// scalar checks the value of a scalar field. Integers are left to protoyaml,
// which reports bad ones at their position.
func (w *walker) scalar(n *yaml.Node, fd protoreflect.FieldDescriptor, path string) {
	if n.Kind != yaml.ScalarNode {
		w.addf(n, path, "expected %s, got %s", kindName(fd), describe(n))
		return
	}
	if n.Tag == "!!null" {
		w.addf(n, path, "expected %s, got null", kindName(fd))
		return
	}
	switch fd.Kind() {
	case protoreflect.BoolKind:
		if n.Value != "true" && n.Value != "false" {
			w.addf(n, path, "expected true or false, got %q", n.Value)
		}
	case protoreflect.EnumKind:
		if _, ok := enumValue(fd.Enum(), n.Value); !ok {
			w.addf(n, path, "unknown %s %q: want %s", fd.Name(), n.Value, enumChoices(fd.Enum()))
		}
	}
}

// object checks a google.protobuf.Struct: a JSON object.
func (w *walker) object(n *yaml.Node, path string, depth int) {
	if n.Kind != yaml.MappingNode {
		w.addf(n, path, "expected a mapping (a JSON object), got %s", describe(n))
		return
	}
	w.jsonValue(n, path, depth)
}

// jsonValue checks a google.protobuf.Value: any JSON value.
func (w *walker) jsonValue(n *yaml.Node, path string, depth int) {
	if depth > maxJSONDepth {
		w.addf(n, path, "nested more than %d levels deep", maxJSONDepth)
		return
	}
	switch n.Kind {
	case yaml.MappingNode:
		seen := make(map[string]*yaml.Node)
		for i := 0; i+1 < len(n.Content) && !w.full(); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			if !w.key(k, path) {
				continue
			}
			vpath := joinKey(path, k.Value)
			if first, ok := seen[k.Value]; ok {
				w.addf(k, vpath, "key given twice (first at line %d)", first.Line)
				continue
			}
			seen[k.Value] = k
			if w.node(v, vpath) {
				w.jsonValue(v, vpath, depth+1)
			}
		}
	case yaml.SequenceNode:
		for i, el := range n.Content {
			if epath := joinIndex(path, i); w.node(el, epath) {
				w.jsonValue(el, epath, depth+1)
			}
		}
	case yaml.ScalarNode:
		w.jsonScalar(n, path)
	}
}

// jsonScalar checks that a scalar means the same to YAML, to protoyaml and
// to JSON: booleans spelled true/false, numbers in JSON syntax and exactly
// representable.
func (w *walker) jsonScalar(n *yaml.Node, path string) {
	switch n.Tag {
	case "!!bool":
		if n.Value != "true" && n.Value != "false" {
			w.addf(n, path, "write booleans as true or false, not %q", n.Value)
		}
	case "!!int", "!!float":
		if !jsonNumberRE.MatchString(n.Value) {
			w.addf(n, path, "%q is not a JSON number; quote it if it is a string", n.Value)
			return
		}
		if f, err := strconv.ParseFloat(n.Value, 64); err != nil || math.Abs(f) >= maxSafeInt {
			w.addf(n, path, "number %s is out of range: JSON numbers here must be within ±2^53", n.Value)
		}
	}
}

// lookupField finds md's field named key, by proto name or JSON name.
func lookupField(md protoreflect.MessageDescriptor, key string) protoreflect.FieldDescriptor {
	fields := md.Fields()
	if fd := fields.ByTextName(key); fd != nil {
		return fd
	}
	return fields.ByJSONName(key)
}

// squasher removes what may differ between spellings of a field name.
var squasher = strings.NewReplacer("_", "", "-", "", " ", "")

// suggest returns a hint for an unknown field name: the field it was
// probably meant to be (a different spelling or a typo away), or else the
// list of fields.
func suggest(md protoreflect.MessageDescriptor, key string) string {
	squash := func(s string) string { return strings.ToLower(squasher.Replace(s)) }
	var names []string
	fields := md.Fields()
	for i := range fields.Len() {
		name := string(fields.Get(i).Name())
		if d := distance(squash(name), squash(key)); d == 0 || d <= 2 && len(key) > 3 {
			return fmt.Sprintf("; did you mean %q?", name)
		}
		names = append(names, name)
	}
	return "; " + string(md.Name()) + " has " + strings.Join(names, ", ")
}

// distance returns the Levenshtein distance between a and b, in bytes.
func distance(a, b string) int {
	row := make([]int, len(b)+1)
	for j := range row {
		row[j] = j
	}
	for i := range len(a) {
		prev := row[0] // the distance at (i, j), before it is overwritten
		row[0] = i + 1
		for j := range len(b) {
			cost := 1
			if a[i] == b[j] {
				cost = 0
			}
			prev, row[j+1] = row[j+1], min(row[j+1]+1, row[j]+1, prev+cost)
		}
	}
	return row[len(b)]
}

// enumValue resolves an enum value written as its full name ("RISK_LOW") or
// as its lowercase short name ("low").
func enumValue(ed protoreflect.EnumDescriptor, s string) (protoreflect.EnumValueDescriptor, bool) {
	values := ed.Values()
	if v := values.ByName(protoreflect.Name(s)); v != nil {
		return v, true
	}
	if s != strings.ToLower(s) {
		return nil, false
	}
	v := values.ByName(protoreflect.Name(enumPrefix(ed) + strings.ToUpper(s)))
	return v, v != nil
}

// enumPrefix returns the prefix buf lint requires on ed's values: "RISK_"
// for Risk.
func enumPrefix(ed protoreflect.EnumDescriptor) string {
	var b strings.Builder
	for i, r := range string(ed.Name()) {
		if i > 0 && 'A' <= r && r <= 'Z' {
			b.WriteByte('_')
		}
		b.WriteRune(r)
	}
	return strings.ToUpper(b.String()) + "_"
}

// enumShortName returns the lowercase name of v, the spelling for humans:
// "low" for RISK_LOW.
func enumShortName(v protoreflect.EnumValueDescriptor) string {
	ed := v.Parent().(protoreflect.EnumDescriptor)
	return strings.ToLower(strings.TrimPrefix(string(v.Name()), enumPrefix(ed)))
}

// enumChoices lists the settable values of ed: "low, medium or high".
func enumChoices(ed protoreflect.EnumDescriptor) string {
	var names []string
	for i := range ed.Values().Len() {
		if v := ed.Values().Get(i); v.Number() != 0 {
			names = append(names, enumShortName(v))
		}
	}
	if len(names) < 2 {
		return strings.Join(names, "")
	}
	return strings.Join(names[:len(names)-1], ", ") + " or " + names[len(names)-1]
}

// kindName says what a scalar field holds, for messages.
func kindName(fd protoreflect.FieldDescriptor) string {
	switch fd.Kind() {
	case protoreflect.StringKind:
		return "a string"
	case protoreflect.BoolKind:
		return "true or false"
	case protoreflect.EnumKind:
		return enumChoices(fd.Enum())
	default:
		return "a number"
	}
}

// describe says what a YAML node is, for messages.
func describe(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.AliasNode:
		return "an alias"
	case yaml.ScalarNode:
		if n.Tag == "!!null" {
			return "null"
		}
		return fmt.Sprintf("%q", n.Value)
	}
	return "nothing"
}
