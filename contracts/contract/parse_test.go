package contract

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"
)

// validFiles are the valid contracts in testdata.
var validFiles = []string{"weather.yaml", "weather.json", "weather-explicit.yaml", "minimal.yaml"}

func TestLoadValidFiles(t *testing.T) {
	for _, name := range validFiles {
		t.Run(name, func(t *testing.T) {
			c, err := Load(readFile(t, name), name)
			if err != nil {
				t.Fatal(err)
			}
			if err := Validate(c); err != nil {
				t.Errorf("Validate after Load: %v", err)
			}
		})
	}
}

func TestParseWeatherYAML(t *testing.T) {
	got, err := Parse(readFile(t, "weather.yaml"), "weather.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if want := weather(); !proto.Equal(want, got) {
		t.Errorf("Parse(weather.yaml) =\n%v\nwant\n%v", got, want)
	}
}

// TestInvalidFiles loads every file in testdata/invalid and checks the
// problems against those it lists in "# want: " comments (or, for JSON, in NAME.want).
func TestInvalidFiles(t *testing.T) {
	files, err := filepath.Glob("testdata/invalid/*")
	if err != nil {
		t.Fatal(err)
	}
	for _, path := range files {
		name := filepath.Base(path)
		if strings.HasSuffix(name, ".want") {
			continue
		}
		t.Run(name, func(t *testing.T) {
			data := readFile(t, filepath.Join("invalid", name))
			want := wantedProblems(t, data, path)
			if len(want) == 0 {
				t.Fatal("file lists no expected problems")
			}
			_, err := Load(data, name)
			if diff := diffLines(want, problemsOf(t, err)); diff != "" {
				t.Errorf("problems mismatch (-want +got):\n%s", diff)
			}
			if err != nil && !strings.Contains(err.Error(), name) {
				t.Errorf("error does not name the file %s: %v", name, err)
			}
		})
	}
}

// wantedProblems reads the expected problems of an invalid test file.
func wantedProblems(t *testing.T, data []byte, path string) []string {
	t.Helper()
	if strings.HasSuffix(path, ".json") {
		b, err := os.ReadFile(path + ".want")
		if err != nil {
			t.Fatal(err)
		}
		return strings.Split(strings.TrimSpace(string(b)), "\n")
	}
	var want []string
	for line := range strings.Lines(string(data)) {
		if w, ok := strings.CutPrefix(line, "# want: "); ok {
			want = append(want, strings.TrimSuffix(w, "\n"))
		}
	}
	return want
}

// head is the start of a valid contract, for parse tests to add to.
const head = `module: sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef
name: weather
version: 1.0.0
publisher: alice
`

// tool is a valid tool list, for parse tests.
const tool = `tools:
  - {export: f, description: d, risk: low, input_schema: {type: object}}
`

