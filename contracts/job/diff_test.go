package job

import (
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/contractual/contractual/contracts/contract"
)

// TestDiff checks each kind of change with its classification.
func TestDiff(t *testing.T) {
	old, err := Load([]byte(base), "old.yaml")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, old, new string
		want           []string
	}{
		{"nothing", "", "", nil},
		{"reformatted", "[news, ops]", "[ops, news]", nil},
		{"allowed value added", "[news, ops]", "[news, ops, all]",
			[]string{`+ widened  bounds[chat.post]["/channel"].allowed: added "all"`}},
		{"allowed value removed", "[news, ops]", "[news]",
			[]string{`- narrowed bounds[chat.post]["/channel"].allowed: removed "ops"`}},
		{"allowed emptied", "{pointer: /channel, allowed: [news, ops]}", "{pointer: /channel}",
			[]string{`+ widened  bounds[chat.post]["/channel"].allowed: "news", "ops" → any value`}},
		{"length raised", "max_length: 4000", "max_length: 5000",
			[]string{`+ widened  bounds[chat.post]["/text"].max_length: 4000 → 5000`}},
		{"length lowered", "max_length: 4000", "max_length: 10",
			[]string{`- narrowed bounds[chat.post]["/text"].max_length: 4000 → 10`}},
		{"bound replaced", "max_length: 4000", "pattern: '[a-z ]*'",
			[]string{
				`- narrowed bounds[chat.post]["/text"].pattern: added "[a-z ]*"`,
				`+ widened  bounds[chat.post]["/text"].max_length: removed 4000`,
			}},
		{"bound removed", "      - {pointer: /text, max_length: 4000}\n", "",
			[]string{`+ widened  bounds[chat.post]["/text"]: removed at most 4000 characters or elements`}},
		{"bound added", "", "  - {tool: feeds.fetch, inputs: [{pointer: /n, minimum: 1, maximum: 10}]}\n",
			[]string{`- narrowed bounds[feeds.fetch]["/n"]: added at least 1; at most 10`}},
		{"budget raised", "", "budgets: {runs_per_day: 48}\n",
			[]string{`+ widened  budgets.runs_per_day: 24 → 48`}},
		{"budget lowered", "", "budgets: {egress_requests: 8}\n",
			[]string{`- narrowed budgets.egress_requests: 64 → 8`}},
		{"step added", "", "", nil}, // built below
		{"pin", "contract: " + pinB, "contract: " + pinA,
			[]string{`~ changed  steps[post].contract: "` + pinB + `" → "` + pinA + `"`}},
		{"input", "channel: news", "channel: ops",
			[]string{`~ changed  steps[post].input: "{\"channel\":\"news\",\"text\":{\"$ref\":\"steps.fetch.output.items.0\"}}" → "{\"channel\":\"ops\",\"text\":{\"$ref\":\"steps.fetch.output.items.0\"}}"`}},
		{"trigger", "0 2 * * *", "0 3 * * *",
			[]string{`~ changed  trigger: "cron 0 2 * * * in Europe/Berlin" → "cron 0 3 * * * in Europe/Berlin"`}},
		{"catch up", "", "misfire: {policy: catch_up, max_catch_up: 2}\n",
			[]string{`~ changed  misfire: "skip" → "catch_up"`, `+ widened  misfire.max_catch_up: 0 → 2`}},
		{"retries", "", "retry: {attempts: 2}\n",
			[]string{`+ widened  retry.attempts: added 2`, `~ changed  retry.backoff_seconds: 0 → 10`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			text := edit(t, tc.old, tc.new)
			if tc.name == "step added" {
				text = base[:len(base)-len(base[strings.Index(base, "bounds:"):])] +
					"  - {id: log, tool: chat.log, contract: " + pinB + ", input: {}}\n" + base[strings.Index(base, "bounds:"):]
				tc.want = []string{`+ widened  steps[log]: added chat.log (` + pinB + `)`, `+ widened  budgets.tool_calls_per_run: 2 → 3`}
			}
			new, err := Load([]byte(text), "new.yaml")
			if err != nil {
				t.Fatal(err)
			}
			got := Diff(old, new)
			if len(got) != len(tc.want) {
				t.Fatalf("Diff:\n%swant %d changes: %q", contract.FormatDiff(got), len(tc.want), tc.want)
			}
			for i, c := range got {
				if c.String() != tc.want[i] {
					t.Errorf("change %d:\n\t%s\nwant\n\t%s", i, c, tc.want[i])
				}
			}
			da, _ := Digest(old)
			db, _ := Digest(new)
			if (da == db) != (len(got) == 0) {
				t.Errorf("digests equal: %v, but %d changes", da == db, len(got))
			}
		})
	}
}

// TestDiffFirstVersion checks a diff against nothing: the steps are added.
func TestDiffFirstVersion(t *testing.T) {
	j, err := Load([]byte(base), "j.yaml")
	if err != nil {
		t.Fatal(err)
	}
	got := Diff(nil, j)
	added := 0
	for _, c := range got {
		if c.Path == "steps[fetch]" || c.Path == "steps[post]" {
			added++
			if c.Kind != contract.Widened {
				t.Errorf("%s is not widened", c)
			}
		}
	}
	if added != 2 {
		t.Errorf("Diff(nil, j):\n%s", contract.FormatDiff(got))
	}
}

// TestDiffStepOrder checks that reordering steps is one neutral change.
func TestDiffStepOrder(t *testing.T) {
	a, err := Load([]byte(edit(t, "{$ref: steps.fetch.output.items.0}", "hello")), "a.yaml")
	if err != nil {
		t.Fatal(err)
	}
	b := proto.CloneOf(a)
	b.Steps[0], b.Steps[1] = b.Steps[1], b.Steps[0]
	got := Diff(a, b)
	if len(got) != 1 || got[0].String() != `~ changed  steps: order fetch, post → order post, fetch` {
		t.Fatalf("Diff:\n%s", contract.FormatDiff(got))
	}
}
