package ui_test

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"

	contractualv1 "github.com/contractual/contractual/contracts/gen/contractual/v1"
	"github.com/contractual/contractual/internal/pairing"
	"github.com/contractual/contractual/internal/secret"
	"github.com/contractual/contractual/ui"
)

// secrets lists the stored secrets as name → version.
func (e *env) secrets() map[string]uint32 {
	e.t.Helper()
	ls, err := e.broker.ListSecrets(e.owner(), &contractualv1.ListSecretsRequest{})
	if err != nil {
		e.t.Fatal(err)
	}
	out := map[string]uint32{}
	for _, s := range ls.GetSecrets() {
		out[s.GetName()] = s.GetVersion()
	}
	return out
}

// TestSecretForm: the form stores and rotates a value, which no response
// ever shows again, even when the form comes back with an error.
func TestSecretForm(t *testing.T) {
	e := newEnv(t)
	a := e.pairFirst("laptop")
	e.publish("ghwhoami", nil)
	raw := make([]byte, 16)
	rand.Read(raw)
	value := "ghp_" + hex.EncodeToString(raw)
	value2 := value + "-rotated"

	r := a.postForm("/ui/secrets", a.form("name", "GITHUB_TOKEN", "value", value))
	if r.StatusCode != http.StatusSeeOther || r.Header.Get("Location") != "/ui/secrets?done=stored&name=GITHUB_TOKEN&version=1" {
		t.Fatalf("store: %d %q %s", r.StatusCode, r.Header.Get("Location"), errorText(r.body))
	}
	if got := e.secrets(); got["GITHUB_TOKEN"] != 1 {
		t.Fatalf("ListSecrets: %v", got)
	}
	page := a.get(r.Header.Get("Location")).body
	if f := flashText(page); f != "stored GITHUB_TOKEN version 1" {
		t.Errorf("flash %q", f)
	}
	if !strings.Contains(page, `class="secret-row" data-name="GITHUB_TOKEN" data-version="1"`) || strings.Contains(page, "secret-missing") {
		t.Error("the secrets page does not list the stored secret")
	}
	if r := a.postForm("/ui/secrets", a.form("name", "GITHUB_TOKEN", "value", value2)); r.StatusCode != http.StatusSeeOther || e.secrets()["GITHUB_TOKEN"] != 2 {
		t.Fatalf("rotate: %d %v", r.StatusCode, e.secrets())
	}

	// Errors come back without the value.
	bad := []struct {
		name       string
		form       url.Values
		status     int
		msg        string
		keepsName  bool
		noSuchName string
	}{
		{"bad name", a.form("name", "github token", "value", value), 400, "uppercase letter", false, "github token"},
		{"value in the name field", a.form("name", value, "value", value), 400, "uppercase letter", false, ""},
		{"newline in value", a.form("name", "OTHER", "value", value+"\nx"), 400, "CR, LF or NUL", true, ""},
		{"empty value", a.form("name", "OTHER", "value", ""), 400, "value is empty", true, ""},
		{"no value", a.form("name", "OTHER"), 400, "value is empty", true, ""},
		{"value too long", a.form("name", "OTHER", "value", value+strings.Repeat("x", secret.MaxValueBytes)), 400, "over the 65536 byte limit", true, ""},
		{"name too long", a.form("name", strings.Repeat("A", 65), "value", value), 400, "longer than 64", false, ""},
	}
	for _, c := range bad {
		t.Run(c.name, func(t *testing.T) {
			r := a.postForm("/ui/secrets", c.form)
			if r.StatusCode != c.status || !strings.Contains(errorText(r.body), c.msg) {
				t.Fatalf("%d %q", r.StatusCode, errorText(r.body))
			}
			if c.keepsName != strings.Contains(r.body, `value="OTHER"`) {
				t.Errorf("name kept: %v, want %v", !c.keepsName, c.keepsName)
			}
			if !strings.Contains(r.body, `id="secret-form"`) {
				t.Error("the form is not shown again")
			}
		})
	}
	if got := e.secrets(); len(got) != 1 || got["GITHUB_TOKEN"] != 2 {
		t.Fatalf("bad forms changed the secrets: %v", got)
	}

	r = a.postForm("/ui/secrets/GITHUB_TOKEN/delete", a.form())
	if r.StatusCode != http.StatusSeeOther || len(e.secrets()) != 0 {
		t.Fatalf("delete: %d %v", r.StatusCode, e.secrets())
	}
	if f := flashText(a.get(r.Header.Get("Location")).body); !strings.Contains(f, "deleted GITHUB_TOKEN") {
		t.Errorf("flash %q", f)
	}
	// Every page, once more, then: no body ever held a value.
	for _, p := range []string{"/ui/", "/ui/secrets", "/ui/runs", "/ui/devices", "/ui/contracts"} {
		a.get(p)
	}
	for _, b := range e.bodies {
		for _, v := range []string{value, value2, hex.EncodeToString(raw), url.QueryEscape(value)} {
			if strings.Contains(b, v) {
				t.Fatalf("a response body holds the secret value %q", v)
			}
		}
	}
}

