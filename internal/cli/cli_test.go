package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"testing"
)

// repo is the repository root, where the example tools live.
const repo = "../.."

func tool(name, file string) string { return filepath.Join(repo, "tools", name, file) }

// runMain runs the command in-process and returns its exit status, stdout
// and stderr.
func runMain(t *testing.T, stdin string, args ...string) (int, string, string) {
	t.Helper()
	var out, errOut bytes.Buffer
	env := &Env{
		Stdin: strings.NewReader(stdin), Stdout: &out, Stderr: &errOut,
		Getenv: func(k string) string {
			if k == "CONTRACTUAL_CACHE_DIR" {
				return filepath.Join(os.TempDir(), "contractual-cli-test-cache")
			}
			return ""
		},
	}
	code := Main(context.Background(), args, env)
	return code, out.String(), errOut.String()
}

func TestRun(t *testing.T) {
	tests := []struct {
		name      string
		args      []string
		stdin     string
		code      int
		stdout    []string
		stderr    []string
		notStdout []string
	}{
		{
			name:   "pure tool",
			args:   []string{"run", tool("textkit", "textkit.wasm"), "--contract", tool("textkit", "contract.yaml"), "--export", "slugify", "--input", `{"text": "Hello, Contractual World!"}`},
			stdout: []string{`{"slug":"hello-contractual-world"}`},
			stderr: []string{"slugify:", "peak memory"},
		},
		{
			name:   "flags after and before the module, input from stdin",
			args:   []string{"run", "--contract", tool("greeter", "contract.yaml"), tool("greeter", "greeter.wasm"), "--input", "-"},
			stdin:  `{"name": "Ada"}`,
			stdout: []string{`Hello, Ada!`},
			stderr: []string{"log info:"},
		},
		{
			name:   "module the contract does not name",
			args:   []string{"run", tool("textkit", "textkit.wasm"), "--contract", tool("greeter", "contract.yaml"), "--input", `{"name": "Ada"}`},
			code:   exitFailure,
			stderr: []string{"refused: permission_denied", "is for module sha256:", "textkit.wasm is sha256:"},
		},
		{
			name:   "export the contract does not list",
			args:   []string{"run", tool("textkit", "textkit.wasm"), "--contract", tool("textkit", "contract.yaml"), "--export", "_initialize", "--input", `{}`},
			code:   exitFailure,
			stderr: []string{`grants no tool "_initialize"`, "slugify"},
		},
		{
			name:   "several tools, none chosen",
			args:   []string{"run", tool("textkit", "textkit.wasm"), "--contract", tool("textkit", "contract.yaml"), "--input", `{}`},
			code:   exitFailure,
			stderr: []string{"choose one with --export"},
		},
		{
			name:      "input against the schema",
			args:      []string{"run", tool("textkit", "textkit.wasm"), "--contract", tool("textkit", "contract.yaml"), "--export", "slugify", "--input", `{"text": 42}`},
			code:      exitFailure,
			stderr:    []string{"refused: invalid", "/text"},
			notStdout: []string{"slug"},
		},
		{
			name:   "input that is not JSON",
			args:   []string{"run", tool("textkit", "textkit.wasm"), "--contract", tool("textkit", "contract.yaml"), "--export", "slugify", "--input", `{text`},
			code:   exitFailure,
			stderr: []string{"refused: invalid", "JSON"},
		},
		{
			name:   "tool error",
			args:   []string{"run", tool("textkit", "textkit.wasm"), "--contract", tool("textkit", "contract.yaml"), "--export", "json_pick", "--input", `{"json": {"a": 1}, "path": "b"}`},
			code:   exitFailure,
			stderr: []string{"failed: tool_failed", "path not found"},
		},
		{name: "no contract", args: []string{"run", tool("textkit", "textkit.wasm"), "--input", "{}"}, code: exitUsage, stderr: []string{"no contract, no run"}},
		{name: "unknown flag", args: []string{"run", "--bogus"}, code: exitUsage, stderr: []string{"usage: contractual run"}},
		{name: "unknown command", args: []string{"frobnicate"}, code: exitUsage, stderr: []string{`unknown command "frobnicate"`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, stdout, stderr := runMain(t, tt.stdin, tt.args...)
			if code != tt.code {
				t.Errorf("exit %d, want %d\nstdout: %s\nstderr: %s", code, tt.code, stdout, stderr)
			}
			for _, s := range tt.stdout {
				if !strings.Contains(stdout, s) {
					t.Errorf("stdout %q lacks %q", stdout, s)
				}
			}
			for _, s := range tt.notStdout {
				if strings.Contains(stdout, s) {
					t.Errorf("stdout %q has %q", stdout, s)
				}
			}
			for _, s := range tt.stderr {
				if !strings.Contains(stderr, s) {
					t.Errorf("stderr %q lacks %q", stderr, s)
				}
			}
		})
	}
}

func TestRunJSON(t *testing.T) {
	code, stdout, stderr := runMain(t, "", "run", tool("greeter", "greeter.wasm"), "--contract", tool("greeter", "contract.yaml"),
		"--input", `{"name": "Ada"}`, "--json")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	var rep struct {
		Tool     string
		Contract string
		Output   struct{ Message string }
		Logs     []struct{ Level, Message string }
		Error    *struct{ Kind string }
	}
	if err := json.Unmarshal([]byte(stdout), &rep); err != nil {
		t.Fatalf("%v: %s", err, stdout)
	}
	if rep.Tool != "greet" || rep.Output.Message != "Hello, Ada!" || len(rep.Logs) == 0 || rep.Error != nil || !strings.HasPrefix(rep.Contract, "sha256:") {
		t.Errorf("report %+v", rep)
	}
}

