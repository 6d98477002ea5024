package ui_test

import (
	"context"
	"database/sql"
	"net/http"
	"net/url"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"google.golang.org/protobuf/types/known/structpb"

	"github.com/contractual/contractual/contracts/contract"
	contractualv1 "github.com/contractual/contractual/contracts/gen/contractual/v1"
	"github.com/contractual/contractual/internal/invoke"
	"github.com/contractual/contractual/internal/metrics"
	"github.com/contractual/contractual/internal/principal"
	"github.com/contractual/contractual/internal/runner"
	"github.com/contractual/contractual/runtime/sandbox"
	"github.com/contractual/contractual/ui"
)

const (
	pending  = contractualv1.ContractState_CONTRACT_STATE_PENDING
	approved = contractualv1.ContractState_CONTRACT_STATE_APPROVED
	rejected = contractualv1.ContractState_CONTRACT_STATE_REJECTED
	revoked  = contractualv1.ContractState_CONTRACT_STATE_REVOKED
)

// wantCSP is the exact policy every response must carry.
const wantCSP = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"

// inlineRE finds what the CSP would block besides inline scripts: style
// elements or attributes, event handler attributes, javascript: URLs.
var inlineRE = regexp.MustCompile(`(?i)<style|\sstyle=|\son[a-z]+=|=\s*"?\s*javascript:`)

// scriptRE finds script elements with their content.
var scriptRE = regexp.MustCompile(`(?is)<script([^>]*)>(.*?)</script>`)

// inlineCode returns the first piece of body that the CSP forbids, or "".
func inlineCode(body string) string {
	if m := inlineRE.FindString(body); m != "" {
		return m
	}
	for _, m := range scriptRE.FindAllStringSubmatch(body, -1) {
		if !strings.Contains(m[1], "src=") || strings.TrimSpace(m[2]) != "" {
			return m[0]
		}
	}
	if strings.Count(strings.ToLower(body), "<script") != len(scriptRE.FindAllString(body, -1)) {
		return "<script without </script>"
	}
	return ""
}

