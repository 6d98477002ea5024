package secretscan

import (
	"bytes"
	"context"
	"encoding/base32"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"html"
	"net/url"
	"strings"
	"testing"
)

// Secrets the tests hide: an API key with the characters encoders treat
// specially, and a password with every character they escape.
var (
	apiKey   = []byte("sk-live/4f9+Ab=Zx_12")
	password = []byte(`p@ss/w"rd\+&%<>=;'x`)
)

// TestLayers: each layer, in each style, with text around the secret
// inside the encoding and outside it. Redact keeps what is outside; for an
// escape layer it replaces exactly the secret's escapes (the rest still
// decodes), for base64, base32 and hex the whole run.
func TestLayers(t *testing.T) {
	const pre, suf = `{"v":"`, `"}`
	for _, secret := range [][]byte{apiKey, password} {
		set := New([][]byte{secret})
		for _, e := range encoders {
			for style, name := range e.styles {
				t.Run(e.name+"/"+name, func(t *testing.T) {
					inner := "Bearer " + string(secret) + "\n"
					enc := string(e.enc([]byte(inner), style))
					doc := []byte(pre + enc + suf)
					if !set.Contains(doc) {
						t.Fatalf("not found in %s", doc)
					}
					got := string(set.Redact(doc))
					middle, ok := strings.CutPrefix(got, pre)
					middle, ok2 := strings.CutSuffix(middle, suf)
					if !ok || !ok2 {
						t.Fatalf("the text around it changed: %s", got)
					}
					if isBlock(e.name) {
						want := Redacted
						if strings.HasPrefix(enc, "data:") {
							want = "data:text/plain;base64," + Redacted
						}
						if middle != want {
							t.Errorf("%s redacted to %s, want the run replaced", doc, got)
						}
						return
					}
					dec, err := e.dec([]byte(middle))
					if err != nil && name != `\x every byte` && name != "%uXXXX every char" {
						t.Fatalf("%s redacted to %s, which does not decode: %v", doc, got, err)
					}
					want := "Bearer " + Redacted + "\n"
					if name == "url.QueryEscape" {
						want = "Bearer+" + Redacted + "\n" // the reference decoder is PathUnescape
					}
					if err == nil && string(dec) != want {
						t.Errorf("%s redacted to %s, which decodes to %q", doc, got, dec)
					}
					if !strings.Contains(middle, Redacted) || set.Contains([]byte(got)) {
						t.Errorf("%s redacted to %s", doc, got)
					}
				})
			}
		}
	}
}

func isBlock(name string) bool { return name == "base64" || name == "base32" || name == "hex" }

// TestReviewExamples: an echo server returned the injected key as JSON
// with escaped slashes (PHP's json_encode), as \uXXXX escapes of every
// character, and fully percent-encoded; each got past the old list of
// spellings.
func TestReviewExamples(t *testing.T) {
	set := New([][]byte{apiKey})
	old := newBaseline([][]byte{apiKey})
	var uEsc, pctAll strings.Builder
	for _, c := range "Bearer " + string(apiKey) {
		fmt.Fprintf(&uEsc, `\u%04x`, c)
		fmt.Fprintf(&pctAll, "%%%02X", c)
	}
	for name, doc := range map[string]string{
		`\/`:          `{"authorization":"Bearer sk-live\/4f9+Ab=Zx_12"}`,
		`\u every`:    `{"authorization":"` + uEsc.String() + `"}`,
		`percent all`: `https://echo.example.com/?authorization=` + pctAll.String(),
	} {
		if old.Contains([]byte(doc)) {
			t.Errorf("%s: the baseline finds it: the example proves nothing", name)
		}
		if !set.Contains([]byte(doc)) {
			t.Errorf("%s: not found in %s", name, doc)
		}
		got := set.Redact([]byte(doc))
		if set.Contains(got) || !bytes.Contains(got, []byte(Redacted)) {
			t.Errorf("%s: redacted to %s", name, got)
		}
	}
}

