package ui_test

import (
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/contractual/contractual/internal/pairing"
)

// TestUIScopes: the UI holds a browser to its device's scopes, from the
// same table as the API: a read-only browser sees everything and changes
// nothing (each refusal names the scope it lacks), with no buttons for
// what it may not do; an approve browser may grant only scopes it holds;
// an invoke-only browser sees no page. The devices page shows every
// device's and request's scopes.
func TestUIScopes(t *testing.T) {
	e := newEnv(t, envOptions{pairing: pairing.Config{BeginsPerSourcePerMinute: 100}})
	a := e.pairFirst("laptop")
	d := e.publish("textkit", nil)
	ro := e.pairBy(a, "wall display", "read")

	devices := a.get("/ui/devices").body
	if !strings.Contains(devices, `data-id="`+ro.id+`" data-scopes="read"`) || !regexp.MustCompile(`(?s)data-id="`+a.id+`" data-scopes="owner">.*?<span class="badge scope owner">owner</span>`).MatchString(devices) {
		t.Errorf("the devices page does not show the scopes:\n%s", devices)
	}

	for _, p := range []string{"/ui/", "/ui/contracts", "/ui/contracts/" + d, "/ui/devices", "/ui/secrets", "/ui/runs"} {
		r := ro.get(p)
		if r.StatusCode != http.StatusOK || !strings.Contains(r.body, `id="device-scopes"`) {
			t.Errorf("read-only GET %s: %d %s", p, r.StatusCode, errorText(r.body))
		}
		for _, form := range []string{`id="decide-form"`, `id="revoke-form"`, `id="secret-form"`, `class="approve`, `class="revoke`, `class="delete`} {
			if strings.Contains(r.body, form) && !(form == `class="revoke` && strings.Contains(r.body, "Revoke (signs out)")) {
				t.Errorf("read-only GET %s shows %s", p, form)
			}
		}
	}
	if !strings.Contains(ro.get("/ui/contracts/"+d).body, `id="decide-not-allowed"`) {
		t.Error("the contract page does not say why there is no decision form")
	}
	b := e.newBrowser()
	req := b.beginPairing("tablet")
	for _, c := range []struct{ path, scope string }{
		{"/ui/contracts/" + d + "/approve", "approve"},
		{"/ui/devices/requests/" + req.begin.Code + "/approve", "approve"},
		{"/ui/devices/requests/" + req.begin.Code + "/reject", "approve"},
		{"/ui/devices/" + a.id + "/revoke", "owner"},
		{"/ui/secrets", "owner"},
		{"/ui/secrets/GITHUB_TOKEN/delete", "owner"},
	} {
		r := ro.postForm(c.path, ro.form("name", "GITHUB_TOKEN", "value", "v"))
		if msg := errorText(r.body); r.StatusCode != http.StatusForbidden || !strings.Contains(msg, "has scopes read") || !strings.Contains(msg, "needs scope "+c.scope) {
			t.Errorf("read-only POST %s: %d %q, want 403 naming scope %s", c.path, r.StatusCode, msg, c.scope)
		}
	}
	if e.state(d) != pending {
		t.Fatal("a read-only browser changed the contract")
	}

	// An approve browser: it may grant read, not owner.
	ap := e.pairBy(a, "phone", "approve")
	owned := e.newBrowser().beginPairing("desktop")
	page := ap.get("/ui/devices").body
	row := regexp.MustCompile(`(?s)<tr class="request-row" data-code="` + owned.begin.Code + `".*?</tr>`).FindString(page)
	if !strings.Contains(row, `data-scopes="owner"`) || strings.Contains(row, `class="approve`) || !strings.Contains(row, "approve it on a device with scopes owner") {
		t.Errorf("an owner request as an approve browser sees it:\n%s", row)
	}
	r := ap.postForm("/ui/devices/requests/"+owned.begin.Code+"/approve", ap.form())
	if msg := errorText(r.body); r.StatusCode != http.StatusForbidden || !strings.Contains(msg, "may grant only those") {
		t.Errorf("an approve browser granting owner: %d %q", r.StatusCode, msg)
	}
	viewer := e.pairBy(ap, "viewer", "read")
	if r := viewer.get("/ui/"); r.StatusCode != http.StatusOK {
		t.Errorf("a read browser approved by an approve browser: %d", r.StatusCode)
	}

	// An invoke-only browser has nothing to see; it is told why.
	agent := e.pairBy(a, "agent", "invoke")
	if r := agent.get("/ui/"); r.StatusCode != http.StatusForbidden || !strings.Contains(errorText(r.body), "needs scope read") {
		t.Errorf("an invoke-only browser's overview: %d %q", r.StatusCode, errorText(r.body))
	}

	// Any browser may sign out, whatever its scopes.
	for _, br := range []*browser{ro, agent} {
		tok := br.cookie()
		if r := br.postForm("/ui/logout", br.form()); r.StatusCode != http.StatusSeeOther || br.cookie() != "" {
			t.Errorf("logout: %d %s", r.StatusCode, errorText(r.body))
		}
		if _, err := e.store.Authenticate(e.ctx, tok, "test"); err == nil {
			t.Error("a signed-out browser's token still authenticates")
		}
	}
}