// TestPages: every page renders for a signed-in browser with what it is
// for, the nav bar and the device, and no inline code.
func TestPages(t *testing.T) {
	e := newEnv(t)
	a := e.pairFirst("laptop")
	textkit := e.publish("textkit", nil)
	gh := e.publish("ghwhoami", nil)
	other := e.newBrowser()
	req := other.beginPairing("phone")

	cases := []struct {
		path string
		want []string
	}{
		{"/ui/", []string{`id="count-pending-contracts">2<`, `id="count-pairing-requests">1<`, `id="count-secrets">0<`,
			`id="count-devices">1<`, `id="audit-status" class="banner ok"`, "chain verified", `id="no-runs"`}},
		{"/ui/contracts", []string{`class="contract-row" data-digest="` + textkit + `"`, `class="contract-row" data-digest="` + gh + `"`,
			`href="/ui/contracts/` + textkit + `"`, `id="pending"`, `id="contracts"`, `id="contracts-filter"`}},
		{"/ui/contracts/" + textkit, []string{`id="permissions-card"`, `data-export="slugify"`, `data-export="word_count"`,
			`data-export="json_pick"`, `badge risk-low`, "No network access.", "No secrets.", "16 MiB", "2000 ms", "64 KiB",
			"real clock: yes", textkit, "sha256:b707d6f5d11d68764cdfc7518a56e3773569b8ae2ea7a7737315f99b79536ac7",
			"contractual examples", `id="approve"`, `id="reject"`, `id="reason"`, `by <code>device:owner-cli</code>`}},
		{"/ui/contracts/" + gh, []string{`id="permissions-card"`, "GITHUB_TOKEN → Authorization: Bearer {secret}",
			`<code>api.github.com</code>`, `<code>/user</code>`, `<span class="badge">GET</span>`, "443",
			`class="injection-row" data-name="GITHUB_TOKEN"`, "5000 ms"}},
		{"/ui/devices", []string{`class="request-row" data-code="` + req.begin.Code + `"`, `class="approve primary"`, `class="reject danger"`,
			`data-id="` + a.id + `"`, "this browser", `class="revoke danger"`, "phone"}},
		{"/ui/secrets", []string{`id="secret-name"`, `id="secret-value" name="value" type="password"`, `autocomplete="off"`,
			`id="secret-submit"`, `class="secret-missing" data-name="GITHUB_TOKEN"`, "No secrets stored."}},
		{"/ui/runs", []string{`id="audit-status" class="banner ok"`, "chain verified", `data-action="contract.publish"`, `class="event-row"`}},
		{"/ui/pair", []string{`id="pair-signed-in"`, "already paired"}},
	}
	for _, c := range cases {
		t.Run(c.path, func(t *testing.T) {
			r := a.get(c.path)
			if r.StatusCode != http.StatusOK {
				t.Fatalf("status %d: %s", r.StatusCode, r.body)
			}
			if ct := r.Header.Get("Content-Type"); ct != "text/html; charset=utf-8" {
				t.Errorf("Content-Type %q", ct)
			}
			want := append([]string{`id="device-id"`, a.id, "laptop", `id="logout"`, `href="/ui/static/app.css"`, `src="/ui/static/app.js"`}, c.want...)
			for _, w := range want {
				if !strings.Contains(r.body, w) {
					t.Errorf("page lacks %q", w)
				}
			}
			if m := inlineCode(r.body); m != "" {
				t.Errorf("inline code the CSP forbids: %q", m)
			}
		})
	}
	// Sections: the pending contracts are listed under "pending", and
	// again in the list of all contracts.
	body := a.get("/ui/contracts").body
	p, all, row := strings.Index(body, `id="pending"`), strings.Index(body, `id="contracts"`), strings.Index(body, `data-digest="`+textkit)
	if !(p < row && row < all) || !strings.Contains(body[all:], `data-digest="`+textkit) {
		t.Errorf("the pending contract is not in the pending section and the list (%d %d %d)", p, row, all)
	}
	// The pairing page, signed out, has the pairing controls.
	r := e.newBrowser().get("/ui/pair")
	for _, w := range []string{`id="pair-name"`, `id="pair-start"`, `id="pair-code"`, `id="setup-code"`, `id="setup-submit"`, `id="pair-status"`} {
		if r.StatusCode != http.StatusOK || !strings.Contains(r.body, w) {
			t.Errorf("pairing page (%d) lacks %q", r.StatusCode, w)
		}
	}
	if m := inlineCode(r.body); m != "" {
		t.Errorf("pairing page: inline code %q", m)
	}
	// The device token appears in no page.
	for _, b := range e.bodies {
		if strings.Contains(b, a.cookie()) {
			t.Fatal("a response body holds the device token")
		}
	}
}

// TestInlineCodeCheck makes sure the inline-code detector detects.
func TestInlineCodeCheck(t *testing.T) {
	for _, bad := range []string{`<script>alert(1)</script>`, `<p style="x">`, `<a onclick="x">`, `<style>p{}</style>`, `<script type="module">`} {
		if inlineCode(bad) == "" {
			t.Errorf("not detected: %s", bad)
		}
	}
	if m := inlineCode(`<script src="/ui/static/app.js" defer></script>`); m != "" {
		t.Errorf("false positive: %q", m)
	}
}

