package tools_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/contractual/contractual/contracts/contract"
	contractualv1 "github.com/contractual/contractual/contracts/gen/contractual/v1"
	"github.com/contractual/contractual/internal/errs"
	"github.com/contractual/contractual/runtime/egress"
	"github.com/contractual/contractual/runtime/egress/egresstest"
)

// The feeds the feeds contract allows, as a job lists them.
const (
	goBlog    = "https://go.dev/blog/feed.atom"
	wazero    = "https://github.com/tetratelabs/wazero/releases.atom"
	extism    = "https://github.com/extism/extism/releases.atom"
	changelog = "https://github.blog/changelog/feed/"
)

// feedServer serves, at each "host/path" of pages, a testdata file (or, for
// a value starting with "<", that content, or for "status:<n>", that HTTP
// status), and counts requests. The egress dialer routes hosts to it, by
// default all three feed hosts.
func feedServer(t *testing.T, pages map[string]string, hosts ...string) (egress.Config, *atomic.Int32) {
	t.Helper()
	n := new(atomic.Int32)
	srv := egresstest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n.Add(1)
		page, ok := pages[r.Host+r.URL.Path]
		if !ok || r.Method != http.MethodGet {
			http.NotFound(w, r)
			return
		}
		var code int
		if _, err := fmt.Sscanf(page, "status:%d", &code); err == nil {
			http.Error(w, http.StatusText(code), code)
			return
		}
		if strings.HasPrefix(page, "<") { // inline content
			w.Write([]byte(page))
			return
		}
		b, err := os.ReadFile(filepath.Join("testdata", "feeds", page))
		if err != nil {
			t.Error(err)
			return
		}
		w.Header().Set("Content-Type", "application/xml")
		w.Write(b)
	}), "go.dev", "github.com", "github.blog")
	t.Cleanup(srv.Close)
	if len(hosts) == 0 {
		hosts = []string{"go.dev", "github.com", "github.blog"}
	}
	routes := make(map[string]*httptest.Server)
	for _, h := range hosts {
		routes[h] = srv
	}
	dialer, roots := egresstest.New(routes)
	return egress.Config{Dialer: dialer, RootCAs: roots}, n
}

type digestOut struct {
	Items []struct{ Title, Link, Published, Feed string } `json:"items"`
	Feeds []struct {
		URL, Title string
		Items      int
		Error      string
	} `json:"feeds"`
	Text string `json:"text"`
}

// digestInput is the JSON input of digest: urls and, in pairs, other
// fields and their values.
func digestInput(urls []string, kv ...any) string {
	in := map[string]any{"urls": urls}
	for i := 0; i+1 < len(kv); i += 2 {
		in[kv[i].(string)] = kv[i+1]
	}
	b, _ := json.Marshal(in)
	return string(b)
}

// feedsTool loads the feeds tool in an engine whose egress goes to cfg's
// test server, and returns a function that calls digest with an input and
// decodes its output, checked against the output schema.
func feedsTool(t *testing.T, cfg egress.Config) func(input string) digestOut {
	m, c := load(t, newEngine(t, cfg), "feeds")
	return func(input string) digestOut {
		t.Helper()
		res, err := call(t, m, c, "digest", input)
		if err != nil {
			t.Fatal(err)
		}
		if err := contract.CheckOutput(toolOf(c, "digest"), res.Output); err != nil {
			t.Fatalf("output %s: %v", res.Output, err)
		}
		var out digestOut
		if err := json.Unmarshal(res.Output, &out); err != nil {
			t.Fatal(err)
		}
		return out
	}
}