// TestCompositions: layers inside layers, as servers and smuggling
// modules stack them, up to MaxDepth.
func TestCompositions(t *testing.T) {
	L := func(name string, style int, pre, suf string) layer {
		return layer{enc: encoderNamed(name), style: style, pre: pre, suf: suf}
	}
	tests := []struct {
		name   string
		layers []layer
	}{
		{"base64 of a percent-encoded JSON string", []layer{
			L("json", 1, `{"k":"`, `"}`), L("percent", 0, "", ""), L("base64", 0, "", "")}},
		{"JSON API with MIME base64 (CRLF at 76)", []layer{
			L("base64", 4, "", ""), L("json", 0, `{"content":"`, `"}`)}},
		{"percent-encoded base64url in a query", []layer{
			L("base64", 3, "", ""), L("percent", 2, "https://x.example/?t=", "&a=1")}},
		{"double percent-encoding", []layer{
			L("percent", 3, "", ""), L("percent", 2, "?next=", "")}},
		{"HTML attribute of a URL", []layer{
			L("percent", 2, "https://x.example/?t=", "&b=2"), L("html", 0, `<a href="`, `">x</a>`)}},
		{"quoted-printable e-mail of a JSON body, base64url'd as the Gmail API does", []layer{
			L("json", 0, `{"token":"`, `"}`), L("quoted-printable", 0, "Content-Transfer-Encoding: quoted-printable\r\n\r\n", "\r\n"),
			L("base64", 3, "", ""), L("json", 0, `{"raw":"`, `"}`)}},
		{"hex of base32", []layer{L("base32", 1, "", ""), L("hex", 2, "0x", "")}},
		{"base32 of hex", []layer{L("hex", 1, "", ""), L("base32", 2, "", "")}},
		{"four layers", []layer{
			L("html", 2, "", ""), L("json", 2, "", ""), L("base64", 6, "Basic ", ""), L("percent", 4, "a=", "")}},
		{"JSON of JSON", []layer{L("json", 1, `{"a":"`, `"}`), L("json", 1, `{"b":"`, `"}`)}},
		{"base64 of base64", []layer{L("base64", 1, "user:", ""), L("base64", 0, "", "")}},
	}
	for _, secret := range [][]byte{apiKey, password} {
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				checkStack(t, secret, []byte("Bearer "+string(secret)+"\n"), tt.layers)
			})
		}
	}
}

// TestDepthBound: MaxDepth layers are seen through, one more is not.
func TestDepthBound(t *testing.T) {
	set := New([][]byte{apiKey})
	doc := apiKey
	for d := range MaxDepth + 1 {
		doc = []byte(hex.EncodeToString(doc))
		if found := set.Contains(doc); found != (d < MaxDepth) {
			t.Errorf("%d layers of hex: found %v", d+1, found)
		}
	}
}

// TestAnyOffset: the secret is found wherever it starts inside the
// encoded text, and wherever the encoding starts inside a run of its own
// alphabet (a path, a word, no separator before it).
func TestAnyOffset(t *testing.T) {
	set := New([][]byte{apiKey})
	b32 := base32.StdEncoding.WithPadding(base32.NoPadding)
	encs := map[string]func([]byte) string{
		"base64":    base64.StdEncoding.EncodeToString,
		"base64url": base64.RawURLEncoding.EncodeToString,
		"base32":    b32.EncodeToString,
		"base32 lc": func(b []byte) string { return strings.ToLower(b32.EncodeToString(b)) },
		"hex":       hex.EncodeToString,
	}
	for name, enc := range encs {
		for inside := range 9 {
			for outside := range 9 {
				doc := "/v1/" + "ABCDEFGHIJ"[:outside] + enc([]byte("xyzw1234"[:inside%9]+string(apiKey)+"!")) + " end"
				if name == "base32 lc" || name == "hex" {
					doc = "/v1/" + "abcdefghij"[:outside] + enc([]byte("xyzw1234"[:inside%9]+string(apiKey)+"!")) + " end"
				}
				if !set.Contains([]byte(doc)) {
					t.Errorf("%s: %d bytes before the secret, %d characters before the run: not found in %s", name, inside, outside, doc)
				}
				// The run is replaced from wherever its alphabet starts.
				got := string(set.Redact([]byte(doc)))
				if !strings.HasSuffix(got, Redacted+" end") || strings.Count(got, Redacted) != 1 || set.Contains([]byte(got)) {
					t.Errorf("%s: %s redacted to %s", name, doc, got)
				}
			}
		}
	}
}