// TestApproveReject: the decision forms change the contract's state and
// come back with a flash message; who decided and why is shown.
func TestApproveReject(t *testing.T) {
	e := newEnv(t)
	a := e.pairFirst("laptop")
	d := e.publish("textkit", nil)

	r := a.postForm("/ui/contracts/"+d+"/approve", a.form("reason", "looks fine\r\nto me"))
	if r.StatusCode != http.StatusSeeOther || r.Header.Get("Location") != "/ui/contracts/"+d+"?done=approved" {
		t.Fatalf("approve: %d %q %s", r.StatusCode, r.Header.Get("Location"), r.body)
	}
	if st := e.state(d); st != approved {
		t.Fatalf("state %v after approve", st)
	}
	page := a.get(r.Header.Get("Location"))
	for _, w := range []string{"Contract approved", `id="revoke"`, "device:" + a.id, "looks fine\nto me"} {
		if !strings.Contains(page.body, w) {
			t.Errorf("after approve, the page lacks %q", w)
		}
	}
	if strings.Contains(page.body, `id="approve"`) {
		t.Error("an approved contract still offers approve")
	}

	r = a.postForm("/ui/contracts/"+d+"/revoke", a.form("revoke_reason", "done with it"))
	if r.StatusCode != http.StatusSeeOther || e.state(d) != revoked {
		t.Fatalf("revoke: %d, state %v", r.StatusCode, e.state(d))
	}
	if f := flashText(a.get(r.Header.Get("Location")).body); !strings.Contains(f, "revoked") {
		t.Errorf("flash after revoke: %q", f)
	}

	d2 := e.publish("textkit", func(s string) string { return strings.Replace(s, "version: 1.0.0", "version: 1.0.1", 1) })
	r = a.postForm("/ui/contracts/"+d2+"/reject", a.form("reason", "not now"))
	if r.StatusCode != http.StatusSeeOther || e.state(d2) != rejected {
		t.Fatalf("reject: %d, state %v", r.StatusCode, e.state(d2))
	}
	list := a.get("/ui/contracts").body
	if strings.Contains(list, `id="pending"`) || !strings.Contains(list, `data-digest="`+d2) || !strings.Contains(list, `data-digest="`+d) {
		t.Error("with nothing pending, the page has a pending section, or lacks the rejected and revoked contracts")
	}
	for st, want := range map[string]string{"rejected": d2, "revoked": d} {
		list := a.get("/ui/contracts?state=" + st).body
		if strings.Count(list, `class="contract-row"`) != 1 || !strings.Contains(list, `data-digest="`+want) {
			t.Errorf("the %s contracts are not %s alone", st, want)
		}
	}
}

// TestDiff: an update shows its changes against the approved version, the
// widened ones marked, as contract.Diff computes them.
func TestDiff(t *testing.T) {
	e := newEnv(t)
	a := e.pairFirst("laptop")
	old := e.publish("textkit", nil)
	if r := a.postForm("/ui/contracts/"+old+"/approve", a.form()); r.StatusCode != http.StatusSeeOther {
		t.Fatalf("approve: %d", r.StatusCode)
	}
	d := e.publish("textkit", func(s string) string {
		s = strings.Replace(s, "version: 1.0.0", "version: 1.1.0", 1)
		s = strings.Replace(s, "timeout_ms: 2000", "timeout_ms: 5000", 1)
		return strings.Replace(s, "memory_mib: 16", "memory_mib: 8", 1)
	})
	r := a.get("/ui/contracts/" + d)
	if r.StatusCode != http.StatusOK {
		t.Fatalf("status %d", r.StatusCode)
	}
	for _, w := range []string{`id="diff" class="card widens"`, `class="change widened" data-kind="widened"`, "limits.timeout_ms",
		"<code>2000</code> → <code>5000</code>", `class="change narrowed"`, "limits.memory_mib",
		`class="change changed"`, "<code>version</code>", "1 widens what the tool may do", `href="/ui/contracts/` + old + `"`} {
		if !strings.Contains(r.body, w) {
			t.Errorf("diff lacks %q", w)
		}
	}
	oldRec, _ := e.policy.GetContract(e.ctx, &contractualv1.GetContractRequest{Digest: old})
	newRec, _ := e.policy.GetContract(e.ctx, &contractualv1.GetContractRequest{Digest: d})
	want := contract.Diff(oldRec.GetRecord().GetContract(), newRec.GetRecord().GetContract())
	if got := strings.Count(r.body, `<tr class="change `); got != len(want) || len(want) != 3 {
		t.Errorf("%d change rows, contract.Diff has %d (want 3)", got, len(want))
	}
	// The approved one shows no diff.
	if strings.Contains(a.get("/ui/contracts/"+old).body, `id="diff"`) {
		t.Error("the approved contract shows a diff")
	}
}

