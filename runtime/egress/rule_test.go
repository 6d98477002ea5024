package egress

import (
	"strings"
	"testing"

	"github.com/contractual/contractual/internal/errs"
)

func TestCompileRejects(t *testing.T) {
	tests := []struct {
		name string
		rule Rule
		want string
	}{
		{"ftp scheme", Rule{Scheme: "ftp", Host: "a.example.com"}, "scheme"},
		{"empty scheme", Rule{Host: "a.example.com"}, "scheme"},
		{"loopback literal", Rule{Scheme: "http", Host: "127.0.0.1"}, "not public"},
		{"private literal", Rule{Scheme: "http", Host: "10.0.0.1"}, "not public"},
		{"mapped literal", Rule{Scheme: "http", Host: "::ffff:8.8.8.8"}, "not public"},
		{"odd notation", Rule{Scheme: "http", Host: "2130706433"}, "non-canonical"},
		{"metadata name", Rule{Scheme: "http", Host: "metadata.google.internal"}, "internal"},
		{"localhost", Rule{Scheme: "http", Host: "localhost"}, "single label"},
		{"bare wildcard", Rule{Scheme: "https", Host: "*"}, "host"},
		{"wildcard tld", Rule{Scheme: "https", Host: "*.com"}, "single label"},
		{"double wildcard", Rule{Scheme: "https", Host: "*.*.example.com"}, "valid DNS"},
		{"inner wildcard", Rule{Scheme: "https", Host: "a.*.example.com"}, "valid DNS"},
		{"wildcard literal", Rule{Scheme: "https", Host: "*.8.8.8.8"}, "IP literal"},
		{"relative prefix", Rule{Scheme: "https", Host: "a.example.com", PathPrefix: "v1/"}, "must start with /"},
		{"bad method", Rule{Scheme: "https", Host: "a.example.com", Methods: []string{"CONNECT"}}, "method"},
		{"trace", Rule{Scheme: "https", Host: "a.example.com", Methods: []string{"TRACE"}}, "method"},
		{"secret over http", Rule{Scheme: "http", Host: "a.example.com", Secrets: []SecretSpec{{Name: "k", Header: "Authorization"}}}, "https"},
		{"secret no name", Rule{Scheme: "https", Host: "a.example.com", Secrets: []SecretSpec{{Header: "Authorization"}}}, "no name"},
		{"secret into Host", Rule{Scheme: "https", Host: "a.example.com", Secrets: []SecretSpec{{Name: "k", Header: "Host"}}}, "cannot carry"},
		{"secret into bad name", Rule{Scheme: "https", Host: "a.example.com", Secrets: []SecretSpec{{Name: "k", Header: "X Key"}}}, "cannot carry"},
		{"secret twice", Rule{Scheme: "https", Host: "a.example.com", Secrets: []SecretSpec{{Name: "k", Header: "X-Key"}, {Name: "j", Header: "x-key"}}}, "twice"},
		{"format without placeholder", Rule{Scheme: "https", Host: "a.example.com", Secrets: []SecretSpec{{Name: "k", Header: "X-Key", Format: "Bearer"}}}, "format"},
		{"format twice", Rule{Scheme: "https", Host: "a.example.com", Secrets: []SecretSpec{{Name: "k", Header: "X-Key", Format: "{{secret}}{{secret}}"}}}, "format"},
		{"format with newline", Rule{Scheme: "https", Host: "a.example.com", Secrets: []SecretSpec{{Name: "k", Header: "X-Key", Format: "{{secret}}\r\nX-Evil: 1"}}}, "format"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := compileAll([]Rule{tt.rule})
			if err == nil || errs.KindOf(err) != errs.Invalid || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("compileAll = %v, want an Invalid error mentioning %q", err, tt.want)
			}
		})
	}
}

