package egress

import (
	"strings"
	"testing"

	"github.com/contractual/contractual/internal/errs"
)

func TestCanonicalHost(t *testing.T) {
	tests := []struct {
		in, want string
		kind     errs.Kind // checked when want == ""
	}{
		{"api.example.com", "api.example.com", 0},
		{"API.Example.COM", "api.example.com", 0},
		{"api.example.com.", "api.example.com", 0},
		{"a_b.example.com", "a_b.example.com", 0},
		{"xn--bcher-kva.example", "xn--bcher-kva.example", 0},
		{"deadbeef.example.com", "deadbeef.example.com", 0},
		{"8.8.8.8", "8.8.8.8", 0},
		{"2001:4860:4860::8888", "2001:4860:4860::8888", 0},
		{"2001:4860:4860:0:0:0:0:8888", "2001:4860:4860::8888", 0},

		{"127.0.0.1", "", errs.PermissionDenied},
		{"::1", "", errs.PermissionDenied},
		{"::ffff:127.0.0.1", "", errs.PermissionDenied},
		{"::ffff:7f00:1", "", errs.PermissionDenied},
		{"::ffff:8.8.8.8", "", errs.PermissionDenied},
		{"fe80::1%eth0", "", errs.PermissionDenied},
		{"2130706433", "", errs.PermissionDenied},
		{"0x7f000001", "", errs.PermissionDenied},
		{"0X7F000001", "", errs.PermissionDenied},
		{"017700000001", "", errs.PermissionDenied},
		{"127.1", "", errs.PermissionDenied},
		{"0177.0.0.1", "", errs.PermissionDenied},
		{"127.0.0.01", "", errs.PermissionDenied},
		{"0x7f.0.0.1", "", errs.PermissionDenied},
		{"127.0.0.1.", "", errs.PermissionDenied},
		{"8.8.8.8.", "", errs.PermissionDenied}, // canonical literals only
		{"foo.0x10", "", errs.PermissionDenied},
		{"localhost", "", errs.PermissionDenied},
		{"LOCALHOST.", "", errs.PermissionDenied},
		{"api.localhost", "", errs.PermissionDenied},
		{"metadata.google.internal", "", errs.PermissionDenied},
		{"metadata.google.internal.", "", errs.PermissionDenied},
		{"metadata", "", errs.PermissionDenied},
		{"printer.local", "", errs.PermissionDenied},
		{"db.svc.cluster.local", "", errs.PermissionDenied},
		{"1.0.0.127.in-addr.arpa", "", errs.PermissionDenied},
		{"intranet", "", errs.PermissionDenied},

		{"", "", errs.Invalid},
		{"exa mple.com", "", errs.Invalid},
		{"bücher.example", "", errs.Invalid},
		{"-bad.example.com", "", errs.Invalid},
		{"a..example.com", "", errs.Invalid},
		{"[::1]", "", errs.Invalid},
		{strings.Repeat("a", 64) + ".example.com", "", errs.Invalid},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, _, err := canonicalHost(tt.in)
			if tt.want != "" {
				if err != nil || got != tt.want {
					t.Fatalf("canonicalHost(%q) = %q, %v; want %q", tt.in, got, err, tt.want)
				}
				return
			}
			if err == nil || errs.KindOf(err) != tt.kind {
				t.Fatalf("canonicalHost(%q) = %q, %v; want a %v error", tt.in, got, err, tt.kind)
			}
		})
	}
}

