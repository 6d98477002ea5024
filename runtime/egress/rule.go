package egress

import (
	"fmt"
	"net/http"
	"net/netip"
	"slices"
	"strings"

	"github.com/contractual/contractual/internal/errs"
)

// Rule allows one family of requests. A request matches a rule when every
// field matches; a session allows a request when any of its rules does.
type Rule struct {
	// Scheme is "http" or "https".
	Scheme string
	// Host is a DNS name, matched exactly (case-insensitive, a trailing dot
	// ignored), or "*.example.com", which matches any name with one or more
	// labels in front of example.com (a.example.com, a.b.example.com) but
	// not example.com itself. Host may also be a public IP literal (IPv6
	// without brackets), which matches only a URL written with that same
	// address; a name or a wildcard never matches an IP literal.
	Host string
	// Port is the TCP port; 0 means the scheme's default (80 or 443). A port
	// written in the URL must equal it.
	Port uint16
	// PathPrefix limits the decoded URL path. It matches at segment
	// boundaries: "/v1" matches "/v1" and "/v1/x" but not "/v1x"; "/v1/"
	// matches "/v1/" and "/v1/x" but not "/v1". Empty allows every path.
	PathPrefix string
	// Methods lists the allowed HTTP methods (any case). Empty means GET and
	// HEAD only.
	Methods []string
	// Secrets are injected into every request this rule allows. A rule with
	// secrets must use https.
	Secrets []SecretSpec
}

// SecretSpec says how one secret meets a request: the header Header is set to
// Format with "{{secret}}" replaced by the secret's value.
type SecretSpec struct {
	// Name names the secret for the SecretSource.
	Name string
	// Header is the request header to set, e.g. "Authorization".
	Header string
	// Format holds "{{secret}}" exactly once, e.g. "Bearer {{secret}}".
	// Empty means "{{secret}}".
	Format string
}

// Placeholder is the text in SecretSpec.Format that the secret replaces.
const Placeholder = "{{secret}}"

// allMethods are the methods a module may use at all.
var allMethods = []string{"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"}

// compiled is a validated rule in the form the matcher uses.
type compiled struct {
	Rule
	suffix  string     // ".example.com" for a wildcard rule
	addr    netip.Addr // for an IP-literal rule
	port    uint16     // effective port
	methods []string   // upper case
}

// compile validates r and normalises it.
func compile(r Rule) (compiled, error) {
	c := compiled{Rule: r}
	if r.Scheme != "http" && r.Scheme != "https" {
		return c, fmt.Errorf("scheme %q: only http and https", r.Scheme)
	}
	if err := c.compileHost(); err != nil {
		return c, err
	}
	c.port = r.Port
	if c.port == 0 {
		c.port = defaultPort(r.Scheme)
	}
	if r.PathPrefix != "" && !strings.HasPrefix(r.PathPrefix, "/") {
		return c, fmt.Errorf("path prefix %q must start with /", r.PathPrefix)
	}
	if err := c.compileMethods(); err != nil {
		return c, err
	}
	return c, c.checkSecrets()
}

func (c *compiled) compileHost() error {
	pattern, wild := strings.CutPrefix(c.Host, "*.")
	host, addr, err := canonicalHost(pattern)
	if err != nil {
		return fmt.Errorf("host %q: %w", c.Host, err)
	}
	if wild && addr.IsValid() {
		return fmt.Errorf("host %q: a wildcard cannot cover an IP literal", c.Host)
	}
	c.Host, c.addr = host, addr
	if wild {
		c.suffix = "." + host
	}
	return nil
}

func (c *compiled) compileMethods() error {
	c.methods = []string{"GET", "HEAD"}
	if len(c.Methods) > 0 {
		c.methods = nil
	}
	for _, m := range c.Methods {
		up := strings.ToUpper(m)
		if !slices.Contains(allMethods, up) {
			return fmt.Errorf("method %q not supported", m)
		}
		c.methods = append(c.methods, up)
	}
	return nil
}

func (c *compiled) checkSecrets() error {
	seen := map[string]bool{}
	for i, s := range c.Secrets {
		h := http.CanonicalHeaderKey(s.Header)
		switch {
		case c.Scheme != "https":
			return fmt.Errorf("secret %q: secrets are only sent over https", s.Name)
		case s.Name == "":
			return fmt.Errorf("secret %d has no name", i)
		case !validToken(s.Header) || forbiddenHeaders[h] != "":
			return fmt.Errorf("secret %q: header %q cannot carry a secret", s.Name, s.Header)
		case seen[h]:
			return fmt.Errorf("secret %q: header %s injected twice", s.Name, h)
		case s.Format != "" && (strings.Count(s.Format, Placeholder) != 1 || !validValue(s.Format)):
			return fmt.Errorf("secret %q: format must hold %s exactly once and no control characters", s.Name, Placeholder)
		}
		seen[h] = true
		c.Secrets[i].Header = h
	}
	return nil
}

// Match stages, in the order they are checked; a higher stage means a rule
// came closer to allowing the request, and its reason is the one reported.
const (
	stageHost = iota
	stageScheme
	stagePort
	stagePath
	stageMethod
	stageAllowed
)

// check returns how far t and method get through the rule, and why they stop.
func (c *compiled) check(method string, t *target) (int, string) {
	switch {
	case !c.hostMatches(t):
		return stageHost, "host " + t.host + " not allowed"
	case t.scheme != c.Scheme:
		return stageScheme, "scheme " + t.scheme + " not allowed for " + t.host
	case t.port != c.port:
		return stagePort, fmt.Sprintf("port %d not allowed for %s", t.port, t.host)
	case !prefixMatches(c.PathPrefix, t.path):
		return stagePath, "path " + t.u.EscapedPath() + " not allowed for " + t.host
	case !slices.Contains(c.methods, method):
		return stageMethod, "method " + method + " not allowed for " + t.u.EscapedPath()
	}
	return stageAllowed, ""
}

func (c *compiled) hostMatches(t *target) bool {
	switch {
	case c.addr.IsValid() || t.addr.IsValid():
		return c.addr == t.addr
	case c.suffix != "":
		return strings.HasSuffix(t.host, c.suffix)
	}
	return t.host == c.Host
}

func prefixMatches(prefix, path string) bool {
	if prefix == "" || path == prefix {
		return true
	}
	if !strings.HasPrefix(path, prefix) {
		return false
	}
	return strings.HasSuffix(prefix, "/") || path[len(prefix)] == '/'
}

// match returns the index of the first rule that allows the request, or -1
// and the reason given by the rule that came closest.
func match(rules []compiled, method string, t *target) (int, string) {
	best, reason := -1, "no egress rules"
	for i := range rules {
		stage, why := rules[i].check(method, t)
		if stage == stageAllowed {
			return i, ""
		}
		if stage > best {
			best, reason = stage, why
		}
	}
	return -1, reason
}

// compileAll validates every rule.
func compileAll(rules []Rule) ([]compiled, error) {
	out := make([]compiled, len(rules))
	for i, r := range rules {
		r.Methods = slices.Clone(r.Methods)
		r.Secrets = slices.Clone(r.Secrets)
		c, err := compile(r)
		if err != nil {
			return nil, errs.E(errs.Invalid, "egress rule %d: %v", i, err)
		}
		out[i] = c
	}
	return out, nil
}
