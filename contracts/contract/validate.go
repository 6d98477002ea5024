package contract

import (
	"fmt"
	"maps"
	"net"
	"net/textproto"
	"regexp"
	"slices"
	"strings"
	"unicode"
	"unicode/utf8"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/structpb"

	contractualv1 "github.com/contractual/contractual/contracts/gen/contractual/v1"
	"github.com/contractual/contractual/internal/secret"
)

// Bounds on the sizes of a contract's parts. They are generous for any real
// tool set and keep a contract small enough for a human to review.
const (
	maxTools          = 256
	maxRules          = 256
	maxSecrets        = 16
	maxConfigEntries  = 256
	maxConfigValue    = 4 << 10
	maxDescription    = 4 << 10
	maxPublisher      = 256
	maxVersion        = 64
	maxPathPrefix     = 1024
	maxSecretFormat   = 1024
	maxHostLength     = 253
	secretPlaceholder = "{{secret}}"
)

var (
	moduleRE    = regexp.MustCompile(`^sha256:[0-9a-f]{64}$`)
	nameRE      = regexp.MustCompile(`^[a-z][a-z0-9-]{0,62}$`)
	versionRE   = regexp.MustCompile(`^v?[0-9]+(\.[0-9]+){0,2}(-[0-9A-Za-z.-]+)?(\+[0-9A-Za-z.-]+)?$`)
	exportRE    = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]{0,63}$`)
	configKeyRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_.-]{0,63}$`)
	// tokenRE is an HTTP token (RFC 9110, section 5.6.2), bounded.
	tokenRE = regexp.MustCompile("^[!#$%&'*+\\-.^_`|~0-9A-Za-z]{1,64}$")
	// dnsLabelRE is one lowercase DNS label (RFC 1123).
	dnsLabelRE = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)
	// pathCharsRE allows RFC 3986 path characters; '%' is checked apart.
	pathCharsRE = regexp.MustCompile(`^[A-Za-z0-9\-._~!$&'()*+,;=:@/%]*$`)
)

// allowedMethods are the HTTP methods a rule may allow.
var allowedMethods = []string{"DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT"}

// forbiddenHeaders may not carry secrets: they frame or route the request,
// are hop-by-hop, or (Accept-Encoding) are set by the egress proxy so that
// it can decode and scan every response. Cookie is allowed, for APIs that
// authenticate with one.
var forbiddenHeaders = map[string]bool{
	"Accept-Encoding": true,
	"Connection":      true, "Content-Length": true, "Expect": true, "Host": true,
	"Keep-Alive": true, "Proxy-Authenticate": true, "Proxy-Authorization": true,
	"Proxy-Connection": true, "Te": true, "Trailer": true,
	"Transfer-Encoding": true, "Upgrade": true,
}

// Validate checks every rule of the contract format (see the field docs in
// contract.proto) and returns all the problems found, as an errs.Invalid
// error wrapping a *ValidationError, or nil. It accepts a contract before
// or after Normalize. To have problems placed in a file, use File.Validate.
func Validate(c *contractualv1.Contract) error {
	return invalid("", validate(c))
}

// validate returns the problems with c, in field order.
func validate(c *contractualv1.Contract) []Problem {
	var ps problems
	if c == nil {
		ps.addf("", "contract is missing")
		return ps
	}
	ps.header(c)
	ps.tools(c.GetTools())
	ps.capabilities(c.GetCapabilities())
	ps.limits(c.GetLimits(), c.GetCapabilities())
	ps.unknownFields(c.ProtoReflect(), "")
	if len(ps) == 0 {
		// Anything left that proto cannot encode (invalid UTF-8 in a JSON
		// value, say) would break Canonical; catch it here.
		if _, err := proto.Marshal(c); err != nil {
			ps.addf("", "cannot be encoded: %v", err)
		}
	}
	return ps
}