// TestCSRF: a form without the session's token, or with a wrong one, is
// refused with 403 and changes nothing.
func TestCSRF(t *testing.T) {
	e := newEnv(t)
	a := e.pairFirst("laptop")
	b := e.pairBy(a, "phone")
	d := e.publish("textkit", nil)
	cases := map[string]url.Values{
		"missing":       {"reason": {"x"}},
		"empty":         {"csrf": {""}},
		"wrong":         {"csrf": {"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"}},
		"other session": {"csrf": {b.csrf()}},
		"twice":         {"csrf": {a.csrf(), a.csrf()}},
	}
	for name, form := range cases {
		t.Run(name, func(t *testing.T) {
			r := a.postForm("/ui/contracts/"+d+"/approve", form)
			if r.StatusCode != http.StatusForbidden || !strings.Contains(errorText(r.body), "CSRF") {
				t.Fatalf("%d %q", r.StatusCode, errorText(r.body))
			}
			if e.state(d) != pending {
				t.Fatal("the contract changed")
			}
		})
	}
	// In the query string instead of the body: refused too.
	r := a.postForm("/ui/contracts/"+d+"/approve?csrf="+url.QueryEscape(a.csrf()), url.Values{})
	if r.StatusCode != http.StatusForbidden || e.state(d) != pending {
		t.Fatalf("CSRF token in the URL: %d, %v", r.StatusCode, e.state(d))
	}
	// Logout and secrets are guarded the same way.
	if r := a.postForm("/ui/logout", url.Values{}); r.StatusCode != http.StatusForbidden {
		t.Errorf("logout without CSRF: %d", r.StatusCode)
	}
	if r := a.postForm("/ui/secrets", url.Values{"name": {"X"}, "value": {"v"}}); r.StatusCode != http.StatusForbidden {
		t.Errorf("secret without CSRF: %d", r.StatusCode)
	}
	if ls, _ := e.broker.ListSecrets(e.owner(), &contractualv1.ListSecretsRequest{}); len(ls.GetSecrets()) != 0 {
		t.Error("a secret was stored without CSRF")
	}
	if a.get("/ui/").StatusCode != http.StatusOK {
		t.Error("logout without CSRF signed out")
	}
	// And the right token works.
	if r := a.postForm("/ui/contracts/"+d+"/approve", a.form()); r.StatusCode != http.StatusSeeOther || e.state(d) != approved {
		t.Fatalf("with the token: %d", r.StatusCode)
	}
}

// TestCrossOrigin: a POST from another site, by Origin or Sec-Fetch-Site,
// is refused with 403 before anything else, and changes nothing.
func TestCrossOrigin(t *testing.T) {
	e := newEnv(t)
	a := e.pairFirst("laptop")
	d := e.publish("textkit", nil)
	cases := []struct {
		name    string
		headers []string
	}{
		{"foreign Origin", []string{"Origin", "https://evil.example"}},
		{"foreign Origin, same host name other port", []string{"Origin", "http://127.0.0.1:1"}},
		{"Sec-Fetch-Site cross-site", []string{"Sec-Fetch-Site", "cross-site"}},
		{"Sec-Fetch-Site same-site", []string{"Sec-Fetch-Site", "same-site"}},
		{"null Origin", []string{"Origin", "null"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			a.origin = ""
			form := a.form()
			r := a.postForm("/ui/contracts/"+d+"/approve", form, c.headers...)
			if r.StatusCode != http.StatusForbidden || !strings.Contains(errorText(r.body), "another site") {
				t.Fatalf("%d %q", r.StatusCode, errorText(r.body))
			}
			if e.state(d) != pending {
				t.Fatal("the contract changed")
			}
			// The pairing endpoints too, in JSON.
			b := e.newBrowser()
			b.origin = ""
			r = b.post("/ui/pair/begin", "application/json", `{"name":"x","public_key":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="}`, c.headers...)
			if r.StatusCode != http.StatusForbidden || !strings.Contains(r.body, `"error"`) {
				t.Fatalf("pair/begin: %d %s", r.StatusCode, r.body)
			}
		})
	}
	if reqs, _ := e.pairing.ListPairingRequests(e.ctx, &contractualv1.ListPairingRequestsRequest{}); len(reqs.GetRequests()) != 0 {
		t.Error("a cross-origin begin made a pairing request")
	}
	// Same origin, as a browser sends it, passes.
	a.origin = e.srv.URL
	if r := a.postForm("/ui/contracts/"+d+"/approve", a.form(), "Sec-Fetch-Site", "same-origin"); r.StatusCode != http.StatusSeeOther {
		t.Fatalf("same-origin POST: %d %s", r.StatusCode, errorText(r.body))
	}
}