// TestEncodedVariants: details of single layers the tables above do not
// reach.
func TestEncodedVariants(t *testing.T) {
	emoji := []byte("key-🔑-ünïcode-€")
	spaced := []byte("correct horse battery staple")
	tests := []struct {
		name   string
		secret []byte
		doc    string
	}{
		{"surrogate pair escapes", emoji, `{"k":"key-\ud83d\udd11-\u00fcn\u00efcode-\u20ac"}`},
		{"JS \\u{} escapes", emoji, `'key-\u{1F511}-\u{fc}n\u{ef}code-\u{20ac}'`},
		{"percent %u of a surrogate pair", emoji, `key-%uD83D%uDD11-%u00FCn%u00EFcode-%u20AC`},
		{"HTML named references", []byte("a&b<c>d\"e'f"), `<p title="a&amp;b&lt;c&gt;d&quot;e&apos;f">`},
		{"HTML legacy reference without ';'", []byte("a&b<c>d-x"), `a&ampb&ltc&gtd-x`},
		{"quoted-printable lower case, soft breaks with blanks", apiKey, "sk-live/4f9+Ab=3dZx=  \r\n_12"},
		{"quoted-printable LF soft break", apiKey, "sk-li=\nve/4f9+Ab=3DZx_12"},
		{"quoted-printable on a line too long for e-mail", apiKey, strings.Repeat("abc ", 300) + "sk-live/4f9+Ab=3dZx_12 " + strings.Repeat("abc ", 300)},
		{"form encoding: '+' for spaces", spaced, url.QueryEscape(string(spaced))},
		{"form encoding inside JSON", spaced, `{"q":"correct+horse+battery+staple"}`},
		{"base64 with indented lines", apiKey, "key:\n  " + string(wrap(base64.StdEncoding.EncodeToString([]byte("Bearer "+string(apiKey))), 8, "\n  "))},
		{"base64 with wrong padding", apiKey, base64.RawStdEncoding.EncodeToString(apiKey) + "===="},
		{"base64 mixing both alphabets", apiKey, strings.Replace(base64.StdEncoding.EncodeToString([]byte("??>>"+string(apiKey))), "/", "_", 1)},
		{"hex upper in lower text", apiKey, "0x" + strings.ToUpper(hex.EncodeToString(apiKey)) + "deadbeef"},
		{"HTML-escaped JSON", password, html.EscapeString(`{"p":"p@ss\/w\"rd\\+&%<>=;'x"}`)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			set := New([][]byte{tt.secret})
			if !set.Contains([]byte(tt.doc)) {
				t.Fatalf("not found in %s", tt.doc)
			}
			got := set.Redact([]byte(tt.doc))
			if set.Contains(got) || !bytes.Contains(got, []byte(Redacted)) {
				t.Errorf("%s redacted to %s", tt.doc, got)
			}
		})
	}
}