// header checks the fields that identify the contract.
func (ps *problems) header(c *contractualv1.Contract) {
	if ps.required("module", c.GetModule()) && !moduleRE.MatchString(c.GetModule()) {
		ps.addf("module", `must be the module's digest: "sha256:" and 64 lowercase hex digits`)
	}
	if ps.required("name", c.GetName()) && !nameRE.MatchString(c.GetName()) {
		ps.addf("name", "%q: use lowercase letters, digits and dashes, starting with a letter, at most 63", c.GetName())
	}
	if ps.required("version", c.GetVersion()) &&
		(len(c.GetVersion()) > maxVersion || !versionRE.MatchString(c.GetVersion())) {
		ps.addf("version", "%q is not a version like 1.2.3 or 2.0.0-rc.1", c.GetVersion())
	}
	if ps.required("publisher", c.GetPublisher()) {
		ps.text("publisher", c.GetPublisher(), maxPublisher, false)
	}
	ps.text("description", c.GetDescription(), maxDescription, true)
}

// required records a problem if s is empty and reports whether it is not.
func (ps *problems) required(path, s string) bool {
	if s == "" {
		ps.addf(path, "required")
		return false
	}
	return true
}

// text checks free text: valid UTF-8, at most max bytes, and no control
// characters (but newlines and tabs when multiline).
func (ps *problems) text(path, s string, max int, multiline bool) {
	switch {
	case !utf8.ValidString(s):
		ps.addf(path, "is not valid UTF-8")
	case len(s) > max:
		ps.addf(path, "is %d bytes long; the limit is %d", len(s), max)
	case strings.ContainsFunc(s, func(r rune) bool {
		return unicode.IsControl(r) && !(multiline && (r == '\n' || r == '\t'))
	}):
		ps.addf(path, "contains control characters")
	}
}

// tools checks the tool list.
func (ps *problems) tools(tools []*contractualv1.Tool) {
	switch {
	case len(tools) == 0:
		ps.addf("tools", "at least one tool is required")
	case len(tools) > maxTools:
		ps.addf("tools", "has %d tools; the limit is %d", len(tools), maxTools)
	}
	first := make(map[string]int)
	for i, t := range tools[:min(len(tools), maxTools)] {
		path := joinIndex("tools", i)
		if j, dup := first[t.GetExport()]; dup && t.GetExport() != "" {
			ps.addf(joinField(path, "export"), "%q is already the export of tools[%d]", t.GetExport(), j)
		} else {
			first[t.GetExport()] = i
		}
		ps.tool(t, path)
	}
}

// tool checks one tool.
func (ps *problems) tool(t *contractualv1.Tool, path string) {
	if ps.required(joinField(path, "export"), t.GetExport()) && !exportRE.MatchString(t.GetExport()) {
		ps.addf(joinField(path, "export"), "%q is not a function name: a letter or _, then letters, digits or _, at most 64", t.GetExport())
	}
	if ps.required(joinField(path, "description"), t.GetDescription()) {
		ps.text(joinField(path, "description"), t.GetDescription(), maxDescription, true)
	}
	ps.risk(t.GetRisk(), joinField(path, "risk"))
	format := t.GetInputFormat()
	if ed := format.Descriptor(); ed.Values().ByNumber(format.Number()) == nil {
		ps.addf(joinField(path, "input_format"), "unknown value %d: want %s", format, enumChoices(ed))
	}
	if t.GetInputSchema() == nil {
		ps.addf(joinField(path, "input_schema"), "required: the JSON Schema of the input, e.g. %s", schemaExample(format))
	} else {
		ps.schema(t.GetInputSchema(), joinField(path, "input_schema"), &format)
	}
	if t.GetOutputSchema() != nil {
		ps.schema(t.GetOutputSchema(), joinField(path, "output_schema"), nil)
	}
}

// risk checks a tool's risk class.
func (ps *problems) risk(r contractualv1.Risk, path string) {
	ed := r.Descriptor()
	switch {
	case r == contractualv1.Risk_RISK_UNSPECIFIED:
		ps.addf(path, "required: %s", enumChoices(ed))
	case ed.Values().ByNumber(r.Number()) == nil:
		ps.addf(path, "unknown value %d: want %s", r, enumChoices(ed))
	}
}

