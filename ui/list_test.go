package ui_test

import (
	"fmt"
	"html"
	"net/http"
	"regexp"
	"slices"
	"strings"
	"testing"

	contractualv1 "github.com/contractual/contractual/contracts/gen/contractual/v1"
)

// secretRows are the names of the secret rows of a page, in order.
func secretRows(body string) []string {
	var names []string
	for _, m := range regexp.MustCompile(`class="secret-row" data-name="([A-Z0-9_]+)"`).FindAllStringSubmatch(body, -1) {
		names = append(names, m[1])
	}
	return names
}

// pagerLink is the href of a page's pager link of class cls ("pager-next",
// "pager-prev", "pager-first"), or "".
func pagerLink(body, cls string) string {
	m := regexp.MustCompile(`class="` + cls + `"[^>]* href="([^"]*)"`).FindStringSubmatch(body)
	if m == nil {
		return ""
	}
	return html.UnescapeString(m[1])
}

// TestListPager: a list shows a page of 50; Next and Previous walk the
// pages, each row on exactly one, while rows are added between them; the
// links keep the filter; the overview counts to 100 and says "100+".
func TestListPager(t *testing.T) {
	e := newEnv(t)
	a := e.pairFirst("laptop")
	put := func(name string) {
		t.Helper()
		if _, err := e.broker.PutSecret(e.owner(), &contractualv1.PutSecretRequest{Name: name, Value: []byte("v")}); err != nil {
			t.Fatal(err)
		}
	}
	var want []string
	for i := range 60 {
		name := fmt.Sprintf("S_%02d", i)
		put(name)
		want = append(want, name)
	}

	first := a.get("/ui/secrets").body
	if got := secretRows(first); !slices.Equal(got, want[:50]) || pagerLink(first, "pager-prev") != "" {
		t.Fatalf("first page: %v, previous %q", got, pagerLink(first, "pager-prev"))
	}
	next := pagerLink(first, "pager-next")
	if next == "" {
		t.Fatal("the first page has no next link")
	}
	put("S_00_LATE") // sorts before the second page: not on it
	second := a.get(next)
	if got := secretRows(second.body); second.StatusCode != http.StatusOK || !slices.Equal(got, want[50:]) || pagerLink(second.body, "pager-next") != "" {
		t.Fatalf("second page (%d): %v, next %q", second.StatusCode, got, pagerLink(second.body, "pager-next"))
	}
	back := a.get(pagerLink(second.body, "pager-prev")).body
	if got := secretRows(back); !slices.Contains(got, "S_00_LATE") || len(got) != 50 {
		t.Fatalf("previous page: %v", got)
	}

	// The filter is kept in the links to other pages.
	for i := range 55 {
		put(fmt.Sprintf("T_%02d", i))
	}
	page := a.get("/ui/secrets?prefix=T_").body
	next = pagerLink(page, "pager-next")
	if got := secretRows(page); len(got) != 50 || got[0] != "T_00" || !strings.Contains(next, "prefix=T_") || !strings.Contains(page, `value="T_"`) {
		t.Fatalf("filtered page: %v, next %q", got, next)
	}
	if got := secretRows(a.get(next).body); len(got) != 5 || got[0] != "T_50" {
		t.Fatalf("filtered second page: %v", got)
	}

	if body := a.get("/ui/").body; !strings.Contains(body, `id="count-secrets">100+<`) {
		t.Errorf("the overview does not count 100+ secrets: %s %s", errorText(body), regexp.MustCompile(`id="count-secrets">[^<]*`).FindString(body))
	}

	// A token works with its own filter only; a bad filter or token is a
	// 400 that says which.
	if r := a.get("/ui/secrets?prefix=T_&page=" + token(next)); r.StatusCode != http.StatusOK {
		t.Errorf("a token with its filter: %d %s", r.StatusCode, errorText(r.body))
	}
	for q, want := range map[string]string{
		"?page=" + token(next): "page_token",
		"?page=garbage":        "page_token",
		"?prefix=lower":        "name_prefix",
	} {
		if r := a.get("/ui/secrets" + q); r.StatusCode != http.StatusBadRequest || !strings.Contains(errorText(r.body), want) {
			t.Errorf("%s: %d %q, want 400 about %s", q, r.StatusCode, errorText(r.body), want)
		}
	}
}

// token is the page token of a pager link.
func token(href string) string {
	return regexp.MustCompile(`[?&]page=([^&]+)`).FindStringSubmatch(href)[1]
}

// TestListFilters: the contracts and devices pages filter.
func TestListFilters(t *testing.T) {
	e := newEnv(t)
	a := e.pairFirst("laptop")
	textkit := e.publish("textkit", nil)
	gh := e.publish("ghwhoami", nil)
	phone := e.pairBy(a, "phone")
	if r := a.postForm("/ui/devices/"+phone.id+"/revoke", a.form()); r.StatusCode != http.StatusSeeOther {
		t.Fatalf("revoke: %d", r.StatusCode)
	}
	for _, c := range []struct {
		path      string
		want, not []string
	}{
		{"/ui/contracts?tool=textkit.slugify", []string{textkit, `id="filter-clear"`}, []string{gh, `id="pending"`}},
		{"/ui/contracts?prefix=gh", []string{gh, `value="gh"`}, []string{textkit}},
		{"/ui/contracts?state=pending", []string{gh, textkit, `<option value="pending" selected>`}, nil},
		{"/ui/contracts?state=approved", []string{"None."}, []string{gh, textkit}},
		{"/ui/devices?state=revoked", []string{`data-id="` + phone.id + `"`, `<option value="revoked" selected>`}, []string{`class="device-row this"`}},
		{"/ui/devices?state=active&scope=owner", []string{`class="device-row this" data-id="` + a.id + `"`}, []string{`data-id="` + phone.id + `"`}},
	} {
		r := a.get(c.path)
		if r.StatusCode != http.StatusOK {
			t.Errorf("%s: %d %s", c.path, r.StatusCode, errorText(r.body))
			continue
		}
		for _, w := range c.want {
			if !strings.Contains(r.body, w) {
				t.Errorf("%s lacks %q", c.path, w)
			}
		}
		for _, w := range c.not {
			if strings.Contains(r.body, w) {
				t.Errorf("%s has %q", c.path, w)
			}
		}
	}
	for path, want := range map[string]string{
		"/ui/contracts?state=shiny":  "state must be one of",
		"/ui/contracts?tool=textkit": "tool",
		"/ui/devices?scope=root":     "unknown scope",
		"/ui/devices?state=gone":     "state must be one of",
	} {
		if r := a.get(path); r.StatusCode != http.StatusBadRequest || !strings.Contains(errorText(r.body), want) {
			t.Errorf("%s: %d %q, want 400 about %q", path, r.StatusCode, errorText(r.body), want)
		}
	}
}
