package cli

import (
	"fmt"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// rows returns the first column of a listing's rows (the header dropped).
func rows(out string) []string {
	var first []string
	for i, line := range strings.Split(strings.TrimSpace(out), "\n") {
		if i > 0 && line != "" {
			first = append(first, strings.Fields(line)[0])
		}
	}
	return first
}

// pageHint is the hint a page with more after it prints.
var pageHint = regexp.MustCompile(`more: the same command with --page (\S+) lists the next page, --all everything`)

// TestListPages: a list prints one page and a hint on stderr; --page
// continues where the hint says, --all follows the pages to the end, the
// filters apply to every page.
func TestListPages(t *testing.T) {
	d, _, _ := pairedDevice(t)
	var want []string
	for i := range 7 {
		name := fmt.Sprintf("TOKEN_%d", i)
		d.must("v\n", "secrets", "put", name)
		want = append(want, name)
	}
	d.must("v\n", "secrets", "put", "OTHER")

	out, errOut := d.must("", "secrets", "list", "--prefix", "TOKEN_", "--page-size", "3")
	m := pageHint.FindStringSubmatch(errOut)
	if got := rows(out); !slices.Equal(got, want[:3]) || m == nil {
		t.Fatalf("first page: %v, stderr %q", got, errOut)
	}
	out, errOut = d.must("", "secrets", "list", "--prefix", "TOKEN_", "--page-size", "3", "--page", m[1])
	if got := rows(out); !slices.Equal(got, want[3:6]) || !pageHint.MatchString(errOut) {
		t.Fatalf("second page: %v, stderr %q", got, errOut)
	}
	out, errOut = d.must("", "secrets", "list", "--prefix", "TOKEN_", "--page-size", "2", "--all")
	if got := rows(out); !slices.Equal(got, want) || errOut != "" {
		t.Fatalf("--all: %v, stderr %q", got, errOut)
	}
	if code, _, errOut := d.run("", "secrets", "list", "--page", m[1]); code != exitFailure || !strings.Contains(errOut, "page_token") {
		t.Fatalf("a page token without its filter: exit %d, %s", code, errOut)
	}
	if code, _, _ := d.run("", "secrets", "list", "--page-size", "-1"); code != exitUsage {
		t.Fatalf("negative page size: exit %d", code)
	}

	for _, name := range []string{"textkit", "greeter"} {
		d.must("", "publish", tool(name, name+".wasm"), "--contract", tool(name, "contract.yaml"))
	}
	out, errOut = d.must("", "contracts", "list", "--page-size", "1")
	if got := rows(out); !slices.Equal(got, []string{"greeter"}) || !pageHint.MatchString(errOut) {
		t.Fatalf("contracts, first page: %v, stderr %q", got, errOut)
	}
	out, _ = d.must("", "contracts", "list", "--page-size", "1", "--all", "--state", "pending")
	if got := rows(out); !slices.Equal(got, []string{"greeter", "textkit"}) {
		t.Fatalf("contracts --all: %v", got)
	}
	out, _ = d.must("", "contracts", "list", "--tool", "textkit.slugify")
	if got := rows(out); !slices.Equal(got, []string{"textkit"}) {
		t.Fatalf("contracts --tool: %v", got)
	}
	out, _ = d.must("", "contracts", "list", "--prefix", "gr", "--json")
	if !regexp.MustCompile(`"name":\s+"greeter"`).MatchString(out) || strings.Contains(out, "textkit") {
		t.Fatalf("contracts --prefix --json: %s", out)
	}
	if code, _, _ := d.run("", "contracts", "list", "--state", "shiny"); code != exitUsage {
		t.Fatalf("unknown state: exit %d", code)
	}

	out, _ = d.must("", "devices", "list", "--state", "active", "--scope", "owner")
	if got := rows(out); len(got) != 1 {
		t.Fatalf("active owner devices: %v", got)
	}
	out, _ = d.must("", "devices", "list", "--state", "revoked")
	if got := rows(out); len(got) != 0 {
		t.Fatalf("revoked devices: %v", got)
	}
	if code, _, _ := d.run("", "devices", "list", "--state", "unspecified"); code != exitUsage {
		t.Fatalf("--state unspecified: exit %d", code)
	}
}