// TestFlashIsFixed: a flash shows only fixed texts, never text from the
// URL.
func TestFlashIsFixed(t *testing.T) {
	e := newEnv(t)
	a := e.pairFirst("laptop")
	for _, q := range []string{"?done=<b>pwned</b>", "?done=stored&name=<b>X</b>&version=1", "?done=stored&name=X&version=-1", "?done=nope"} {
		body := a.get("/ui/secrets" + q).body
		if strings.Contains(body, "pwned") || strings.Contains(body, "&lt;b&gt;") || strings.Contains(body, `id="flash"`) {
			t.Errorf("%s: a flash from the URL", q)
		}
	}
}

// snapshot is the state that bad input must not change.
type snapshot struct {
	states   map[string]contractualv1.ContractState
	secrets  map[string]uint32
	devices  int
	requests int
}

func (e *env) snapshot(digests ...string) snapshot {
	e.t.Helper()
	s := snapshot{states: map[string]contractualv1.ContractState{}, secrets: e.secrets()}
	for _, d := range digests {
		s.states[d] = e.state(d)
	}
	ds, _ := e.store.Devices(e.ctx)
	for _, d := range ds {
		if d.RevokedAt.IsZero() {
			s.devices++
		}
	}
	rs, _ := e.store.Pending(e.ctx)
	s.requests = len(rs)
	return s
}

func (s snapshot) equal(o snapshot) bool {
	if s.devices != o.devices || s.requests != o.requests || len(s.secrets) != len(o.secrets) {
		return false
	}
	for k, v := range s.states {
		if o.states[k] != v {
			return false
		}
	}
	for k, v := range s.secrets {
		if o.secrets[k] != v {
			return false
		}
	}
	return true
}