// testClock is a clock that moves only when told.
type testClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *testClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *testClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

const day = 24 * time.Hour

// maxAge is the Max-Age of r's session cookie, or -1.
func maxAge(r response) int {
	m := regexp.MustCompile(`contractual_session=[^;]*;.*Max-Age=(-?\d+)`).FindStringSubmatch(r.Header.Get("Set-Cookie"))
	if m == nil {
		return -1
	}
	n, _ := strconv.Atoi(m[1])
	return n
}

// TestSessionLifetime: a browser's session lasts 30 days without use and
// 90 days after pairing at most; each page renews it and its cookie's
// Max-Age follows (plus a week's grace, so that an expired session can be
// told apart); an expired session is sent to the pairing page, which says
// that it expired.
func TestSessionLifetime(t *testing.T) {
	clk := &testClock{t: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)}
	e := newEnv(t, envOptions{now: clk.Now})
	a := e.pairFirst("laptop")
	const grace = 7 * day
	secs := func(d time.Duration) int { return int(d / time.Second) }

	// Used every 20 days: renewed each time, the cookie following.
	for _, step := range []time.Duration{2 * time.Hour, 20 * day, 20 * day} {
		clk.Advance(step)
		r := a.get("/ui/")
		if r.StatusCode != http.StatusOK || maxAge(r) != secs(30*day+grace) {
			t.Fatalf("after %s: %d, cookie Max-Age %d, want %d", step, r.StatusCode, maxAge(r), secs(30*day+grace))
		}
	}
	// 30 days unused: expired.
	clk.Advance(30 * day)
	r := a.get("/ui/devices")
	if r.StatusCode != http.StatusSeeOther || r.Header.Get("Location") != "/ui/pair?done=session-expired" || a.cookie() != "" {
		t.Fatalf("an expired session: %d %q, cookie %q", r.StatusCode, r.Header.Get("Location"), a.cookie())
	}
	if f := flashText(a.get("/ui/pair?done=session-expired").body); !strings.Contains(f, "session expired") || !strings.Contains(f, "30 days") {
		t.Errorf("the pairing page says %q", f)
	}

	// The 90-day cap, however often it is used; the cookie ends with it.
	b := e.pairBy(e.pairFirst("new laptop"), "phone")
	paired := clk.Now()
	for range 8 {
		clk.Advance(10 * day)
		r := b.get("/ui/")
		want := min(30*day, paired.Add(90*day).Sub(clk.Now())) + grace
		if r.StatusCode != http.StatusOK || maxAge(r) != secs(want) {
			t.Fatalf("at %s: %d, Max-Age %d, want %d", clk.Now().Sub(paired), r.StatusCode, maxAge(r), secs(want))
		}
	}
	clk.Advance(10 * day)
	// A form posted with the expired session is refused, saying why.
	r = b.post("/ui/logout", "application/x-www-form-urlencoded", "csrf=x")
	if msg := errorText(r.body); r.StatusCode != http.StatusUnauthorized || !strings.Contains(msg, "session expired") || !strings.Contains(msg, "90 days after pairing") {
		t.Fatalf("a post with an expired session: %d %q", r.StatusCode, msg)
	}
}

// TestPairSetupCodeRetry: on the pairing page's endpoints, a mistyped and
// then an expired setup code leave the browser's request usable: each
// says what is wrong (the expired one, where the new one is), and the
// right code then pairs it.
func TestPairSetupCodeRetry(t *testing.T) {
	e := newEnv(t)
	old, _, _ := e.store.SetupCode(e.ctx)
	code, _, _ := e.store.SetupCode(e.ctx) // what serve does when a code expires
	b := e.newBrowser()
	p := b.beginPairing("laptop")
	setup := func(c string) response {
		return b.postJSON("/ui/pair/setup", `{"code":"`+p.begin.Code+`","setup_code":"`+c+`"}`)
	}
	if r := setup("ZZZZZZZZ"); r.StatusCode != http.StatusForbidden || !strings.Contains(r.body, "wrong setup code") {
		t.Fatalf("a mistyped code: %d %s", r.StatusCode, r.body)
	}
	if r := setup(old); r.StatusCode != http.StatusConflict || !strings.Contains(r.body, "setup code expired") ||
		!strings.Contains(r.body, "the server prints a new one on its console") {
		t.Fatalf("an expired code: %d %s", r.StatusCode, r.body)
	}
	if r := setup(code); r.StatusCode != http.StatusOK {
		t.Fatalf("the right code: %d %s", r.StatusCode, r.body)
	}
	b.complete(p)
}