// schema checks a JSON Schema. An input schema (format is the tool's
// input format; nil for an output schema) must describe the JSON value that
// format takes: an object of named arguments, or a string.
func (ps *problems) schema(s *structpb.Struct, path string, format *contractualv1.InputFormat) {
	if format != nil {
		want := inputType(*format)
		if t := s.GetFields()["type"]; t.GetStringValue() != want {
			ps.addf(joinKey(path, "type"), "must be %q: %s", want, inputTypeWhy(*format))
		}
	}
	seen := make(map[Problem]bool)
	_, sps := compileSchema(s)
	for _, sp := range sps {
		p := Problem{Path: schemaPath(path, s, sp.loc), Msg: "invalid JSON Schema: " + sp.msg}
		if !seen[p] {
			seen[p] = true
			*ps = append(*ps, p)
		}
	}
}

// inputType is the JSON type of a call's input in format f.
func inputType(f contractualv1.InputFormat) string {
	if f == contractualv1.InputFormat_INPUT_FORMAT_STRING || f == contractualv1.InputFormat_INPUT_FORMAT_BYTES {
		return "string"
	}
	return "object"
}

// schemaExample is an example input schema for format f.
func schemaExample(f contractualv1.InputFormat) string {
	if inputType(f) == "string" {
		return "{type: string, maxLength: 65536}"
	}
	return "{type: object, properties: {...}}"
}

// inputTypeWhy explains inputType.
func inputTypeWhy(f contractualv1.InputFormat) string {
	switch f {
	case contractualv1.InputFormat_INPUT_FORMAT_STRING:
		return "with input_format string, the input is a JSON string whose text the module gets"
	case contractualv1.InputFormat_INPUT_FORMAT_BYTES:
		return "with input_format bytes, the input is a base64 JSON string whose bytes the module gets"
	}
	return "a tool's JSON input is an object of named arguments (use input_format string or bytes for raw input)"
}

// capabilities checks the grants.
func (ps *problems) capabilities(c *contractualv1.Capabilities) {
	const path = "capabilities"
	rules := c.GetHttp()
	if len(rules) > maxRules {
		ps.addf(joinField(path, "http"), "has %d rules; the limit is %d", len(rules), maxRules)
	}
	first := make(map[ruleID]int)
	for i, r := range rules[:min(len(rules), maxRules)] {
		rpath := joinIndex(joinField(path, "http"), i)
		ps.rule(r, rpath)
		id := identity(r)
		if j, dup := first[id]; dup {
			ps.addf(rpath, "same scheme, host, port and path_prefix as capabilities.http[%d]: merge the two rules", j)
			continue
		}
		first[id] = i
	}
	ps.config(c.GetConfig(), joinField(path, "config"))
}

// rule checks one egress rule.
func (ps *problems) rule(r *contractualv1.EgressRule, path string) {
	scheme := strings.ToLower(r.GetScheme())
	if scheme != "https" && scheme != "http" {
		ps.addf(joinField(path, "scheme"), `must be "https" or "http", got %q`, r.GetScheme())
	}
	if msg := checkHost(r.GetHost()); msg != "" {
		ps.addf(joinField(path, "host"), "%s", msg)
	}
	if r.GetPort() > 65535 {
		ps.addf(joinField(path, "port"), "%d is not a TCP port (1..65535, or 0 for the scheme's default)", r.GetPort())
	}
	if msg := checkPathPrefix(r.GetPathPrefix()); msg != "" {
		ps.addf(joinField(path, "path_prefix"), "%s", msg)
	}
	ps.methods(r.GetMethods(), joinField(path, "methods"))
	ps.secrets(r, joinField(path, "secrets"))
}