func TestParseProblems(t *testing.T) {
	tests := []struct {
		name     string
		filename string
		data     string
		want     []string // empty: must parse
	}{
		{
			name: "empty", data: "",
			want: []string{"file is empty"},
		},
		{
			name: "whitespace", data: " \n\t\n",
			want: []string{"file is empty"},
		},
		{
			name: "too large", data: "name: x\n" + strings.Repeat("#", MaxFileSize),
			want: []string{"file is 1048584 bytes; contracts are limited to 1048576 (1 MiB)"},
		},
		{
			name: "byte order mark", data: "\uFEFF" + head + tool,
		},
		{
			name: "json names", data: head + "tools: [{export: f, description: d, risk: RISK_LOW, inputSchema: {type: object}}]\n",
		},
		{
			name: "enum by number", data: head + "tools: [{export: f, description: d, risk: 1, input_schema: {type: object}}]\n",
			want: []string{`5:43: tools[0].risk: unknown risk "1": want low, medium or high`},
		},
		{
			name: "enum short name in capitals", data: head + "tools: [{export: f, description: d, risk: LOW, input_schema: {type: object}}]\n",
			want: []string{`5:43: tools[0].risk: unknown risk "LOW": want low, medium or high`},
		},
		{
			name: "unknown top-level field", data: head + tool + "owner: bob\n",
			want: []string{`7:1: owner: unknown field; Contract has module, name, version, publisher, description, tools, capabilities, limits`},
		},
		{
			name: "field by number", data: head + tool + "2: weather\n",
			want: []string{`7:1: ["2"]: unknown field; Contract has module, name, version, publisher, description, tools, capabilities, limits`},
		},
		{
			name: "null limits", data: head + tool + "limits: ~\n",
			want: []string{"7:9: limits: null is not allowed here: write {} for an empty value, or leave the field out"},
		},
		{
			name: "empty list is fine", data: head + tool + "capabilities: {http: [], config: {}}\n",
		},
		{
			name: "null list", data: head + tool + "capabilities: {http: }\n",
			want: []string{"7:22: capabilities.http: expected a list, got null"},
		},
		{
			name: "list for a message", data: head + tool + "capabilities: [log]\n",
			want: []string{`7:15: capabilities: expected a mapping of Capabilities fields, got a list`},
		},
		{
			name: "mapping for a string", data: head + tool + "description: {a: b}\n",
			want: []string{"7:14: description: expected a string, got a mapping"},
		},
		{
			name: "number for a string is its text", data: head + tool + "description: 1.10\n",
		},
		{
			name: "config value null", data: head + tool + "capabilities: {config: {a: null}}\n",
			want: []string{`7:28: capabilities.config.a: expected a string, got null`},
		},
		{
			name: "config key not a string", data: head + tool + "capabilities: {config: {[a]: b}}\n",
			want: []string{`7:25: capabilities.config: keys must be strings, got a list`},
		},
		{
			name: "custom tag", data: head + tool + "description: !secret x\n",
			want: []string{"7:14: description: YAML tag !secret is not allowed"},
		},
		{
			name: "binary tag", data: head + tool + "description: !!binary aGVsbG8=\n",
			want: []string{"7:14: description: YAML tag !!binary is not allowed"},
		},
		{
			name: "explicit core tag", data: head + tool + "description: !!str 12\n",
		},
		{
			name: "bool spelled True", data: head + tool + "capabilities: {wasi: {clock: True}}\n",
			want: []string{`7:30: capabilities.wasi.clock: expected true or false, got "True"`},
		},
		{
			name: "bool in schema spelled False", data: head + "tools: [{export: f, description: d, risk: low, input_schema: {type: object, additionalProperties: False}}]\n",
			want: []string{`5:99: tools[0].input_schema.additionalProperties: write booleans as true or false, not "False"`},
		},
		{
			name: "schema nested too deep",
			data: head + "tools: [{export: f, description: d, risk: low, input_schema: {type: object, x: " +
				strings.Repeat("[", maxJSONDepth+1) + strings.Repeat("]", maxJSONDepth+1) + "}}]\n",
			want: []string{"5:144: tools[0].input_schema.x" + strings.Repeat("[0]", maxJSONDepth) + ": nested more than 64 levels deep"},
		},
		{
			name: "schema key with dots", data: head + "tools: [{export: f, description: d, risk: low, input_schema: {type: object, properties: {a.b: 9007199254740993}}}]\n",
			want: []string{`5:95: tools[0].input_schema.properties["a.b"]: number 9007199254740993 is out of range: JSON numbers here must be within ±2^53`},
		},
		{
			name: "integer in exponent form", data: head + tool + "limits: {timeout_ms: 2e3}\n",
		},
		{
			name: "negative integer", data: head + tool + "limits: {timeout_ms: -1}\n",
			want: []string{`7:22: limits.timeout_ms: invalid integer: strconv.ParseUint: parsing "-1": invalid syntax`},
		},
		{
			name: "yaml syntax", data: head + "tools: [\n",
			want: []string{"5: invalid YAML: did not find expected node content"},
		},
		{
			name: "yaml tab indentation", data: head + "tools:\n\t- export: f\n",
			want: []string{"6: invalid YAML: found character that cannot start any token"},
		},
		{
			name: "json by content", filename: "contract", data: "{\"name\": \"x\",\n \"tools\": [1,]}",
			want: []string{"2:14: invalid JSON: invalid character ']' looking for beginning of value"},
		},
		{
			name: "yaml flow mapping in a yaml file", filename: "c.yml",
			data: "{module: " + testModule + ", name: w, version: '1', publisher: p, tools: [{export: f, description: d, risk: low, input_schema: {type: object}}],}",
		},
		{
			name: "json trailing data", filename: "c.json", data: "{}\n{}",
			want: []string{"2:1: invalid JSON: invalid character '{' after top-level value"},
		},
		{
			name: "json duplicate key", filename: "c.json", data: "{\"name\": \"a\",\n \"name\": \"b\"}",
			want: []string{"2:2: name: given twice (first at line 1)"},
		},
		{
			name: "json null for a grant", filename: "c.json", data: "{\"capabilities\": {\"log\": null}}",
			want: []string{"1:26: capabilities.log: null is not allowed here: write {} for an empty value, or leave the field out"},
		},
		{
			name: "second document", data: head + tool + "---\n",
			want: []string{"7:1: file has more than one YAML document; a contract is exactly one"},
		},
		{
			// protoyaml panicked on this before decode added a final newline.
			name: "explicit key at the end", data: "? 6",
			want: []string{`1:3: ["6"]: unknown field; Contract has module, name, version, publisher, description, tools, capabilities, limits`},
		},
		{
			name: "tagged document", data: "!contract\n" + head + tool,
			want: []string{"1:1: YAML tag !contract is not allowed"},
		},
		{
			name: "scalar document", data: "weather\n",
			want: []string{`1:1: a contract is a mapping of fields, got "weather"`},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			filename := tt.filename
			if filename == "" {
				filename = "c.yaml"
			}
			_, err := Parse([]byte(tt.data), filename)
			got := problemsOf(t, err)
			if diff := diffLines(tt.want, got); diff != "" {
				t.Errorf("problems mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

func TestParseErrorText(t *testing.T) {
	_, err := Parse([]byte(head+tool+"owner: bob\nname: x\n"), "weather.yaml")
	want := `invalid contract: 2 problems:
	weather.yaml:7:1: owner: unknown field; Contract has module, name, version, publisher, description, tools, capabilities, limits
	weather.yaml:8:1: name: given twice (first at line 2)`
	if err == nil || err.Error() != want {
		t.Errorf("error text:\n%v\nwant:\n%s", err, want)
	}
	_, err = Parse(nil, "weather.yaml")
	if want := "invalid contract: weather.yaml: file is empty"; err == nil || err.Error() != want {
		t.Errorf("error text:\n%v\nwant:\n%s", err, want)
	}
}

func TestFilePosition(t *testing.T) {
	f, err := ParseFile(readFile(t, "weather.yaml"), "weather.yaml")
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		path string
		want Position
		ok   bool
	}{
		{"", Position{4, 1}, true},
		{"name", Position{5, 7}, true},
		{"tools[0]", Position{10, 5}, true},
		{"tools[0].risk", Position{12, 11}, true},
		{"tools[0].input_schema.properties.city.type", Position{13, 60}, true},
		{"tools[0].input_schema.required[0]", Position{13, 81}, true},
		{"capabilities.http[0].secrets[0].format", Position{22, 64}, true},
		{"capabilities.config.units", Position{23, 19}, true},
		{"capabilities.wasi.clock", Position{25, 17}, true},
		// Absent fields have the position of their nearest ancestor.
		{"capabilities.http[0].port", Position{17, 7}, false},
		{"tools[0].input_schema.properties.zip", Position{13, 46}, false},
		{`capabilities.config["a.b"]`, Position{23, 11}, false},
		{"nothing.at.all", Position{4, 1}, false},
	}
	for _, tt := range tests {
		got, ok := f.Position(tt.path)
		if got != tt.want || ok != tt.ok {
			t.Errorf("Position(%q) = %v, %v; want %v, %v", tt.path, got, ok, tt.want, tt.ok)
		}
	}
}

func TestFileValidatePlacesProblems(t *testing.T) {
	data := head + `tools:
  - export: f
    description: d
    input_schema: {type: object}
capabilities:
  http:
    - {scheme: https, host: api.example.com}
limits: {memory_mib: 5000}
`
	f, err := ParseFile([]byte(data), "c.yaml")
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		"6:5: tools[0].risk: required: low, medium or high",
		"11:7: capabilities.http[0].methods: at least one method is required, e.g. [GET]: no method is allowed by default",
		"12:22: limits.memory_mib: 5000 is above the maximum, 4096",
	}
	if diff := diffLines(want, problemsOf(t, f.Validate())); diff != "" {
		t.Errorf("problems mismatch (-want +got):\n%s", diff)
	}
	// Validate alone has no positions.
	want = []string{
		"tools[0].risk: required: low, medium or high",
		"capabilities.http[0].methods: at least one method is required, e.g. [GET]: no method is allowed by default",
		"limits.memory_mib: 5000 is above the maximum, 4096",
	}
	if diff := diffLines(want, problemsOf(t, Validate(f.Contract))); diff != "" {
		t.Errorf("problems mismatch (-want +got):\n%s", diff)
	}
}

func TestParseDoesNotNormalize(t *testing.T) {
	c, err := Parse([]byte(head+tool), "c.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if c.Limits != nil || c.Capabilities != nil {
		t.Errorf("Parse filled in defaults: %v", c)
	}
	loaded, err := Load([]byte(head+tool), "c.yaml")
	if err != nil {
		t.Fatal(err)
	}
	Normalize(c)
	if !proto.Equal(c, loaded) {
		t.Errorf("Load != Parse+Normalize:\n%v\n%v", loaded, c)
	}
}

func TestParentPath(t *testing.T) {
	tests := []struct{ path, want string }{
		{"", ""},
		{"name", ""},
		{"tools[0]", "tools"},
		{"tools[0].risk", "tools[0]"},
		{`capabilities.config["a.b[c]"]`, "capabilities.config"},
		{`x["a\"]"].y`, `x["a\"]"]`},
		{`x["unterminated`, "x"},
	}
	for _, tt := range tests {
		if got := parentPath(tt.path); got != tt.want {
			t.Errorf("parentPath(%q) = %q, want %q", tt.path, got, tt.want)
		}
	}
}

func TestJoinKey(t *testing.T) {
	for key, want := range map[string]string{
		"units": "c.units",
		"a.b":   `c["a.b"]`,
		"1":     `c["1"]`,
		`q"`:    `c["q\""]`,
	} {
		if got := joinKey("c", key); got != want {
			t.Errorf("joinKey(c, %q) = %q, want %q", key, got, want)
		}
	}
}

func TestLineCol(t *testing.T) {
	data := []byte("ab\ncd\n")
	for offset, want := range map[int]Position{0: {1, 1}, 1: {1, 2}, 3: {2, 1}, 5: {2, 3}, 99: {3, 1}} {
		line, col := lineCol(data, offset)
		if (Position{line, col}) != want {
			t.Errorf("lineCol(%d) = %d:%d, want %v", offset, line, col, want)
		}
	}
}

func TestSuggestDistance(t *testing.T) {
	tests := []struct {
		a, b string
		want int
	}{
		{"", "", 0}, {"abc", "", 3}, {"kitten", "sitting", 3}, {"description", "descripton", 1},
	}
	for _, tt := range tests {
		if got := distance(tt.a, tt.b); got != tt.want {
			t.Errorf("distance(%q, %q) = %d, want %d", tt.a, tt.b, got, tt.want)
		}
	}
}

func TestParseStopsAtMaxProblems(t *testing.T) {
	_, err := Load([]byte(strings.Repeat("a: 1\n", 1000)), "c.yaml")
	got := problemsOf(t, err)
	if len(got) != maxProblems+1 {
		t.Fatalf("got %d problems, want %d and a note", len(got), maxProblems)
	}
	if want := "too many problems: only the first 100 are listed"; got[maxProblems] != want {
		t.Errorf("last problem = %q, want %q", got[maxProblems], want)
	}
}
