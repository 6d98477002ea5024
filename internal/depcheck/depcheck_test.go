package depcheck

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"testing"
)

// module is this module's path.
const module = "github.com/contractual/contractual"

// Packages the rules name.
const (
	wazero      = "github.com/tetratelabs/wazero"
	sqlite      = "modernc.org/sqlite"
	tinkAEAD    = "github.com/tink-crypto/tink-go/v2/aead"
	sandbox     = module + "/runtime/sandbox"
	egress      = module + "/runtime/egress"
	policy      = module + "/internal/policy"
	broker      = module + "/internal/broker"
	runner      = module + "/internal/runner"
	audit       = module + "/internal/audit"
	pairing     = module + "/internal/pairing"
	sqlitestore = module + "/internal/sqlitestore"
	controlUI   = module + "/ui"
	tailscale   = "tailscale.com"
	tailnetPkg  = module + "/internal/tailnet"
	mcpSDK      = "github.com/modelcontextprotocol/go-sdk"
	mcpServer   = module + "/internal/mcpserver"
)

// testOnly are for tests and benchmarks only; no service binary links them.
// (The Extism go-sdk is the sandbox benchmarks' baseline; the sandbox
// implements the Extism kernel itself.)
var testOnly = []string{
	"testing", "net/http/httptest",
	"github.com/chromedp", "github.com/extism/go-sdk",
	module + "/internal/browsertest", module + "/internal/loadtest", module + "/runtime/egress/egresstest",
	module + "/internal/tailnet/tailnettest", module + "/internal/mcptest",
	module + "/internal/scheduler/schedulertest",
}

// everywhere are what no service binary links: Tailscale's code is for
// `contractual serve --tailnet` only (cmd/contractual, through package
// tailnet/tsnode); behind the sidecar, the gateway reads the identity
// headers `tailscale serve` sets without it.
var everywhere = []string{tailscale}

// services is the table: for each service, what its binary,
// cmd/contractual-<name>, must not link, or the only packages it may link;
// and the packages that are its roots today, checked by the same rule.
// Services reach each other only through the generated Connect clients, so
// no binary links another service's package: its store, its keys, its
// runtime.
var services = []struct {
	name  string
	rule  rule
	today []string
}{
	{
		// The gateway: pairing (its own store), the Control UI, the public
		// API. Policy decides, the runner runs, the broker keeps secrets,
		// audit keeps the log; the gateway makes no egress and decrypts
		// nothing. It alone speaks MCP (internal/mcpserver, on the MCP Go
		// SDK), to agents on /mcp.
		name:  "gateway",
		rule:  rule{forbid: []string{wazero, sandbox, egress, policy, runner, broker, audit, tinkAEAD}},
		today: []string{controlUI, pairing, module + "/internal/invoke", tailnetPkg, mcpServer},
	},
	{
		// Policy checks modules at publish (runtime/modcheck, which links
		// runtime/egress for the grants' rule type) and never runs one.
		name:  "policy",
		rule:  rule{forbid: []string{wazero, sandbox, runner, broker, audit, pairing, controlUI, tinkAEAD, mcpSDK}},
		today: []string{policy},
	},
	{
		// The runner persists nothing and gets secret values only through
		// broker handles.
		name:  "runner",
		rule:  rule{forbid: []string{policy, broker, audit, pairing, controlUI, sqlite, sqlitestore, tinkAEAD, mcpSDK}},
		today: []string{runner},
	},
	{
		name:  "broker",
		rule:  rule{forbid: []string{wazero, sandbox, egress, policy, runner, audit, pairing, controlUI, mcpSDK}},
		today: []string{broker},
	},
	{
		name:  "audit",
		rule:  rule{forbid: []string{wazero, sandbox, egress, policy, runner, broker, pairing, controlUI, tinkAEAD, mcpSDK}},
		today: []string{audit},
	},
	{
		// The worker runs jobs' steps through policy and the runner over
		// Connect: it runs no module, makes no egress and holds no secret.
		name:  "worker",
		rule:  rule{forbid: []string{wazero, sandbox, egress, policy, runner, broker, audit, pairing, controlUI, tinkAEAD, mcpSDK, module + "/internal/scheduler"}},
		today: []string{module + "/internal/worker"},
	},
	{
		// The scheduler fires triggers and enqueues runs with the worker,
		// and has the broker check webhook signatures: it runs nothing,
		// makes no egress and holds no key.
		name:  "scheduler",
		rule:  rule{forbid: []string{wazero, sandbox, egress, policy, runner, broker, audit, pairing, controlUI, tinkAEAD, mcpSDK, module + "/internal/worker"}},
		today: []string{module + "/internal/scheduler"},
	},
	{
		// The engine runs the chat sessions: the model proposes, policy
		// decides and the runner runs, all over Connect. It runs no module
		// (no sandbox, no wazero), makes no egress (its model requests are
		// the relay tool's calls, which the runner makes), holds no secret
		// (none of the broker, no Tink AEAD) and links no other service's
		// code. Its model client (internal/engine/model, on openai-go) is
		// its own.
		name: "engine",
		rule: rule{forbid: []string{wazero, sandbox, egress, policy, runner, broker, audit, pairing, controlUI, tinkAEAD, mcpSDK,
			module + "/internal/worker", module + "/internal/scheduler", module + "/internal/gateway", module + "/internal/invoke"}},
		today: []string{module + "/internal/engine", module + "/internal/engine/model"},
	},
	{
		// The certificate service holds the CA key: the standard library
		// and the PKI code only.
		name: "ca",
		rule: rule{only: []string{module + "/cmd/contractual-ca", module + "/internal/pki", module + "/internal/errs"}},
	},
}