// checkHost returns what is wrong with an egress rule's host, or "".
func checkHost(host string) string {
	h := strings.ToLower(host)
	switch {
	case h == "":
		return "required"
	case net.ParseIP(strings.Trim(h, "[]")) != nil:
		return "IP addresses are not allowed: name the host by DNS name, so the approver sees where requests go"
	case h == "*" || h == "*.":
		return "a bare * would allow every host: name the domain, e.g. *.example.com"
	case strings.Contains(h, "://") || strings.Contains(h, "/"):
		return fmt.Sprintf("%q: give the host name only; scheme, port and path have their own fields", host)
	case strings.Contains(h, ":"):
		return fmt.Sprintf("%q: give the port in the port field", host)
	case strings.HasSuffix(h, "."):
		return fmt.Sprintf("%q: leave out the trailing dot", host)
	case len(h) > maxHostLength:
		return fmt.Sprintf("is %d characters long; DNS names have at most %d", len(h), maxHostLength)
	}
	labels := strings.Split(h, ".")
	wildcard := labels[0] == "*"
	if wildcard {
		labels = labels[1:]
	}
	for _, l := range labels {
		switch {
		case strings.Contains(l, "*"):
			return fmt.Sprintf("%q: a wildcard must be the whole first label, as in *.example.com", host)
		case strings.ContainsFunc(l, func(r rune) bool { return r > unicode.MaxASCII }):
			return fmt.Sprintf("%q: write international names in their ASCII (xn--) form", host)
		case !dnsLabelRE.MatchString(l):
			return fmt.Sprintf("%q: %q is not a DNS label (letters, digits and inner dashes, at most 63)", host, l)
		}
	}
	switch {
	case len(labels) < 2 && wildcard:
		return fmt.Sprintf("%q would allow every host under a top-level domain: name a domain, e.g. *.example.com", host)
	case len(labels) < 2:
		return fmt.Sprintf("%q: give a fully qualified name, e.g. api.example.com", host)
	case strings.Trim(labels[len(labels)-1], "0123456789") == "":
		return fmt.Sprintf("%q: a top-level domain is not numeric; IP addresses are not allowed", host)
	}
	return ""
}

// checkPathPrefix returns what is wrong with an egress rule's path prefix,
// or "".
func checkPathPrefix(p string) string {
	if p == "" {
		return ""
	}
	switch {
	case !strings.HasPrefix(p, "/"):
		return fmt.Sprintf("%q: must start with /", p)
	case len(p) > maxPathPrefix:
		return fmt.Sprintf("is %d bytes long; the limit is %d", len(p), maxPathPrefix)
	case strings.ContainsAny(p, "?#"):
		return fmt.Sprintf("%q: a path prefix has no query or fragment", p)
	case !pathCharsRE.MatchString(p) || badPercent(p):
		return fmt.Sprintf("%q: only URL path characters are allowed (percent-encode the others)", p)
	}
	for seg := range strings.SplitSeq(p[1:], "/") {
		if seg == "." || seg == ".." {
			return fmt.Sprintf("%q: must not contain . or .. segments", p)
		}
	}
	if strings.Contains(p, "//") {
		return fmt.Sprintf("%q: must not contain empty segments (//)", p)
	}
	return ""
}

