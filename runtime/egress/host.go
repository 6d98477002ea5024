package egress

import (
	"net/netip"
	"strings"

	"github.com/contractual/contractual/internal/errs"
)

// deniedNames are host names, and suffixes of host names, that only ever
// name something inside the host's own network: loopback, cloud metadata,
// mDNS, reverse DNS and the TLDs that home and corporate networks use. The
// address check at dial time is the real guard; this list refuses such names
// before anything is resolved, with a clearer reason.
var deniedNames = []string{
	"localhost", "localdomain", "local", "internal", "arpa", "home.arpa",
	"lan", "home", "corp", "intranet", "private",
	"metadata.google.internal", "metadata.goog", "metadata",
	"instance-data", "instance-data.ec2.internal",
}

// canonicalHost checks a host taken from a URL, a rule or a dial address and
// returns its canonical text: a lower-case DNS name without a trailing dot,
// or the canonical form of an IP literal together with the address itself.
// An IP literal must be public. A name that a libc or a browser would read as
// an IPv4 address in another notation (2130706433, 0x7f000001, 0177.0.0.1,
// 127.1) is refused: only the canonical dotted quad is accepted as an IPv4
// literal.
func canonicalHost(h string) (string, netip.Addr, error) {
	if a, err := netip.ParseAddr(h); err == nil {
		return literal(a)
	}
	if strings.ContainsAny(h, ":%[]") {
		return "", netip.Addr{}, errs.E(errs.Invalid, "host %.80q is not a valid IP literal", h)
	}
	name := strings.ToLower(strings.TrimSuffix(h, "."))
	if endsInNumber(name) {
		return "", netip.Addr{}, errs.E(errs.PermissionDenied, "host %.80q: non-canonical IP notation", h)
	}
	if err := checkName(name); err != nil {
		return "", netip.Addr{}, err
	}
	return name, netip.Addr{}, nil
}

func literal(a netip.Addr) (string, netip.Addr, error) {
	if why := nonPublic(a); why != "" {
		return "", netip.Addr{}, errs.E(errs.PermissionDenied, "address %s is not public: %s", a, why)
	}
	return a.String(), a, nil
}

// endsInNumber reports whether the last label of name is a number in any
// notation that inet_aton or the WHATWG URL parser accepts (decimal, octal
// with a leading 0, hex with 0x), which makes the whole name an IPv4 address
// to them.
func endsInNumber(name string) bool {
	last := name[strings.LastIndexByte(name, '.')+1:]
	if last == "" {
		return false
	}
	if hex, ok := strings.CutPrefix(last, "0x"); ok {
		return strings.Trim(hex, "0123456789abcdef") == ""
	}
	return strings.Trim(last, "0123456789") == ""
}

// checkName checks the syntax of a lower-case DNS name (LDH labels plus "_",
// at least two labels, 253 bytes at most; IDNs must be in punycode) and
// refuses names that only exist inside a private network.
func checkName(name string) error {
	if name == "" || len(name) > 253 {
		return errs.E(errs.Invalid, "host name %.80q has a bad length", name)
	}
	labels := strings.Split(name, ".")
	for _, l := range labels {
		if !validLabel(l) {
			return errs.E(errs.Invalid, "host name %.80q is not a valid DNS name", name)
		}
	}
	if len(labels) < 2 {
		return errs.E(errs.PermissionDenied, "host name %q has a single label (intranet name)", name)
	}
	for _, d := range deniedNames {
		if name == d || strings.HasSuffix(name, "."+d) {
			return errs.E(errs.PermissionDenied, "host name %q is internal (%s)", name, d)
		}
	}
	return nil
}

func validLabel(l string) bool {
	if l == "" || len(l) > 63 || l[0] == '-' || l[len(l)-1] == '-' {
		return false
	}
	for i := 0; i < len(l); i++ {
		c := l[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}
