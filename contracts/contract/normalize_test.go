package contract

import (
	"strings"
	"testing"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	contractualv1 "github.com/contractual/contractual/contracts/gen/contractual/v1"
)

// weatherDigest is the digest of testdata/weather.yaml. It changes only if
// the canonical encoding changes, which invalidates every approval: a test
// failure here means a compatibility break, not a test to update lightly.
const weatherDigest = "sha256:6970d72f2384374bcdca26fbd4b0076f72b8060d6039243d51aeca3a9dcec654"

func TestNormalize(t *testing.T) {
	c := weather()
	c.Capabilities.Http = append(c.Capabilities.Http, &contractualv1.EgressRule{
		Scheme:  "HTTP",
		Host:    "Example.COM",
		Methods: []string{"post", "GET", "Post", "delete"},
	}, &contractualv1.EgressRule{
		Scheme:     "https",
		Host:       "b.example.com",
		Port:       8443,
		PathPrefix: "/x",
		Methods:    []string{"GET"},
		Secrets: []*contractualv1.SecretInjection{
			{Name: "B", Header: "x-b"},
			{Name: "A", Header: "x-a", Format: "Token {{secret}}"},
		},
	})
	Normalize(c)

	want := []*contractualv1.EgressRule{{
		Scheme: "https", Host: "api.open-meteo.com", Port: 443, PathPrefix: "/v1/", Methods: []string{"GET"},
		Secrets: []*contractualv1.SecretInjection{{Name: "OPENMETEO_KEY", Header: "Authorization", Format: "Bearer {{secret}}"}},
	}, {
		Scheme: "http", Host: "example.com", Port: 80, PathPrefix: "/", Methods: []string{"DELETE", "GET", "POST"},
	}, {
		Scheme: "https", Host: "b.example.com", Port: 8443, PathPrefix: "/x", Methods: []string{"GET"},
		Secrets: []*contractualv1.SecretInjection{
			{Name: "A", Header: "X-A", Format: "Token {{secret}}"},
			{Name: "B", Header: "X-B", Format: "{{secret}}"},
		},
	}}
	for i := range want {
		if !proto.Equal(c.Capabilities.Http[i], want[i]) {
			t.Errorf("rule %d:\n got %v\nwant %v", i, c.Capabilities.Http[i], want[i])
		}
	}
	wantLimits := &contractualv1.Limits{
		MemoryMib: 32, TimeoutMs: 2000, OutputBytes: 65536, HttpRequests: 4,
		HttpResponseBytes: 1 << 20, LogBytes: 16 << 10, StdioBytes: 16 << 10, HostCalls: 10000,
	}
	if !proto.Equal(c.Limits, wantLimits) {
		t.Errorf("limits:\n got %v\nwant %v", c.Limits, wantLimits)
	}
}

func TestNormalizeLimitDefaults(t *testing.T) {
	tests := []struct {
		name string
		caps *contractualv1.Capabilities
		want *contractualv1.Limits
	}{
		{
			name: "no capabilities",
			want: &contractualv1.Limits{MemoryMib: 16, TimeoutMs: 1000, OutputBytes: 1 << 20, HttpResponseBytes: 1 << 20, HostCalls: 10000},
		},
		{
			name: "http",
			caps: &contractualv1.Capabilities{Http: []*contractualv1.EgressRule{rule("a.example.com")}},
			want: &contractualv1.Limits{MemoryMib: 16, TimeoutMs: 1000, OutputBytes: 1 << 20, HttpRequests: 8, HttpResponseBytes: 1 << 20, HostCalls: 10000},
		},
		{
			name: "log and wasi",
			caps: &contractualv1.Capabilities{Log: &contractualv1.LogCapability{}, Wasi: &contractualv1.WasiCapability{}},
			want: &contractualv1.Limits{MemoryMib: 16, TimeoutMs: 1000, OutputBytes: 1 << 20, HttpResponseBytes: 1 << 20, LogBytes: 16 << 10, StdioBytes: 16 << 10, HostCalls: 10000},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := &contractualv1.Contract{Capabilities: tt.caps}
			Normalize(c)
			if !proto.Equal(c.Limits, tt.want) {
				t.Errorf("limits:\n got %v\nwant %v", c.Limits, tt.want)
			}
			if c.Capabilities == nil {
				t.Error("capabilities left nil")
			}
		})
	}
}

func TestNormalizeIdempotent(t *testing.T) {
	for _, name := range validFiles {
		c, err := Parse(readFile(t, name), name)
		if err != nil {
			t.Fatal(err)
		}
		Normalize(c)
		once := proto.CloneOf(c)
		Normalize(c)
		if !proto.Equal(once, c) {
			t.Errorf("%s: Normalize is not idempotent:\n%v\n%v", name, once, c)
		}
		if err := Validate(c); err != nil {
			t.Errorf("%s: normal form is invalid: %v", name, err)
		}
	}
	Normalize(nil) // must not panic
}

