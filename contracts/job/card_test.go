package job

import (
	"flag"
	"os"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden")

// TestCardGolden checks the card of the example nightly job, word for word.
func TestCardGolden(t *testing.T) {
	data, err := os.ReadFile("../../jobs/nightly-stars.yaml")
	if err != nil {
		t.Fatal(err)
	}
	j, err := Load(data, "nightly-stars.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	if err := NewCard(j).WriteText(&b); err != nil {
		t.Fatal(err)
	}
	const golden = "testdata/nightly-stars.card.golden"
	if *update {
		if err := os.WriteFile(golden, []byte(b.String()), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatal(err)
	}
	if b.String() != string(want) {
		t.Errorf("card:\n%s\nwant:\n%s", b.String(), want)
	}
}

// TestCardWords checks the card's words for the other triggers, an
// unbounded tool, defaults and catch-up.
func TestCardWords(t *testing.T) {
	j, err := Load([]byte(edit(t, `{cron: {expression: "0 2 * * *", time_zone: Europe/Berlin}}`, "{webhook: {secret: HOOK_KEY}}")), "j.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	if err := NewCard(j).WriteText(&b); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"on each POST to its webhook signed with the secret HOOK_KEY (a signature is good for 300 s, and only once)",
		"1. feeds.fetch (step fetch), pinned to contract " + pinA + "\n       any input the tool's schema accepts\n",
		"       /channel: one of \"news\", \"ops\"\n       /text: at most 4000 characters or elements\n",
		"  Runs per day           24\n",
		"missed runs are skipped; a failed run is not retried",
	} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("card has no %q:\n%s", want, b.String())
		}
	}
	once, err := Load([]byte(edit(t, `{cron: {expression: "0 2 * * *", time_zone: Europe/Berlin}}`, "{once: {at: '2026-12-24T18:00:00+01:00'}}")), "j.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if got := NewCard(once).When; got != "once, at 2026-12-24T17:00:00Z" {
		t.Errorf("When = %q", got)
	}
}
