package contract

import (
	"slices"
	"testing"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"

	contractualv1 "github.com/contractual/contractual/contracts/gen/contractual/v1"
)

// The weather contract's one rule, as Diff names it.
const meteo = "capabilities.http[https://api.open-meteo.com/v1/]"

func TestDiff(t *testing.T) {
	tests := []struct {
		name string
		edit func(c *contractualv1.Contract)
		want []string
	}{
		{name: "nothing", edit: func(c *contractualv1.Contract) {}},
		{name: "only spelling", edit: func(c *contractualv1.Contract) {
			r := c.Capabilities.Http[0]
			r.Host, r.Scheme, r.Port, r.Methods = "API.open-meteo.com", "HTTPS", 443, []string{"get", "GET"}
			r.Secrets[0].Header = "authorization"
			c.Limits.StdioBytes = 16 << 10
		}},

		// Header fields are neutral.
		{name: "module", edit: func(c *contractualv1.Contract) { c.Module = ModuleDigest([]byte("v2")) }, want: []string{
			`~ changed  module: "` + testModule + `" → "` + ModuleDigest([]byte("v2")) + `"`,
		}},
		{name: "version and description", edit: func(c *contractualv1.Contract) { c.Version, c.Description = "1.1.0", "" }, want: []string{
			`~ changed  version: "1.0.0" → "1.1.0"`,
			`~ changed  description: removed "Forecasts from Open-Meteo"`,
		}},
		{name: "name and publisher", edit: func(c *contractualv1.Contract) { c.Name, c.Publisher = "meteo", "carol" }, want: []string{
			`~ changed  name: "weather" → "meteo"`,
			`~ changed  publisher: "alice@example.com" → "carol"`,
		}},

		// Tools.
		{name: "tool added", edit: func(c *contractualv1.Contract) {
			c.Tools = append(c.Tools, &contractualv1.Tool{Export: "alerts", Description: "d", Risk: contractualv1.Risk_RISK_MEDIUM,
				InputSchema: mustStruct(map[string]any{"type": "object"})})
		}, want: []string{"+ widened  tools[alerts]: added (risk medium)"}},
		{name: "tool removed", edit: func(c *contractualv1.Contract) { c.Tools[0].Export = "forecast2" }, want: []string{
			"- narrowed tools[forecast]: removed (risk low)",
			"+ widened  tools[forecast2]: added (risk low)",
		}},
		{name: "tool appended", edit: func(c *contractualv1.Contract) {
			a := proto.CloneOf(c.Tools[0])
			a.Export = "alerts"
			c.Tools = append(c.Tools, a)
		}, want: []string{"+ widened  tools[alerts]: added (risk low)"}},
		{name: "tool description", edit: func(c *contractualv1.Contract) { c.Tools[0].Description = "Forecast" }, want: []string{
			`~ changed  tools[forecast].description: "Fetch the forecast for a city" → "Forecast"`,
		}},
		{name: "risk raised", edit: func(c *contractualv1.Contract) { c.Tools[0].Risk = contractualv1.Risk_RISK_HIGH }, want: []string{
			"- narrowed tools[forecast].risk: low → high",
		}},
		{name: "input schema", edit: func(c *contractualv1.Contract) {
			s := c.Tools[0].InputSchema
			s.Fields["properties"].GetStructValue().Fields["days"] = structpb.NewStructValue(mustStruct(map[string]any{"type": "integer"}))
			s.Fields["properties"].GetStructValue().Fields["city"].GetStructValue().Fields["type"] = structpb.NewStringValue("number")
			s.Fields["required"] = structpb.NewListValue(&structpb.ListValue{Values: []*structpb.Value{
				structpb.NewStringValue("city"), structpb.NewStringValue("days"),
			}})
			delete(s.Fields, "additionalProperties")
		}, want: []string{
			`~ changed  tools[forecast].input_schema.additionalProperties: removed false`,
			`~ changed  tools[forecast].input_schema.properties.city.type: "string" → "number"`,
			`~ changed  tools[forecast].input_schema.properties.days: added {"type":"integer"}`,
			`~ changed  tools[forecast].input_schema.required: ["city"] → ["city","days"]`,
		}},
		{name: "input format", edit: func(c *contractualv1.Contract) {
			c.Tools[0].InputFormat = contractualv1.InputFormat_INPUT_FORMAT_STRING
			c.Tools[0].InputSchema = mustStruct(map[string]any{"type": "string"})
		}, want: []string{
			`~ changed  tools[forecast].input_format: json → string`,
			`~ changed  tools[forecast].input_schema.additionalProperties: removed false`,
			`~ changed  tools[forecast].input_schema.properties: removed {"city":{"type":"string"}}`,
			`~ changed  tools[forecast].input_schema.required: removed ["city"]`,
			`~ changed  tools[forecast].input_schema.type: "object" → "string"`,
		}},
		{name: "output schema", edit: func(c *contractualv1.Contract) { c.Tools[0].OutputSchema = nil }, want: []string{
			`~ changed  tools[forecast].output_schema: removed {"type":"object"}`,
		}},

		// Egress rules.
		{name: "rule added", edit: func(c *contractualv1.Contract) {
			c.Capabilities.Http = append(c.Capabilities.Http, &contractualv1.EgressRule{
				Scheme: "https", Host: "geo.example.com", Port: 8443, Methods: []string{"POST", "GET"},
				Secrets: []*contractualv1.SecretInjection{{Name: "GEO", Header: "X-Key"}},
			})
		}, want: []string{"+ widened  capabilities.http[https://geo.example.com:8443/]: added (GET, POST; secrets GEO in X-Key)"}},
		{name: "rule removed", edit: func(c *contractualv1.Contract) { c.Capabilities.Http = nil; c.Limits.HttpRequests = 0 }, want: []string{
			`- narrowed ` + meteo + `: removed (GET; secrets OPENMETEO_KEY as "Bearer {{secret}}" in Authorization)`,
			"- narrowed limits.http_requests: 4 → 0",
		}},
		{name: "rule added in front", edit: func(c *contractualv1.Contract) {
			c.Capabilities.Http = []*contractualv1.EgressRule{rule("a.example.com"), c.Capabilities.Http[0]}
		}, want: []string{
			"+ widened  capabilities.http[https://a.example.com/]: added (GET)",
		}},
		{name: "method added and removed", edit: func(c *contractualv1.Contract) { c.Capabilities.Http[0].Methods = []string{"post"} }, want: []string{
			"- narrowed " + meteo + ".methods: removed GET",
			"+ widened  " + meteo + ".methods: added POST",
		}},
		{name: "host made a wildcard", edit: func(c *contractualv1.Contract) { c.Capabilities.Http[0].Host = "*.open-meteo.com" }, want: []string{
			"+ widened  " + meteo + ".host: api.open-meteo.com → *.open-meteo.com",
		}},
		{name: "wildcard host made exact", edit: func(c *contractualv1.Contract) { c.Capabilities.Http[0].Host = "*.open-meteo.com" }, want: []string{
			// Run in reverse below: see reverse.
		}},
		{name: "unrelated host", edit: func(c *contractualv1.Contract) { c.Capabilities.Http[0].Host = "api.example.com" }, want: []string{
			`- narrowed ` + meteo + `: removed (GET; secrets OPENMETEO_KEY as "Bearer {{secret}}" in Authorization)`,
			`+ widened  capabilities.http[https://api.example.com/v1/]: added (GET; secrets OPENMETEO_KEY as "Bearer {{secret}}" in Authorization)`,
		}},
		{name: "path prefix shortened", edit: func(c *contractualv1.Contract) { c.Capabilities.Http[0].PathPrefix = "" }, want: []string{
			"+ widened  " + meteo + ".path_prefix: /v1/ → /",
		}},
		{name: "path prefix lengthened, host widened, method added", edit: func(c *contractualv1.Contract) {
			r := c.Capabilities.Http[0]
			r.PathPrefix, r.Host, r.Methods = "/v1/forecast", "*.open-meteo.com", []string{"GET", "HEAD"}
		}, want: []string{
			"+ widened  " + meteo + ".host: api.open-meteo.com → *.open-meteo.com",
			"- narrowed " + meteo + ".path_prefix: /v1/ → /v1/forecast",
			"+ widened  " + meteo + ".methods: added HEAD",
		}},
		{name: "path prefix on another segment", edit: func(c *contractualv1.Contract) { c.Capabilities.Http[0].PathPrefix = "/v1x" }, want: []string{
			`- narrowed ` + meteo + `: removed (GET; secrets OPENMETEO_KEY as "Bearer {{secret}}" in Authorization)`,
			`+ widened  capabilities.http[https://api.open-meteo.com/v1x]: added (GET; secrets OPENMETEO_KEY as "Bearer {{secret}}" in Authorization)`,
		}},
		{name: "port changed", edit: func(c *contractualv1.Contract) { c.Capabilities.Http[0].Port = 8443 }, want: []string{
			`- narrowed ` + meteo + `: removed (GET; secrets OPENMETEO_KEY as "Bearer {{secret}}" in Authorization)`,
			`+ widened  capabilities.http[https://api.open-meteo.com:8443/v1/]: added (GET; secrets OPENMETEO_KEY as "Bearer {{secret}}" in Authorization)`,
		}},
		{name: "secret added", edit: func(c *contractualv1.Contract) {
			c.Capabilities.Http[0].Secrets = append(c.Capabilities.Http[0].Secrets, &contractualv1.SecretInjection{Name: "ID", Header: "x-id"})
		}, want: []string{"+ widened  " + meteo + ".secrets[X-Id]: added ID"}},
		{name: "secret removed", edit: func(c *contractualv1.Contract) { c.Capabilities.Http[0].Secrets = nil }, want: []string{
			`- narrowed ` + meteo + `.secrets[Authorization]: removed OPENMETEO_KEY as "Bearer {{secret}}"`,
		}},
		{name: "secret swapped", edit: func(c *contractualv1.Contract) { c.Capabilities.Http[0].Secrets[0].Name = "ADMIN_KEY" }, want: []string{
			`- narrowed ` + meteo + `.secrets[Authorization]: removed OPENMETEO_KEY as "Bearer {{secret}}"`,
			`+ widened  ` + meteo + `.secrets[Authorization]: added ADMIN_KEY as "Bearer {{secret}}"`,
		}},
		{name: "secret format", edit: func(c *contractualv1.Contract) { c.Capabilities.Http[0].Secrets[0].Format = "" }, want: []string{
			`~ changed  ` + meteo + `.secrets[Authorization].format: "Bearer {{secret}}" → "{{secret}}"`,
		}},

		// Config is neutral.
		{name: "config", edit: func(c *contractualv1.Contract) {
			c.Capabilities.Config = map[string]string{"units": "imperial", "lang.code": "en"}
		}, want: []string{
			`~ changed  capabilities.config["lang.code"]: added "en"`,
			`~ changed  capabilities.config.units: "metric" → "imperial"`,
		}},
		{name: "config removed", edit: func(c *contractualv1.Contract) { c.Capabilities.Config = nil }, want: []string{
			`~ changed  capabilities.config.units: removed "metric"`,
		}},

		// Grants.
		{name: "log revoked", edit: func(c *contractualv1.Contract) { c.Capabilities.Log = nil }, want: []string{
			"- narrowed capabilities.log: granted → not granted",
			"- narrowed limits.log_bytes: 16384 (16 KiB) → 0",
		}},
		{name: "wasi revoked", edit: func(c *contractualv1.Contract) { c.Capabilities.Wasi = nil }, want: []string{
			"- narrowed capabilities.wasi: granted → not granted",
			"- narrowed capabilities.wasi.clock: granted → not granted",
			"- narrowed capabilities.wasi.random: granted → not granted",
			"- narrowed limits.stdio_bytes: 16384 (16 KiB) → 0",
		}},
		{name: "random revoked", edit: func(c *contractualv1.Contract) { c.Capabilities.Wasi.Random = false }, want: []string{
			"- narrowed capabilities.wasi.random: granted → not granted",
		}},

		// Limits.
		{name: "limits", edit: func(c *contractualv1.Contract) {
			c.Limits.MemoryMib, c.Limits.TimeoutMs, c.Limits.OutputBytes = 64, 0, 1<<20
		}, want: []string{
			"+ widened  limits.memory_mib: 32 → 64",
			"- narrowed limits.timeout_ms: 2000 → 1000",
			"+ widened  limits.output_bytes: 65536 (64 KiB) → 1048576 (1 MiB)",
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			old, new := weather(), edited(weather(), tt.edit)
			if tt.name == "wildcard host made exact" {
				old, new = new, old
				tt.want = []string{"- narrowed capabilities.http[https://*.open-meteo.com/v1/].host: *.open-meteo.com → api.open-meteo.com"}
			}
			oldCopy, newCopy := proto.CloneOf(old), proto.CloneOf(new)
			got := changeStrings(Diff(old, new))
			if !proto.Equal(old, oldCopy) || !proto.Equal(new, newCopy) {
				t.Error("Diff modified its arguments")
			}
			if diff := diffLines(tt.want, got); diff != "" {
				t.Errorf("Diff mismatch (-want +got):\n%s", diff)
			}
			// Diff reports nothing exactly when the digests are equal.
			if same := mustDigest(t, old) == mustDigest(t, new); same != (len(got) == 0) {
				t.Errorf("digests equal = %v, but Diff reported %d changes", same, len(got))
			}
		})
	}
}