// TestServiceDeps checks every service binary, and the packages that are
// its roots today, against its rule; it reports every forbidden package
// each links, with the chain that pulls it in.
func TestServiceDeps(t *testing.T) {
	goCmd := goTool(t)
	roots := []string{allInOne}
	for _, s := range services {
		roots = append(roots, binary(s.name))
		roots = append(roots, s.today...)
	}
	g := load(t, goCmd, roots...)
	for _, s := range services {
		s.rule.forbid = slices.Concat(s.rule.forbid, testOnly, everywhere)
		t.Run(s.name, func(t *testing.T) {
			for _, root := range append([]string{binary(s.name)}, s.today...) {
				t.Run(short(root), func(t *testing.T) {
					for _, v := range g.check(root, s.rule) {
						t.Errorf("%s %s", short(root), v)
					}
				})
			}
		})
	}

	// The graph is whole: a walk over the imports reaches each root's
	// dependencies, all of them, so a forbidden package cannot hide from it.
	for _, root := range roots {
		order, _ := g.walk(root)
		if got, want := slices.Sorted(slices.Values(order[1:])), g[root].Deps; !slices.Equal(got, want) {
			t.Errorf("walking %s reaches %d packages, go list says it depends on %d", short(root), len(got), len(want))
		}
	}
	// And the check sees what is there: the runner links wazero, and
	// the contractual command links Tailscale.
	if vs := g.check(runner, rule{forbid: []string{wazero}}); len(vs) != 1 || vs[0].entry != wazero {
		t.Errorf("check does not find wazero in %s: %v", short(runner), vs)
	}
	if vs := g.check(allInOne, rule{forbid: everywhere}); len(vs) != 1 || vs[0].entry != tailscale {
		t.Errorf("check does not find Tailscale in %s: %v", short(allInOne), vs)
	}
}

// allInOne is the contractual command, which links every service.
const allInOne = module + "/cmd/contractual"

// binary is the import path of a service's binary.
func binary(service string) string { return module + "/cmd/contractual-" + service }

// load reads the build graph of roots, as the images build them: Linux,
// without cgo. It reads only the module cache, never the network.
func load(t *testing.T, goCmd string, roots ...string) graph {
	t.Helper()
	cmd := exec.CommandContext(t.Context(), goCmd, append([]string{"list", "-deps", "-json=ImportPath,Imports,Deps,Standard"}, roots...)...)
	cmd.Env = append(os.Environ(), "GOOS=linux", "CGO_ENABLED=0", "GOPROXY=off", "GOTOOLCHAIN=local")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list -deps %v (with GOPROXY=off: run `go mod download` first if a module is missing): %v\n%s", roots, err, stderr.Bytes())
	}
	g := graph{}
	for dec := json.NewDecoder(bytes.NewReader(out)); ; {
		var p pkg
		if err := dec.Decode(&p); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			t.Fatalf("reading go list's output: %v", err)
		}
		g[p.ImportPath] = &p
	}
	for _, root := range roots {
		if g[root] == nil {
			t.Fatalf("go list did not list %s", root)
		}
	}
	return g
}

// goTool finds the go command: on PATH, else in the GOROOT this test was
// built with. Without it the test skips, except with CI=true.
func goTool(t *testing.T) string {
	t.Helper()
	if p, err := exec.LookPath("go"); err == nil {
		return p
	}
	p := filepath.Join(runtime.GOROOT(), "bin", "go")
	if _, err := os.Stat(p); err == nil {
		return p
	}
	msg := "depcheck: no go command (not on PATH, not in " + runtime.GOROOT() + "/bin); it reads the build graph with go list"
	if ci, _ := strconv.ParseBool(os.Getenv("CI")); ci {
		t.Fatal(msg + " (CI=true: a missing go command fails the test)")
	}
	t.Skip(msg)
	return ""
}
