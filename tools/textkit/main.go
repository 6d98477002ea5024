// Command textkit is a pure Contractual example tool (no capabilities other
// than WASI clock and random, which every Go-built module needs).
//
// Exports:
//
//	slugify    {"text": "..."}                 -> {"slug": "..."}
//	word_count {"text": "..."}                 -> {"words": n, "lines": n, "chars": n}
//	json_pick  {"json": <any>, "path": "a.0"}  -> {"value": <picked>}
//
// Build: see ../build.sh (GOOS=wasip1 GOARCH=wasm go build -buildmode=c-shared).
package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/extism/go-pdk"
)

func main() {}

type textInput struct {
	Text *string `json:"text"`
}

// decodeStrict decodes the plugin input as a single JSON object into v,
// refusing unknown fields and trailing data.
func decodeStrict(v any) error {
	in := pdk.Input()
	if len(bytes.TrimSpace(in)) == 0 {
		return errors.New("invalid input: empty, expected a JSON object")
	}
	dec := json.NewDecoder(bytes.NewReader(in))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("invalid input: %v", err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return errors.New("invalid input: trailing data after the JSON object")
	}
	return nil
}

func readText() (string, error) {
	var in textInput
	if err := decodeStrict(&in); err != nil {
		return "", err
	}
	if in.Text == nil {
		return "", errors.New(`invalid input: missing required field "text"`)
	}
	return *in.Text, nil
}

func fail(err error) int32 {
	pdk.SetError(err)
	return 1
}

func output(v any) int32 {
	b, err := json.Marshal(v)
	if err != nil {
		return fail(fmt.Errorf("encoding output: %v", err))
	}
	pdk.Output(b)
	return 0
}

// ---- slugify ----

// fold maps common Latin letters with diacritics to ASCII.
var fold = map[rune]string{
	'à': "a", 'á': "a", 'â': "a", 'ã': "a", 'ä': "a", 'å': "a", 'ā': "a", 'ă': "a", 'ą': "a",
	'æ': "ae", 'ç': "c", 'ć': "c", 'č': "c", 'ď': "d", 'đ': "d", 'ð': "d",
	'è': "e", 'é': "e", 'ê': "e", 'ë': "e", 'ē': "e", 'ė': "e", 'ę': "e", 'ě': "e",
	'ğ': "g", 'ì': "i", 'í': "i", 'î': "i", 'ï': "i", 'ī': "i", 'į': "i", 'ı': "i",
	'ł': "l", 'ľ': "l", 'ĺ': "l", 'ñ': "n", 'ń': "n", 'ň': "n",
	'ò': "o", 'ó': "o", 'ô': "o", 'õ': "o", 'ö': "o", 'ø': "o", 'ō': "o", 'ő': "o", 'œ': "oe",
	'ŕ': "r", 'ř': "r", 'ß': "ss", 'ś': "s", 'š': "s", 'ş': "s", 'ș': "s",
	'ť': "t", 'ţ': "t", 'ț': "t", 'þ': "th",
	'ù': "u", 'ú': "u", 'û': "u", 'ü': "u", 'ū': "u", 'ů': "u", 'ű': "u", 'ų': "u",
	'ý': "y", 'ÿ': "y", 'ź': "z", 'ż': "z", 'ž': "z",
}

// slugify lowercases s, folds common Latin diacritics to ASCII, keeps other
// letters and digits as they are, and joins the runs of letters and digits
// with single hyphens.
func slugify(s string) string {
	var b strings.Builder
	pendingDash := false
	for _, r := range s {
		r = unicode.ToLower(r)
		var piece string
		switch {
		case r < utf8.RuneSelf && (r >= 'a' && r <= 'z' || r >= '0' && r <= '9'):
			piece = string(r)
		case fold[r] != "":
			piece = fold[r]
		case unicode.IsLetter(r) || unicode.IsDigit(r):
			piece = string(r)
		default:
			pendingDash = b.Len() > 0
			continue
		}
		if pendingDash {
			b.WriteByte('-')
			pendingDash = false
		}
		b.WriteString(piece)
	}
	return b.String()
}

//go:wasmexport slugify
func slugifyExport() int32 {
	text, err := readText()
	if err != nil {
		return fail(err)
	}
	return output(struct {
		Slug string `json:"slug"`
	}{slugify(text)})
}

// ---- word_count ----

type counts struct {
	Words int `json:"words"`
	Lines int `json:"lines"`
	Chars int `json:"chars"`
}

// count counts whitespace-separated words, lines (a final line without a
// trailing newline counts; the empty text has 0 lines) and characters (runes).
func count(s string) counts {
	c := counts{
		Words: len(strings.Fields(s)),
		Lines: strings.Count(s, "\n"),
		Chars: utf8.RuneCountInString(s),
	}
	if s != "" && !strings.HasSuffix(s, "\n") {
		c.Lines++
	}
	return c
}

//go:wasmexport word_count
func wordCountExport() int32 {
	text, err := readText()
	if err != nil {
		return fail(err)
	}
	return output(count(text))
}

// ---- json_pick ----

type pickInput struct {
	JSON json.RawMessage `json:"json"`
	Path *string         `json:"path"`
}

// pick walks raw along the dot-separated path. Object members are selected by
// key, array elements by a non-negative decimal index. The empty path selects
// the whole document. Values are passed through without re-encoding numbers.
func pick(raw json.RawMessage, path string) (json.RawMessage, error) {
	if path == "" {
		return raw, nil
	}
	cur := raw
	segs := strings.Split(path, ".")
	for i, seg := range segs {
		at := strings.Join(segs[:i], ".")
		if at == "" {
			at = "(root)"
		}
		notFound := func(why string) error {
			return fmt.Errorf("path not found: %s (%s at %s)", path, why, at)
		}
		switch firstByte(cur) {
		case '{':
			var obj map[string]json.RawMessage
			if err := json.Unmarshal(cur, &obj); err != nil {
				return nil, fmt.Errorf("invalid input: json: %v", err)
			}
			next, ok := obj[seg]
			if !ok {
				return nil, notFound(fmt.Sprintf("no key %q", seg))
			}
			cur = next
		case '[':
			var arr []json.RawMessage
			if err := json.Unmarshal(cur, &arr); err != nil {
				return nil, fmt.Errorf("invalid input: json: %v", err)
			}
			idx, err := strconv.Atoi(seg)
			if err != nil || idx < 0 || (len(seg) > 1 && seg[0] == '0') {
				return nil, notFound(fmt.Sprintf("%q is not an array index", seg))
			}
			if idx >= len(arr) {
				return nil, notFound(fmt.Sprintf("index %d out of range (length %d)", idx, len(arr)))
			}
			cur = arr[idx]
		default:
			return nil, notFound(fmt.Sprintf("cannot select %q from a scalar", seg))
		}
	}
	return cur, nil
}

func firstByte(b []byte) byte {
	b = bytes.TrimLeft(b, " \t\r\n")
	if len(b) == 0 {
		return 0
	}
	return b[0]
}

//go:wasmexport json_pick
func jsonPickExport() int32 {
	var in pickInput
	if err := decodeStrict(&in); err != nil {
		return fail(err)
	}
	if in.JSON == nil {
		return fail(errors.New(`invalid input: missing required field "json"`))
	}
	if in.Path == nil {
		return fail(errors.New(`invalid input: missing required field "path"`))
	}
	v, err := pick(in.JSON, *in.Path)
	if err != nil {
		return fail(err)
	}
	return output(struct {
		Value json.RawMessage `json:"value"`
	}{v})
}