func TestMatch(t *testing.T) {
	rules := []Rule{
		0: {Scheme: "https", Host: "API.example.com.", PathPrefix: "/v1/", Methods: []string{"get", "POST"}},
		1: {Scheme: "https", Host: "*.wild.example", PathPrefix: "/v2"},
		2: {Scheme: "http", Host: "plain.example.com", Port: 8080},
		3: {Scheme: "http", Host: "8.8.8.8"},
		4: {Scheme: "http", Host: "2606:4700:4700::1111"},
	}
	compiledRules, err := compileAll(rules)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		method, url string
		want        int    // rule index, or -1
		reason      string // substring of the reason when refused
	}{
		{"GET", "https://api.example.com/v1/items", 0, ""},
		{"POST", "https://API.EXAMPLE.COM./v1/items", 0, ""},
		{"GET", "https://api.example.com:443/v1/", 0, ""},
		{"GET", "https://api.example.com/v1", -1, "path /v1 not allowed"},
		{"GET", "https://api.example.com/v1x", -1, "path"},
		{"GET", "https://api.example.com/v2/items", -1, "path"},
		{"GET", "https://api.example.com/", -1, "path"},
		{"DELETE", "https://api.example.com/v1/items", -1, "method DELETE"},
		{"HEAD", "https://api.example.com/v1/items", -1, "method HEAD"},
		{"GET", "http://api.example.com/v1/items", -1, "scheme http"},
		{"GET", "https://api.example.com:8443/v1/items", -1, "port 8443"},
		{"GET", "https://evil.example.com/v1/items", -1, "host evil.example.com"},
		{"GET", "https://api.example.com.evil.example/v1/", -1, "host"},
		{"GET", "https://xapi.example.com/v1/", -1, "host"},

		{"GET", "https://a.wild.example/v2", 1, ""},
		{"HEAD", "https://a.b.wild.example/v2/x", 1, ""},
		{"GET", "https://wild.example/v2", -1, "host"},
		{"GET", "https://xwild.example/v2", -1, "host"},
		{"GET", "https://a.wild.example/v2x", -1, "path"},
		{"POST", "https://a.wild.example/v2", -1, "method POST"},

		{"GET", "http://plain.example.com:8080/anything", 2, ""},
		{"GET", "http://plain.example.com/anything", -1, "port 80"},
		{"GET", "http://plain.example.com:80/anything", -1, "port 80"},

		{"GET", "http://8.8.8.8/", 3, ""},
		{"GET", "http://8.8.4.4/", -1, "host"},
		{"GET", "http://[2606:4700:4700:0::1111]/", 4, ""},
		{"GET", "http://dns.google/", -1, "host"},
		{"GET", "https://8.8.8.8/v2", -1, "scheme https"},
		{"GET", "https://[2606:4700:4700::1111]/v2", -1, "scheme https"},
		{"GET", "http://8.8.8.8:8080/", -1, "port 8080"},
	}
	for _, tt := range tests {
		t.Run(tt.method+" "+tt.url, func(t *testing.T) {
			tg, err := parseTarget(tt.url)
			if err != nil {
				t.Fatal(err)
			}
			got, reason := match(compiledRules, tt.method, tg)
			if got != tt.want || !strings.Contains(reason, tt.reason) {
				t.Fatalf("match = %d, %q; want %d, %q", got, reason, tt.want, tt.reason)
			}
		})
	}
}

func TestMatchNoRules(t *testing.T) {
	tg, err := parseTarget("https://api.example.com/")
	if err != nil {
		t.Fatal(err)
	}
	if got, reason := match(nil, "GET", tg); got != -1 || reason == "" {
		t.Fatalf("match(nil) = %d, %q", got, reason)
	}
}

func TestPrefixMatches(t *testing.T) {
	tests := []struct {
		prefix, path string
		want         bool
	}{
		{"", "/anything", true},
		{"/", "/anything", true},
		{"/v1", "/v1", true},
		{"/v1", "/v1/", true},
		{"/v1", "/v1/x", true},
		{"/v1", "/v1x", false},
		{"/v1/", "/v1/x", true},
		{"/v1/", "/v1/", true},
		{"/v1/", "/v1", false},
		{"/v1/", "/v1x", false},
		{"/v1/", "/V1/x", false},
	}
	for _, tt := range tests {
		if got := prefixMatches(tt.prefix, tt.path); got != tt.want {
			t.Errorf("prefixMatches(%q, %q) = %v, want %v", tt.prefix, tt.path, got, tt.want)
		}
	}
}
