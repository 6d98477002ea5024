// Package tools holds the example tool modules; this test runs each of them
// under its own contract in the sandbox, exactly as committed.
package tools_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/contractual/contractual/contracts/contract"
	contractualv1 "github.com/contractual/contractual/contracts/gen/contractual/v1"
	"github.com/contractual/contractual/internal/errs"
	"github.com/contractual/contractual/runtime/egress"
	"github.com/contractual/contractual/runtime/egress/egresstest"
	"github.com/contractual/contractual/runtime/modcheck"
	"github.com/contractual/contractual/runtime/sandbox"
	"github.com/contractual/contractual/runtime/wasmbin"
)

// load reads a tool's contract and module and loads it under the contract.
func load(t *testing.T, e *sandbox.Engine, name string) (*sandbox.Module, *contractualv1.Contract) {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(name, "contract.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	c, err := contract.Load(data, name+"/contract.yaml")
	if err != nil {
		t.Fatal(err)
	}
	wasm, err := os.ReadFile(filepath.Join(name, name+".wasm"))
	if err != nil {
		t.Fatal(err)
	}
	if got := contract.ModuleDigest(wasm); got != c.GetModule() {
		t.Fatalf("%s.wasm is %s, its contract names %s: run tools/build.sh", name, got, c.GetModule())
	}
	m, err := e.Load(context.Background(), wasm, sandbox.GrantsFor(c))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close(context.Background()) })
	return m, c
}

func toolOf(c *contractualv1.Contract, export string) *contractualv1.Tool {
	for _, t := range c.GetTools() {
		if t.GetExport() == export {
			return t
		}
	}
	return nil
}

// call checks the input against the tool's schema and calls the tool as
// the runner does: input in the tool's input format, output held to its
// output schema.
func call(t *testing.T, m *sandbox.Module, c *contractualv1.Contract, export, input string) (*sandbox.Result, error) {
	t.Helper()
	tool := toolOf(c, export)
	if tool == nil {
		t.Fatalf("contract has no tool %q", export)
	}
	if err := contract.CheckInput(tool, []byte(input)); err != nil {
		t.Fatalf("input %s: %v", input, err)
	}
	return m.CallTool(context.Background(), tool, []byte(input))
}

func newEngine(t *testing.T, cfg egress.Config) *sandbox.Engine {
	e, err := sandbox.NewEngine(sandbox.Options{Egress: cfg})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Close(context.Background()) })
	return e
}

func TestTextkit(t *testing.T) {
	m, c := load(t, newEngine(t, egress.Config{}), "textkit")
	tests := []struct{ export, input, want string }{
		{"slugify", `{"text": "Héllo, Wörld! -- 2026"}`, `{"slug":"hello-world-2026"}`},
		{"word_count", `{"text": "one two\nthree ✓"}`, `{"words":4,"lines":2,"chars":15}`},
		{"json_pick", `{"json": {"a": {"b": [10, {"c": "deep"}]}}, "path": "a.b.1.c"}`, `{"value":"deep"}`},
	}
	for _, tt := range tests {
		res, err := call(t, m, c, tt.export, tt.input)
		if err != nil {
			t.Errorf("%s: %v", tt.export, err)
			continue
		}
		if string(res.Output) != tt.want {
			t.Errorf("%s(%s) = %s, want %s", tt.export, tt.input, res.Output, tt.want)
		}
	}
	_, err := call(t, m, c, "json_pick", `{"json": [1], "path": "5"}`)
	if errs.KindOf(err) != errs.ToolFailed {
		t.Errorf("json_pick of a missing path: %v", err)
	}
}

// TestCountVowels runs a stock Extism plugin, unchanged: its input is the
// text itself, as `extism call --input` passes it.
func TestCountVowels(t *testing.T) {
	m, c := load(t, newEngine(t, egress.Config{}), "countvowels")
	res, err := call(t, m, c, "count_vowels", `"Hello, World!"`)
	if err != nil {
		t.Fatal(err)
	}
	if want := `{"count":3,"total":3,"vowels":"aeiouAEIOU"}`; string(res.Output) != want {
		t.Errorf("count_vowels(Hello, World!) = %s, want %s", res.Output, want)
	}
}

func TestGreeter(t *testing.T) {
	m, c := load(t, newEngine(t, egress.Config{}), "greeter")
	res, err := call(t, m, c, "greet", `{"name": "Ada"}`)
	if err != nil {
		t.Fatal(err)
	}
	if string(res.Output) != `{"message":"Hello, Ada!"}` {
		t.Errorf("output %s", res.Output)
	}
	if len(res.Logs) != 1 || res.Logs[0].Level != "info" {
		t.Errorf("logs %+v", res.Logs)
	}
}

func TestGhstars(t *testing.T) {
	var seen []string
	srv := egresstest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seen = append(seen, r.Method+" "+r.URL.Path)
		if r.URL.Path != "/repos/tetratelabs/wazero" {
			http.NotFound(w, r)
			return
		}
		json.NewEncoder(w).Encode(map[string]any{"full_name": "tetratelabs/wazero", "stargazers_count": 5400, "forks_count": 290, "other": true})
	}), "api.github.com")
	defer srv.Close()
	dialer, roots := egresstest.New(map[string]*httptest.Server{"api.github.com": srv})
	m, c := load(t, newEngine(t, egress.Config{Dialer: dialer, RootCAs: roots}), "ghstars")

	res, err := call(t, m, c, "repo_stars", `{"owner": "tetratelabs", "repo": "wazero"}`)
	if err != nil {
		t.Fatal(err)
	}
	if string(res.Output) != `{"full_name":"tetratelabs/wazero","stars":5400,"forks":290}` {
		t.Errorf("output %s", res.Output)
	}
	if len(res.Egress) != 1 || res.Egress[0].URL != "https://api.github.com/repos/tetratelabs/wazero" || res.Egress[0].Status != 200 {
		t.Errorf("egress %+v", res.Egress)
	}

	_, err = call(t, m, c, "repo_stars", `{"owner": "nobody", "repo": "nothing"}`)
	if errs.KindOf(err) != errs.ToolFailed {
		t.Errorf("404: %v", err)
	}
	if len(seen) != 2 {
		t.Errorf("server saw %v", seen)
	}
}