func TestDiffOrder(t *testing.T) {
	old := weather()
	old.Tools = append(old.Tools, proto.CloneOf(old.Tools[0]))
	old.Tools[1].Export = "alerts"
	old.Capabilities.Http = append(old.Capabilities.Http, rule("a.example.com"))
	new := proto.CloneOf(old)
	slices.Reverse(new.Tools)
	slices.Reverse(new.Capabilities.Http)
	want := []string{
		"~ changed  tools: order forecast, alerts → order alerts, forecast",
		"~ changed  capabilities.http: order https://api.open-meteo.com/v1/, https://a.example.com/ → order https://a.example.com/, https://api.open-meteo.com/v1/",
	}
	if diff := diffLines(want, changeStrings(Diff(old, new))); diff != "" {
		t.Errorf("Diff mismatch (-want +got):\n%s", diff)
	}
}

func TestDiffFirstContract(t *testing.T) {
	got := Diff(nil, weather())
	if len(got) == 0 {
		t.Fatal("no changes from nil")
	}
	for _, c := range got {
		if c.Kind == Narrowed {
			t.Errorf("narrowing from nothing: %v", c)
		}
	}
	for _, want := range []string{
		"+ widened  capabilities.http[https://api.open-meteo.com/v1/]: added (GET; secrets OPENMETEO_KEY as \"Bearer {{secret}}\" in Authorization)",
		"+ widened  tools[forecast]: added (risk low)",
		"+ widened  capabilities.log: not granted → granted",
		"+ widened  limits.http_requests: 0 → 4",
	} {
		if !slices.Contains(changeStrings(got), want) {
			t.Errorf("missing %q in:\n%s", want, FormatDiff(got))
		}
	}
}