// TestFeedsDigest reads an Atom feed in the Go blog's form, one in GitHub's
// releases form (dates only in <updated>) and a WordPress RSS 2.0 feed
// (GitHub's changelog: CDATA, entities, named zones, a guid permalink),
// and keeps the newest max_items of them all.
func TestFeedsDigest(t *testing.T) {
	cfg, n := feedServer(t, map[string]string{
		"go.dev/blog/feed.atom":                       "go-blog.atom",
		"github.com/tetratelabs/wazero/releases.atom": "wazero-releases.atom",
		"github.blog/changelog/feed/":                 "github-changelog.rss",
	})
	digest := feedsTool(t, cfg)
	out := digest(digestInput([]string{goBlog, wazero, changelog}, "max_items", 7))

	// Eight items in all; the oldest (wazero v1.9.0) is left out.
	want := []string{
		"Actions: larger runners now support Arm – generally available|https://github.blog/changelog/2026-11-30-actions-larger-runners-arm-ga|2026-11-30T18:30:12Z|GitHub Changelog",
		"Dependabot can now group security updates & version updates|https://github.blog/changelog/2026-11-27-dependabot-grouped-updates|2026-11-27T14:05:00Z|GitHub Changelog",
		"Copilot code review: custom instructions|https://github.blog/changelog/2026-11-05-copilot-code-review-custom-instructions|2026-11-05T16:00:00Z|GitHub Changelog",
		"v1.10.0|https://github.com/tetratelabs/wazero/releases/tag/v1.10.0|2026-10-07T09:14:02Z|Release notes from wazero",
		"Go 1.26 is released|https://go.dev/blog/go1.26|2026-02-10T00:00:00Z|The Go Blog",
		"Sixteen years of Go & counting|https://go.dev/blog/16years|2025-11-14T00:00:00Z|The Go Blog",
		"Testing Time (and other asynchronicities)|https://go.dev/blog/testing-time|2025-08-26T00:00:00Z|The Go Blog",
	}
	var got []string
	for _, it := range out.Items {
		got = append(got, it.Title+"|"+it.Link+"|"+it.Published+"|"+it.Feed)
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("items:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	for i, w := range []int{3, 1, 3} {
		if f := out.Feeds[i]; f.Items != w || f.Error != "" {
			t.Errorf("feeds[%d] = %+v, want %d items", i, f, w)
		}
	}
	wantText := `The latest 7 items from 3 feeds.

The Go Blog
- Go 1.26 is released (2026-02-10)
  https://go.dev/blog/go1.26
- Sixteen years of Go & counting (2025-11-14)
  https://go.dev/blog/16years
- Testing Time (and other asynchronicities) (2025-08-26)
  https://go.dev/blog/testing-time

Release notes from wazero
- v1.10.0 (2026-10-07)
  https://github.com/tetratelabs/wazero/releases/tag/v1.10.0

GitHub Changelog
- Actions: larger runners now support Arm – generally available (2026-11-30)
  https://github.blog/changelog/2026-11-30-actions-larger-runners-arm-ga
- Dependabot can now group security updates & version updates (2026-11-27)
  https://github.blog/changelog/2026-11-27-dependabot-grouped-updates
- Copilot code review: custom instructions (2026-11-05)
  https://github.blog/changelog/2026-11-05-copilot-code-review-custom-instructions`
	if out.Text != wantText {
		t.Errorf("text:\n%s\nwant:\n%s", out.Text, wantText)
	}
	if n.Load() != 3 {
		t.Errorf("server saw %d requests, want 3", n.Load())
	}

	// max_items holds across feeds: the newest two, both from the changelog.
	out = digest(digestInput([]string{goBlog, changelog}, "max_items", 2))
	if len(out.Items) != 2 || out.Items[0].Published != "2026-11-30T18:30:12Z" || out.Items[1].Published != "2026-11-27T14:05:00Z" {
		t.Errorf("max_items 2: %+v", out.Items)
	}
	if out.Feeds[0].Items != 0 || out.Feeds[1].Items != 2 || strings.Contains(out.Text, "The Go Blog") {
		t.Errorf("max_items 2: feeds %+v, text:\n%s", out.Feeds, out.Text)
	}
}

// TestFeedsPerFeedErrors: a feed answering with an HTTP error, one that is
// an HTML page and one that is malformed XML are each reported, with the
// reason, in their entry and the text; the good feed is still digested.
func TestFeedsPerFeedErrors(t *testing.T) {
	cfg, _ := feedServer(t, map[string]string{
		"go.dev/blog/feed.atom":                       "status:503",
		"github.com/tetratelabs/wazero/releases.atom": "not-a-feed.html",
		"github.com/extism/extism/releases.atom":      "malformed.rss",
		"github.blog/changelog/feed/":                 "github-changelog.rss",
	})
	digest := feedsTool(t, cfg)
	out := digest(digestInput([]string{goBlog, wazero, extism, changelog}))
	wantErrs := []string{
		"HTTP status 503",
		"not an RSS 2.0 or Atom feed: the document is <html>",
		"not a feed: XML syntax error on line 3: element <title> closed by </item>",
		"",
	}
	for i, w := range wantErrs {
		if out.Feeds[i].Error != w {
			t.Errorf("feeds[%d].error = %q, want %q", i, out.Feeds[i].Error, w)
		}
	}
	if len(out.Items) != 3 || out.Feeds[3].Items != 3 {
		t.Errorf("items %+v", out.Items)
	}
	for _, line := range []string{
		"The latest 3 items from 1 feed.\n",
		"\nGitHub Changelog\n",
		"\nCould not read https://go.dev/blog/feed.atom: HTTP status 503\n",
		"\nCould not read https://github.com/tetratelabs/wazero/releases.atom: not an RSS 2.0 or Atom feed: the document is <html>\n",
		"\nCould not read https://github.com/extism/extism/releases.atom: not a feed: XML syntax error on line 3: element <title> closed by </item>",
	} {
		if !strings.Contains(out.Text, line) {
			t.Errorf("text lacks %q:\n%s", line, out.Text)
		}
	}
}

// TestFeedsSince keeps only the items of the last since_hours, dropping
// undated ones, by the module's (WASI) clock.
func TestFeedsSince(t *testing.T) {
	now := time.Now().UTC()
	rss := `<?xml version="1.0"?><rss version="2.0"><channel><title>Recent</title>` +
		`<item><title>an hour ago</title><link>https://github.blog/changelog/a</link><pubDate>` + now.Add(-time.Hour).Format(time.RFC1123Z) + `</pubDate></item>` +
		`<item><title>two days ago</title><link>https://github.blog/changelog/b</link><pubDate>` + now.Add(-48*time.Hour).Format(time.RFC1123Z) + `</pubDate></item>` +
		`<item><title>undated</title><link>https://github.blog/changelog/c</link></item>` +
		`</channel></rss>`
	cfg, _ := feedServer(t, map[string]string{"github.blog/changelog/feed/": rss})
	digest := feedsTool(t, cfg)
	out := digest(digestInput([]string{changelog}, "since_hours", 24))
	if len(out.Items) != 1 || out.Items[0].Title != "an hour ago" {
		t.Errorf("items %+v", out.Items)
	}
	if !strings.HasPrefix(out.Text, "1 new item from 1 feed in the last 24 hours.\n") {
		t.Errorf("text:\n%s", out.Text)
	}
	// Without since_hours all three are kept, the undated one last.
	out = digest(digestInput([]string{changelog}))
	if len(out.Items) != 3 || out.Items[2].Title != "undated" || out.Items[2].Published != "" {
		t.Errorf("items %+v", out.Items)
	}
}

// TestFeedsTextFits: however many long items there are, the text fits one
// ntfy message (tools/notify's limit) and says how many it left out.
func TestFeedsTextFits(t *testing.T) {
	var b strings.Builder
	b.WriteString(`<?xml version="1.0"?><rss version="2.0"><channel><title>Busy</title>`)
	for i := range 100 {
		fmt.Fprintf(&b, `<item><title>%03d %s</title><link>https://github.blog/changelog/%03d</link><pubDate>Mon, 02 Nov 2026 10:%02d:00 +0000</pubDate></item>`,
			i, strings.Repeat("é", 150), i, i%60)
	}
	b.WriteString(`</channel></rss>`)
	cfg, _ := feedServer(t, map[string]string{"github.blog/changelog/feed/": b.String()})
	digest := feedsTool(t, cfg)
	out := digest(digestInput([]string{changelog}, "max_items", 100))
	if len(out.Items) != 100 {
		t.Fatalf("%d items", len(out.Items))
	}
	shown := strings.Count(out.Text, "\n- ")
	if len(out.Text) > 4096 || shown == 0 || !strings.Contains(out.Text, fmt.Sprintf("… and %d more not shown (too long for one message).", 100-shown)) {
		t.Errorf("%d bytes, %d items shown:\n%s", len(out.Text), shown, out.Text)
	}
}

// TestFeedsRefused: a URL the contract does not name is refused by the
// host before anything is dialed, and a feed host that cannot be reached
// fails the call (the host aborts the module on a network error): both
// name the URL.
func TestFeedsRefused(t *testing.T) {
	cfg, n := feedServer(t, map[string]string{"github.blog/changelog/feed/": "github-changelog.rss"}, "github.blog")
	m, c := load(t, newEngine(t, cfg), "feeds")
	dialer := cfg.Dialer.(*egresstest.Dialer)

	_, err := call(t, m, c, "digest", `{"urls": ["https://github.com/someone/else/releases.atom"]}`)
	if errs.KindOf(err) != errs.PermissionDenied || !strings.Contains(err.Error(), "https://github.com/someone/else/releases.atom") {
		t.Errorf("a feed outside the contract: %v", err)
	}
	if len(dialer.Dialed()) != 0 || n.Load() != 0 {
		t.Errorf("dialed %v, server saw %d requests", dialer.Dialed(), n.Load())
	}

	// go.dev is in the contract but has no route: the network fails.
	_, err = call(t, m, c, "digest", digestInput([]string{changelog, goBlog}))
	if errs.KindOf(err) != errs.Unavailable || !strings.Contains(err.Error(), goBlog) {
		t.Errorf("an unreachable feed: %v", err)
	}
}

// TestFeedsLargeFeeds: four feeds each just under the contract's response
// size limit (4 MiB) are read within its memory limit (32 MiB of 64 at
// most, measured). Reading 16 MiB of XML takes the module ~9 s on an idle
// core, so this test, which is about memory, raises the timeout to the most
// a contract may set.
func TestFeedsLargeFeeds(t *testing.T) {
	var b strings.Builder
	b.WriteString(`<?xml version="1.0" encoding="utf-8"?><feed xmlns="http://www.w3.org/2005/Atom"><title>Big</title>`)
	body := strings.Repeat("&lt;p&gt;Lorem ipsum dolor sit amet, consectetur adipiscing elit.&lt;/p&gt; ", 40)
	for i := 0; b.Len() < 4<<20-8<<10; i++ {
		fmt.Fprintf(&b, `<entry><title>Post %d</title><link rel="alternate" href="/p/%d"/><published>2026-0%d-01T00:00:00Z</published><content type="html">%s</content></entry>`, i, i, 1+i%9, body)
	}
	b.WriteString(`</feed>`)
	big := b.String()
	cfg, _ := feedServer(t, map[string]string{
		"go.dev/blog/feed.atom":                       big,
		"github.com/tetratelabs/wazero/releases.atom": big,
		"github.com/extism/extism/releases.atom":      big,
		"github.blog/changelog/feed/":                 big,
	})
	m, c := loadEdited(t, newEngine(t, cfg), "feeds", func(c *contractualv1.Contract) { c.Limits.TimeoutMs = 300000 })
	res, err := call(t, m, c, "digest", digestInput([]string{goBlog, wazero, extism, changelog}, "max_items", 100))
	if err != nil {
		t.Fatal(err)
	}
	var out digestOut
	if err := json.Unmarshal(res.Output, &out); err != nil || len(out.Items) != 100 {
		t.Fatalf("%d items (%v)", len(out.Items), err)
	}
	t.Logf("4 feeds of %d bytes: peak memory %d MiB of %d MiB", len(big), res.PeakMemory>>20, c.GetLimits().GetMemoryMib())
}
