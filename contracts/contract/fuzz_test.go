package contract

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"google.golang.org/protobuf/encoding/protojson"

	"github.com/contractual/contractual/internal/errs"
)

// FuzzParse checks that Parse never panics, fails only with a well-formed
// invalid-contract error, and that a contract that parses and validates
// keeps its digest through a re-encoding: protojson, then Parse again.
//
// The seeds are the testdata contracts, valid and invalid, the inputs
// below, and testdata/fuzz/FuzzParse; plain `go test` runs them all.
func FuzzParse(f *testing.F) {
	for _, pattern := range []string{"testdata/*.yaml", "testdata/*.json", "testdata/invalid/*"} {
		files, err := filepath.Glob(pattern)
		if err != nil {
			f.Fatal(err)
		}
		for _, path := range files {
			data, err := os.ReadFile(path)
			if err != nil {
				f.Fatal(err)
			}
			f.Add(data, filepath.Base(path))
		}
	}
	for _, s := range []string{
		head + tool,
		head + tool + "capabilities: {wasi: {}, log: {}, http: [{scheme: https, host: '*.example.com', methods: [get]}]}\n",
		head + "tools: [{export: f, description: d, risk: high, input_schema: {type: object, properties: {n: {type: number, maximum: -0, minimum: 1e-300}}}}]\n",
		head + "tools: [{export: f, description: d, risk: low, input_schema: {type: object, enum: [null, true, '1', 1.5, [], {}]}}]\n",
		"{\"name\": 1e3, \"tools\": [{\"risk\": \"RISK_HIGH\"}]}",
		"a: &a [*a]\n",
		"? [a, b]\n: c\n",
		"limits: {output_bytes: 1Ei}\n",
	} {
		f.Add([]byte(s), "seed.yaml")
	}
	f.Fuzz(func(t *testing.T, data []byte, filename string) {
		// Load also validates what parsed of a broken file.
		loaded, lerr := Load(data, filename)
		checkError(t, lerr)
		c, err := Parse(data, filename)
		if err != nil {
			checkError(t, err)
			return
		}
		if err := Validate(c); err != nil {
			checkError(t, err)
			return
		}
		if lerr != nil {
			t.Fatalf("Parse and Validate succeed, Load fails: %v", lerr)
		}
		if d1, d2 := mustDigest(t, c), mustDigest(t, loaded); d1 != d2 {
			t.Fatalf("Load and Parse give different digests: %s, %s", d1, d2)
		}
		digest, err := Digest(c)
		if err != nil {
			t.Fatalf("Digest of a valid contract: %v", err)
		}
		b, err := protojson.Marshal(c)
		if err != nil {
			t.Fatalf("protojson.Marshal of a valid contract: %v", err)
		}
		again, err := Parse(b, "again.json")
		if err != nil {
			t.Fatalf("re-encoded contract does not parse: %v\n%s", err, b)
		}
		if err := Validate(again); err != nil {
			t.Fatalf("re-encoded contract is invalid: %v\n%s", err, b)
		}
		if d, err := Digest(again); err != nil || d != digest {
			t.Fatalf("digest changed through protojson: %s → %s (%v)\n%s", digest, d, err, b)
		}
		if changes := Diff(c, again); len(changes) > 0 {
			t.Fatalf("Diff after re-encoding:\n%s", FormatDiff(changes))
		}
	})
}

// checkError fails t unless err is nil or a proper invalid-contract error.
func checkError(t *testing.T, err error) {
	t.Helper()
	var verr *ValidationError
	if err != nil && (errs.KindOf(err) != errs.Invalid || !errors.As(err, &verr) || len(verr.Problems) == 0) {
		t.Fatalf("error is not a proper invalid-contract error: %#v", err)
	}
}