func TestCanonicalDoesNotModify(t *testing.T) {
	c := weather()
	if _, err := Canonical(c); err != nil {
		t.Fatal(err)
	}
	if !proto.Equal(c, weather()) {
		t.Error("Canonical modified its argument")
	}
	if _, err := Canonical(nil); err == nil {
		t.Error("Canonical(nil) succeeded")
	}
}

// TestDigestStable checks that writing the same contract differently
// (YAML or JSON, key order, comments, flow or block style, defaults spelled
// out or not, equivalent spellings) does not change its digest.
func TestDigestStable(t *testing.T) {
	want := mustDigest(t, weather())
	for _, name := range []string{"weather.yaml", "weather.json", "weather-explicit.yaml"} {
		c, err := Load(readFile(t, name), name)
		if err != nil {
			t.Fatal(err)
		}
		if got := mustDigest(t, c); got != want {
			t.Errorf("%s: digest %s, want %s", name, got, want)
		}
	}
	// Through protojson, both field name styles.
	for _, opts := range []protojson.MarshalOptions{{}, {UseProtoNames: true, Multiline: true}} {
		b, err := opts.Marshal(weather())
		if err != nil {
			t.Fatal(err)
		}
		c, err := Parse(b, "weather.json")
		if err != nil {
			t.Fatal(err)
		}
		if got := mustDigest(t, c); got != want {
			t.Errorf("protojson %+v: digest %s, want %s", opts, got, want)
		}
	}
}

// TestInputFormatJSONIsTheDefault checks that input_format json and an
// unset input_format are one contract, so that contracts written before the
// field existed keep their digests.
func TestInputFormatJSONIsTheDefault(t *testing.T) {
	c := edited(weather(), func(c *contractualv1.Contract) { c.Tools[0].InputFormat = contractualv1.InputFormat_INPUT_FORMAT_JSON })
	if got, want := mustDigest(t, c), mustDigest(t, weather()); got != want {
		t.Errorf("input_format json: digest %s, want the unset digest %s", got, want)
	}
}

func TestDigestGolden(t *testing.T) {
	c, err := Load(readFile(t, "weather.yaml"), "weather.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if got := mustDigest(t, c); got != weatherDigest {
		t.Errorf("digest of weather.yaml = %s, want %s", got, weatherDigest)
	}
}

// TestDigestChanges checks that a change of meaning changes the digest.
func TestDigestChanges(t *testing.T) {
	base := mustDigest(t, weather())
	edits := map[string]func(c *contractualv1.Contract){
		"module":      func(c *contractualv1.Contract) { c.Module = strings.Replace(c.Module, "0", "1", 1) },
		"description": func(c *contractualv1.Contract) { c.Description += "." },
		"tool order": func(c *contractualv1.Contract) {
			c.Tools = append(c.Tools, proto.CloneOf(c.Tools[0]))
			c.Tools[0].Export = "a"
		},
		"risk": func(c *contractualv1.Contract) { c.Tools[0].Risk = contractualv1.Risk_RISK_HIGH },
		"input format": func(c *contractualv1.Contract) {
			c.Tools[0].InputFormat = contractualv1.InputFormat_INPUT_FORMAT_STRING
		},
		"schema": func(c *contractualv1.Contract) { c.Tools[0].InputSchema.Fields["required"].GetListValue().Values = nil },
		"method": func(c *contractualv1.Contract) {
			c.Capabilities.Http[0].Methods = append(c.Capabilities.Http[0].Methods, "HEAD")
		},
		"port":          func(c *contractualv1.Contract) { c.Capabilities.Http[0].Port = 8443 },
		"secret format": func(c *contractualv1.Contract) { c.Capabilities.Http[0].Secrets[0].Format = "{{secret}}" },
		"config":        func(c *contractualv1.Contract) { c.Capabilities.Config["units"] = "imperial" },
		"log":           func(c *contractualv1.Contract) { c.Capabilities.Log = nil },
		"clock":         func(c *contractualv1.Contract) { c.Capabilities.Wasi.Clock = false },
		"limit":         func(c *contractualv1.Contract) { c.Limits.HostCalls = 10001 },
		"output schema absent vs empty": func(c *contractualv1.Contract) {
			c.Tools[0].OutputSchema = nil
		},
	}
	seen := map[string]string{base: "base"}
	for name, edit := range edits {
		d := mustDigest(t, edited(weather(), edit))
		if prev, ok := seen[d]; ok {
			t.Errorf("%s: same digest as %s", name, prev)
		}
		seen[d] = name
	}
}

func TestModuleDigest(t *testing.T) {
	const empty = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
	if got := ModuleDigest(nil); got != empty {
		t.Errorf("ModuleDigest(nil) = %s, want %s", got, empty)
	}
	if !moduleRE.MatchString(ModuleDigest([]byte("\x00asm"))) {
		t.Error("ModuleDigest is not a valid module field")
	}
}

func mustDigest(t testing.TB, c *contractualv1.Contract) string {
	t.Helper()
	d, err := Digest(c)
	if err != nil {
		t.Fatal(err)
	}
	return d
}