// TestBadInput: every form refuses malformed input with a 4xx, a message
// on the page, and no change.
func TestBadInput(t *testing.T) {
	e := newEnv(t)
	a := e.pairFirst("laptop")
	d := e.publish("textkit", nil)
	ok := e.publish("ghwhoami", nil)
	if r := a.postForm("/ui/contracts/"+ok+"/approve", a.form()); r.StatusCode != http.StatusSeeOther {
		t.Fatal("approve")
	}
	if r := a.postForm("/ui/secrets", a.form("name", "KEEP", "value", "v")); r.StatusCode != http.StatusSeeOther {
		t.Fatal("secret")
	}
	req := e.newBrowser().beginPairing("phone")
	unknown := "sha256:" + strings.Repeat("0", 64)
	other := "ABCDEF"
	if req.begin.Code == other {
		other = "BCDEFG"
	}
	long := strings.Repeat("é", 501)
	type tc struct {
		name, method, path string
		form               url.Values
		ct                 string // content type, if not a form
		body               string // raw body, if not form
		status             int
		msg                string
	}
	cases := []tc{
		{"unknown digest page", "GET", "/ui/contracts/" + unknown, nil, "", "", 404, "sha256:000"},
		{"malformed digest page", "GET", "/ui/contracts/sha256:xyz", nil, "", "", 400, "64 lowercase hex"},
		{"upper-case digest page", "GET", "/ui/contracts/" + strings.ToUpper(d), nil, "", "", 400, "64 lowercase hex"},
		{"approve unknown digest", "POST", "/ui/contracts/" + unknown + "/approve", a.form(), "", "", 404, "sha256:000"},
		{"approve malformed digest", "POST", "/ui/contracts/nope/approve", a.form(), "", "", 400, "64 lowercase hex"},
		{"reject without reason", "POST", "/ui/contracts/" + d + "/reject", a.form("reason", "  \r\n "), "", "", 400, "reason is required"},
		{"reason over 500 characters", "POST", "/ui/contracts/" + d + "/approve", a.form("reason", long), "", "", 400, "longer than 500"},
		{"reason twice", "POST", "/ui/contracts/" + d + "/approve", a.form("reason", "a", "reason", "b"), "", "", 400, "more than once"},
		{"reason with control character", "POST", "/ui/contracts/" + d + "/approve", a.form("reason", "a\x01b"), "", "", 400, "control characters"},
		{"reason not UTF-8", "POST", "/ui/contracts/" + d + "/approve", a.form("reason", "a\xffb"), "", "", 400, "not valid UTF-8"},
		{"revoke a pending contract", "POST", "/ui/contracts/" + d + "/revoke", a.form(), "", "", 409, "pending"},
		{"approve an approved contract", "POST", "/ui/contracts/" + ok + "/approve", a.form(), "", "", 409, "approved"},
		{"unknown request code", "POST", "/ui/devices/requests/" + other + "/approve", a.form(), "", "", 404, "no pairing request"},
		{"malformed request code", "POST", "/ui/devices/requests/no!/reject", a.form(), "", "", 400, "request code"},
		{"unknown device", "POST", "/ui/devices/" + strings.Repeat("a", 26) + "/revoke", a.form(), "", "", 404, "no device"},
		{"malformed device id", "POST", "/ui/devices/x/revoke", a.form(), "", "", 400, "device id"},
		{"bad secret name", "POST", "/ui/secrets", a.form("name", "lower", "value", "v"), "", "", 400, "uppercase letter"},
		{"empty secret value", "POST", "/ui/secrets", a.form("name", "KEEP", "value", ""), "", "", 400, "value is empty"},
		{"delete unknown secret", "POST", "/ui/secrets/NOPE/delete", a.form(), "", "", 404, "no secret NOPE"},
		{"delete malformed secret", "POST", "/ui/secrets/nope/delete", a.form(), "", "", 400, "uppercase letter"},
		{"GET a form action", "GET", "/ui/contracts/" + d + "/approve", nil, "", "", 405, "use POST"},
		{"GET logout", "GET", "/ui/logout", nil, "", "", 405, "use POST"},
		{"PUT a page", "PUT", "/ui/secrets", nil, "application/x-www-form-urlencoded", "", 405, "not allowed"},
		{"DELETE a contract", "DELETE", "/ui/contracts/" + d, nil, "", "", 405, "not allowed"},
		{"POST a page", "POST", "/ui/runs", a.form(), "", "", 405, "use GET"},
		{"oversized form", "POST", "/ui/contracts/" + d + "/approve", nil, "application/x-www-form-urlencoded",
			"csrf=" + a.csrf() + "&reason=" + strings.Repeat("a", 70<<10), 413, "too large"},
		{"oversized secret form", "POST", "/ui/secrets", nil, "application/x-www-form-urlencoded",
			"csrf=" + a.csrf() + "&name=KEEP&value=" + strings.Repeat("%41", 70<<10), 413, "too large"},
		{"form as text/plain", "POST", "/ui/contracts/" + d + "/approve", nil, "text/plain", "csrf=" + a.csrf(), 415, "x-www-form-urlencoded"},
		{"form as multipart", "POST", "/ui/secrets", nil, "multipart/form-data; boundary=x", "--x--", 415, "x-www-form-urlencoded"},
		{"malformed form encoding", "POST", "/ui/contracts/" + d + "/approve", nil, "application/x-www-form-urlencoded", "csrf=%zz", 400, "malformed"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			before := e.snapshot(d, ok)
			var body string
			ct := c.ct
			switch {
			case c.form != nil:
				body, ct = c.form.Encode(), "application/x-www-form-urlencoded"
			default:
				body = c.body
			}
			req, _ := http.NewRequest(c.method, e.srv.URL+c.path, strings.NewReader(body))
			if ct != "" {
				req.Header.Set("Content-Type", ct)
			}
			if c.method != "GET" {
				req.Header.Set("Origin", e.srv.URL)
			}
			r := a.do(req)
			if r.StatusCode != c.status {
				t.Fatalf("status %d, want %d: %q", r.StatusCode, c.status, errorText(r.body))
			}
			if msg := errorText(r.body); !strings.Contains(msg, c.msg) {
				t.Errorf("message %q lacks %q", msg, c.msg)
			}
			if !strings.Contains(r.body, `<nav aria-label="Main">`) {
				t.Error("the error is not a full page with the nav bar")
			}
			if after := e.snapshot(d, ok); !before.equal(after) {
				t.Errorf("changed: %+v → %+v", before, after)
			}
		})
	}
	// A failed decision shows the contract page again with the reason kept.
	r := a.postForm("/ui/contracts/"+d+"/reject", a.form("reason", ""))
	if !strings.Contains(r.body, `id="permissions-card"`) || !strings.Contains(r.body, `id="reject"`) {
		t.Error("a failed decision does not show the contract again")
	}
	r = a.postForm("/ui/contracts/"+d+"/approve", a.form("reason", long))
	if !strings.Contains(r.body, ">"+long+"</textarea>") {
		t.Error("the reason is not kept after an error")
	}
}

