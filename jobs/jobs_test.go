// Package jobs holds example job definitions; this test loads each one and
// checks that the tool contracts it pins are the committed ones.
package jobs_test

import (
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/contractual/contractual/contracts/contract"
	contractualv1 "github.com/contractual/contractual/contracts/gen/contractual/v1"
	"github.com/contractual/contractual/contracts/job"
)

func loadJob(t *testing.T, name string) *contractualv1.Job {
	t.Helper()
	data, err := os.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	j, err := job.Load(data, name)
	if err != nil {
		t.Fatal(err)
	}
	return j
}

// loadContract loads the committed contract of a tool set.
func loadContract(t *testing.T, toolset string) *contractualv1.Contract {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("..", "tools", toolset, "contract.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	c, err := contract.Load(data, toolset+"/contract.yaml")
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// hasRef reports whether a step input template refers to a trigger or step.
func hasRef(v *structpb.Value) bool {
	switch k := v.GetKind().(type) {
	case *structpb.Value_StructValue:
		if _, ok := k.StructValue.GetFields()["$ref"]; ok {
			return true
		}
		for _, f := range k.StructValue.GetFields() {
			if hasRef(f) {
				return true
			}
		}
	case *structpb.Value_ListValue:
		return slices.ContainsFunc(k.ListValue.GetValues(), hasRef)
	}
	return false
}

func TestExamples(t *testing.T) {
	files, err := filepath.Glob("*.yaml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no example jobs: %v", err)
	}
	for _, name := range files {
		t.Run(name, func(t *testing.T) {
			j := loadJob(t, name)
			for i, s := range j.GetSteps() {
				for _, call := range job.StepCalls(i, s) {
					toolset, export, _ := strings.Cut(call.Tool, ".")
					c := loadContract(t, toolset)
					if d, _ := contract.Digest(c); d != call.Contract {
						t.Errorf("step %s pins %s, tools/%s/contract.yaml is %s", s.GetId(), call.Contract, toolset, d)
					}
					i := slices.IndexFunc(c.GetTools(), func(tool *contractualv1.Tool) bool { return tool.GetExport() == export })
					if i < 0 {
						t.Errorf("step %s: tools/%s has no export %q", s.GetId(), toolset, export)
						continue
					}
					tool := c.GetTools()[i]
					// A job never waits for a one-shot approval: a high-risk
					// tool would pause it at every run.
					if tool.GetRisk() == contractualv1.Risk_RISK_HIGH {
						t.Errorf("step %s: %s is high risk", s.GetId(), call.Tool)
					}
					// An input with no references is the call's input as it
					// is (an agent step's input is its data, not a call's).
					if !call.Agent && !hasRef(s.GetInput()) {
						in, err := protojson.Marshal(s.GetInput())
						if err != nil {
							t.Fatal(err)
						}
						if err := contract.CheckInput(tool, in); err != nil {
							t.Errorf("step %s: input %s: %v", s.GetId(), in, err)
						}
					}
				}
			}
		})
	}
}

// TestNightlyDigest: the feeds the job's bounds allow are exactly the feeds
// the feeds contract may fetch (one exact egress rule each), the step asks
// for them within those bounds, and the post step sends the digest's text.
func TestNightlyDigest(t *testing.T) {
	j := loadJob(t, "nightly-digest.yaml")

	var reachable []string
	for _, r := range loadContract(t, "feeds").GetCapabilities().GetHttp() {
		if r.GetScheme() != "https" || r.GetPort() != 443 || !slices.Equal(r.GetMethods(), []string{"GET"}) || len(r.GetSecrets()) > 0 {
			t.Errorf("feeds contract rule %v: want https GET without secrets", r)
		}
		reachable = append(reachable, "https://"+r.GetHost()+r.GetPathPrefix())
	}
	slices.Sort(reachable)

	var bounds []*contractualv1.InputBound
	for _, b := range j.GetBounds() {
		if b.GetTool() == "feeds.digest" {
			bounds = b.GetInputs()
		}
	}
	var maxURLs uint64
	slots := 0
	for _, b := range bounds {
		switch {
		case b.GetPointer() == "/urls":
			maxURLs = b.GetMaxLength()
		case strings.HasPrefix(b.GetPointer(), "/urls/"):
			slots++
			var allowed []string
			for _, v := range b.GetAllowed() {
				allowed = append(allowed, v.GetStringValue())
			}
			slices.Sort(allowed)
			if !slices.Equal(allowed, reachable) {
				t.Errorf("%s allows %q; the feeds contract reaches %q", b.GetPointer(), allowed, reachable)
			}
		}
	}
	if slots == 0 || uint64(slots) != maxURLs {
		t.Errorf("%d bounded URL slots, /urls max_length %d: every URL the job may pass must be bounded", slots, maxURLs)
	}

	steps := j.GetSteps()
	if len(steps) != 2 || steps[0].GetTool() != "feeds.digest" || steps[1].GetTool() != "notify.post" {
		t.Fatalf("steps %v", steps)
	}
	urls := steps[0].GetInput().GetStructValue().GetFields()["urls"].GetListValue().GetValues()
	if len(urls) == 0 || uint64(len(urls)) > maxURLs {
		t.Errorf("step digest asks for %d feeds", len(urls))
	}
	for _, u := range urls {
		if _, ok := slices.BinarySearch(reachable, u.GetStringValue()); !ok {
			t.Errorf("step digest asks for %s, which the bounds do not allow", u.GetStringValue())
		}
	}
	post, _ := protojson.Marshal(steps[1].GetInput())
	var got any
	json.Unmarshal(post, &got)
	if b, _ := json.Marshal(got); string(b) != `{"text":{"$ref":"steps.digest.output.text"}}` {
		t.Errorf("step post input %s", post)
	}
}