// TestSignedOut: without a session, pages redirect to the pairing page and
// posts are refused; the pairing page and static files are public.
func TestSignedOut(t *testing.T) {
	e := newEnv(t)
	a := e.pairFirst("laptop")
	d := e.publish("textkit", nil)
	anon := e.newBrowser()
	for _, p := range []string{"/ui/", "/ui/contracts", "/ui/contracts/" + d, "/ui/devices", "/ui/secrets", "/ui/runs", "/ui/nope"} {
		r := anon.get(p)
		if r.StatusCode != http.StatusSeeOther || r.Header.Get("Location") != "/ui/pair" {
			t.Errorf("GET %s: %d %q", p, r.StatusCode, r.Header.Get("Location"))
		}
		if strings.Contains(r.body, d) {
			t.Errorf("GET %s leaks the page", p)
		}
	}
	for _, p := range []string{"/ui/pair", "/ui/static/app.css", "/ui/static/app.js", "/ui/static/favicon.svg"} {
		if r := anon.get(p); r.StatusCode != http.StatusOK {
			t.Errorf("GET %s: %d", p, r.StatusCode)
		}
	}
	if r := anon.get("/ui/static/"); r.StatusCode != http.StatusNotFound {
		t.Errorf("static directory listing: %d", r.StatusCode)
	}
	r := anon.postForm("/ui/contracts/"+d+"/approve", url.Values{"csrf": {a.csrf()}})
	if r.StatusCode != http.StatusUnauthorized || errorText(r.body) == "" || e.state(d) != pending {
		t.Fatalf("anonymous approve: %d %q %v", r.StatusCode, errorText(r.body), e.state(d))
	}
	// A made-up cookie is refused and cleared.
	bogus := e.newBrowser()
	req, _ := http.NewRequest(http.MethodGet, e.srv.URL+"/ui/", nil)
	req.AddCookie(&http.Cookie{Name: "contractual_session", Value: "not-a-token"})
	r = bogus.do(req)
	if r.StatusCode != http.StatusSeeOther || !strings.HasPrefix(r.Header.Get("Location"), "/ui/pair") {
		t.Fatalf("bogus cookie: %d %q", r.StatusCode, r.Header.Get("Location"))
	}
	if sc := r.Header.Get("Set-Cookie"); !strings.Contains(sc, "contractual_session=;") || !strings.Contains(sc, "Max-Age=0") {
		t.Errorf("bogus cookie not cleared: %q", sc)
	}
}