// keySource hands out one secret, as the broker would for a decided call.
type keySource map[string]string

func (k keySource) Secret(_ context.Context, name string, aud egress.Audience) ([]byte, error) {
	if aud.String() != "https://api.github.com" {
		return nil, errs.E(errs.PermissionDenied, "wrong audience %s", aud)
	}
	v, ok := k[name]
	if !ok {
		return nil, errs.E(errs.NotFound, "no secret %s", name)
	}
	return []byte(v), nil
}

func TestGhwhoami(t *testing.T) {
	const token = "ghp_0123456789abcdefTESTTOKEN"
	srv := egresstest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/user" || r.Header.Get("Authorization") != "Bearer "+token {
			http.Error(w, `{"message":"Bad credentials"}`, http.StatusUnauthorized)
			return
		}
		json.NewEncoder(w).Encode(map[string]any{"login": "octo", "name": "Octo Cat", "public_repos": 8})
	}), "api.github.com")
	defer srv.Close()
	dialer, roots := egresstest.New(map[string]*httptest.Server{"api.github.com": srv})
	m, c := load(t, newEngine(t, egress.Config{Dialer: dialer, RootCAs: roots}), "ghwhoami")

	tool := toolOf(c, "whoami")
	res, err := m.Call(context.Background(), "whoami", []byte(`{}`), sandbox.WithSecrets(keySource{"GITHUB_TOKEN": token}))
	if err != nil {
		t.Fatal(err)
	}
	if err := contract.CheckOutput(tool, res.Output); err != nil || string(res.Output) != `{"login":"octo","name":"Octo Cat","public_repos":8}` {
		t.Errorf("output %s (%v)", res.Output, err)
	}
	if len(res.Released) != 1 || string(res.Released[0]) != token {
		t.Errorf("released %q", res.Released)
	}
	// Without a secret source the request cannot be made with its key.
	_, err = m.Call(context.Background(), "whoami", []byte(`{}`))
	if errs.KindOf(err) != errs.FailedPrecondition {
		t.Errorf("no secrets: %v", err)
	}
	// A wrong key is the API's answer, not the host's.
	_, err = m.Call(context.Background(), "whoami", []byte(`{}`), sandbox.WithSecrets(keySource{"GITHUB_TOKEN": "wrong"}))
	if errs.KindOf(err) != errs.ToolFailed || !strings.Contains(err.Error(), "401") {
		t.Errorf("wrong key: %v", err)
	}
}

// TestEveryTool holds every tool directory (one with a go.mod or an origin
// file, what build.sh builds) to the same rules: its contract parses and is
// named after the directory, names the digest of the committed .wasm (the
// reproducible rebuild itself is CI's `tools/build.sh && git diff
// --exit-code tools/`), imports only what the contract grants, exports what
// its tools name, and the tool has a README.md listed in tools/README.md.
// (The tools' own tests run each module in the sandbox.)
func TestEveryTool(t *testing.T) {
	index, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	dirs, err := os.ReadDir(".")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, d := range dirs {
		name := d.Name()
		if !d.IsDir() || !(exists(filepath.Join(name, "go.mod")) || exists(filepath.Join(name, "origin"))) {
			continue
		}
		n++
		t.Run(name, func(t *testing.T) {
			data, err := os.ReadFile(filepath.Join(name, "contract.yaml"))
			if err != nil {
				t.Fatal(err)
			}
			c, err := contract.Load(data, name+"/contract.yaml")
			if err != nil {
				t.Fatal(err)
			}
			if c.GetName() != name {
				t.Errorf("contract name %q in directory %s", c.GetName(), name)
			}
			wasm, err := os.ReadFile(filepath.Join(name, name+".wasm"))
			if err != nil {
				t.Fatal(err)
			}
			if got := contract.ModuleDigest(wasm); got != c.GetModule() {
				t.Errorf("%s.wasm is %s, its contract names %s: run tools/build.sh", name, got, c.GetModule())
			}
			if err := modcheck.CheckImports(wasm, sandbox.GrantsFor(c)); err != nil {
				t.Error(err)
			}
			exports, err := wasmbin.Exports(wasm)
			if err != nil {
				t.Fatal(err)
			}
			for _, tool := range c.GetTools() {
				if !slices.ContainsFunc(exports, func(e wasmbin.Export) bool { return e.Name == tool.GetExport() }) {
					t.Errorf("the module does not export %q", tool.GetExport())
				}
			}
			readme, err := os.ReadFile(filepath.Join(name, "README.md"))
			if err != nil || !strings.HasPrefix(string(readme), "# "+name+"\n") {
				t.Errorf("%s/README.md must exist and start with \"# %s\" (%v)", name, name, err)
			}
			if !strings.Contains(string(index), "[`"+name+"`]("+name+"/)") {
				t.Errorf("tools/README.md does not list %s", name)
			}
		})
	}
	if n < 8 {
		t.Errorf("found %d tools", n)
	}
}

func exists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}
