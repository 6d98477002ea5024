package secretscan

import (
	"bytes"
	"encoding/base32"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"html"
	"io"
	"mime/quotedprintable"
	"net/url"
	"strings"
	"unicode/utf16"
)

// An encoder is one layer as a server or a module might write it, in one
// of a few styles, with a reference decoder (the standard library's where
// there is one) to check what a redacted result still reveals.
type encoder struct {
	name   string
	styles []string
	enc    func(b []byte, style int) []byte
	dec    func(b []byte) ([]byte, error)
}

// encoders are the layers the scan must see through, each written every
// way the tests know.
var encoders = []encoder{
	{
		name:   "json",
		styles: []string{"encoding/json", `\/ (PHP)`, `\u every char`, `\U every char`, `\x every byte`},
		enc: func(b []byte, style int) []byte {
			switch style {
			case 0, 1:
				j, _ := json.Marshal(string(b))
				j = j[1 : len(j)-1]
				if style == 1 {
					j = bytes.ReplaceAll(j, []byte("/"), []byte(`\/`))
				}
				return j
			case 4:
				var out []byte
				for _, c := range b {
					out = fmt.Appendf(out, `\x%02x`, c)
				}
				return out
			}
			format := `\u%04x`
			if style == 3 {
				format = `\u%04X`
			}
			var out []byte
			for _, r := range string(b) {
				if r >= 0x10000 {
					r1, r2 := utf16.EncodeRune(r)
					out = fmt.Appendf(out, format+format, r1, r2)
				} else {
					out = fmt.Appendf(out, format, r)
				}
			}
			return out
		},
		dec: func(b []byte) ([]byte, error) {
			var s string
			err := json.Unmarshal(append(append([]byte(`"`), b...), '"'), &s)
			return []byte(s), err
		},
	},
	{
		name:   "percent",
		styles: []string{"%XX every byte", "%xx every byte", "url.QueryEscape", "url.PathEscape", "%Xx mixed case", "%uXXXX every char"},
		enc: func(b []byte, style int) []byte {
			switch style {
			case 2:
				return []byte(url.QueryEscape(string(b)))
			case 3:
				return []byte(url.PathEscape(string(b)))
			case 5:
				var out []byte
				for _, r := range string(b) {
					if r >= 0x10000 {
						r1, r2 := utf16.EncodeRune(r)
						out = fmt.Appendf(out, "%%u%04X%%u%04X", r1, r2)
					} else {
						out = fmt.Appendf(out, "%%u%04X", r)
					}
				}
				return out
			}
			var out []byte
			for i, c := range b {
				h := fmt.Sprintf("%02X", c)
				if style == 1 || style == 4 && i%2 == 1 {
					h = strings.ToLower(h)
				}
				out = append(append(out, '%'), h...)
			}
			return out
		},
		dec: func(b []byte) ([]byte, error) {
			s, err := url.PathUnescape(string(b))
			return []byte(s), err
		},
	},
	{
		name:   "html",
		styles: []string{"html.EscapeString", "&#DD; every char", "&#xHH; every char", "&#XHH every char, ';' only at the end"},
		enc: func(b []byte, style int) []byte {
			if style == 0 {
				return []byte(html.EscapeString(string(b)))
			}
			var out []byte
			for _, r := range string(b) {
				switch style {
				case 1:
					out = fmt.Appendf(out, "&#%d;", r)
				case 2:
					out = fmt.Appendf(out, "&#x%x;", r)
				case 3:
					out = fmt.Appendf(out, "&#X%X", r)
				}
			}
			if style == 3 && len(out) > 0 {
				out = append(out, ';') // else a hex digit after it would extend it
			}
			return out
		},
		dec: func(b []byte) ([]byte, error) { return []byte(html.UnescapeString(string(b))), nil },
	},
	{
		name:   "quoted-printable",
		styles: []string{"mime/quotedprintable", "=XX every byte, wrapped at 76"},
		enc: func(b []byte, style int) []byte {
			var buf bytes.Buffer
			if style == 0 {
				w := quotedprintable.NewWriter(&buf)
				w.Binary = true
				w.Write(b)
				w.Close()
				return buf.Bytes()
			}
			line := 0
			for _, c := range b {
				if line+3 > 75 {
					buf.WriteString("=\r\n")
					line = 0
				}
				fmt.Fprintf(&buf, "=%02X", c)
				line += 3
			}
			return buf.Bytes()
		},
		dec: func(b []byte) ([]byte, error) {
			return io.ReadAll(quotedprintable.NewReader(bytes.NewReader(b)))
		},
	},
	{
		name:   "base64",
		styles: []string{"std", "std raw", "url", "url raw", "std wrapped at 76 CRLF", "std wrapped at 64 LF", "url raw wrapped at 13 LF", "std, data: URL"},
		enc: func(b []byte, style int) []byte {
			encs := []*base64.Encoding{base64.StdEncoding, base64.RawStdEncoding, base64.URLEncoding, base64.RawURLEncoding}
			switch style {
			case 4:
				return wrap(base64.StdEncoding.EncodeToString(b), 76, "\r\n")
			case 5:
				return wrap(base64.StdEncoding.EncodeToString(b), 64, "\n")
			case 6:
				return wrap(base64.RawURLEncoding.EncodeToString(b), 13, "\n")
			case 7:
				return []byte("data:text/plain;base64," + base64.StdEncoding.EncodeToString(b))
			}
			return []byte(encs[style].EncodeToString(b))
		},
		dec: func(b []byte) ([]byte, error) {
			s := strings.TrimPrefix(string(b), "data:text/plain;base64,")
			s = strings.NewReplacer("\r", "", "\n", "", "=", "", "-", "+", "_", "/").Replace(s)
			return base64.RawStdEncoding.DecodeString(s)
		},
	},
	{
		name:   "base32",
		styles: []string{"std", "std raw", "lower case raw", "std wrapped at 72 LF"},
		enc: func(b []byte, style int) []byte {
			s := base32.StdEncoding.EncodeToString(b)
			switch style {
			case 1:
				s = base32.StdEncoding.WithPadding(base32.NoPadding).EncodeToString(b)
			case 2:
				s = strings.ToLower(base32.StdEncoding.WithPadding(base32.NoPadding).EncodeToString(b))
			case 3:
				return wrap(s, 72, "\n")
			}
			return []byte(s)
		},
		dec: func(b []byte) ([]byte, error) {
			s := strings.NewReplacer("\r", "", "\n", "", "=", "").Replace(strings.ToUpper(string(b)))
			return base32.StdEncoding.WithPadding(base32.NoPadding).DecodeString(s)
		},
	},
	{
		name:   "hex",
		styles: []string{"lower", "upper", "mixed case", "lower wrapped at 32 CRLF"},
		enc: func(b []byte, style int) []byte {
			h := []byte(hex.EncodeToString(b))
			switch style {
			case 1:
				return bytes.ToUpper(h)
			case 2:
				for i := 0; i < len(h); i += 3 {
					if h[i] >= 'a' {
						h[i] -= 'a' - 'A'
					}
				}
			case 3:
				return wrap(string(h), 32, "\r\n")
			}
			return h
		},
		dec: func(b []byte) ([]byte, error) {
			s := strings.NewReplacer("\r", "", "\n", "").Replace(string(b))
			return hex.DecodeString(s)
		},
	},
}

