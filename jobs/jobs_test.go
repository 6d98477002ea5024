// Package jobs holds example job definitions; this test loads each one and
// checks that the tool contracts it pins are the committed ones.
package jobs_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/contractual/contractual/contracts/contract"
	"github.com/contractual/contractual/contracts/job"
)

func TestExamples(t *testing.T) {
	files, err := filepath.Glob("*.yaml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no example jobs: %v", err)
	}
	for _, name := range files {
		t.Run(name, func(t *testing.T) {
			data, err := os.ReadFile(name)
			if err != nil {
				t.Fatal(err)
			}
			j, err := job.Load(data, name)
			if err != nil {
				t.Fatal(err)
			}
			for _, s := range j.GetSteps() {
				toolset, export, _ := strings.Cut(s.GetTool(), ".")
				cdata, err := os.ReadFile(filepath.Join("..", "tools", toolset, "contract.yaml"))
				if err != nil {
					t.Fatalf("step %s: %v", s.GetId(), err)
				}
				c, err := contract.Load(cdata, toolset+"/contract.yaml")
				if err != nil {
					t.Fatal(err)
				}
				if d, _ := contract.Digest(c); d != s.GetContract() {
					t.Errorf("step %s pins %s, tools/%s/contract.yaml is %s", s.GetId(), s.GetContract(), toolset, d)
				}
				found := false
				for _, tool := range c.GetTools() {
					found = found || tool.GetExport() == export
				}
				if !found {
					t.Errorf("step %s: tools/%s has no export %q", s.GetId(), toolset, export)
				}
			}
		})
	}
}
