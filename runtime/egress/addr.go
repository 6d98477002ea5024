package egress

import (
	"fmt"
	"net/netip"
)

// special is an address range that egress never dials, with the reason given
// when it is refused.
type special struct {
	prefix netip.Prefix
	why    string
}

func ranges(pairs ...string) []special {
	out := make([]special, 0, len(pairs)/2)
	for i := 0; i < len(pairs); i += 2 {
		out = append(out, special{netip.MustParsePrefix(pairs[i]), pairs[i+1]})
	}
	return out
}

// v4Denied lists every IPv4 range that is not publicly routable (RFC 6890 and
// friends). Anything else is public.
var v4Denied = ranges(
	"0.0.0.0/8", "unspecified (0.0.0.0/8)",
	"10.0.0.0/8", "private (10.0.0.0/8)",
	"100.64.0.0/10", "carrier-grade NAT (100.64.0.0/10)",
	"127.0.0.0/8", "loopback (127.0.0.0/8)",
	"169.254.0.0/16", "link-local or cloud metadata (169.254.0.0/16)",
	"172.16.0.0/12", "private (172.16.0.0/12)",
	"192.0.0.0/24", "IETF protocol assignments (192.0.0.0/24)",
	"192.0.2.0/24", "documentation (192.0.2.0/24)",
	"192.88.99.0/24", "6to4 relay anycast (192.88.99.0/24)",
	"192.168.0.0/16", "private (192.168.0.0/16)",
	"198.18.0.0/15", "benchmarking (198.18.0.0/15)",
	"198.51.100.0/24", "documentation (198.51.100.0/24)",
	"203.0.113.0/24", "documentation (203.0.113.0/24)",
	"224.0.0.0/4", "multicast (224.0.0.0/4)",
	"240.0.0.0/4", "reserved or broadcast (240.0.0.0/4)",
)

// v6Denied lists IPv6 ranges with a specific reason. The order matters: the
// first match names the reason. Addresses outside 2000::/3 (global unicast)
// are refused even when they are not listed here.
var v6Denied = ranges(
	"::/128", "unspecified (::)",
	"::1/128", "loopback (::1)",
	"::/96", "IPv4-compatible IPv6 (::/96)",
	"64:ff9b:1::/48", "local-use NAT64 (64:ff9b:1::/48)",
	"100::/64", "discard-only (100::/64)",
	"fc00::/7", "unique local (fc00::/7)",
	"fe80::/10", "link-local (fe80::/10)",
	"fec0::/10", "site-local (fec0::/10)",
	"ff00::/8", "multicast (ff00::/8)",
	"2001::/32", "Teredo (2001::/32)",
	"2001:db8::/32", "documentation (2001:db8::/32)",
	"2001::/23", "IETF protocol assignments (2001::/23)",
	"2002::/16", "6to4 (2002::/16)",
	"3fff::/20", "documentation (3fff::/20)",
)

var (
	globalUnicast = netip.MustParsePrefix("2000::/3")
	nat64         = netip.MustParsePrefix("64:ff9b::/96")
)

// nonPublic returns why a may not be dialled, or "" if it is a public address.
//
// IPv4-mapped addresses (::ffff:a.b.c.d) are always refused, whatever they
// embed: callers that get them from a resolver unmap them first. Well-known
// NAT64 addresses (64:ff9b::/96) are judged by the IPv4 address they embed,
// so that IPv6-only hosts behind DNS64 still work; 6to4 and Teredo are
// refused outright.
func nonPublic(a netip.Addr) string {
	switch {
	case !a.IsValid():
		return "invalid address"
	case a.Zone() != "":
		return "scoped address with a zone"
	case a.Is4():
		return lookup(v4Denied, a)
	case a.Is4In6():
		if why := lookup(v4Denied, a.Unmap()); why != "" {
			return fmt.Sprintf("IPv4-mapped IPv6 embedding %s: %s", a.Unmap(), why)
		}
		return "IPv4-mapped IPv6 (::ffff:0:0/96)"
	case nat64.Contains(a):
		return nat64Reason(a)
	}
	if why := lookup(v6Denied, a); why != "" {
		return why
	}
	if !globalUnicast.Contains(a) {
		return "not global unicast (outside 2000::/3)"
	}
	return ""
}

func nat64Reason(a netip.Addr) string {
	b := a.As16()
	v4 := netip.AddrFrom4([4]byte{b[12], b[13], b[14], b[15]})
	if why := lookup(v4Denied, v4); why != "" {
		return fmt.Sprintf("NAT64 embedding %s: %s", v4, why)
	}
	return ""
}

func lookup(list []special, a netip.Addr) string {
	for _, s := range list {
		if s.prefix.Contains(a) {
			return s.why
		}
	}
	return ""
}
