package secretscan

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"
)

// The benchmarks time the scan against the baseline (the fixed list of
// spellings it replaced), interleaved call by call in the same run so that
// machine noise hits both alike, on a realistic JSON API response:
//
//	go test -run '^$' -bench . -benchtime 200x ./runtime/secretscan
//
// p50 figures are in microseconds; ratios are scan / baseline.

// issue is one element of a GitHub-like list of issues.
type issue struct {
	ID        int64    `json:"id"`
	NodeID    string   `json:"node_id"`
	URL       string   `json:"url"`
	HTMLURL   string   `json:"html_url"`
	Number    int      `json:"number"`
	Title     string   `json:"title"`
	User      user     `json:"user"`
	Labels    []label  `json:"labels"`
	State     string   `json:"state"`
	Comments  int      `json:"comments"`
	CreatedAt string   `json:"created_at"`
	Body      string   `json:"body"`
	Commit    string   `json:"merge_commit_sha"`
	Reactions []string `json:"reactions"`
	Signature string   `json:"signature"`
	RequestID string   `json:"request_id"`
}

type user struct {
	Login     string `json:"login"`
	ID        int64  `json:"id"`
	AvatarURL string `json:"avatar_url"`
	Type      string `json:"type"`
}

type label struct {
	Name  string `json:"name"`
	Color string `json:"color"`
}

var words = strings.Fields(`the a of to and in is it that for on with as was this be at by not are from
or have an but they which one you were all we her she there would their will when who him been has more if
no out so said what up its about than into them can only other new some could time these two may then do
first any my now such like our over man me even most made after also did many before must through back
years where much your way well down should because each just those people how too little state good very
make world still own see men work long get here between both life being under never day same another know
while last might us great old year off come since against go came right used take three implementation
configuration authentication documentation`)

// realisticJSON returns a JSON array of issues of about size bytes, the
// same for the same seed.
func realisticJSON(size int, seed uint64) []byte {
	r := rand.New(rand.NewPCG(seed, 1))
	pick := func() string { return words[r.IntN(len(words))] }
	text := func(n int) string {
		var sb strings.Builder
		for i := range n {
			if i > 0 {
				sb.WriteByte("\n "[min(r.IntN(12), 1)]) // a line break now and then
			}
			sb.WriteString(pick())
			switch r.IntN(40) {
			case 0:
				sb.WriteString(" <code>&amp;</code>")
			case 1:
				sb.WriteString(" café 🎉")
			case 2:
				fmt.Fprintf(&sb, " https://example.com/search?q=%s+%s&page=%d", pick(), pick(), r.IntN(90)+10)
			}
		}
		return sb.String()
	}
	rb := func(n int) []byte {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(r.Uint32())
		}
		return b
	}
	var list []issue
	n := 0
	for n < size {
		num := r.IntN(100000)
		login := pick() + pick()
		it := issue{
			ID:        r.Int64N(1 << 40),
			NodeID:    base64.StdEncoding.EncodeToString([]byte(fmt.Sprintf("04:Issue%d", r.IntN(1<<30)))),
			URL:       fmt.Sprintf("https://api.github.com/repos/%s/%s/issues/%d", login, pick(), num),
			HTMLURL:   fmt.Sprintf("https://github.com/%s/%s/issues/%d", login, pick(), num),
			Number:    num,
			Title:     text(4 + r.IntN(8)),
			User:      user{Login: login, ID: r.Int64N(1 << 30), AvatarURL: fmt.Sprintf("https://avatars.githubusercontent.com/u/%d?v=4", r.IntN(1<<30)), Type: "User"},
			State:     []string{"open", "closed"}[r.IntN(2)],
			Comments:  r.IntN(50),
			CreatedAt: time.Unix(1.6e9+r.Int64N(1e8), 0).UTC().Format(time.RFC3339),
			Body:      text(20 + r.IntN(120)),
			Commit:    hex.EncodeToString(rb(20)),
			Signature: base64.StdEncoding.EncodeToString(rb(48)),
			RequestID: fmt.Sprintf("%x-%x-%x-%x-%x", rb(4), rb(2), rb(2), rb(2), rb(6)),
		}
		for range r.IntN(4) {
			it.Labels = append(it.Labels, label{Name: pick(), Color: hex.EncodeToString(rb(3))})
		}
		for range r.IntN(3) {
			it.Reactions = append(it.Reactions, []string{"+1", "heart", "rocket", "eyes"}[r.IntN(4)])
		}
		b, _ := json.Marshal(it)
		n += len(b) + 1
		list = append(list, it)
	}
	b, _ := json.Marshal(list)
	return b
}

