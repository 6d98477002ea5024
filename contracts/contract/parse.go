package contract

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"buf.build/go/protoyaml"
	"go.yaml.in/yaml/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	contractualv1 "github.com/contractual/contractual/contracts/gen/contractual/v1"
)

// MaxFileSize is the largest contract file Parse accepts, 1 MiB. Real
// contracts are a few KiB; the bound keeps parsing cheap and fuzzable.
const MaxFileSize = 1 << 20

// File is a contract parsed from a file, with the position of every field,
// so that problems found later can point into the file.
type File struct {
	// Name is the file name given to ParseFile, used in messages.
	Name string
	// Contract is the parsed contract, neither validated nor normalized.
	Contract *contractualv1.Contract

	pos Positions
}

// Parse parses a contract from YAML or JSON; see ParseFile.
func Parse(data []byte, filename string) (*contractualv1.Contract, error) {
	f, err := ParseFile(data, filename)
	if err != nil {
		return nil, err
	}
	return f.Contract, nil
}

// ParseFile parses a contract from YAML or JSON. Filename is used in
// messages and to tell JSON from YAML (".json"; without a telling extension,
// input that starts with "{" is taken as JSON). It parses only: the
// contract may still break the rules that Validate checks.
//
// Fields are named by their proto names ("input_schema"); the JSON names
// ("inputSchema") are accepted too. Enum values are written in lowercase
// without the prefix ("risk: low"); full names ("RISK_LOW") are accepted.
// Unknown fields, duplicate keys, several YAML documents, YAML aliases and
// nulls where a value is expected are errors.
//
// The error, if any, is an errs.Invalid error wrapping a *ValidationError
// that lists every problem with its field path and line:column.
func ParseFile(data []byte, filename string) (*File, error) {
	f, problems := parse(data, filename)
	if err := invalid(filename, problems); err != nil {
		return nil, err
	}
	return f, nil
}

// Load parses, validates and normalizes a contract: what a publisher's
// upload goes through. The result is ready for Digest and Diff.
//
// Its error lists the problems of both steps at once. When the file does not
// parse cleanly, it still validates what did parse, leaving out the problems
// of fields that did not (or whose parts or parents did not).
func Load(data []byte, filename string) (*contractualv1.Contract, error) {
	f, problems := parse(data, filename)
	if f != nil {
		problems = append(problems, uncovered(f.validate(), problems)...)
	}
	if err := invalid(filename, problems); err != nil {
		return nil, err
	}
	Normalize(f.Contract)
	return f.Contract, nil
}

// uncovered returns the problems in ps whose paths are not those of a
// problem in by, nor their ancestors or descendants.
func uncovered(ps, by []Problem) []Problem {
	related := func(a, b string) bool {
		found := false
		ancestors(a, func(p string) bool { found = p == b; return found })
		return found
	}
	var out []Problem
	for _, p := range ps {
		if !slices.ContainsFunc(by, func(q Problem) bool { return related(p.Path, q.Path) || related(q.Path, p.Path) }) {
			out = append(out, p)
		}
	}
	return out
}

// parse parses a contract file. With problems, it still returns what it
// could decode, if anything, so that Load can validate that as well.
func parse(data []byte, filename string) (*File, []Problem) {
	c := &contractualv1.Contract{}
	pos, problems, ok := parseInto(data, filename, "contract", c)
	if !ok {
		return nil, problems
	}
	return &File{Name: filename, Contract: c, pos: pos}, problems
}

// ParseMessage parses YAML or JSON onto m under the rules of ParseFile, for
// documents in the contract format's style other than contracts (job
// definitions); what names the document in messages ("job"). It returns
// the position of every field it read, by field path, and the problems,
// if any, as an errs.Invalid error wrapping a *ValidationError.
func ParseMessage(data []byte, filename, what string, m proto.Message) (Positions, error) {
	pos, problems, _ := parseInto(data, filename, what, m)
	if err := Invalid(what, filename, problems); err != nil {
		return nil, err
	}
	return pos, nil
}

// parseInto parses data onto m. It reports whether m holds what could be
// decoded; problems may be found either way.
func parseInto(data []byte, filename, what string, m proto.Message) (Positions, []Problem, bool) {
	data = bytes.TrimPrefix(data, []byte("\uFEFF"))
	if p, ok := checkSize(data, what); !ok {
		return nil, []Problem{p}, false
	}
	if isJSON(data, filename) {
		if p, ok := checkJSON(data); !ok {
			return nil, []Problem{p}, false
		}
	}
	root, p, ok := parseYAML(data, what)
	if !ok {
		return nil, []Problem{p}, false
	}
	w := newWalker()
	if w.node(root, "") {
		w.message(root, m.ProtoReflect().Descriptor(), "")
	}
	if w.full() {
		return nil, w.problems, false
	}
	problems, ok := decode(data, w.pos, m)
	return w.pos, merge(w.problems, problems), ok
}