func encoderNamed(name string) encoder {
	for _, e := range encoders {
		if e.name == name {
			return e
		}
	}
	panic("no encoder " + name)
}

// wrap breaks s into lines of width characters.
func wrap(s string, width int, nl string) []byte {
	var out []byte
	for len(s) > width {
		out = append(append(out, s[:width]...), nl...)
		s = s[width:]
	}
	return append(out, s...)
}

// layer is one step of a stack: text is pre + enc(inner) + suf.
type layer struct {
	enc      encoder
	style    int
	pre, suf string
}

func (l layer) String() string {
	return fmt.Sprintf("%s(%s) %q…%q", l.enc.name, l.enc.styles[l.style], l.pre, l.suf)
}

// build applies the layers to inner, first to last.
func build(inner []byte, layers []layer) []byte {
	for _, l := range layers {
		inner = []byte(l.pre + string(l.enc.enc(inner, l.style)) + l.suf)
	}
	return inner
}

// unbuild undoes layers from the outermost, with the reference decoders,
// as far as the text still has the shape build gave it.
func unbuild(b []byte, layers []layer) ([]byte, bool) {
	for i := len(layers) - 1; i >= 0; i-- {
		l := layers[i]
		if !bytes.HasPrefix(b, []byte(l.pre)) || !bytes.HasSuffix(b[len(l.pre):], []byte(l.suf)) {
			return b, false
		}
		d, err := l.enc.dec(b[len(l.pre) : len(b)-len(l.suf)])
		if err != nil {
			return b, false
		}
		b = d
	}
	return b, true
}