// pairErr is a pairing endpoint's error answer.
type pairErr struct {
	Error   string `json:"error"`
	Message string `json:"message"` // of the 202 "pending" answer
	Pending bool   `json:"pending"`
}

// TestPairEndpoints: the JSON endpoints refuse what is not a proper JSON
// request, with a clear message, and change nothing.
func TestPairEndpoints(t *testing.T) {
	e := newEnv(t)
	b := e.newBrowser()
	p := b.beginPairing("laptop")
	key := `"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="`
	cases := []struct {
		name, path, ct, body string
		status               int
		msg                  string
	}{
		{"wrong content type", "/ui/pair/begin", "text/plain", `{"name":"x","public_key":` + key + `}`, 415, "application/json"},
		{"form content type", "/ui/pair/complete", "application/x-www-form-urlencoded", `device_id=x`, 415, "application/json"},
		{"no content type", "/ui/pair/setup", "", `{}`, 415, "application/json"},
		{"unknown field", "/ui/pair/begin", "application/json", `{"name":"x","public_key":` + key + `,"admin":true}`, 400, `unknown field "admin"`},
		{"bad base64 key", "/ui/pair/begin", "application/json", `{"name":"x","public_key":"%%%"}`, 400, "public_key is not valid base64"},
		{"url-safe base64 key", "/ui/pair/begin", "application/json", `{"name":"x","public_key":"-_-_"}`, 400, "not valid base64"},
		{"short key", "/ui/pair/begin", "application/json", `{"name":"x","public_key":"AAAA"}`, 400, "32-byte"},
		{"missing key", "/ui/pair/begin", "application/json", `{"name":"x"}`, 400, "public_key is required"},
		{"empty name", "/ui/pair/begin", "application/json", `{"name":" ","public_key":` + key + `}`, 400, "name is empty"},
		{"long name", "/ui/pair/begin", "application/json", `{"name":"` + strings.Repeat("n", 65) + `","public_key":` + key + `}`, 400, "name is too long"},
		{"name not a string", "/ui/pair/begin", "application/json", `{"name":5,"public_key":` + key + `}`, 400, "field name must be a string"},
		{"not an object", "/ui/pair/begin", "application/json", `[1]`, 400, "JSON object"},
		{"not JSON", "/ui/pair/begin", "application/json", `{"name":`, 400, "not valid JSON"},
		{"empty body", "/ui/pair/begin", "application/json", ``, 400, "empty"},
		{"trailing data", "/ui/pair/begin", "application/json", `{"name":"x","public_key":` + key + `} {}`, 400, "data after"},
		{"oversized", "/ui/pair/begin", "application/json", `{"name":"` + strings.Repeat("n", 17<<10) + `"}`, 413, "16 KiB"},
		{"wrong setup code", "/ui/pair/setup", "application/json", `{"code":"` + p.begin.Code + `","setup_code":"ABCDEFGH"}`, 403, "wrong setup code"},
		{"malformed setup code", "/ui/pair/setup", "application/json", `{"code":"` + p.begin.Code + `","setup_code":"x"}`, 400, "setup code must be"},
		{"missing setup code", "/ui/pair/setup", "application/json", `{"code":"` + p.begin.Code + `"}`, 400, "setup_code is required"},
		{"complete bad nonce", "/ui/pair/complete", "application/json", `{"device_id":"` + p.begin.DeviceID + `","nonce":"!","signature":"AAAA"}`, 400, "nonce is not valid base64"},
		{"complete bad signature base64", "/ui/pair/complete", "application/json", `{"device_id":"` + p.begin.DeviceID + `","nonce":"` + p.begin.Nonce + `","signature":"*"}`, 400, "signature is not valid base64"},
		{"complete no device id", "/ui/pair/complete", "application/json", `{"nonce":"` + p.begin.Nonce + `","signature":"AAAA"}`, 400, "device_id is required"},
		{"complete wrong signature", "/ui/pair/complete", "application/json", `{"device_id":"` + p.begin.DeviceID + `","nonce":"` + p.begin.Nonce + `","signature":"` + strings.Repeat("A", 86) + `=="}`, 401, "bad signature"},
		{"complete before approval", "/ui/pair/complete", "application/json", p.completeBody(), 202, "awaiting approval"},
		{"GET an endpoint", "/ui/pair/begin", "GET", "", 405, "use POST"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var r response
			if c.ct == "GET" {
				r = b.get(c.path)
			} else {
				r = b.post(c.path, c.ct, c.body)
			}
			var pe pairErr
			if err := json.Unmarshal([]byte(r.body), &pe); err != nil {
				t.Fatalf("not JSON: %d %s", r.StatusCode, r.body)
			}
			if r.StatusCode != c.status || !strings.Contains(pe.Error+pe.Message, c.msg) {
				t.Fatalf("%d %q, want %d %q", r.StatusCode, pe.Error+pe.Message, c.status, c.msg)
			}
			if pe.Pending != (c.name == "complete before approval") {
				t.Errorf("pending = %v", pe.Pending)
			}
			if ct := r.Header.Get("Content-Type"); ct != "application/json; charset=utf-8" {
				t.Errorf("Content-Type %q", ct)
			}
		})
	}
	if ds, _ := e.store.Devices(e.ctx); len(ds) != 0 || b.cookie() != "" {
		t.Fatal("bad requests paired a device")
	}
	if rs, _ := e.store.Pending(e.ctx); len(rs) != 1 {
		t.Fatalf("%d pending requests, want the one begun", len(rs))
	}
	// The request still pairs, once, with the setup code.
	code, _, _ := e.store.SetupCode(e.ctx)
	if r := b.postJSON("/ui/pair/setup", `{"code":"`+p.begin.Code+`","setup_code":"`+code+`"}`); r.StatusCode != http.StatusOK || r.body != "{}\n" {
		t.Fatalf("setup: %d %s", r.StatusCode, r.body)
	}
	b.complete(p)
	// The same proof again from the browser that got the session (a
	// repeat of its own completion) is answered ok, with nothing new; from
	// anywhere else it is refused: one proof, one token.
	cookie := b.cookie()
	if r := b.postJSON("/ui/pair/complete", p.completeBody()); r.StatusCode != http.StatusOK || r.Header.Get("Set-Cookie") != "" || b.cookie() != cookie {
		t.Fatalf("repeated completion by the paired browser: %d %s %q", r.StatusCode, r.body, r.Header.Get("Set-Cookie"))
	}
	other := e.newBrowser()
	if r := other.postJSON("/ui/pair/complete", p.completeBody()); r.StatusCode != http.StatusConflict ||
		!strings.Contains(r.body, "already completed") || other.cookie() != "" {
		t.Fatalf("replayed completion from another browser: %d %s", r.StatusCode, r.body)
	}
	if ds, _ := e.store.Devices(e.ctx); len(ds) != 1 {
		t.Fatalf("%d devices after the repeats, want 1", len(ds))
	}
}

