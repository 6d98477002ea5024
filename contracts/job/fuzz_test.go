package job

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"google.golang.org/protobuf/encoding/protojson"

	contractualv1 "github.com/contractual/contractual/contracts/gen/contractual/v1"
	"github.com/contractual/contractual/internal/errs"
)

// protojsonText returns j as JSON.
func protojsonText(t testing.TB, j *contractualv1.Job) string {
	t.Helper()
	b, err := protojson.Marshal(j)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// FuzzParse checks that Parse and Load never panic, fail only with
// well-formed invalid-job errors, and that a job that loads keeps its
// digest through a re-encoding as JSON, and its Diff with itself is empty.
func FuzzParse(f *testing.F) {
	files, _ := filepath.Glob("../../jobs/*.yaml")
	for _, path := range files {
		data, err := os.ReadFile(path)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	for _, s := range []string{
		base, reformatted,
		base + "misfire: {policy: catch_up, max_catch_up: 3}\nretry: {attempts: 2}\n",
		"trigger: {once: {at: '2026-01-01T00:00:00Z'}}\nsteps: [{id: a, tool: t.f, contract: x, input: {$ref: trigger.payload}}]\n",
		"bounds: [{tool: a.b, inputs: [{pointer: '~', allowed: [1, '1', null, {}], minimum: .inf}]}]\n",
		"a: &a [*a]\n",
		"{\"name\": 1e3}",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		j, err := Load(data, "fuzz.yaml")
		if err != nil {
			var verr *ValidationError
			if !errs.Is(err, errs.Invalid) || !errors.As(err, &verr) || len(verr.Problems) == 0 {
				t.Fatalf("bad error: %v", err)
			}
			if _, perr := Parse(data, "fuzz.yaml"); perr != nil && !errs.Is(perr, errs.Invalid) {
				t.Fatalf("bad parse error: %v", perr)
			}
			return
		}
		d1, err := Digest(j)
		if err != nil {
			t.Fatal(err)
		}
		j2, err := Load([]byte(protojsonText(t, j)), "fuzz.json")
		if err != nil {
			t.Fatalf("normal form does not load again: %v", err)
		}
		if d2, _ := Digest(j2); d2 != d1 {
			t.Fatalf("digest %s, after JSON %s", d1, d2)
		}
		if changes := Diff(j, j2); len(changes) != 0 {
			t.Fatalf("diff with itself: %v", changes)
		}
		_ = NewCard(j).WriteText(new(discard))
	})
}

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }
