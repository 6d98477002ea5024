package contract

import (
	"errors"
	"fmt"
	"math"
	"strings"
	"testing"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/types/known/structpb"

	contractualv1 "github.com/contractual/contractual/contracts/gen/contractual/v1"
	"github.com/contractual/contractual/internal/errs"
)

type rules = []*contractualv1.EgressRule

// rule returns a valid egress rule to host.
func rule(host string) *contractualv1.EgressRule {
	return &contractualv1.EgressRule{Scheme: "https", Host: host, Methods: []string{"GET"}}
}

func TestValidate(t *testing.T) {
	tests := []struct {
		name string
		edit func(c *contractualv1.Contract)
		want []string // empty: valid
	}{
		{name: "valid", edit: func(c *contractualv1.Contract) {}},
		{name: "normalized", edit: Normalize},

		// Header.
		{name: "module missing", edit: func(c *contractualv1.Contract) { c.Module = "" }, want: []string{"module: required"}},
		{name: "module uppercase", edit: func(c *contractualv1.Contract) { c.Module = strings.ToUpper(testModule) },
			want: []string{`module: must be the module's digest: "sha256:" and 64 lowercase hex digits`}},
		{name: "module short", edit: func(c *contractualv1.Contract) { c.Module = testModule[:70] },
			want: []string{`module: must be the module's digest: "sha256:" and 64 lowercase hex digits`}},
		{name: "module other hash", edit: func(c *contractualv1.Contract) { c.Module = "sha512:" + testModule[7:] },
			want: []string{`module: must be the module's digest: "sha256:" and 64 lowercase hex digits`}},
		{name: "name missing", edit: func(c *contractualv1.Contract) { c.Name = "" }, want: []string{"name: required"}},
		{name: "name dashes", edit: func(c *contractualv1.Contract) { c.Name = "my-weather-2" }},
		{name: "name 63", edit: func(c *contractualv1.Contract) { c.Name = "w" + strings.Repeat("x", 62) }},
		{name: "name 64", edit: func(c *contractualv1.Contract) { c.Name = "w" + strings.Repeat("x", 63) },
			want: []string{`name: "w` + strings.Repeat("x", 63) + `": use lowercase letters, digits and dashes, starting with a letter, at most 63`}},
		{name: "name digit first", edit: func(c *contractualv1.Contract) { c.Name = "2weather" },
			want: []string{`name: "2weather": use lowercase letters, digits and dashes, starting with a letter, at most 63`}},
		{name: "version missing", edit: func(c *contractualv1.Contract) { c.Version = "" }, want: []string{"version: required"}},
		{name: "version prerelease", edit: func(c *contractualv1.Contract) { c.Version = "v2.0.0-rc.1+build.5" }},
		{name: "version two parts", edit: func(c *contractualv1.Contract) { c.Version = "1.0" }},
		{name: "version words", edit: func(c *contractualv1.Contract) { c.Version = "latest" },
			want: []string{`version: "latest" is not a version like 1.2.3 or 2.0.0-rc.1`}},
		{name: "version four parts", edit: func(c *contractualv1.Contract) { c.Version = "1.2.3.4" },
			want: []string{`version: "1.2.3.4" is not a version like 1.2.3 or 2.0.0-rc.1`}},
		{name: "publisher missing", edit: func(c *contractualv1.Contract) { c.Publisher = "" }, want: []string{"publisher: required"}},
		{name: "publisher newline", edit: func(c *contractualv1.Contract) { c.Publisher = "a\nb" },
			want: []string{"publisher: contains control characters"}},
		{name: "description optional", edit: func(c *contractualv1.Contract) { c.Description = "" }},
		{name: "description multiline", edit: func(c *contractualv1.Contract) { c.Description = "a\n\tb" }},
		{name: "description escape", edit: func(c *contractualv1.Contract) { c.Description = "a\x1b[31m" },
			want: []string{"description: contains control characters"}},
		{name: "description too long", edit: func(c *contractualv1.Contract) { c.Description = strings.Repeat("x", 4097) },
			want: []string{"description: is 4097 bytes long; the limit is 4096"}},
		{name: "description bad utf-8", edit: func(c *contractualv1.Contract) { c.Description = "\xff" },
			want: []string{"description: is not valid UTF-8"}},

		// Tools.
		{name: "no tools", edit: func(c *contractualv1.Contract) { c.Tools = nil }, want: []string{"tools: at least one tool is required"}},
		{name: "too many tools", edit: func(c *contractualv1.Contract) {
			for i := range maxTools {
				c.Tools = append(c.Tools, &contractualv1.Tool{Export: fmt.Sprintf("t%d", i), Description: "d",
					Risk: contractualv1.Risk_RISK_LOW, InputSchema: mustStruct(map[string]any{"type": "object"})})
			}
		}, want: []string{"tools: has 257 tools; the limit is 256"}},
		{name: "export missing", edit: func(c *contractualv1.Contract) { c.Tools[0].Export = "" }, want: []string{"tools[0].export: required"}},
		{name: "export dash", edit: func(c *contractualv1.Contract) { c.Tools[0].Export = "get-forecast" },
			want: []string{`tools[0].export: "get-forecast" is not a function name: a letter or _, then letters, digits or _, at most 64`}},
		{name: "export underscore", edit: func(c *contractualv1.Contract) { c.Tools[0].Export = "_Get_Forecast2" }},
		{name: "export duplicate", edit: func(c *contractualv1.Contract) { c.Tools = append(c.Tools, c.Tools[0]) },
			want: []string{`tools[1].export: "forecast" is already the export of tools[0]`}},
		{name: "tool description missing", edit: func(c *contractualv1.Contract) { c.Tools[0].Description = "" },
			want: []string{"tools[0].description: required"}},
		{name: "risk missing", edit: func(c *contractualv1.Contract) { c.Tools[0].Risk = 0 },
			want: []string{"tools[0].risk: required: low, medium or high"}},
		{name: "risk unknown", edit: func(c *contractualv1.Contract) { c.Tools[0].Risk = 9 },
			want: []string{"tools[0].risk: unknown value 9: want low, medium or high"}},
		{name: "input schema missing", edit: func(c *contractualv1.Contract) { c.Tools[0].InputSchema = nil },
			want: []string{"tools[0].input_schema: required: the JSON Schema of the input, e.g. {type: object, properties: {...}}"}},
		{name: "input schema not an object", edit: func(c *contractualv1.Contract) {
			c.Tools[0].InputSchema = mustStruct(map[string]any{"type": "string"})
		}, want: []string{`tools[0].input_schema.type: must be "object": a tool's JSON input is an object of named arguments (use input_format string or bytes for raw input)`}},
		{name: "input schema without type", edit: func(c *contractualv1.Contract) {
			c.Tools[0].InputSchema = mustStruct(map[string]any{})
		}, want: []string{`tools[0].input_schema.type: must be "object": a tool's JSON input is an object of named arguments (use input_format string or bytes for raw input)`}},
		{name: "input schema bad keyword", edit: func(c *contractualv1.Contract) {
			c.Tools[0].InputSchema.Fields["properties"] = structpb.NewListValue(&structpb.ListValue{})
		}, want: []string{"tools[0].input_schema.properties: invalid JSON Schema: got array, want object"}},
		{name: "input schema bad regex", edit: func(c *contractualv1.Contract) {
			c.Tools[0].InputSchema.Fields["properties"].GetStructValue().Fields["city"].GetStructValue().Fields["pattern"] = structpb.NewStringValue("(")
		}, want: []string{"tools[0].input_schema.properties.city.pattern: invalid JSON Schema: '(' is not valid regex: error parsing regexp: missing closing ): `(`"}},
		{name: "input schema bad list item", edit: func(c *contractualv1.Contract) {
			c.Tools[0].InputSchema.Fields["allOf"] = structpb.NewListValue(&structpb.ListValue{Values: []*structpb.Value{
				structpb.NewStructValue(mustStruct(map[string]any{})), structpb.NewNumberValue(1),
			}})
		}, want: []string{"tools[0].input_schema.allOf[1]: invalid JSON Schema: got number, want boolean or object"}},
		{name: "input schema remote ref", edit: func(c *contractualv1.Contract) {
			c.Tools[0].InputSchema.Fields["$ref"] = structpb.NewStringValue("https://example.com/schema.json")
		}, want: []string{`tools[0].input_schema: invalid JSON Schema: cannot load "https://example.com/schema.json": a schema must be self-contained`}},
		{name: "input schema file ref", edit: func(c *contractualv1.Contract) {
			c.Tools[0].InputSchema.Fields["$ref"] = structpb.NewStringValue("file:///etc/passwd")
		}, want: []string{`tools[0].input_schema: invalid JSON Schema: cannot load "file:///etc/passwd": a schema must be self-contained`}},
		{name: "input schema internal ref", edit: func(c *contractualv1.Contract) {
			c.Tools[0].InputSchema.Fields["$defs"] = structpb.NewStructValue(mustStruct(map[string]any{"s": map[string]any{"type": "string"}}))
			c.Tools[0].InputSchema.Fields["properties"] = structpb.NewStructValue(mustStruct(map[string]any{"city": map[string]any{"$ref": "#/$defs/s"}}))
		}},
		{name: "input schema draft-07", edit: func(c *contractualv1.Contract) {
			c.Tools[0].InputSchema.Fields["$schema"] = structpb.NewStringValue("http://json-schema.org/draft-07/schema#")
		}},
		{name: "input schema NaN", edit: func(c *contractualv1.Contract) {
			c.Tools[0].InputSchema.Fields["maximum"] = structpb.NewNumberValue(math.NaN())
		}, want: []string{"tools[0].input_schema.maximum: invalid JSON Schema: numbers must be finite"}},
		{name: "input schema bad utf-8", edit: func(c *contractualv1.Contract) {
			c.Tools[0].InputSchema.Fields["properties"].GetStructValue().Fields["city"].GetStructValue().Fields["pattern"] = structpb.NewStringValue("\xff")
		}, want: []string{"tools[0].input_schema.properties.city.pattern: invalid JSON Schema: strings must be valid UTF-8"}},
		{name: "input schema too large", edit: func(c *contractualv1.Contract) {
			props := c.Tools[0].InputSchema.Fields["properties"].GetStructValue().Fields
			for i := range maxSchemaValues / 2 {
				props[fmt.Sprint("p", i)] = structpb.NewStructValue(mustStruct(map[string]any{"type": "string"}))
			}
		}, want: []string{"tools[0].input_schema: invalid JSON Schema: has more than 4096 values"}},
		{name: "input schema too deep", edit: func(c *contractualv1.Contract) {
			v := structpb.NewStringValue("x")
			for range maxJSONDepth {
				v = structpb.NewListValue(&structpb.ListValue{Values: []*structpb.Value{v}})
			}
			c.Tools[0].InputSchema.Fields["x"] = v
		}, want: []string{"tools[0].input_schema.x" + strings.Repeat("[0]", maxJSONDepth) + ": invalid JSON Schema: nested more than 64 levels deep"}},
		{name: "output schema optional", edit: func(c *contractualv1.Contract) { c.Tools[0].OutputSchema = nil }},
		{name: "input format json", edit: func(c *contractualv1.Contract) { c.Tools[0].InputFormat = contractualv1.InputFormat_INPUT_FORMAT_JSON }},
		{name: "input format string", edit: func(c *contractualv1.Contract) {
			c.Tools[0].InputFormat = contractualv1.InputFormat_INPUT_FORMAT_STRING
			c.Tools[0].InputSchema = mustStruct(map[string]any{"type": "string", "maxLength": 100})
		}},
		{name: "input format bytes", edit: func(c *contractualv1.Contract) {
			c.Tools[0].InputFormat = contractualv1.InputFormat_INPUT_FORMAT_BYTES
			c.Tools[0].InputSchema = mustStruct(map[string]any{"type": "string"})
		}},
		{name: "input format string with an object schema", edit: func(c *contractualv1.Contract) {
			c.Tools[0].InputFormat = contractualv1.InputFormat_INPUT_FORMAT_STRING
		}, want: []string{`tools[0].input_schema.type: must be "string": with input_format string, the input is a JSON string whose text the module gets`}},
		{name: "input format json with a string schema", edit: func(c *contractualv1.Contract) {
			c.Tools[0].InputSchema = mustStruct(map[string]any{"type": "string"})
		}, want: []string{`tools[0].input_schema.type: must be "object": a tool's JSON input is an object of named arguments (use input_format string or bytes for raw input)`}},
		{name: "input format unknown", edit: func(c *contractualv1.Contract) { c.Tools[0].InputFormat = 9 },
			want: []string{"tools[0].input_format: unknown value 9: want json, string or bytes"}},
		{name: "output schema any type", edit: func(c *contractualv1.Contract) {
			c.Tools[0].OutputSchema = mustStruct(map[string]any{"type": "array"})
		}},
		{name: "output schema bad", edit: func(c *contractualv1.Contract) {
			c.Tools[0].OutputSchema = mustStruct(map[string]any{"type": "text"})
		}, want: []string{
			"tools[0].output_schema.type: invalid JSON Schema: value must be one of 'array', 'boolean', 'integer', 'null', 'number', 'object', 'string'",
			"tools[0].output_schema.type: invalid JSON Schema: got string, want array",
		}},

		// Egress rules.
		{name: "no capabilities", edit: func(c *contractualv1.Contract) { c.Capabilities = nil; c.Limits.HttpRequests = 0 }},
		{name: "scheme missing", edit: func(c *contractualv1.Contract) { c.Capabilities.Http[0].Scheme = "" },
			want: []string{`capabilities.http[0].scheme: must be "https" or "http", got ""`}},
		{name: "scheme uppercase", edit: func(c *contractualv1.Contract) { c.Capabilities.Http[0].Scheme = "HTTPS" }},
		{name: "scheme ws", edit: func(c *contractualv1.Contract) { c.Capabilities.Http[0].Scheme = "wss" },
			want: []string{`capabilities.http[0].scheme: must be "https" or "http", got "wss"`}},
		{name: "port", edit: func(c *contractualv1.Contract) { c.Capabilities.Http[0].Port = 8443 }},
		{name: "port too big", edit: func(c *contractualv1.Contract) { c.Capabilities.Http[0].Port = 65536 },
			want: []string{"capabilities.http[0].port: 65536 is not a TCP port (1..65535, or 0 for the scheme's default)"}},
		{name: "methods missing", edit: func(c *contractualv1.Contract) { c.Capabilities.Http[0].Methods = nil },
			want: []string{"capabilities.http[0].methods: at least one method is required, e.g. [GET]: no method is allowed by default"}},
		{name: "methods any case, repeated", edit: func(c *contractualv1.Contract) {
			c.Capabilities.Http[0].Methods = []string{"get", "Post", "GET", "delete", "PUT", "PATCH", "HEAD", "OPTIONS"}
		}},
		{name: "method unknown", edit: func(c *contractualv1.Contract) { c.Capabilities.Http[0].Methods = []string{"GET", "CONNECT", "*"} },
			want: []string{
				`capabilities.http[0].methods[1]: "CONNECT" is not one of DELETE, GET, HEAD, OPTIONS, PATCH, POST, PUT`,
				`capabilities.http[0].methods[2]: "*" is not one of DELETE, GET, HEAD, OPTIONS, PATCH, POST, PUT`,
			}},
		{name: "too many rules", edit: func(c *contractualv1.Contract) {
			for i := range maxRules {
				c.Capabilities.Http = append(c.Capabilities.Http, rule(fmt.Sprintf("h%d.example.com", i)))
			}
		}, want: []string{"capabilities.http: has 257 rules; the limit is 256"}},
		{name: "identical rules", edit: func(c *contractualv1.Contract) {
			c.Capabilities.Http = rules{rule("a.example.com"), rule("b.example.com"), rule("a.example.com")}
		}, want: []string{"capabilities.http[2]: same scheme, host, port and path_prefix as capabilities.http[0]: merge the two rules"}},
		{name: "identical rules once normalized", edit: func(c *contractualv1.Contract) {
			r := rule("A.example.com")
			r.Port, r.PathPrefix, r.Scheme = 443, "/", "HTTPS"
			c.Capabilities.Http = rules{rule("a.example.com"), r}
		}, want: []string{"capabilities.http[1]: same scheme, host, port and path_prefix as capabilities.http[0]: merge the two rules"}},
		{name: "overlapping rules", edit: func(c *contractualv1.Contract) {
			r := rule("a.example.com")
			r.PathPrefix = "/v1/"
			c.Capabilities.Http = rules{rule("a.example.com"), r, rule("*.example.com")}
		}},

		// Secrets.
		{name: "secret over http", edit: func(c *contractualv1.Contract) { c.Capabilities.Http[0].Scheme = "http" },
			want: []string{"capabilities.http[0].secrets: secrets are sent only over https; this rule's scheme is http"}},
		{name: "secret name missing", edit: func(c *contractualv1.Contract) { c.Capabilities.Http[0].Secrets[0].Name = "" },
			want: []string{"capabilities.http[0].secrets[0].name: required"}},
		{name: "secret name lowercase", edit: func(c *contractualv1.Contract) { c.Capabilities.Http[0].Secrets[0].Name = "key" },
			want: []string{`capabilities.http[0].secrets[0].name: "key" is not a secret name: an uppercase letter, then uppercase letters, digits or _, at most 64`}},
		{name: "secret name 64", edit: func(c *contractualv1.Contract) {
			c.Capabilities.Http[0].Secrets[0].Name = "K" + strings.Repeat("_", 63)
		}},
		{name: "secret name 65", edit: func(c *contractualv1.Contract) {
			c.Capabilities.Http[0].Secrets[0].Name = "K" + strings.Repeat("_", 64)
		},
			want: []string{`capabilities.http[0].secrets[0].name: "K` + strings.Repeat("_", 64) + `" is not a secret name: an uppercase letter, then uppercase letters, digits or _, at most 64`}},
		{name: "secret header missing", edit: func(c *contractualv1.Contract) { c.Capabilities.Http[0].Secrets[0].Header = "" },
			want: []string{"capabilities.http[0].secrets[0].header: required"}},
		{name: "secret header lowercase", edit: func(c *contractualv1.Contract) { c.Capabilities.Http[0].Secrets[0].Header = "x-api-key" }},
		{name: "secret header cookie", edit: func(c *contractualv1.Contract) { c.Capabilities.Http[0].Secrets[0].Header = "Cookie" }},
		{name: "secret header with colon", edit: func(c *contractualv1.Contract) { c.Capabilities.Http[0].Secrets[0].Header = "Authorization:" },
			want: []string{`capabilities.http[0].secrets[0].header: "Authorization:" is not an HTTP header name`}},
		{name: "secret header forbidden", edit: func(c *contractualv1.Contract) { c.Capabilities.Http[0].Secrets[0].Header = "transfer-encoding" },
			want: []string{"capabilities.http[0].secrets[0].header: Transfer-Encoding is managed by the egress proxy and cannot carry a secret"}},
		{name: "secret header accept-encoding", edit: func(c *contractualv1.Contract) { c.Capabilities.Http[0].Secrets[0].Header = "accept-encoding" },
			want: []string{"capabilities.http[0].secrets[0].header: Accept-Encoding is managed by the egress proxy and cannot carry a secret"}},
		{name: "secret header proxy", edit: func(c *contractualv1.Contract) { c.Capabilities.Http[0].Secrets[0].Header = "Proxy-Authorization" },
			want: []string{"capabilities.http[0].secrets[0].header: Proxy-Authorization is managed by the egress proxy and cannot carry a secret"}},
		{name: "secret header twice", edit: func(c *contractualv1.Contract) {
			c.Capabilities.Http[0].Secrets = append(c.Capabilities.Http[0].Secrets,
				&contractualv1.SecretInjection{Name: "OTHER", Header: "authorization"})
		}, want: []string{"capabilities.http[0].secrets[1].header: Authorization is already set by secrets[0]"}},
		{name: "same secret in two headers", edit: func(c *contractualv1.Contract) {
			c.Capabilities.Http[0].Secrets = append(c.Capabilities.Http[0].Secrets,
				&contractualv1.SecretInjection{Name: "OPENMETEO_KEY", Header: "X-Api-Key"})
		}},
		{name: "secret format default", edit: func(c *contractualv1.Contract) { c.Capabilities.Http[0].Secrets[0].Format = "" }},
		{name: "secret format without placeholder", edit: func(c *contractualv1.Contract) { c.Capabilities.Http[0].Secrets[0].Format = "Bearer {{ secret }}" },
			want: []string{`capabilities.http[0].secrets[0].format: must contain {{secret}} exactly once, e.g. "Bearer {{secret}}"`}},
		{name: "secret format placeholder twice", edit: func(c *contractualv1.Contract) { c.Capabilities.Http[0].Secrets[0].Format = "{{secret}}:{{secret}}" },
			want: []string{`capabilities.http[0].secrets[0].format: must contain {{secret}} exactly once, e.g. "Bearer {{secret}}"`}},
		{name: "secret format CRLF", edit: func(c *contractualv1.Contract) { c.Capabilities.Http[0].Secrets[0].Format = "{{secret}}\r\nX-Evil: 1" },
			want: []string{"capabilities.http[0].secrets[0].format: only printable ASCII is allowed in a header value"}},
		{name: "too many secrets", edit: func(c *contractualv1.Contract) {
			for i := range maxSecrets {
				c.Capabilities.Http[0].Secrets = append(c.Capabilities.Http[0].Secrets,
					&contractualv1.SecretInjection{Name: "K", Header: fmt.Sprintf("X-K%d", i)})
			}
		}, want: []string{"capabilities.http[0].secrets: has 17 secrets; the limit is 16"}},

		// Config.
		{name: "config keys", edit: func(c *contractualv1.Contract) {
			c.Capabilities.Config = map[string]string{"_a": "", "A.b-c_1": "x", "k" + strings.Repeat("x", 63): "y"}
		}},
		{name: "config key bad", edit: func(c *contractualv1.Contract) {
			c.Capabilities.Config = map[string]string{"b c": "", ".a": "x", "k" + strings.Repeat("x", 64): "y"}
		}, want: []string{
			`capabilities.config[".a"]: ".a" is not a config key: a letter or _, then letters, digits, _, . or -, at most 64`,
			`capabilities.config["b c"]: "b c" is not a config key: a letter or _, then letters, digits, _, . or -, at most 64`,
			`capabilities.config.k` + strings.Repeat("x", 64) + `: "k` + strings.Repeat("x", 64) + `" is not a config key: a letter or _, then letters, digits, _, . or -, at most 64`,
		}},
		{name: "config value 4 KiB", edit: func(c *contractualv1.Contract) { c.Capabilities.Config["pem"] = strings.Repeat("x", 4096) }},
		{name: "config value too long", edit: func(c *contractualv1.Contract) { c.Capabilities.Config["pem"] = strings.Repeat("x", 4097) },
			want: []string{"capabilities.config.pem: is 4097 bytes long; the limit is 4096"}},
		{name: "config value bad utf-8", edit: func(c *contractualv1.Contract) { c.Capabilities.Config["a"] = "\xc3" },
			want: []string{"capabilities.config.a: is not valid UTF-8"}},
		{name: "too many config entries", edit: func(c *contractualv1.Contract) {
			for i := range maxConfigEntries {
				c.Capabilities.Config[fmt.Sprintf("k%d", i)] = ""
			}
		}, want: []string{"capabilities.config: has 257 entries; the limit is 256"}},

		// Limits.
		{name: "no limits", edit: func(c *contractualv1.Contract) { c.Limits = nil }},
		{name: "limits at maximum", edit: func(c *contractualv1.Contract) {
			c.Limits = &contractualv1.Limits{MemoryMib: 4096, TimeoutMs: 300000, OutputBytes: 64 << 20, HttpRequests: 1000,
				HttpResponseBytes: 64 << 20, LogBytes: 1 << 20, StdioBytes: 1 << 20, HostCalls: 1000000}
		}},
		{name: "limits above maximum", edit: func(c *contractualv1.Contract) {
			c.Limits = &contractualv1.Limits{MemoryMib: 4097, TimeoutMs: 300001, OutputBytes: 64<<20 + 1, HttpRequests: 1001,
				HttpResponseBytes: 64<<20 + 1, LogBytes: 1<<20 + 1, StdioBytes: 1<<20 + 1, HostCalls: 1000001}
		}, want: []string{
			"limits.memory_mib: 4097 is above the maximum, 4096",
			"limits.timeout_ms: 300001 is above the maximum, 300000",
			"limits.output_bytes: 67108865 is above the maximum, 67108864 (64 MiB)",
			"limits.http_requests: 1001 is above the maximum, 1000",
			"limits.http_response_bytes: 67108865 is above the maximum, 67108864 (64 MiB)",
			"limits.log_bytes: 1048577 is above the maximum, 1048576 (1 MiB)",
			"limits.stdio_bytes: 1048577 is above the maximum, 1048576 (1 MiB)",
			"limits.host_calls: 1000001 is above the maximum, 1000000",
		}},
		{name: "limits without their capability", edit: func(c *contractualv1.Contract) {
			c.Capabilities = nil
			c.Limits = &contractualv1.Limits{HttpRequests: 1, LogBytes: 1, StdioBytes: 1}
		}, want: []string{
			"limits.http_requests: is set, but capabilities.http is not granted",
			"limits.log_bytes: is set, but capabilities.log is not granted",
			"limits.stdio_bytes: is set, but capabilities.wasi is not granted",
		}},

		// Unknown fields, e.g. from a newer client through the API.
		{name: "unknown field", edit: func(c *contractualv1.Contract) {
			c.Capabilities.Http[0].ProtoReflect().SetUnknown(protowire.AppendVarint(protowire.AppendTag(nil, 99, protowire.VarintType), 1))
		}, want: []string{"capabilities.http[0]: has fields this version of Contractual does not know"}},

		// Several problems are all reported, in field order.
		{name: "many problems", edit: func(c *contractualv1.Contract) {
			c.Name, c.Tools[0].Risk, c.Capabilities.Http[0].Host, c.Limits.MemoryMib = "", 0, "", 5000
		}, want: []string{
			"name: required",
			"tools[0].risk: required: low, medium or high",
			"capabilities.http[0].host: required",
			"limits.memory_mib: 5000 is above the maximum, 4096",
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := edited(weather(), tt.edit)
			if diff := diffLines(tt.want, problemsOf(t, Validate(c))); diff != "" {
				t.Errorf("problems mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

func TestValidateHost(t *testing.T) {
	tests := []struct {
		host string
		want string // empty: valid
	}{
		{"api.example.com", ""},
		{"API.Example.COM", ""},
		{"*.example.com", ""},
		{"xn--bcher-kva.example", ""},
		{"a-b.c-d.example", ""},
		{strings.Repeat("a", 63) + ".com", ""},
		{"", "required"},
		{"*", "a bare * would allow every host: name the domain, e.g. *.example.com"},
		{"*.com", `"*.com" would allow every host under a top-level domain: name a domain, e.g. *.example.com`},
		{"**.example.com", `"**.example.com": a wildcard must be the whole first label, as in *.example.com`},
		{"a*.example.com", `"a*.example.com": a wildcard must be the whole first label, as in *.example.com`},
		{"*.*.example.com", `"*.*.example.com": a wildcard must be the whole first label, as in *.example.com`},
		{"api.example.*", `"api.example.*": a wildcard must be the whole first label, as in *.example.com`},
		{"localhost", `"localhost": give a fully qualified name, e.g. api.example.com`},
		{"192.168.1.1", "IP addresses are not allowed: name the host by DNS name, so the approver sees where requests go"},
		{"[::1]", "IP addresses are not allowed: name the host by DNS name, so the approver sees where requests go"},
		{"::1", "IP addresses are not allowed: name the host by DNS name, so the approver sees where requests go"},
		{"1.2.3.999", `"1.2.3.999": a top-level domain is not numeric; IP addresses are not allowed`},
		{"api.example.com.", `"api.example.com.": leave out the trailing dot`},
		{"https://api.example.com", `"https://api.example.com": give the host name only; scheme, port and path have their own fields`},
		{"api.example.com/v1", `"api.example.com/v1": give the host name only; scheme, port and path have their own fields`},
		{"api.example.com:443", `"api.example.com:443": give the port in the port field`},
		{"-api.example.com", `"-api.example.com": "-api" is not a DNS label (letters, digits and inner dashes, at most 63)`},
		{"api..example.com", `"api..example.com": "" is not a DNS label (letters, digits and inner dashes, at most 63)`},
		{"api_v1.example.com", `"api_v1.example.com": "api_v1" is not a DNS label (letters, digits and inner dashes, at most 63)`},
		{strings.Repeat("a", 64) + ".com", `"` + strings.Repeat("a", 64) + `.com": "` + strings.Repeat("a", 64) + `" is not a DNS label (letters, digits and inner dashes, at most 63)`},
		{strings.Repeat("a.", 127) + "com", "is 257 characters long; DNS names have at most 253"},
		{"bücher.example", `"bücher.example": write international names in their ASCII (xn--) form`},
	}
	for _, tt := range tests {
		if got := checkHost(tt.host); got != tt.want {
			t.Errorf("checkHost(%q) = %q, want %q", tt.host, got, tt.want)
		}
	}
}

func TestValidatePathPrefix(t *testing.T) {
	tests := []struct {
		prefix string
		want   string // empty: valid
	}{
		{"", ""},
		{"/", ""},
		{"/v1/", ""},
		{"/v1", ""},
		{"/a/b~c/d:e@f/%20", ""},
		{"v1/", `"v1/": must start with /`},
		{"/v1/../admin", `"/v1/../admin": must not contain . or .. segments`},
		{"/./v1", `"/./v1": must not contain . or .. segments`},
		{"/v1/..", `"/v1/..": must not contain . or .. segments`},
		{"/v1//x", `"/v1//x": must not contain empty segments (//)`},
		{"/v1?key=1", `"/v1?key=1": a path prefix has no query or fragment`},
		{"/v1#top", `"/v1#top": a path prefix has no query or fragment`},
		{"/v 1", `"/v 1": only URL path characters are allowed (percent-encode the others)`},
		{"/%zz", `"/%zz": only URL path characters are allowed (percent-encode the others)`},
		{"/%2", `"/%2": only URL path characters are allowed (percent-encode the others)`},
		{"/" + strings.Repeat("a", 1024), "is 1025 bytes long; the limit is 1024"},
	}
	for _, tt := range tests {
		if got := checkPathPrefix(tt.prefix); got != tt.want {
			t.Errorf("checkPathPrefix(%q) = %q, want %q", tt.prefix, got, tt.want)
		}
	}
}

func TestValidateNil(t *testing.T) {
	if diff := diffLines([]string{"contract is missing"}, problemsOf(t, Validate(nil))); diff != "" {
		t.Error(diff)
	}
}

func TestValidationErrorIsInvalid(t *testing.T) {
	err := Validate(&contractualv1.Contract{})
	if !errs.Is(err, errs.Invalid) {
		t.Fatalf("kind = %v, want invalid", errs.KindOf(err))
	}
	var verr *ValidationError
	if !errors.As(err, &verr) {
		t.Fatal("not a *ValidationError")
	}
	if got := len(verr.Problems); got != 5 {
		t.Errorf("got %d problems, want 5 (module, name, version, publisher, tools): %v", got, err)
	}
	if !strings.HasPrefix(err.Error(), "invalid contract: 5 problems:\n\tmodule: required\n") {
		t.Errorf("error text: %q", err)
	}
}