// TestAuthRateLimit: when the authenticator refuses a source for too many
// failures, the UI says so with 429.
func TestAuthRateLimit(t *testing.T) {
	e := newEnv(t, envOptions{pairing: pairing.Config{AuthFailuresPerMinute: 2}})
	b := e.newBrowser()
	var r response
	for range 3 {
		req, _ := http.NewRequest(http.MethodGet, e.srv.URL+"/ui/", nil)
		req.AddCookie(&http.Cookie{Name: "contractual_session", Value: strings.Repeat("A", 43)})
		r = b.do(req)
	}
	if r.StatusCode != http.StatusTooManyRequests || !strings.Contains(errorText(r.body), "too many failed") {
		t.Fatalf("%d %q", r.StatusCode, errorText(r.body))
	}
}

// TestKeyFile: the CSRF key is created 0600, kept across restarts, and
// refused when others may read it or it has the wrong size.
func TestKeyFile(t *testing.T) {
	e := newEnv(t)
	a := e.pairFirst("laptop")
	path := filepath.Join(e.dir, "gateway", "ui.key")
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != 0o600 || fi.Size() != 32 {
		t.Fatalf("key file: %v %v", fi, err)
	}
	cfg := ui.Config{Policy: e.policy, Pairing: e.pairing, Broker: e.broker, Audit: e.audit, Auth: e.store, KeyFile: path}
	// A restarted UI with the same key accepts the same form token.
	restarted, err := ui.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	d := e.publish("textkit", nil)
	form := a.form()
	req, _ := http.NewRequest(http.MethodPost, "/ui/contracts/"+d+"/approve", strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.AddCookie(&http.Cookie{Name: "contractual_session", Value: a.cookie()})
	req.RemoteAddr = "127.0.0.1:1234"
	w := httptest.NewRecorder()
	restarted.ServeHTTP(w, req)
	if w.Code != http.StatusSeeOther || e.state(d) != approved {
		t.Fatalf("form token after a restart: %d", w.Code)
	}
	// A UI with another key refuses it.
	cfg2 := cfg
	cfg2.KeyFile = filepath.Join(t.TempDir(), "sub", "other.key")
	other, err := ui.New(cfg2)
	if err != nil {
		t.Fatal(err)
	}
	d2 := e.publish("textkit", func(s string) string { return strings.Replace(s, "1.0.0", "1.0.1", 1) })
	req, _ = http.NewRequest(http.MethodPost, "/ui/contracts/"+d2+"/approve", strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.AddCookie(&http.Cookie{Name: "contractual_session", Value: a.cookie()})
	w = httptest.NewRecorder()
	other.ServeHTTP(w, req)
	if w.Code != http.StatusForbidden || e.state(d2) != pending {
		t.Fatalf("form token under another key: %d", w.Code)
	}

	if err := os.Chmod(path, 0o640); err != nil {
		t.Fatal(err)
	}
	if _, err := ui.New(cfg); err == nil || !strings.Contains(err.Error(), "chmod 600") {
		t.Errorf("group-readable key: %v", err)
	}
	short := filepath.Join(t.TempDir(), "short.key")
	os.WriteFile(short, make([]byte, 31), 0o600)
	cfg.KeyFile = short
	if _, err := ui.New(cfg); err == nil || !strings.Contains(err.Error(), "32 bytes") {
		t.Errorf("short key: %v", err)
	}
}

// TestConfig: New refuses an incomplete or malformed configuration.
func TestConfig(t *testing.T) {
	e := newEnv(t)
	good := ui.Config{Policy: e.policy, Pairing: e.pairing, Broker: e.broker, Audit: e.audit, Auth: e.store}
	if _, err := ui.New(good); err != nil {
		t.Fatalf("good config: %v", err)
	}
	bad := map[string]func(*ui.Config){
		"no policy":         func(c *ui.Config) { c.Policy = nil },
		"no auth":           func(c *ui.Config) { c.Auth = nil },
		"PublicURL ftp":     func(c *ui.Config) { c.PublicURL = "ftp://box.example" },
		"PublicURL path":    func(c *ui.Config) { c.PublicURL = "https://box.example/ui" },
		"PublicURL no host": func(c *ui.Config) { c.PublicURL = "https://" },
	}
	for name, edit := range bad {
		c := good
		edit(&c)
		if _, err := ui.New(c); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

// TestPublicURL: behind an https PublicURL the cookie is __Host- and
// Secure, and that origin is trusted for POSTs while others are not.
func TestPublicURL(t *testing.T) {
	const public = "https://box.tail1234.ts.net"
	e := newEnv(t, envOptions{publicURL: public})
	b := e.newBrowser()
	b.origin = public
	p := b.beginPairing("laptop")
	code, _, _ := e.store.SetupCode(e.ctx)
	if r := b.postJSON("/ui/pair/setup", `{"code":"`+p.begin.Code+`","setup_code":"`+code+`"}`); r.StatusCode != http.StatusOK {
		t.Fatalf("setup from the public origin: %d %s", r.StatusCode, r.body)
	}
	r := b.postJSON("/ui/pair/complete", p.completeBody())
	sc := r.Header.Get("Set-Cookie")
	if r.StatusCode != http.StatusOK || !strings.HasPrefix(sc, "__Host-contractual_session=") || !strings.Contains(sc, "Secure") ||
		!strings.Contains(sc, "Path=/") || strings.Contains(sc, "Domain") {
		t.Fatalf("complete: %d, cookie %q", r.StatusCode, sc)
	}
	tok := strings.TrimPrefix(strings.Split(sc, ";")[0], "__Host-contractual_session=")
	get := func(name string) int {
		req, _ := http.NewRequest(http.MethodGet, e.srv.URL+"/ui/", nil)
		req.AddCookie(&http.Cookie{Name: name, Value: tok})
		return e.newBrowser().do(req).StatusCode // an empty jar: only this cookie
	}
	if st := get("__Host-contractual_session"); st != http.StatusOK {
		t.Errorf("with the __Host- cookie: %d", st)
	}
	if st := get("contractual_session"); st != http.StatusSeeOther {
		t.Errorf("the unprefixed cookie is accepted: %d", st)
	}
	b.origin = "https://other.tail1234.ts.net"
	if r := b.postJSON("/ui/pair/begin", `{}`); r.StatusCode != http.StatusForbidden {
		t.Errorf("another origin: %d", r.StatusCode)
	}
}
