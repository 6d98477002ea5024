package depcheck

import (
	"fmt"
	"reflect"
	"slices"
	"strings"
	"testing"
)

// pkg is a package of the build graph, as `go list -json` reports it.
type pkg struct {
	ImportPath string
	Imports    []string
	Deps       []string
	Standard   bool
}

// graph is a build graph by import path.
type graph map[string]*pkg

// rule is what one binary may link.
type rule struct {
	// forbid lists what the binary must not link: each entry is an import
	// path, and matches that package and every package below it.
	forbid []string
	// only, if set, lists the only packages outside the standard library
	// the binary may link, each with the packages below it.
	only []string
}

// violation is one forbidden package a root links.
type violation struct {
	// pkg is the forbidden package nearest to the root, path the shortest
	// chain of imports from the root to it.
	pkg  string
	path []string
	// entry is the rule's entry pkg matched ("" for a package outside
	// only), and count the packages it matched in all.
	entry string
	count int
}

// under reports whether path is prefix or a package below it.
func under(path, prefix string) bool {
	return path == prefix || strings.HasPrefix(path, prefix+"/")
}

// walk visits every package root links, nearest first, and returns the
// visit order and each package's importer on a shortest chain from root.
func (g graph) walk(root string) (order []string, parent map[string]string) {
	parent = map[string]string{root: ""}
	order = []string{root}
	for i := 0; i < len(order); i++ {
		p := g[order[i]]
		if p == nil {
			continue
		}
		for _, imp := range p.Imports {
			if _, seen := parent[imp]; !seen {
				parent[imp] = order[i]
				order = append(order, imp)
			}
		}
	}
	return order, parent
}

// chain is the import chain from the root of parent to p.
func chain(parent map[string]string, p string) []string {
	var c []string
	for ; p != ""; p = parent[p] {
		c = append(c, p)
	}
	for i, j := 0, len(c)-1; i < j; i, j = i+1, j-1 {
		c[i], c[j] = c[j], c[i]
	}
	return c
}

// check returns what root links against r, nearest first: for each entry
// of r.forbid that matches a package root links, the nearest such package;
// and with r.only, each package outside it that a permitted package imports
// (where a fix goes).
func (g graph) check(root string, r rule) []violation {
	order, parent := g.walk(root)
	var out []violation
	for _, entry := range r.forbid {
		v := violation{entry: entry}
		for _, p := range order {
			if under(p, entry) {
				if v.count++; v.count == 1 {
					v.pkg, v.path = p, chain(parent, p)
				}
			}
		}
		if v.count > 0 {
			out = append(out, v)
		}
	}
	if len(r.only) == 0 {
		return nearestFirst(out)
	}
	allowed := func(p string) bool {
		if p == root || g[p] != nil && g[p].Standard {
			return true
		}
		for _, o := range r.only {
			if under(p, o) {
				return true
			}
		}
		return false
	}
	outside := 0
	entries := map[string]bool{} // packages outside that a permitted one imports
	for _, p := range order {
		if !allowed(p) {
			outside++
			continue
		}
		if g[p] == nil {
			continue
		}
		for _, imp := range g[p].Imports {
			if !allowed(imp) {
				entries[imp] = true
			}
		}
	}
	for _, p := range order {
		if entries[p] {
			out = append(out, violation{pkg: p, path: chain(parent, p), count: outside})
		}
	}
	return nearestFirst(out)
}

// nearestFirst orders vs by the length of their chains, shortest first:
// the import to remove comes before what it pulls in.
func nearestFirst(vs []violation) []violation {
	slices.SortStableFunc(vs, func(a, b violation) int { return len(a.path) - len(b.path) })
	return vs
}

