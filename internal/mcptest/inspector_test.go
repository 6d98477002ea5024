package mcptest_test

import (
	"slices"
	"strings"
	"testing"

	"github.com/contractual/contractual/internal/mcptest"
)

// TestInstallInspector installs the pinned Inspector (if it is not yet):
// .ci/run runs it before the tests, so that no test downloads it.
func TestInstallInspector(t *testing.T) {
	out := mcptest.Inspector(t, "http://127.0.0.1:1/mcp", "", "--version")
	if !strings.Contains(string(out), mcptest.InspectorVersion) {
		t.Errorf("the Inspector's --version says %q, want %s", out, mcptest.InspectorVersion)
	}
}

// The reference client lists and calls the loopback server's tools with
// its token, and is refused without it.
func TestInspectorAgainstTheLoopbackServer(t *testing.T) {
	srv := mcptest.NewServer(t, "the-device-token")

	names := mcptest.ToolNames(t, mcptest.Inspector(t, srv.URL, srv.Token, "--method", "tools/list"))
	if want := []string{"count", "echo", "grow", "roots", "wait"}; !slices.Equal(names, want) {
		t.Errorf("tools/list: %q, want %q", names, want)
	}

	out := mcptest.Inspector(t, srv.URL, srv.Token, "--method", "tools/call", "--tool-name", "echo", "--tool-arg", "text=hello inspector")
	if call := mcptest.Call(t, out); call.IsError || len(call.Content) != 1 || call.Text() != "echo: hello inspector" {
		t.Errorf("tools/call echo: %s, want the text %q", out, "echo: hello inspector")
	}

	stdout, stderr, err := mcptest.InspectorResult(t, srv.URL, "a-wrong-token", "--method", "tools/list")
	if err == nil {
		t.Errorf("tools/list with a wrong token succeeded: %s", stdout)
	}
	// A 401 sends it to its OAuth flow, which it cannot run without a
	// terminal: it says so, and exits non-zero.
	if both := string(stdout) + string(stderr); !strings.Contains(both, "auth_required") && !strings.Contains(both, "401") {
		t.Errorf("tools/list with a wrong token: the Inspector does not say it was refused:\nstdout:\n%s\nstderr:\n%s", stdout, stderr)
	}
}
