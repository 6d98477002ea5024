package deploytest

import (
	"bufio"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestSidecarPin: the sidecar's binaries are built from the same
// tailscale.com release that serve --tailnet links, so that the two ways
// onto the tailnet behave alike; deploy/tailscale/go.mod (the sidecar's
// own pins, apart from the module's dependencies) must follow go.mod.
func TestSidecarPin(t *testing.T) {
	root := filepath.Join("..", "..")
	main := requireOf(t, filepath.Join(root, "go.mod"), "tailscale.com")
	sidecar := requireOf(t, filepath.Join(root, "deploy", "tailscale", "go.mod"), "tailscale.com")
	if main == "" || main != sidecar {
		t.Fatalf("tailscale.com is %q in go.mod and %q in deploy/tailscale/go.mod: pin the sidecar to the same release", main, sidecar)
	}
}

// requireOf returns the version of module mod that the go.mod file at
// path requires, or "".
func requireOf(t *testing.T, path, mod string) string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(strings.TrimPrefix(strings.TrimSpace(sc.Text()), "require "))
		if len(fields) >= 2 && fields[0] == mod {
			return fields[1]
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return ""
}