// TestRevokedDevice: a device revoked from another browser is signed out
// at its next request; logout revokes the browser's own device.
func TestRevokedDevice(t *testing.T) {
	e := newEnv(t)
	a := e.pairFirst("laptop")
	b := e.pairBy(a, "phone")
	if r := b.get("/ui/"); r.StatusCode != http.StatusOK {
		t.Fatalf("second browser: %d", r.StatusCode)
	}
	bForm := b.form()
	r := a.postForm("/ui/devices/"+b.id+"/revoke", a.form())
	if r.StatusCode != http.StatusSeeOther || r.Header.Get("Location") != "/ui/devices?done=device-revoked" {
		t.Fatalf("revoke: %d %q", r.StatusCode, r.Header.Get("Location"))
	}
	page := a.get("/ui/devices?done=device-revoked").body
	if !strings.Contains(page, `class="device-row revoked" data-id="`+b.id+`"`) || !strings.Contains(flashText(page), "Device revoked") {
		t.Error("the devices page does not show the revocation")
	}
	// b's next GET signs it out; its once-valid form is refused.
	bToken := b.cookie()
	r = b.get("/ui/")
	if r.StatusCode != http.StatusSeeOther || r.Header.Get("Location") != "/ui/pair?done=session-ended" {
		t.Fatalf("revoked device: %d %q", r.StatusCode, r.Header.Get("Location"))
	}
	if b.cookie() != "" {
		t.Error("the revoked device's cookie was not cleared")
	}
	d := e.publish("textkit", nil)
	req, _ := http.NewRequest(http.MethodPost, e.srv.URL+"/ui/contracts/"+d+"/approve", strings.NewReader(bForm.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.AddCookie(&http.Cookie{Name: "contractual_session", Value: bToken})
	if r := b.do(req); r.StatusCode != http.StatusUnauthorized || e.state(d) != pending {
		t.Fatalf("revoked device approving: %d", r.StatusCode)
	}

	// Logout revokes a's own device.
	tok := a.cookie()
	r = a.postForm("/ui/logout", a.form())
	if r.StatusCode != http.StatusSeeOther || r.Header.Get("Location") != "/ui/pair?done=signed-out" || a.cookie() != "" {
		t.Fatalf("logout: %d %q", r.StatusCode, r.Header.Get("Location"))
	}
	if _, err := e.store.Authenticate(e.ctx, tok, "test"); err == nil {
		t.Fatal("the logged-out device's token still authenticates")
	}
	if f := flashText(a.get("/ui/pair?done=signed-out").body); !strings.Contains(f, "Signed out") {
		t.Errorf("flash %q", f)
	}
}

// TestPairSecondDevice: a pending request shows on the devices page;
// rejecting it through the form makes its completion fail.
func TestPairSecondDevice(t *testing.T) {
	e := newEnv(t)
	a := e.pairFirst("laptop")
	b := e.newBrowser()
	p := b.beginPairing("tablet")
	r := b.postJSON("/ui/pair/complete", p.completeBody())
	if r.StatusCode != http.StatusAccepted || !strings.Contains(r.body, `"pending":true`) || !strings.Contains(r.body, "awaiting approval") {
		t.Fatalf("complete before approval: %d %s", r.StatusCode, r.body)
	}
	if !strings.Contains(a.get("/ui/devices").body, `data-code="`+p.begin.Code+`"`) {
		t.Fatal("the request is not on the devices page")
	}
	r = a.postForm("/ui/devices/requests/"+p.begin.Code+"/reject", a.form())
	if r.StatusCode != http.StatusSeeOther || r.Header.Get("Location") != "/ui/devices?done=request-rejected" {
		t.Fatalf("reject: %d", r.StatusCode)
	}
	r = b.postJSON("/ui/pair/complete", p.completeBody())
	if r.StatusCode != http.StatusForbidden || !strings.Contains(r.body, "rejected") || b.cookie() != "" {
		t.Fatalf("complete after rejection: %d %s", r.StatusCode, r.body)
	}
	// Approved instead, it pairs; the new browser sees itself.
	c := e.pairBy(a, "desktop")
	if body := c.get("/ui/devices").body; !strings.Contains(body, `class="device-row this" data-id="`+c.id+`"`) {
		t.Error("the new browser is not marked as this browser")
	}
}

// TestHeaders: the security headers on every kind of response, and the
// session cookie's attributes.
func TestHeaders(t *testing.T) {
	e := newEnv(t)
	b := e.newBrowser()
	p := b.beginPairing("laptop")
	code, _, _ := e.store.SetupCode(e.ctx)
	b.postJSON("/ui/pair/setup", `{"code":"`+p.begin.Code+`","setup_code":"`+code+`"}`)
	done := b.postJSON("/ui/pair/complete", p.completeBody())
	sc := done.Header.Get("Set-Cookie")
	for _, w := range []string{"contractual_session=", "Path=/", "HttpOnly", "SameSite=Strict", "Max-Age="} {
		if !strings.Contains(sc, w) {
			t.Errorf("session cookie %q lacks %s", sc, w)
		}
	}
	if strings.Contains(sc, "Secure") || strings.Contains(sc, "__Host-") {
		t.Errorf("plain-HTTP session cookie is Secure/__Host-: %q", sc)
	}
	b.id = p.begin.DeviceID
	responses := map[string]response{
		"page":      b.get("/ui/"),
		"pair page": b.get("/ui/pair"),
		"css":       b.get("/ui/static/app.css"),
		"js":        b.get("/ui/static/app.js"),
		"json":      done,
		"404":       b.get("/ui/nope"),
		"405":       b.post("/ui/contracts", "application/x-www-form-urlencoded", ""),
		"redirect":  e.newBrowser().get("/ui/"),
		"403":       b.post("/ui/logout", "application/x-www-form-urlencoded", "", "Origin", "https://evil.example"),
	}
	for name, r := range responses {
		h := r.Header
		if h.Get("Content-Security-Policy") != wantCSP {
			t.Errorf("%s: CSP %q", name, h.Get("Content-Security-Policy"))
		}
		for k, v := range map[string]string{"X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer", "X-Frame-Options": "DENY"} {
			if h.Get(k) != v {
				t.Errorf("%s: %s = %q", name, k, h.Get(k))
			}
		}
	}
	for _, name := range []string{"page", "pair page", "404", "405", "403", "json"} {
		if cc := responses[name].Header.Get("Cache-Control"); cc != "no-store" {
			t.Errorf("%s: Cache-Control %q", name, cc)
		}
	}
	if ct := responses["js"].Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/javascript") {
		t.Errorf("app.js Content-Type %q", ct)
	}
	if ct := responses["css"].Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/css") {
		t.Errorf("app.css Content-Type %q", ct)
	}
	if responses["page"].StatusCode != http.StatusOK || responses["405"].StatusCode != http.StatusMethodNotAllowed || responses["403"].StatusCode != http.StatusForbidden {
		t.Errorf("statuses: page %d, 405 %d, 403 %d", responses["page"].StatusCode, responses["405"].StatusCode, responses["403"].StatusCode)
	}
	if allow := responses["405"].Header.Get("Allow"); allow != "GET, HEAD" {
		t.Errorf("Allow %q", allow)
	}
}

