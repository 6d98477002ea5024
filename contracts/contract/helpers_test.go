package contract

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"

	contractualv1 "github.com/contractual/contractual/contracts/gen/contractual/v1"
	"github.com/contractual/contractual/internal/errs"
)

// testModule is a module digest for tests.
const testModule = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

// weather returns a valid contract, the one in testdata/weather.yaml.
func weather() *contractualv1.Contract {
	return &contractualv1.Contract{
		Module:      testModule,
		Name:        "weather",
		Version:     "1.0.0",
		Publisher:   "alice@example.com",
		Description: "Forecasts from Open-Meteo",
		Tools: []*contractualv1.Tool{{
			Export:      "forecast",
			Description: "Fetch the forecast for a city",
			Risk:        contractualv1.Risk_RISK_LOW,
			InputSchema: mustStruct(map[string]any{
				"type":                 "object",
				"properties":           map[string]any{"city": map[string]any{"type": "string"}},
				"required":             []any{"city"},
				"additionalProperties": false,
			}),
			OutputSchema: mustStruct(map[string]any{"type": "object"}),
		}},
		Capabilities: &contractualv1.Capabilities{
			Http: []*contractualv1.EgressRule{{
				Scheme:     "https",
				Host:       "api.open-meteo.com",
				PathPrefix: "/v1/",
				Methods:    []string{"GET"},
				Secrets: []*contractualv1.SecretInjection{{
					Name: "OPENMETEO_KEY", Header: "Authorization", Format: "Bearer {{secret}}",
				}},
			}},
			Config: map[string]string{"units": "metric"},
			Log:    &contractualv1.LogCapability{},
			Wasi:   &contractualv1.WasiCapability{Clock: true, Random: true},
		},
		Limits: &contractualv1.Limits{MemoryMib: 32, TimeoutMs: 2000, OutputBytes: 65536, HttpRequests: 4},
	}
}

// edited returns a copy of c changed by edit.
func edited(c *contractualv1.Contract, edit func(*contractualv1.Contract)) *contractualv1.Contract {
	c = proto.CloneOf(c)
	edit(c)
	return c
}

func mustStruct(m map[string]any) *structpb.Struct {
	s, err := structpb.NewStruct(m)
	if err != nil {
		panic(err)
	}
	return s
}

func readFile(t testing.TB, name string) []byte {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// problemsOf returns the problems in err as strings, checking that err is
// an errs.Invalid error holding a *ValidationError. Nil err gives nil.
func problemsOf(t testing.TB, err error) []string {
	t.Helper()
	if err == nil {
		return nil
	}
	if k := errs.KindOf(err); k != errs.Invalid {
		t.Fatalf("error kind = %v, want invalid: %v", k, err)
	}
	var verr *ValidationError
	if !errors.As(err, &verr) {
		t.Fatalf("error is not a *ValidationError: %#v", err)
	}
	if len(verr.Problems) == 0 {
		t.Fatalf("ValidationError without problems: %v", err)
	}
	var out []string
	for _, p := range verr.Problems {
		out = append(out, p.String())
	}
	return out
}

// diffLines returns "" if want and got are equal, else both, marked.
func diffLines(want, got []string) string {
	if slices.Equal(want, got) {
		return ""
	}
	var b strings.Builder
	for _, w := range want {
		if !slices.Contains(got, w) {
			b.WriteString("-" + w + "\n")
		}
	}
	for _, g := range got {
		if !slices.Contains(want, g) {
			b.WriteString("+" + g + "\n")
		}
	}
	b.WriteString("want:\n\t" + strings.Join(want, "\n\t") + "\ngot:\n\t" + strings.Join(got, "\n\t") + "\n")
	return b.String()
}
