package job

import (
	"strings"
	"testing"
)

// digestOf loads data and returns its digest.
func digestOf(t *testing.T, data, name string) string {
	t.Helper()
	j, err := Load([]byte(data), name)
	if err != nil {
		t.Fatal(err)
	}
	d, err := Digest(j)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(d, "sha256:") || len(d) != len("sha256:")+64 {
		t.Fatalf("digest %q", d)
	}
	return d
}

// reformatted is base in block style with every mapping's keys in another
// order, the bounds and their pointers and allowed values reordered (with a
// duplicate), and the defaults spelled out.
const reformatted = `bounds:
- inputs:
  - max_length: 4000
    pointer: /text
  - allowed: [ops, news, ops]
    pointer: /channel
  tool: chat.post
steps:
- input:
    urls:
      $ref: trigger.payload.urls
  contract: ` + pinA + `
  tool: feeds.fetch
  id: fetch
- tool: chat.post
  id: post
  input:
    text: {"$ref": "steps.fetch.output.items.0"}
    channel: "news"
  contract: ` + pinB + `
trigger:
  cron:
    time_zone: Europe/Berlin
    expression: "0  2 * *   *"
budgets:
  tool_calls_per_run: 2
  run_time_seconds: 300
  egress_requests: 64
  egress_bytes: 16777216
  output_bytes: 1048576
  runs_per_day: 24
misfire: {policy: skip}
retry: {attempts: 0}
name: digest
`

// TestDigestStable checks that the digest does not depend on formatting,
// key order, the order of bounds or allowed values, or defaults spelled out,
// and that JSON gives the same digest as YAML.
func TestDigestStable(t *testing.T) {
	want := digestOf(t, base, "base.yaml")
	if got := digestOf(t, reformatted, "reformatted.yaml"); got != want {
		t.Errorf("reformatted: %s, want %s", got, want)
	}
	j, err := Load([]byte(base), "base.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if got := digestOf(t, protojsonText(t, j), "base.json"); got != want {
		t.Errorf("as JSON: %s, want %s", got, want)
	}
	// Spellings with one meaning.
	for _, tc := range []struct{ old, new string }{
		{`"0 2 * * *"`, `"@daily"`},
	} {
		a := digestOf(t, edit(t, tc.old, tc.new), "a.yaml")
		b := digestOf(t, edit(t, tc.old, strings.Replace(tc.new, "@daily", "@midnight", 1)), "b.yaml")
		if a != b {
			t.Errorf("%s and @midnight differ", tc.new)
		}
	}
	once := func(at string) string {
		return digestOf(t, edit(t, `{cron: {expression: "0 2 * * *", time_zone: Europe/Berlin}}`, "{once: {at: '"+at+"'}}"), "once.yaml")
	}
	if once("2026-12-24T18:00:00+01:00") != once("2026-12-24T17:00:00Z") {
		t.Error("the same instant in two offsets has two digests")
	}
}

// TestDigestChanges checks that any change of meaning changes the digest:
// a bound, a budget, a pin, a step's input, the trigger.
func TestDigestChanges(t *testing.T) {
	want := digestOf(t, base, "base.yaml")
	for _, tc := range []struct{ name, old, new string }{
		{"bound value", "max_length: 4000", "max_length: 4001"},
		{"allowed value", "[news, ops]", "[news, ops, all]"},
		{"bound removed", "      - {pointer: /text, max_length: 4000}\n", ""},
		{"budget", "", "budgets: {runs_per_day: 2}\n"},
		{"pin", "contract: " + pinB, "contract: " + pinA},
		{"input", "channel: news", "channel: ops"},
		{"zone", "Europe/Berlin", "Europe/London"},
		{"catch up", "", "misfire: {policy: catch_up, max_catch_up: 1}\n"},
		{"retry", "", "retry: {attempts: 1}\n"},
		{"minimum -0 is 0, but 1 is not", "max_length: 4000", "minimum: 1"},
	} {
		if got := digestOf(t, edit(t, tc.old, tc.new), "changed.yaml"); got == want {
			t.Errorf("%s: digest unchanged", tc.name)
		}
	}
	zero := digestOf(t, edit(t, "max_length: 4000", "minimum: 0"), "a.yaml")
	if got := digestOf(t, edit(t, "max_length: 4000", "minimum: -0.0"), "b.yaml"); got != zero {
		t.Error("minimum -0 and 0 have two digests")
	}
}

// TestNormalizeDefaults checks the defaults Normalize writes in.
func TestNormalizeDefaults(t *testing.T) {
	j, err := Load([]byte(edit(t, `{cron: {expression: "0 2 * * *", time_zone: Europe/Berlin}}`, "{webhook: {secret: HOOK_KEY}}\nretry: {attempts: 2}")), "j.yaml")
	if err != nil {
		t.Fatal(err)
	}
	b := j.GetBudgets()
	if b.GetToolCallsPerRun() != 2 || b.GetRunTimeSeconds() != 300 || b.GetEgressRequests() != 64 ||
		b.GetEgressBytes() != 16<<20 || b.GetOutputBytes() != 1<<20 || b.GetRunsPerDay() != 24 {
		t.Errorf("budgets %v", b)
	}
	if w := j.GetTrigger().GetWebhook().GetReplayWindowSeconds(); w != 300 {
		t.Errorf("replay window %d, want 300", w)
	}
	if r := j.GetRetry().GetBackoffSeconds(); r != 10 {
		t.Errorf("backoff %d, want 10", r)
	}
}
