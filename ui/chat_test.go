package ui_test

import (
	"net/http"
	"strings"
	"testing"
)

// TestChatWithoutEngine: a UI without the engine links Chat but says that
// chat is not available here, for every chat page and form; the forms
// are refused first without their CSRF token or from another site.
func TestChatWithoutEngine(t *testing.T) {
	e := newEnv(t)
	b := e.pairFirst("laptop")
	if r := b.get("/ui/"); !strings.Contains(r.body, `<a href="/ui/chat" id="nav-chat">Chat</a>`) {
		t.Errorf("the nav lacks Chat: %d", r.StatusCode)
	}
	const id = "0123456789abcdef0123456789abcdef"
	for _, path := range []string{"/ui/chat", "/ui/chat/" + id, "/ui/chat/" + id + "/artifacts/sha256:" + strings.Repeat("a", 64)} {
		if r := b.get(path); r.StatusCode != http.StatusNotImplemented || !strings.Contains(errorText(r.body), "Chat is not available here") {
			t.Errorf("GET %s: %d %q", path, r.StatusCode, errorText(r.body))
		}
	}
	for _, path := range []string{"/ui/chat", "/ui/chat/" + id + "/send", "/ui/chat/" + id + "/close"} {
		form := b.form("text", "hello", "tool", "textkit.slugify")
		if r := b.postForm(path, form); r.StatusCode != http.StatusNotImplemented {
			t.Errorf("POST %s: %d %q", path, r.StatusCode, errorText(r.body))
		}
		form.Del("csrf")
		if r := b.postForm(path, form); r.StatusCode != http.StatusForbidden || !strings.Contains(errorText(r.body), "CSRF") {
			t.Errorf("POST %s without CSRF: %d %q", path, r.StatusCode, errorText(r.body))
		}
		if r := b.postForm(path, b.form("text", "hello"), "Origin", "https://evil.example", "Sec-Fetch-Site", "cross-site"); r.StatusCode != http.StatusForbidden {
			t.Errorf("POST %s from another site: %d", path, r.StatusCode)
		}
	}
	if r := b.get("/ui/chat/" + id + "/send"); r.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("GET of the send form's target: %d", r.StatusCode)
	}
}