// TestRuns: a tool call through the real runner shows as a run, with the
// audit log and its verification; a tampered log shows red.
func TestRuns(t *testing.T) {
	e := newEnv(t)
	a := e.pairFirst("laptop")
	d := e.publish("textkit", nil)
	if r := a.postForm("/ui/contracts/"+d+"/approve", a.form()); r.StatusCode != http.StatusSeeOther {
		t.Fatalf("approve: %d", r.StatusCode)
	}
	engine, err := sandbox.NewEngine(sandbox.Options{CacheDir: filepath.Join(e.dir, "cache")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { engine.Close(context.Background()) })
	run, err := runner.New(e.ctx, runner.Config{}, runner.Deps{Policy: e.policy, Broker: e.broker, Audit: e.audit, Engine: engine, Metrics: metrics.NewRegistry().Tools()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { run.Close(context.Background()) })
	in, _ := structpb.NewStruct(map[string]any{"text": "Hello UI"})
	ctx := principal.With(e.ctx, "device:"+a.id)
	if _, err := invoke.New(e.policy, run).Invoke(ctx, &contractualv1.InvokeRequest{Tool: "textkit.slugify", Input: structpb.NewStructValue(in)}); err != nil {
		t.Fatalf("invoke: %v", err)
	}
	r := a.get("/ui/runs")
	if r.StatusCode != http.StatusOK {
		t.Fatalf("runs: %d", r.StatusCode)
	}
	rows := regexp.MustCompile(`(?s)<tr class="run-row ok".*?</tr>`).FindAllString(r.body, -1)
	if len(rows) != 1 {
		t.Fatalf("%d ok run rows, want 1", len(rows))
	}
	for _, w := range []string{"textkit.slugify", "device:" + a.id, `<span class="badge ok">ok</span>`, shortDigest(d)} {
		if !strings.Contains(rows[0], w) {
			t.Errorf("run row lacks %q: %s", w, rows[0])
		}
	}
	if !strings.Contains(r.body, `data-action="call.run"`) || !strings.Contains(r.body, `id="audit-status" class="banner ok"`) {
		t.Error("the audit log lacks the run or its verification")
	}
	if !strings.Contains(a.get("/ui/").body, `class="run-row ok"`) {
		t.Error("the overview does not show the run")
	}

	// Tamper with the log the way an attacker with the file can. The page
	// reuses a good verification for up to 10 s; here, for none.
	ui.SetVerifyEvery(e.ui, 0)
	db, err := sql.Open("sqlite", filepath.Join(e.dir, "audit", "audit.db")+"?_pragma=busy_timeout(5000)")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.Exec(`DROP TRIGGER events_no_update`); err != nil {
		t.Fatal(err)
	}
	var enc []byte
	if err := db.QueryRow(`SELECT enc FROM events WHERE idx = 1`).Scan(&enc); err != nil {
		t.Fatal(err)
	}
	enc[len(enc)-1] ^= 1
	if _, err := db.Exec(`UPDATE events SET enc = ? WHERE idx = 1`, enc); err != nil {
		t.Fatal(err)
	}
	r = a.get("/ui/runs")
	if !strings.Contains(r.body, `id="audit-status" class="banner bad"`) || !strings.Contains(r.body, "FAILED at event 1") {
		t.Errorf("a tampered log is not shown as failed: %s", regexp.MustCompile(`<p id="audit-status".*</p>`).FindString(r.body))
	}
}

// shortDigest is the UI's abbreviation of a digest.
func shortDigest(d string) string { return d[:len("sha256:")+12] + "…" }