// TestDiffUnknownDifference checks the fallback for differences Diff cannot
// describe: it must never report "no changes" for different digests.
func TestDiffUnknownDifference(t *testing.T) {
	new := weather()
	new.ProtoReflect().SetUnknown([]byte{0xf8, 0x06, 0x01}) // field 111, varint 1
	got := Diff(weather(), new)
	if len(got) != 1 || got[0].Kind != Changed || got[0].Path != "contract" {
		t.Errorf("Diff = %v, want one change of the contract", got)
	}
}

func TestFormatDiff(t *testing.T) {
	if got := FormatDiff(nil); got != "no changes\n" {
		t.Errorf("FormatDiff(nil) = %q", got)
	}
	got := FormatDiff([]Change{
		{Kind: Widened, Path: "capabilities.http[https://api.example.com/v1/]", New: "(GET)"},
		{Kind: Narrowed, Path: "limits.memory_mib", Old: "32", New: "16"},
		{Kind: Changed, Path: "version", Old: `"1"`, New: `"2"`},
	})
	want := `+ widened  capabilities.http[https://api.example.com/v1/]: added (GET)
- narrowed limits.memory_mib: 32 → 16
~ changed  version: "1" → "2"
`
	if got != want {
		t.Errorf("FormatDiff =\n%s\nwant\n%s", got, want)
	}
}

