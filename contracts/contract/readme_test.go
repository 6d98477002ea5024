package contract

import (
	"os"
	"strings"
	"testing"
)

// TestReadmeContract checks that the README's example contract is valid as
// written and names the committed module of the tool it describes.
func TestReadmeContract(t *testing.T) {
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, section, ok := strings.Cut(string(readme), "\n## A contract\n")
	_, block, ok2 := strings.Cut(section, "```yaml\n")
	block, _, ok3 := strings.Cut(block, "```")
	if !ok || !ok2 || !ok3 {
		t.Fatal(`README.md has no yaml block under "## A contract"`)
	}
	c, err := Load([]byte(block), "README.md")
	if err != nil {
		t.Fatalf("the README's contract is not valid:\n%v", err)
	}
	wasm, err := os.ReadFile("../../tools/" + c.GetName() + "/" + c.GetName() + ".wasm")
	if err != nil {
		t.Fatalf("the README's contract is for %s, which is not in tools/: %v", c.GetName(), err)
	}
	if got := ModuleDigest(wasm); got != c.GetModule() {
		t.Errorf("the README's contract names module %s; tools/%s is %s", c.GetModule(), c.GetName(), got)
	}
}