// badPercent reports whether a '%' in p is not followed by two hex digits.
func badPercent(p string) bool {
	for i := range len(p) {
		if p[i] == '%' && (i+2 >= len(p) || !isHex(p[i+1]) || !isHex(p[i+2])) {
			return true
		}
	}
	return false
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

// methods checks a rule's methods; they are required because nothing is
// allowed by default.
func (ps *problems) methods(methods []string, path string) {
	if len(methods) == 0 {
		ps.addf(path, "at least one method is required, e.g. [GET]: no method is allowed by default")
	}
	for i, m := range methods {
		if !slices.Contains(allowedMethods, strings.ToUpper(m)) {
			ps.addf(joinIndex(path, i), "%q is not one of %s", m, strings.Join(allowedMethods, ", "))
		}
	}
}

// secrets checks a rule's secret injections.
func (ps *problems) secrets(r *contractualv1.EgressRule, path string) {
	secrets := r.GetSecrets()
	switch {
	case len(secrets) == 0:
		return
	case strings.ToLower(r.GetScheme()) == "http":
		ps.addf(path, "secrets are sent only over https; this rule's scheme is http")
	case len(secrets) > maxSecrets:
		ps.addf(path, "has %d secrets; the limit is %d", len(secrets), maxSecrets)
	}
	first := make(map[string]int)
	for i, s := range secrets {
		spath := joinIndex(path, i)
		ps.secret(s, spath)
		h := textproto.CanonicalMIMEHeaderKey(s.GetHeader())
		if j, dup := first[h]; dup && h != "" {
			ps.addf(joinField(spath, "header"), "%s is already set by secrets[%d]", h, j)
			continue
		}
		first[h] = i
	}
}

// secret checks one secret injection.
func (ps *problems) secret(s *contractualv1.SecretInjection, path string) {
	if ps.required(joinField(path, "name"), s.GetName()) && !secret.ValidName(s.GetName()) {
		ps.addf(joinField(path, "name"), "%q is not a secret name: an uppercase letter, then uppercase letters, digits or _, at most 64", s.GetName())
	}
	if h := s.GetHeader(); ps.required(joinField(path, "header"), h) {
		switch canon := textproto.CanonicalMIMEHeaderKey(h); {
		case !tokenRE.MatchString(h):
			ps.addf(joinField(path, "header"), "%q is not an HTTP header name", h)
		case forbiddenHeaders[canon]:
			ps.addf(joinField(path, "header"), "%s is managed by the egress proxy and cannot carry a secret", canon)
		}
	}
	if f := s.GetFormat(); f != "" {
		switch {
		case len(f) > maxSecretFormat:
			ps.addf(joinField(path, "format"), "is %d bytes long; the limit is %d", len(f), maxSecretFormat)
		case strings.ContainsFunc(f, func(r rune) bool { return (r < ' ' && r != '\t') || r > '~' }):
			ps.addf(joinField(path, "format"), "only printable ASCII is allowed in a header value")
		case strings.Count(f, secretPlaceholder) != 1:
			ps.addf(joinField(path, "format"), "must contain %s exactly once, e.g. \"Bearer %s\"", secretPlaceholder, secretPlaceholder)
		}
	}
}

// config checks the static configuration.
func (ps *problems) config(config map[string]string, path string) {
	if len(config) > maxConfigEntries {
		ps.addf(path, "has %d entries; the limit is %d", len(config), maxConfigEntries)
	}
	for _, k := range slices.Sorted(maps.Keys(config)) {
		kpath := joinKey(path, k)
		if !configKeyRE.MatchString(k) {
			ps.addf(kpath, "%q is not a config key: a letter or _, then letters, digits, _, . or -, at most 64", k)
		}
		switch v := config[k]; {
		case !utf8.ValidString(v):
			ps.addf(kpath, "is not valid UTF-8")
		case len(v) > maxConfigValue:
			ps.addf(kpath, "is %d bytes long; the limit is %d", len(v), maxConfigValue)
		}
	}
}

// unknownFields records a problem for every message under m that carries
// fields this version does not know (possible for contracts that came
// through the API): nobody could review what they grant.
func (ps *problems) unknownFields(m protoreflect.Message, path string) {
	if len(m.GetUnknown()) > 0 {
		ps.addf(path, "has fields this version of Contractual does not know")
	}
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		if fd.Message() == nil || fd.IsMap() {
			return true // Our only map, config, holds strings.
		}
		fpath := joinField(path, string(fd.Name()))
		if fd.IsList() {
			for i := range v.List().Len() {
				ps.unknownFields(v.List().Get(i).Message(), joinIndex(fpath, i))
			}
			return true
		}
		ps.unknownFields(v.Message(), fpath)
		return true
	})
}
