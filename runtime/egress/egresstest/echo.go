package egresstest

import (
	"bytes"
	"encoding/base32"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"mime/quotedprintable"
	"net/http"
	"net/url"
	"strings"
)

// A Spelling is a way a server writes back a value it was sent, such as an
// injected Authorization header, as real servers do.
type Spelling struct {
	Name  string
	Spell func(v string) string
}

// Spellings covers each encoding the leak guard and the redaction must see
// through, and a few compositions of them.
var Spellings = []Spelling{
	{"raw", func(v string) string { return v }},
	{"json, escaped slashes (PHP json_encode)", func(v string) string {
		return `{"authorization":` + strings.ReplaceAll(jsonString(v), "/", `\/`) + `}`
	}},
	{`json, \uXXXX for every character`, func(v string) string {
		var sb strings.Builder
		for _, r := range v {
			fmt.Fprintf(&sb, `\u%04X`, r)
		}
		return `{"authorization":"` + sb.String() + `"}`
	}},
	{"percent-encoded, every byte", func(v string) string {
		var sb strings.Builder
		for _, c := range []byte(v) {
			fmt.Fprintf(&sb, "%%%02x", c)
		}
		return "https://app.example.com/callback?auth=" + sb.String() + "&state=1"
	}},
	{"HTML character references", func(v string) string {
		var sb strings.Builder
		for _, r := range v {
			fmt.Fprintf(&sb, "&#%d;", r)
		}
		return `<input type="hidden" value="` + sb.String() + `">`
	}},
	{"quoted-printable", func(v string) string {
		var buf bytes.Buffer
		w := quotedprintable.NewWriter(&buf)
		fmt.Fprintf(w, "Your request carried the header\r\nAuthorization: %s\r\n", strings.Repeat(" ", 50)+v)
		w.Close()
		return "Content-Transfer-Encoding: quoted-printable\r\n\r\n" + buf.String()
	}},
	{"base64, MIME lines", func(v string) string {
		return wrap(base64.StdEncoding.EncodeToString([]byte("Authorization: "+v+"\r\n")), 16, "\r\n")
	}},
	{"base64url in a data: URL", func(v string) string {
		return "data:text/plain;base64," + base64.RawURLEncoding.EncodeToString([]byte(v))
	}},
	{"base32, lower case", func(v string) string {
		return strings.ToLower(base32.StdEncoding.EncodeToString([]byte(v)))
	}},
	{"hex, mixed case", func(v string) string {
		h := []byte(hex.EncodeToString([]byte(v)))
		upper := false
		for i, c := range h {
			if c >= 'a' {
				if upper {
					h[i] = c - 'a' + 'A'
				}
				upper = !upper
			}
		}
		return "0x" + string(h)
	}},
	{"base64 of a percent-encoded JSON string", func(v string) string {
		return base64.StdEncoding.EncodeToString([]byte(url.QueryEscape(`{"a":` + strings.ReplaceAll(jsonString(v), "/", `\/`) + `}`)))
	}},
}

// Echo answers /echo?spelling=NAME with the request's header h written in
// the Spelling of that name.
func Echo(h string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		name := r.URL.Query().Get("spelling")
		for _, sp := range Spellings {
			if sp.Name == name {
				w.Write([]byte(sp.Spell(r.Header.Get(h))))
				return
			}
		}
		http.Error(w, "no spelling "+name, http.StatusNotFound)
	}
}

func jsonString(v string) string {
	b, _ := json.Marshal(v) // a string always marshals
	return string(b)
}

func wrap(s string, width int, nl string) string {
	var sb strings.Builder
	for len(s) > width {
		sb.WriteString(s[:width] + nl)
		s = s[width:]
	}
	sb.WriteString(s)
	return sb.String()
}