// benchSecrets are two API keys, not in the documents.
var benchSecrets = [][]byte{[]byte("sk-live-51Hc9Qb2eZvKYlo2CqF7x0aBcDeFgHiJkLmN"), []byte("ghp_16C7e42F292c6912E7710c838347Ae178B4a")}

func BenchmarkContains(b *testing.B) {
	for _, size := range []int{64 << 10, 1 << 20} {
		doc := realisticJSON(size, 1)
		b.Run(fmt.Sprintf("%dKiB", size>>10), func(b *testing.B) {
			set, base := New(benchSecrets), newBaseline(benchSecrets)
			compare(b, doc, func() bool { return set.Contains(doc) }, func() bool { return base.Contains(doc) })
		})
	}
}

func BenchmarkRedact(b *testing.B) {
	for _, size := range []int{64 << 10, 1 << 20} {
		clean := realisticJSON(size, 1)
		// The same document with one key echoed, raw, at the end.
		dirty := append(bytes.Clone(clean[:len(clean)-1]), fmt.Sprintf(`,{"echo":"Bearer %s"}]`, benchSecrets[0])...)
		for _, doc := range []struct {
			name string
			b    []byte
		}{{"clean", clean}, {"one-key", dirty}} {
			b.Run(fmt.Sprintf("%dKiB/%s", size>>10, doc.name), func(b *testing.B) {
				set, base := New(benchSecrets), newBaseline(benchSecrets)
				compare(b, doc.b,
					func() bool { return len(set.Redact(doc.b)) != len(doc.b) },
					func() bool { return len(base.Redact(doc.b)) != len(doc.b) })
			})
		}
	}
}

// compare times scan and baseline alternately, b.N times each, reports
// their medians and ratio, and fails if they disagree.
func compare(b *testing.B, doc []byte, scan, baseline func() bool) {
	var ts, tb []time.Duration
	b.SetBytes(int64(len(doc)))
	for b.Loop() {
		t0 := time.Now()
		got := scan()
		t1 := time.Now()
		want := baseline()
		t2 := time.Now()
		if got != want {
			b.Fatalf("scan %v, baseline %v", got, want)
		}
		ts, tb = append(ts, t1.Sub(t0)), append(tb, t2.Sub(t1))
	}
	s, base := median(ts), median(tb)
	b.ReportMetric(s, "scan-p50-µs")
	b.ReportMetric(base, "baseline-p50-µs")
	b.ReportMetric(s/base, "scan/baseline")
}

func median(d []time.Duration) float64 {
	slices.Sort(d)
	return float64(d[len(d)/2]) / float64(time.Microsecond)
}

// TestWork: a scan of realistic responses stays well within its budget,
// so that the budget only cuts in on crafted input. The shortest secrets
// cost the most (more runs are long enough to hold one), and so do
// responses that are mostly base64: a file's contents in a JSON API,
// base64 lines between "\n" escapes.
func TestWork(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	blob := make([]byte, 192<<10)
	for i := range blob {
		blob[i] = byte(r.Uint32())
	}
	contents, _ := json.Marshal(map[string]string{
		"encoding": "base64",
		"content":  string(wrap(base64.StdEncoding.EncodeToString(realisticJSON(192<<10, 3)), 60, "\n")),
	})
	docs := map[string][]byte{
		"issues, 64 KiB":    realisticJSON(64<<10, 2),
		"issues, 1 MiB":     realisticJSON(1<<20, 2),
		"a base64 blob":     []byte(`{"blob":"` + base64.StdEncoding.EncodeToString(blob) + `"}`),
		"file contents API": contents,
	}
	for name, doc := range docs {
		for _, secrets := range [][][]byte{benchSecrets, {[]byte("hunter22")}, {[]byte("pin4")}} {
			sc := New(secrets).scanner(context.Background(), doc, false)
			if found := sc.find(doc, 0, true); len(found) > 0 || sc.exhausted {
				t.Fatalf("%s: found %v, exhausted %v", name, found, sc.exhausted)
			}
			ratio := float64(sc.spent) / float64(len(doc))
			t.Logf("%s, %q: %d bytes, decoded %.2f per byte", name, secrets[0], len(doc), ratio)
			if ratio > BudgetFactor/2 {
				t.Errorf("%s: decoded %.2f bytes per input byte, more than half the budget", name, ratio)
			}
		}
	}
}
