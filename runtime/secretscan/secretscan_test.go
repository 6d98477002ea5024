package secretscan

import (
	"encoding/base64"
	"encoding/hex"
	"net/url"
	"strings"
	"testing"
)

func TestSpellings(t *testing.T) {
	secret := []byte("s3cr3t/+key=?&")
	set := New([][]byte{secret, nil})
	for name, spelled := range map[string]string{
		"raw":           string(secret),
		"base64":        base64.StdEncoding.EncodeToString(secret),
		"base64 raw":    base64.RawStdEncoding.EncodeToString(secret),
		"base64url":     base64.URLEncoding.EncodeToString(secret),
		"base64url raw": base64.RawURLEncoding.EncodeToString(secret),
		"hex":           hex.EncodeToString(secret),
		"HEX":           strings.ToUpper(hex.EncodeToString(secret)),
		"query":         url.QueryEscape(string(secret)),
		"path":          url.PathEscape(string(secret)),
		"json":          `s3cr3t/+key=?\u0026`,
	} {
		b := []byte("prefix " + spelled + " suffix")
		if !set.Contains(b) {
			t.Errorf("%s: %q not found", name, spelled)
		}
		if got := string(set.Redact(b)); got != "prefix "+Redacted+" suffix" {
			t.Errorf("%s: redacted to %q", name, got)
		}
	}
	if set.Contains([]byte("nothing to see")) || New(nil).Contains([]byte("x")) || !New(nil).Empty() {
		t.Error("false positive")
	}
}

// TestShiftedBase64: a secret behind a prefix of any length is still found
// in the base64 of the whole.
func TestShiftedBase64(t *testing.T) {
	secret := []byte("sk-exfil-9876543210")
	set := New([][]byte{secret})
	for _, prefix := range []string{"", "B", "Be", "Bearer ", "token=", "xyz"} {
		for _, suffix := range []string{"", "!", "??"} {
			whole := []byte(prefix + string(secret) + suffix)
			for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.URLEncoding, base64.RawURLEncoding} {
				e := enc.EncodeToString(whole)
				if !set.Contains([]byte(e)) {
					t.Errorf("prefix %q suffix %q: %s not found", prefix, suffix, e)
				}
			}
		}
	}
}
