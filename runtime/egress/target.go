package egress

import (
	"net"
	"net/netip"
	"net/url"
	"strconv"
	"strings"

	"github.com/contractual/contractual/internal/errs"
)

// maxURLBytes bounds the URL a module may ask for.
const maxURLBytes = 8 << 10

// target is a checked request URL in canonical form.
type target struct {
	scheme string     // "http" or "https"
	host   string     // canonical host name or IP literal, without brackets
	addr   netip.Addr // valid when host is an IP literal
	port   uint16     // effective port
	path   string     // decoded path, for prefix matching
	u      *url.URL   // what is sent: canonical host, no userinfo, no fragment
}

// parseTarget checks raw and returns it in canonical form. It accepts only
// absolute http(s) URLs without userinfo whose host is a public IP literal
// or a DNS name and whose path cannot climb out of a prefix (see checkPath).
// The fragment is dropped.
func parseTarget(raw string) (*target, error) {
	if len(raw) > maxURLBytes {
		return nil, errs.E(errs.Invalid, "URL longer than %d bytes", maxURLBytes)
	}
	if strings.ContainsAny(raw, "\\ \t\r\n") {
		return nil, errs.E(errs.Invalid, "URL contains a backslash or white space")
	}
	u, err := url.Parse(raw)
	if err != nil {
		return nil, errs.E(errs.Invalid, "malformed URL")
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return nil, errs.E(errs.PermissionDenied, "scheme %.20q is not allowed: only http and https", u.Scheme)
	}
	if u.Opaque != "" || u.Host == "" {
		return nil, errs.E(errs.Invalid, "URL is not absolute")
	}
	if u.User != nil {
		return nil, errs.E(errs.PermissionDenied, "userinfo in URL is not allowed")
	}
	t := &target{scheme: u.Scheme}
	if err := t.setHost(u); err != nil {
		return nil, err
	}
	if err := checkPath(u); err != nil {
		return nil, err
	}
	t.path = u.Path
	if t.path == "" {
		t.path = "/"
	}
	t.u = &url.URL{Scheme: t.scheme, Host: t.hostPort(), Path: t.path, RawPath: u.RawPath, RawQuery: u.RawQuery}
	return t, nil
}

func (t *target) setHost(u *url.URL) error {
	h := u.Hostname()
	if strings.HasPrefix(u.Host, "[") && !strings.Contains(h, ":") {
		return errs.E(errs.Invalid, "bracketed host %.80q is not an IPv6 literal", h)
	}
	host, addr, err := canonicalHost(h)
	if err != nil {
		return err
	}
	t.host, t.addr = host, addr
	t.port = defaultPort(t.scheme)
	if p := u.Port(); p != "" {
		n, err := strconv.ParseUint(p, 10, 16)
		if err != nil || n == 0 {
			return errs.E(errs.Invalid, "bad port %.20q", p)
		}
		t.port = uint16(n)
	}
	return nil
}

// hostPort is the canonical authority: brackets around IPv6, and the port
// only when it is not the scheme's default.
func (t *target) hostPort() string {
	if t.port != defaultPort(t.scheme) {
		return net.JoinHostPort(t.host, strconv.Itoa(int(t.port)))
	}
	if t.addr.Is6() {
		return "[" + t.host + "]"
	}
	return t.host
}

func defaultPort(scheme string) uint16 {
	if scheme == "https" {
		return 443
	}
	return 80
}

// checkPath refuses paths that a server might resolve differently from the
// prefix check: dot segments ("." and "..", also with ";params" as some
// servers strip them), and percent-encoded '/', '\\', '.' or NUL, in the raw
// path or left over after one round of decoding (double encoding).
func checkPath(u *url.URL) error {
	for _, p := range []string{u.EscapedPath(), u.Path} {
		if hasEncodedSeparator(p) {
			return errs.E(errs.PermissionDenied, "path contains an encoded '/', '\\', '.' or NUL")
		}
	}
	for seg := range strings.SplitSeq(u.Path, "/") {
		seg, _, _ = strings.Cut(seg, ";")
		if seg == "." || seg == ".." {
			return errs.E(errs.PermissionDenied, "path contains a dot segment")
		}
	}
	return nil
}

func hasEncodedSeparator(p string) bool {
	p = strings.ToLower(p)
	for _, enc := range []string{"%2f", "%5c", "%2e", "%00"} {
		if strings.Contains(p, enc) {
			return true
		}
	}
	return false
}

// redact renders u for records and errors: scheme://host[:port]/path with
// query keys kept and their values removed; never userinfo or fragment.
func redact(u *url.URL) string {
	var b strings.Builder
	b.WriteString(u.Scheme + "://" + u.Host + u.EscapedPath())
	if u.RawQuery == "" {
		return b.String()
	}
	for i, kv := range strings.Split(u.RawQuery, "&") {
		k, _, _ := strings.Cut(kv, "=")
		if i == 0 {
			b.WriteByte('?')
		} else {
			b.WriteByte('&')
		}
		b.WriteString(k + "=")
	}
	return b.String()
}

// redactRaw renders a URL that failed the checks, as far as it can be
// parsed; the result never holds userinfo, query values or a fragment.
func redactRaw(raw string) string {
	u, err := url.Parse(raw)
	if err != nil || len(raw) > maxURLBytes {
		return "(malformed URL)"
	}
	if u.Opaque != "" {
		return u.Scheme + ":(opaque)"
	}
	return redact(u)
}