// TestShortSecrets: a secret shorter than MinLen is found raw, behind
// escapes, and as the whole of a base64, base32 or hex run; not inside a
// longer run, where decoded noise would match it by chance.
func TestShortSecrets(t *testing.T) {
	short := []byte("pin/42")
	set := New([][]byte{short})
	for _, doc := range []string{
		"the pin/42 is",
		`{"pin":"pin\/42"}`,
		"pin%2F42",
		"&#112;&#105;&#110;&#47;&#52;&#50;",
		"x=" + base64.StdEncoding.EncodeToString(short) + "&y=1",
		"x=" + base64.StdEncoding.EncodeToString([]byte("pin/42\n")),
		"x=" + base32.StdEncoding.EncodeToString(short),
		"x=" + hex.EncodeToString(short),
	} {
		if !set.Contains([]byte(doc)) {
			t.Errorf("not found in %s", doc)
		}
		if got := set.Redact([]byte(doc)); set.Contains(got) {
			t.Errorf("%s redacted to %s", doc, got)
		}
	}
	for _, doc := range []string{
		base64.StdEncoding.EncodeToString([]byte("Bearer pin/42")),
		hex.EncodeToString([]byte("my pin/42")),
	} {
		if set.Contains([]byte(doc)) {
			t.Errorf("a short secret inside a longer run is found: %s", doc)
		}
	}
}

// TestCleanInputUnchanged: text without the secret, however many
// encodings it has, is not reported, and Redact returns it as it is: the
// same bytes, not a copy.
func TestCleanInputUnchanged(t *testing.T) {
	set := New(append(benchSecrets, []byte("hunter22"), []byte("pin4")))
	docs := [][]byte{
		realisticJSON(64<<10, 3),
		bytes.ReplaceAll(realisticJSON(16<<10, 4), []byte("/"), []byte(`\/`)),
		[]byte(html.EscapeString(string(realisticJSON(16<<10, 5)))),
		[]byte(url.QueryEscape(string(realisticJSON(16<<10, 6)))),
		[]byte(base64.StdEncoding.EncodeToString(realisticJSON(16<<10, 7))),
		[]byte("Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\nCaf=C3=A9 =\r\nau lait =3D 3=E2=82=AC\r\n"),
		{},
	}
	for i, doc := range docs {
		if set.Contains(doc) {
			t.Errorf("doc %d: found a secret that is not there", i)
		}
		if got := set.Redact(doc); len(doc) > 0 && &got[0] != &doc[0] || len(got) != len(doc) {
			t.Errorf("doc %d: Redact changed clean input", i)
		}
	}
	if New(nil).Contains([]byte("x")) || !New(nil).Empty() || !New([][]byte{{}}).Empty() {
		t.Error("an empty set finds something")
	}
}

// TestRedactedJSONStaysValid: a JSON response with the secret in several
// spellings is still valid JSON once redacted, each spelling replaced
// inside its string.
func TestRedactedJSONStaysValid(t *testing.T) {
	set := New([][]byte{password, apiKey})
	fields := map[string]string{
		"raw":     string(apiKey),
		"json":    string(password),
		"bearer":  "Bearer " + string(password),
		"url":     "https://x.example/cb?token=" + url.QueryEscape(string(password)) + "&state=1",
		"basic":   "Basic " + base64.StdEncoding.EncodeToString([]byte("user:"+string(password))),
		"hex":     hex.EncodeToString(apiKey),
		"html":    html.EscapeString("<b>" + string(password) + "</b>"),
		"nothing": "a clean value",
	}
	doc, err := json.Marshal(fields)
	if err != nil {
		t.Fatal(err)
	}
	doc = bytes.ReplaceAll(doc, []byte("/"), []byte(`\/`)) // as PHP writes it
	got := set.Redact(doc)
	var back map[string]string
	if err := json.Unmarshal(got, &back); err != nil {
		t.Fatalf("%s is not JSON: %v", got, err)
	}
	want := map[string]string{
		"raw":     Redacted,
		"json":    Redacted,
		"bearer":  "Bearer " + Redacted,
		"url":     "https://x.example/cb?token=" + Redacted + "&state=1",
		"basic":   "Basic " + Redacted,
		"hex":     Redacted,
		"html":    "&lt;b&gt;" + Redacted + "&lt;/b&gt;",
		"nothing": "a clean value",
	}
	for k, v := range want {
		if back[k] != v {
			t.Errorf("%s: %q, want %q", k, back[k], v)
		}
	}
}