// merge returns the walker's problems and those of protoyaml's that are not
// at the same place: both see bad enum values, aliases and values of the
// wrong kind, and the walker's messages are the better ones.
func merge(walker, decoder []Problem) []Problem {
	seen := make(map[Position]bool, len(walker))
	for _, p := range walker {
		seen[Position{p.Line, p.Col}] = true
	}
	for _, p := range decoder {
		if !seen[Position{p.Line, p.Col}] {
			walker = append(walker, p)
		}
	}
	return walker
}

// Position returns where path (e.g. "tools[0].risk") is in the file. For a
// field the file leaves out, it returns the position of the nearest
// ancestor that is there, and ok reports whether path itself was found.
func (f *File) Position(path string) (pos Position, ok bool) {
	return f.pos.Find(path)
}

// Positions maps field paths to their places in a file.
type Positions map[string]Position

// Find returns where path is. For a field the file leaves out, it returns
// the position of the nearest ancestor that is there, and ok reports
// whether path itself was found.
func (ps Positions) Find(path string) (pos Position, ok bool) {
	ancestors(path, func(p string) bool {
		pos, ok = ps[p]
		return ok
	})
	_, ok = ps[path]
	return pos, ok
}

// Validate validates f.Contract like Validate, and places each problem in
// the file.
func (f *File) Validate() error {
	return invalid(f.Name, f.validate())
}

// validate returns the problems with f.Contract, placed in the file.
func (f *File) validate() []Problem {
	ps := validate(f.Contract)
	for i := range ps {
		pos, _ := f.Position(ps[i].Path)
		ps[i].Line, ps[i].Col = pos.Line, pos.Col
	}
	return ps
}

var contractDesc = (&contractualv1.Contract{}).ProtoReflect().Descriptor()

// checkSize refuses empty and oversized input.
func checkSize(data []byte, what string) (Problem, bool) {
	switch {
	case len(data) > MaxFileSize:
		return Problem{Msg: fmt.Sprintf("file is %d bytes; %ss are limited to %d (1 MiB)", len(data), what, MaxFileSize)}, false
	case len(bytes.TrimSpace(data)) == 0:
		return Problem{Msg: "file is empty"}, false
	}
	return Problem{}, true
}

// isJSON reports whether data should be read as JSON: by extension, or by
// its first byte when the extension says nothing.
func isJSON(data []byte, filename string) bool {
	switch strings.ToLower(filepath.Ext(filename)) {
	case ".json":
		return true
	case ".yaml", ".yml":
		return false
	}
	return bytes.HasPrefix(bytes.TrimSpace(data), []byte("{"))
}

// checkJSON checks JSON syntax with encoding/json, whose messages suit JSON
// better than a YAML parser's (JSON is YAML, but YAML also takes trailing
// commas, comments and unquoted strings, which a .json file should not have).
func checkJSON(data []byte) (Problem, bool) {
	var v any
	err := json.Unmarshal(data, &v)
	if err == nil {
		return Problem{}, true
	}
	p := Problem{Msg: "invalid JSON: " + err.Error()}
	var serr *json.SyntaxError
	if errors.As(err, &serr) {
		// Offset counts the bytes read, the bad one included.
		p.Line, p.Col = lineCol(data, int(serr.Offset)-1)
	}
	return p, false
}

// lineCol converts a byte offset into a 1-based line and column (in bytes).
func lineCol(data []byte, offset int) (line, col int) {
	offset = min(max(offset, 0), len(data))
	before := data[:offset]
	line = bytes.Count(before, []byte("\n")) + 1
	col = offset - bytes.LastIndexByte(before, '\n')
	return line, col
}

// yamlErrRE matches yaml.v3's syntax errors, which carry a line but no column.
var yamlErrRE = regexp.MustCompile(`^yaml: line (\d+): (.*)$`)

// parseYAML parses exactly one YAML document and returns its top node.
func parseYAML(data []byte, what string) (*yaml.Node, Problem, bool) {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, Problem{Msg: "file has no " + what + " in it"}, false
		}
		return nil, yamlProblem(err), false
	}
	var next yaml.Node
	if err := dec.Decode(&next); !errors.Is(err, io.EOF) {
		p := Problem{Line: next.Line, Col: next.Column, Msg: "file has more than one YAML document; a " + what + " is exactly one"}
		if err != nil {
			p = yamlProblem(err)
		}
		return nil, p, false
	}
	if len(doc.Content) != 1 {
		return nil, Problem{Msg: "file has no " + what + " in it"}, false
	}
	root := doc.Content[0]
	if root.Kind != yaml.MappingNode {
		return nil, Problem{Line: root.Line, Col: root.Column, Msg: "a " + what + " is a mapping of fields, got " + describe(root)}, false
	}
	return root, Problem{}, true
}