// String says what is linked and why it must not be, and the chain, with
// the paths of this module shortened.
func (v violation) String() string {
	path := make([]string, len(v.path))
	for i, p := range v.path {
		path[i] = short(p)
	}
	what := fmt.Sprintf("links %s, not on its list of what it may link (%s off the list)", short(v.pkg), packages(v.count))
	if v.entry != "" {
		what = fmt.Sprintf("links %s, which it must not (%s: %s)", short(v.pkg), short(v.entry), packages(v.count))
	}
	return what + "\n\t" + strings.Join(path, " → ")
}

func packages(n int) string {
	if n == 1 {
		return "1 package"
	}
	return fmt.Sprintf("%d packages", n)
}

// short shortens an import path of this module to its directory.
func short(path string) string { return strings.TrimPrefix(path, module+"/") }

// TestCheck runs the checker on a small made-up graph: it finds a forbidden
// package however deep, gives the shortest chain to the nearest one, counts
// the rest, matches whole path elements only, and with an allow list
// reports where the graph leaves it.
func TestCheck(t *testing.T) {
	g := graph{}
	add := func(path string, std bool, imports ...string) {
		g[path] = &pkg{ImportPath: path, Standard: std, Imports: imports}
	}
	add("bin", false, "fmt", "svc", "util")
	add("fmt", true)
	add("svc", false, "fmt", "util", "store")
	add("util", false, "fmt", "deep")
	add("deep", false, "vm/internal")
	add("store", false, "old", "sqlite")
	add("old", false, "vm")
	add("vm", false, "vm/internal")
	add("vm/internal", false)
	add("vmx", false) // not below vm, and not linked
	add("sqlite", false, "vmx")

	got := g.check("bin", rule{forbid: []string{"vmx", "vm", "absent", "sqlite"}})
	want := []violation{
		{pkg: "vm/internal", path: []string{"bin", "util", "deep", "vm/internal"}, entry: "vm", count: 2},
		{pkg: "sqlite", path: []string{"bin", "svc", "store", "sqlite"}, entry: "sqlite", count: 1},
		{pkg: "vmx", path: []string{"bin", "svc", "store", "sqlite", "vmx"}, entry: "vmx", count: 1},
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("check forbid:\n got %+v\nwant %+v", got, want)
	}
	if got := g.check("util", rule{forbid: []string{"sqlite", "svc"}}); len(got) != 0 {
		t.Errorf("util links none of sqlite, svc; check says %+v", got)
	}

	// An allow list: bin may link util and what it needs. svc is where the
	// graph leaves it; store, old, sqlite and vmx are outside too, but only
	// through svc.
	got = g.check("bin", rule{only: []string{"util", "deep", "vm"}})
	want = []violation{{pkg: "svc", path: []string{"bin", "svc"}, count: 5}}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("check only:\n got %+v\nwant %+v", got, want)
	}
	got = g.check("bin", rule{only: []string{"svc", "util", "deep", "vm"}})
	want = []violation{{pkg: "store", path: []string{"bin", "svc", "store"}, count: 4}}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("check only, with svc:\n got %+v\nwant %+v", got, want)
	}

	v := violation{pkg: "github.com/tetratelabs/wazero", entry: "github.com/tetratelabs/wazero", count: 40,
		path: []string{module + "/cmd/contractual-policy", module + "/internal/policy", module + "/runtime/sandbox", "github.com/tetratelabs/wazero"}}
	want1 := "links github.com/tetratelabs/wazero, which it must not (github.com/tetratelabs/wazero: 40 packages)\n" +
		"\tcmd/contractual-policy → internal/policy → runtime/sandbox → github.com/tetratelabs/wazero"
	if got := v.String(); got != want1 {
		t.Errorf("String:\n got %q\nwant %q", got, want1)
	}
	v = violation{pkg: module + "/internal/sqlitestore", count: 1, path: []string{module + "/cmd/contractual-ca", module + "/internal/sqlitestore"}}
	want1 = "links internal/sqlitestore, not on its list of what it may link (1 package off the list)\n" +
		"\tcmd/contractual-ca → internal/sqlitestore"
	if got := v.String(); got != want1 {
		t.Errorf("String:\n got %q\nwant %q", got, want1)
	}
}
