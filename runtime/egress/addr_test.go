package egress

import (
	"net/netip"
	"strings"
	"testing"
)

func TestNonPublic(t *testing.T) {
	tests := []struct {
		addr string
		want string // substring of the reason; "" means public
	}{
		{"8.8.8.8", ""},
		{"93.184.215.14", ""},
		{"1.1.1.1", ""},
		{"2606:4700:4700::1111", ""},
		{"2001:4860:4860::8888", ""},
		{"64:ff9b::808:808", ""}, // NAT64 of 8.8.8.8

		{"127.0.0.1", "loopback"},
		{"127.255.255.254", "loopback"},
		{"0.0.0.0", "unspecified"},
		{"0.1.2.3", "unspecified"},
		{"10.1.2.3", "private"},
		{"172.16.0.1", "private"},
		{"172.31.255.255", "private"},
		{"192.168.1.1", "private"},
		{"169.254.169.254", "metadata"},
		{"169.254.0.1", "link-local"},
		{"100.64.0.1", "carrier-grade NAT"},
		{"100.127.255.255", "carrier-grade NAT"},
		{"192.0.0.8", "IETF"},
		{"192.0.2.1", "documentation"},
		{"198.18.0.1", "benchmarking"},
		{"198.19.255.255", "benchmarking"},
		{"198.51.100.7", "documentation"},
		{"203.0.113.9", "documentation"},
		{"224.0.0.1", "multicast"},
		{"239.255.255.250", "multicast"},
		{"240.0.0.1", "reserved"},
		{"255.255.255.255", "broadcast"},

		{"::", "unspecified"},
		{"::1", "loopback"},
		{"fe80::1", "link-local"},
		{"fe80::1%eth0", "zone"},
		{"fc00::1", "unique local"},
		{"fd12:3456::1", "unique local"},
		{"ff02::1", "multicast"},
		{"fec0::1", "site-local"},
		{"::ffff:127.0.0.1", "IPv4-mapped IPv6 embedding 127.0.0.1"},
		{"::ffff:7f00:1", "IPv4-mapped IPv6 embedding 127.0.0.1"},
		{"::ffff:169.254.169.254", "metadata"},
		{"::ffff:8.8.8.8", "IPv4-mapped"}, // refused even when public
		{"::127.0.0.1", "IPv4-compatible"},
		{"::8.8.8.8", "IPv4-compatible"},
		{"64:ff9b::7f00:1", "NAT64 embedding 127.0.0.1"},
		{"64:ff9b::a9fe:a9fe", "NAT64 embedding 169.254.169.254"},
		{"64:ff9b:1::808:808", "local-use NAT64"},
		{"2002:7f00:1::1", "6to4"},
		{"2002:808:808::1", "6to4"},
		{"2001:0:4136:e378:8000:63bf:3fff:fdd2", "Teredo"},
		{"2001:db8::1", "documentation"},
		{"2001:2::1", "IETF"},
		{"3fff::1", "documentation"},
		{"100::1", "discard"},
		{"4000::1", "not global unicast"},
	}
	for _, tt := range tests {
		t.Run(tt.addr, func(t *testing.T) {
			got := nonPublic(netip.MustParseAddr(tt.addr))
			if tt.want == "" && got != "" {
				t.Fatalf("nonPublic(%s) = %q, want public", tt.addr, got)
			}
			if tt.want != "" && !strings.Contains(got, tt.want) {
				t.Fatalf("nonPublic(%s) = %q, want it to contain %q", tt.addr, got, tt.want)
			}
		})
	}
}

func TestNonPublicInvalid(t *testing.T) {
	if nonPublic(netip.Addr{}) == "" {
		t.Fatal("the zero Addr must not be public")
	}
}
