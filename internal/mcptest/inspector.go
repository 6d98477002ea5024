package mcptest

import (
	"bytes"
	"context"
	"crypto/sha256"
	_ "embed"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// The Inspector is pinned by inspector/package-lock.json (every package,
// with its integrity hash); npm ci installs exactly that. To move to
// another version, change package.json and run `npm install
// --package-lock-only` in internal/mcptest/inspector.
var (
	//go:embed inspector/package.json
	inspectorPackage []byte
	//go:embed inspector/package-lock.json
	inspectorLock []byte
)

// InspectorVersion is the pinned version of @modelcontextprotocol/inspector.
const InspectorVersion = "2.12.0"

// minNode is the oldest Node.js major version the pinned Inspector's CLI is
// known to run on. (The package asks for Node 22; its CLI runs on Debian's
// Node 20, which is what CI installs.)
const minNode = 20

// EnvInspectorDir names the environment variable that overrides where the
// Inspector is installed (default: <user cache dir>/contractual/mcp-inspector).
const EnvInspectorDir = "CONTRACTUAL_MCP_INSPECTOR_DIR"

const (
	// inspectorTimeout bounds one run of the Inspector: far above what
	// one needs, so that a machine under heavy load (a load average of 20
	// on 2 cores) still passes.
	inspectorTimeout = 5 * time.Minute
	// installTimeout bounds npm ci.
	installTimeout = 15 * time.Minute
)

// Inspector runs the pinned MCP Inspector's CLI against the MCP endpoint
// url over Streamable HTTP, with "Authorization: Bearer <token>" (none if
// token is empty), and returns what it printed on stdout: the JSON of the
// result. args are the Inspector's own, e.g.
//
//	mcptest.Inspector(t, url, token, "--method", "tools/list")
//	mcptest.Inspector(t, url, token, "--method", "tools/call", "--tool-name", "echo", "--tool-arg", "text=hi")
//
// A failure of the Inspector (a non-zero exit) fails the test, with its
// output. Without node and npm the test is skipped, except with CI=true:
// there it fails. The first run installs the pinned Inspector with npm ci
// (.ci/run does it beforehand, see InstallInspector).
func Inspector(t testing.TB, url, token string, args ...string) []byte {
	t.Helper()
	out, stderr, err := InspectorResult(t, url, token, args...)
	if err != nil {
		t.Fatalf("mcptest: the MCP Inspector %s %q: %v\nstdout:\n%s\nstderr:\n%s", InspectorVersion, args, err, out, stderr)
	}
	return out
}

// InspectorResult runs the Inspector as Inspector does, but returns its
// stdout, its stderr and its exit error (an *exec.ExitError when it ran
// and failed) rather than failing the test: for a test that expects it to
// fail (a refused token, say).
func InspectorResult(t testing.TB, url, token string, args ...string) (stdout, stderr []byte, err error) {
	t.Helper()
	argv := []string{url, "--transport", "http"}
	if token != "" {
		argv = append(argv, "--header", "Authorization: Bearer "+token)
	}
	return runInspector(t, append(argv, args...))
}

// InspectorCommand runs the Inspector's CLI against an MCP server it
// launches and speaks to over stdio, as Claude Desktop does: command is the
// program and its arguments, env (KEY=VALUE) what it adds to the little
// environment the Inspector gives the program (PATH, HOME and such), and
// args the Inspector's own. It returns what the Inspector printed on stdout,
// and fails the test as Inspector does.
func InspectorCommand(t testing.TB, env, command []string, args ...string) []byte {
	t.Helper()
	var argv []string
	for _, kv := range env {
		argv = append(argv, "-e", kv)
	}
	argv = append(argv, "--transport", "stdio")
	argv = append(argv, command...)
	out, stderr, err := runInspector(t, append(argv, args...))
	if err != nil {
		t.Fatalf("mcptest: the MCP Inspector %s %q %q: %v\nstdout:\n%s\nstderr:\n%s", InspectorVersion, command, args, err, out, stderr)
	}
	return out
}

// runInspector runs the Inspector's CLI with args after --cli.
func runInspector(t testing.TB, args []string) (stdout, stderr []byte, err error) {
	t.Helper()
	node := requireNode(t)
	ctx, cancel := context.WithTimeout(context.Background(), installTimeout)
	defer cancel()
	dir, err := InstallInspector(ctx)
	if err != nil {
		t.Fatalf("mcptest: %v", err)
	}
	argv := append([]string{filepath.Join(dir, "node_modules", ".bin", "mcp-inspector"), "--cli"}, args...)
	ctx, cancel = context.WithTimeout(context.Background(), inspectorTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, node, argv...)
	home := t.TempDir()
	// The Inspector keeps a catalog of servers in the home directory; give
	// it one of the test's.
	cmd.Env = append(os.Environ(), "HOME="+home, "MCP_CATALOG_PATH="+filepath.Join(home, "mcp.json"), "NO_COLOR=1")
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err = cmd.Run()
	if ctx.Err() != nil {
		err = fmt.Errorf("%w (after %v)", ctx.Err(), inspectorTimeout)
	}
	return out.Bytes(), errb.Bytes(), err
}

// requireNode returns the path of node, after checking that node and npm
// are there and node is recent enough; else it skips t, or with CI=true
// fails it.
func requireNode(t testing.TB) string {
	t.Helper()
	missing := func(msg string) {
		t.Helper()
		msg = "mcptest: " + msg + "; the MCP Inspector needs Node.js " + strconv.Itoa(minNode) + " or newer and npm (Debian: apt-get install nodejs npm)"
		if ci, _ := strconv.ParseBool(os.Getenv("CI")); ci {
			t.Fatal(msg + " (CI=true: a missing dependency fails the test)")
		}
		t.Skip(msg)
	}
	node, err := exec.LookPath("node")
	if err != nil {
		missing("no node on PATH")
	}
	if _, err := exec.LookPath("npm"); err != nil {
		missing("no npm on PATH")
	}
	v, err := exec.Command(node, "--version").Output()
	if err != nil {
		missing(fmt.Sprintf("node --version: %v", err))
	}
	major, _, _ := strings.Cut(strings.TrimPrefix(strings.TrimSpace(string(v)), "v"), ".")
	if n, err := strconv.Atoi(major); err != nil || n < minNode {
		missing(fmt.Sprintf("node is %s", strings.TrimSpace(string(v))))
	}
	return node
}

// InstallInspector installs the pinned Inspector, once, into a directory
// of the user's cache named by the lock file's digest ($CONTRACTUAL_MCP_INSPECTOR_DIR
// overrides the parent directory), and returns that directory. It runs npm
// ci, which reaches the npm registry; an installed Inspector is used as it
// is. Concurrent installs (test packages run in parallel) each install
// into a directory of their own and the first to finish wins.
func InstallInspector(ctx context.Context) (string, error) {
	parent := os.Getenv(EnvInspectorDir)
	if parent == "" {
		cache, err := os.UserCacheDir()
		if err != nil {
			return "", fmt.Errorf("installing the MCP Inspector: no cache directory (set %s): %w", EnvInspectorDir, err)
		}
		parent = filepath.Join(cache, "contractual", "mcp-inspector")
	}
	sum := sha256.Sum256(inspectorLock)
	dir := filepath.Join(parent, InspectorVersion+"-"+hex.EncodeToString(sum[:6]))
	bin := filepath.Join(dir, "node_modules", ".bin", "mcp-inspector")
	if _, err := os.Stat(bin); err == nil {
		return dir, nil
	}
	if err := os.MkdirAll(parent, 0o755); err != nil {
		return "", fmt.Errorf("installing the MCP Inspector: %w", err)
	}
	tmp, err := os.MkdirTemp(parent, ".install-")
	if err != nil {
		return "", fmt.Errorf("installing the MCP Inspector: %w", err)
	}
	defer os.RemoveAll(tmp)
	for name, b := range map[string][]byte{"package.json": inspectorPackage, "package-lock.json": inspectorLock} {
		if err := os.WriteFile(filepath.Join(tmp, name), b, 0o644); err != nil {
			return "", fmt.Errorf("installing the MCP Inspector: %w", err)
		}
	}
	cmd := exec.CommandContext(ctx, "npm", "ci", "--no-audit", "--no-fund", "--loglevel=error")
	cmd.Dir = tmp
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("installing the MCP Inspector %s with npm ci in %s: %w\n%s", InspectorVersion, tmp, err, out)
	}
	if err := os.Rename(tmp, dir); err != nil {
		// Another install finished first: use it.
		if _, serr := os.Stat(bin); serr == nil {
			return dir, nil
		}
		if _, serr := os.Stat(dir); serr == nil {
			return "", fmt.Errorf("installing the MCP Inspector: %s exists without %s (a broken install?): remove it", dir, bin)
		}
		return "", fmt.Errorf("installing the MCP Inspector: %w", err)
	}
	return dir, nil
}