func TestCovers(t *testing.T) {
	tests := []struct {
		p, h string
		want bool
	}{
		{"api.example.com", "api.example.com", true},
		{"*.example.com", "api.example.com", true},
		{"*.example.com", "example.com", false},
		{"*.example.com", "a.b.example.com", true},
		{"*.example.com", "*.example.com", true},
		{"*.b.example.com", "*.example.com", false},
		{"*.example.com", "*.b.example.com", true},
		{"*.example.com", "api.example.org", false},
		{"*.example.com", "apiexample.com", false},
		{"api.example.com", "*.example.com", false},
	}
	for _, tt := range tests {
		if got := covers(tt.p, tt.h); got != tt.want {
			t.Errorf("covers(%q, %q) = %v, want %v", tt.p, tt.h, got, tt.want)
		}
	}
}

func TestPathCovers(t *testing.T) {
	tests := []struct {
		p, q string
		want bool
	}{
		{"/", "/v1", true},
		{"/v1", "/v1", true},
		{"/v1", "/v1/x", true},
		{"/v1", "/v1x", false},
		{"/v1/", "/v1/x", true},
		{"/v1/", "/v1", false},
		{"/v1/x", "/v1", false},
	}
	for _, tt := range tests {
		if got := pathCovers(tt.p, tt.q); got != tt.want {
			t.Errorf("pathCovers(%q, %q) = %v, want %v", tt.p, tt.q, got, tt.want)
		}
	}
}

func changeStrings(cs []Change) []string {
	var out []string
	for _, c := range cs {
		out = append(out, c.String())
	}
	return out
}
