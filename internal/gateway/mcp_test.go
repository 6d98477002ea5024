package gateway

import "testing"

// TestMCPOrigins: /mcp trusts the origins of the gateway's base URLs only,
// scheme and port included, and loopback names as hosts.
func TestMCPOrigins(t *testing.T) {
	var o origins
	for _, u := range []string{"http://127.0.0.1:7700", "https://box.tail1234.ts.net"} {
		if err := o.add(u); err != nil {
			t.Fatal(err)
		}
	}
	if err := o.add("not a url"); err == nil {
		t.Error("added an origin that is not a URL")
	}
	for _, tt := range []struct {
		origin string
		ok     bool
	}{
		{"http://127.0.0.1:7700", true},
		{"HTTPS://Box.Tail1234.ts.net", true},
		{"http://127.0.0.1:7701", false},
		{"https://127.0.0.1:7700", false},
		{"http://box.tail1234.ts.net", false},
		{"http://evil.example", false},
		{"null", false},
	} {
		if got := o.has(tt.origin); got != tt.ok {
			t.Errorf("origin %q: %v, want %v", tt.origin, got, tt.ok)
		}
	}
	for _, tt := range []struct {
		host           string
		loopback, ours bool
	}{
		{"127.0.0.1:7700", true, true},
		{"localhost:7700", true, false},
		{"[::1]:7700", true, false},
		{"box.tail1234.ts.net", false, true},
		{"rebound.example:7700", false, false},
		{"127.0.0.1.evil.example", false, false},
	} {
		if got := loopbackHost(tt.host); got != tt.loopback {
			t.Errorf("loopbackHost(%q) = %v", tt.host, got)
		}
		if got := o.hasHost(tt.host); got != tt.ours {
			t.Errorf("hasHost(%q) = %v", tt.host, got)
		}
	}
}