// adversarial is a run that percent, HTML and quoted-printable decoding
// each undo one level of, leaving the others' escapes for the next: every
// sequence of layers decodes it again, 3^d times at depth d.
func adversarial(n int) []byte {
	return bytes.Repeat([]byte("%252525&amp;amp;amp;=3D3D3D"), n/27)
}

// TestBudget: on input crafted so that every decoding decodes again, the
// scan stops at its budget and fails closed: Contains reports it, and
// Redact replaces it. Without the budget it would decode far more.
func TestBudget(t *testing.T) {
	set := New([][]byte{apiKey})
	const tail = "\nand after it, a clean line"
	doc := append(adversarial(64<<10), tail...)
	limit := BudgetFactor*len(doc) + BudgetBase

	unbounded := set.scanner(context.Background(), doc, false)
	unbounded.budget = 1 << 40
	if found := unbounded.find(doc, 0, true); len(found) > 0 {
		t.Fatalf("found %v", found)
	}
	if unbounded.spent <= limit {
		t.Fatalf("the crafted input decodes %d bytes, within the budget of %d: it proves nothing", unbounded.spent, limit)
	}

	sc := set.scanner(context.Background(), doc, false)
	found := merge(sc.find(doc, 0, true))
	if !sc.exhausted || sc.spent > limit {
		t.Errorf("decoded %d bytes, exhausted %v; budget %d", sc.spent, sc.exhausted, limit)
	}
	if len(found) != 1 || found[0] != (span{0, len(doc) - len(tail)}) {
		t.Errorf("found %v", found)
	}
	if !set.Contains(doc) {
		t.Error("Contains is false on a run it could not afford to scan")
	}
	if got := string(set.Redact(doc)); got != Redacted+tail {
		t.Errorf("redacted to %.80q", got)
	}
	t.Logf("%d bytes: %d decoded without a budget, %d with", len(doc), unbounded.spent, sc.spent)
}

// TestContextEndsScan: a scan whose context has ended stops decoding within
// checkEvery bytes and fails closed, so a crafted response cannot hold a
// call past its deadline for as long as the budget allows.
func TestContextEndsScan(t *testing.T) {
	set := New([][]byte{apiKey})
	const tail = "\nand after it, a clean line"
	doc := append(adversarial(64<<10), tail...)

	live := set.scanner(context.Background(), doc, true)
	if found := live.find(doc, 0, true); len(found) == 0 || live.spent <= 2*checkEvery {
		t.Fatalf("live scan: found %v after decoding %d bytes; the input must cost more than %d to prove anything",
			found, live.spent, 2*checkEvery)
	}

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	ended := set.scanner(ctx, doc, false)
	found := ended.find(doc, 0, true)
	if !ended.exhausted || ended.spent > checkEvery {
		t.Errorf("ended scan decoded %d bytes (exhausted %v); want at most %d", ended.spent, ended.exhausted, checkEvery)
	}
	if len(found) == 0 {
		t.Error("an ended scan found nothing in runs it did not decode: it must fail closed")
	}
	if !set.ContainsContext(ctx, doc) {
		t.Error("ContainsContext is false after its context ended")
	}
	if got := string(set.RedactContext(ctx, doc)); strings.Contains(got, string(doc[:64])) {
		t.Errorf("RedactContext left undecoded runs: %.80q", got)
	}
	// Small inputs finish before the first look at the context.
	clean := []byte(`{"name":"contractual"}`)
	if set.ContainsContext(ctx, clean) || string(set.RedactContext(ctx, clean)) != string(clean) {
		t.Error("a small clean input is reported after its context ended")
	}
}