// TestReportKeys checks that every key of run's JSON report, its egress
// records and log lines included, is snake_case, as the API's JSON in the
// CLI's --json outputs is (protojson with proto names).
func TestReportKeys(t *testing.T) {
	snake := regexp.MustCompile(`^[a-z][a-z0-9_]*$`)
	seen := map[reflect.Type]bool{}
	var walk func(reflect.Type, string)
	walk = func(rt reflect.Type, path string) {
		for rt.Kind() == reflect.Pointer || rt.Kind() == reflect.Slice {
			rt = rt.Elem()
		}
		if rt.Kind() != reflect.Struct || seen[rt] {
			return
		}
		seen[rt] = true
		for f := range rt.Fields() {
			if !f.IsExported() {
				continue
			}
			name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
			if name == "-" {
				continue
			}
			if !snake.MatchString(name) {
				t.Errorf("%s.%s has JSON key %q, want a snake_case json tag", path, f.Name, name)
			}
			walk(f.Type, path+"."+f.Name)
		}
	}
	walk(reflect.TypeFor[report](), "report")
	if len(seen) < 4 {
		t.Fatalf("walked %d types, want the report, its error, egress records and log lines", len(seen))
	}
}

func TestContractCheck(t *testing.T) {
	code, stdout, stderr := runMain(t, "", "contract", "check", tool("ghstars", "contract.yaml"), "--module", tool("ghstars", "ghstars.wasm"))
	if code != 0 || !strings.Contains(stdout, "contract sha256:") || !strings.Contains(stdout, "module   sha256:") {
		t.Errorf("exit %d\n%s%s", code, stdout, stderr)
	}
	// The same contract with another module: refused.
	code, _, stderr = runMain(t, "", "contract", "check", tool("ghstars", "contract.yaml"), "--module", tool("greeter", "greeter.wasm"))
	if code != exitFailure || !strings.Contains(stderr, "a changed module needs a new contract") {
		t.Errorf("exit %d: %s", code, stderr)
	}
	// A broken contract: every problem, with its line and column.
	bad := filepath.Join(t.TempDir(), "bad.yaml")
	os.WriteFile(bad, []byte("name: Bad Name\nversion: 1\nflavour: sweet\n"), 0o600)
	code, _, stderr = runMain(t, "", "contract", "check", bad)
	if code != exitFailure || !strings.Contains(stderr, "bad.yaml:3:1") || !strings.Contains(stderr, "flavour") {
		t.Errorf("exit %d: %s", code, stderr)
	}
}

// TestNotPaired: a command that talks to a server, on a device that never
// paired, says so and what to do, without calling anything.
func TestNotPaired(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "device.token")
	code, _, errOut := runMain(t, "", "contracts", "list", "--token-file", missing, "--server", "http://127.0.0.1:1")
	if code == 0 || !strings.Contains(errOut, "not paired") || !strings.Contains(errOut, "contractual pair") {
		t.Fatalf("exit %d: %s", code, errOut)
	}
}

// TestHelp checks that --help, on its own and after every command, prints
// the full usage with every flag, to stdout, with success; every command
// that talks to a server shows --server and $CONTRACTUAL_SERVER.
func TestHelp(t *testing.T) {
	for _, args := range [][]string{{"--help"}, {"-h"}, {"help"}} {
		code, out, _ := runMain(t, "", args...)
		if code != 0 || !strings.Contains(out, "--server URL") || !strings.Contains(out, "CONTRACTUAL_SERVER") {
			t.Errorf("%v: exit %d:\n%s", args, code, out)
		}
		for _, c := range commands {
			if !strings.Contains(out, "contractual "+c.usage) {
				t.Errorf("%v does not show %q", args, c.usage)
			}
		}
	}
	talksToServer := map[string]bool{"publish": true, "contracts": true, "invoke": true, "approvals": true, "pair": true, "devices": true, "secrets": true, "audit": true}
	for _, c := range commands {
		if c.name == "help" || c.name == "version" {
			continue
		}
		for _, h := range []string{"--help", "-h"} {
			code, out, errOut := runMain(t, "", c.name, h)
			if code != 0 || !strings.HasPrefix(out, "contractual "+c.name+": ") || !strings.Contains(out, "usage: contractual "+c.usage) {
				t.Errorf("%s %s: exit %d:\n%s%s", c.name, h, code, out, errOut)
				continue
			}
			if !strings.Contains(out, "flags:") {
				t.Errorf("%s %s lists no flags:\n%s", c.name, h, out)
			}
			if talksToServer[c.name] && (!strings.Contains(out, "-server") || !strings.Contains(out, "$CONTRACTUAL_SERVER")) {
				t.Errorf("%s %s does not show --server and $CONTRACTUAL_SERVER:\n%s", c.name, h, out)
			}
		}
	}
	// A subcommand's help too.
	if code, out, _ := runMain(t, "", "contracts", "approve", "--help"); code != 0 || !strings.Contains(out, "-reason") {
		t.Errorf("contracts approve --help: exit %d:\n%s", code, out)
	}
}