func TestParseTarget(t *testing.T) {
	tests := []struct {
		raw  string
		want string // canonical URL sent; "" means refused
		kind errs.Kind
	}{
		{"https://api.example.com/v1/x?a=1#frag", "https://api.example.com/v1/x?a=1", 0},
		{"HTTPS://API.Example.com./v1", "https://api.example.com/v1", 0},
		{"https://api.example.com", "https://api.example.com/", 0},
		{"https://api.example.com:443/", "https://api.example.com/", 0},
		{"http://api.example.com:80/", "http://api.example.com/", 0},
		{"https://api.example.com:8443/", "https://api.example.com:8443/", 0},
		{"http://[2606:4700:4700::1111]/", "http://[2606:4700:4700::1111]/", 0},
		{"http://[2606:4700:4700::1111]:8080/", "http://[2606:4700:4700::1111]:8080/", 0},
		{"http://8.8.8.8/", "http://8.8.8.8/", 0},
		{"https://api.example.com/a%20b", "https://api.example.com/a%20b", 0},
		{"https://api.example.com/v1/..data", "https://api.example.com/v1/..data", 0},

		{"ftp://api.example.com/", "", errs.PermissionDenied},
		{"file:///etc/passwd", "", errs.PermissionDenied},
		{"gopher://api.example.com/", "", errs.PermissionDenied},
		{"https://user:pass@api.example.com/", "", errs.PermissionDenied},
		{"https://user@api.example.com/", "", errs.PermissionDenied},
		{"//api.example.com/", "", errs.PermissionDenied},
		{"/v1/x", "", errs.PermissionDenied},
		{"https:api.example.com", "", errs.Invalid},
		{"https:///path", "", errs.Invalid},
		{"https://api.example.com\\@evil.example/", "", errs.Invalid},
		{"https://api.example.com/a b", "", errs.Invalid},
		{"https://api.example.com:0/", "", errs.Invalid},
		{"https://api.example.com:99999/", "", errs.Invalid},
		{"https://" + strings.Repeat("a", 9000), "", errs.Invalid},

		{"http://127.0.0.1/", "", errs.PermissionDenied},
		{"http://2130706433/", "", errs.PermissionDenied},
		{"http://0x7f000001/", "", errs.PermissionDenied},
		{"http://017700000001/", "", errs.PermissionDenied},
		{"http://127.1/", "", errs.PermissionDenied},
		{"http://0177.0.0.1/", "", errs.PermissionDenied},
		{"http://[::ffff:127.0.0.1]/", "", errs.PermissionDenied},
		{"http://[::ffff:7f00:1]/", "", errs.PermissionDenied},
		{"http://[::1]/", "", errs.PermissionDenied},
		{"http://[fe80::1%25eth0]/", "", errs.PermissionDenied},
		{"http://169.254.169.254/latest/meta-data/", "", errs.PermissionDenied},
		{"http://metadata.google.internal/computeMetadata/v1/", "", errs.PermissionDenied},
		{"http://[127.0.0.1]/", "", errs.Invalid},

		{"https://api.example.com/v1/../admin", "", errs.PermissionDenied},
		{"https://api.example.com/v1/./x", "", errs.PermissionDenied},
		{"https://api.example.com/v1/..;/admin", "", errs.PermissionDenied},
		{"https://api.example.com/v1/%2e%2e/admin", "", errs.PermissionDenied},
		{"https://api.example.com/v1/%2E./admin", "", errs.PermissionDenied},
		{"https://api.example.com/v1/..%2fadmin", "", errs.PermissionDenied},
		{"https://api.example.com/v1%2F..%2Fadmin", "", errs.PermissionDenied},
		{"https://api.example.com/v1/..%5cadmin", "", errs.PermissionDenied},
		{"https://api.example.com/v1/%252e%252e/admin", "", errs.PermissionDenied},
		{"https://api.example.com/v1/%00", "", errs.PermissionDenied},
	}
	for _, tt := range tests {
		name := tt.raw
		if len(name) > 80 {
			name = name[:80]
		}
		t.Run(name, func(t *testing.T) {
			got, err := parseTarget(tt.raw)
			if tt.want != "" {
				if err != nil || got.u.String() != tt.want {
					t.Fatalf("parseTarget(%q) = %v, %v; want %q", tt.raw, got, err, tt.want)
				}
				return
			}
			if err == nil || errs.KindOf(err) != tt.kind {
				t.Fatalf("parseTarget(%q) = %v, %v; want a %v error", tt.raw, got, err, tt.kind)
			}
		})
	}
}

func TestRedact(t *testing.T) {
	tests := []struct{ raw, want string }{
		{"https://api.example.com/v1/x?token=s3cr3t&b=2#frag", "https://api.example.com/v1/x?token=&b="},
		{"https://api.example.com/v1/x?flag", "https://api.example.com/v1/x?flag="},
		{"https://user:pw@api.example.com:8443/p?a=1", "https://api.example.com:8443/p?a="},
		{"https://api.example.com", "https://api.example.com"},
		{"mailto:someone@example.com", "mailto:(opaque)"},
		{"https://api.example.com/%zz", "(malformed URL)"},
	}
	for _, tt := range tests {
		if got := redactRaw(tt.raw); got != tt.want {
			t.Errorf("redactRaw(%q) = %q, want %q", tt.raw, got, tt.want)
		}
	}
}