// yamlProblem turns a YAML syntax error into a Problem.
func yamlProblem(err error) Problem {
	m := yamlErrRE.FindStringSubmatch(err.Error())
	if m == nil {
		return Problem{Msg: "invalid YAML: " + strings.TrimPrefix(err.Error(), "yaml: ")}
	}
	line, _ := strconv.Atoi(m[1])
	return Problem{Line: line, Msg: "invalid YAML: " + m[2]}
}

// decode decodes data onto m with protoyaml, as far as it can, and reports
// whether m holds the result. Problems protoyaml finds (that the walker has
// not: mostly malformed numbers) are placed by position, and named by the
// path the walker recorded there.
func decode(data []byte, pos Positions, m proto.Message) (problems []Problem, ok bool) {
	defer func() {
		// protoyaml v0.7.0 panics on some inputs (see below). A contract is
		// untrusted input: a decoder bug must not take the server down.
		if r := recover(); r != nil {
			problems, ok = []Problem{{Msg: fmt.Sprintf("cannot decode the document: %v", r)}}, false
		}
	}()
	opts := protoyaml.UnmarshalOptions{CustomUnmarshaler: walkerView{}}
	// protoyaml quotes the source line of each error and indexes past the
	// end for a node after the last newline (an implicit null at the end
	// of "? key"); a final newline gives it that line. Positions do not move.
	err := opts.Unmarshal(append(slices.Clip(data), '\n'), m)
	if err == nil {
		return nil, true
	}
	paths := make(map[Position]string, len(pos))
	for p, at := range pos {
		if prev, ok := paths[at]; !ok || len(p) > len(prev) {
			paths[at] = p // the deepest path wins: it names the value
		}
	}
	for _, e := range flatten(err) {
		p := protoyamlProblem(e)
		p.Path = paths[Position{p.Line, p.Col}]
		problems = append(problems, p)
	}
	return problems, true
}

// flatten returns the errors joined in err.
func flatten(err error) []error {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		return j.Unwrap()
	}
	return []error{err}
}

// protoyamlErrRE matches the first line of a protoyaml error made without a
// Path: ":line:col message".
var protoyamlErrRE = regexp.MustCompile(`^:(\d+):(\d+) `)

// protoyamlProblem turns one protoyaml error into a Problem. Its errors do
// not expose their position, so it is read from the text; the message is
// the wrapped cause.
func protoyamlProblem(err error) Problem {
	text, _, _ := strings.Cut(err.Error(), "\n")
	m := protoyamlErrRE.FindStringSubmatch(text)
	if m == nil {
		return Problem{Msg: text}
	}
	p := Problem{Msg: strings.TrimPrefix(text, m[0])}
	p.Line, _ = strconv.Atoi(m[1])
	p.Col, _ = strconv.Atoi(m[2])
	if cause := errors.Unwrap(err); cause != nil {
		p.Msg = cause.Error()
	}
	return p
}

// walkerView is a protoyaml.CustomUnmarshaler that makes protoyaml see a
// message's mapping as the walker does, then lets it decode as usual:
//
//   - it drops the entries the walker refused as unknown fields (protoyaml
//     also takes field numbers and extension names as keys), so that they
//     are reported once, by the walker;
//   - it rewrites enum values written by their short lowercase names
//     ("risk: low") to the full names protoyaml knows ("RISK_LOW").
type walkerView struct{}

// Unmarshal implements protoyaml.CustomUnmarshaler.
func (walkerView) Unmarshal(n *yaml.Node, m proto.Message) (bool, error) {
	md := m.ProtoReflect().Descriptor()
	if n.Kind != yaml.MappingNode || md.ParentFile().Package() == "google.protobuf" {
		return false, nil
	}
	kept := n.Content[:0:0]
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		fd := lookupField(md, k.Value)
		if k.Kind != yaml.ScalarNode || fd == nil {
			continue
		}
		if fd.Kind() == protoreflect.EnumKind && !fd.IsList() && !fd.IsMap() {
			if ev, ok := enumValue(fd.Enum(), v.Value); ok {
				v.Value = string(ev.Name())
			}
		}
		kept = append(kept, k, v)
	}
	n.Content = kept
	return false, nil
}
