package job

import (
	"strings"
	"testing"
)

// edit returns base with old replaced by new (once; old must be there), or
// with new appended when old is "".
func edit(t *testing.T, old, new string) string {
	t.Helper()
	if old == "" {
		return base + new
	}
	if !strings.Contains(base, old) {
		t.Fatalf("base has no %q", old)
	}
	return strings.Replace(base, old, new, 1)
}

func TestLoadBase(t *testing.T) {
	if _, err := Load([]byte(base), "base.yaml"); err != nil {
		t.Fatal(err)
	}
}

// TestLoadProblems checks every parse and validation error with its
// line:column and field path.
func TestLoadProblems(t *testing.T) {
	for _, tc := range []struct {
		name, old, new, want string
	}{
		// Parsing: the contract parser's strictness.
		{"unknown field", "", "budget: {}\n", `17:1: budget: unknown field; did you mean "budgets"?`},
		{"duplicate key", "", "name: other\n", "17:1: name: given twice (first at line 1)"},
		{"null message", "", "retry: null\n", "17:8: retry: null is not allowed here"},
		{"null input", "input: {urls: {$ref: trigger.payload.urls}}", "input: null", "7:12: steps[0].input: null is not allowed here"},
		{"unknown enum", "", "misfire: {policy: later}\n", `17:19: misfire.policy: unknown policy "later": want skip or catch_up`},
		{"not a number", "", "budgets: {runs_per_day: many}\n", "17:25: budgets.runs_per_day: "},
		{"alias", "name: digest", "name: &d digest\ndescription: *d", "2:14: description: YAML aliases (*d) are not allowed"},
		// The job itself.
		{"name", "name: digest", "name: Digest", `1:7: name: "Digest": use lowercase letters`},
		{"no name", "name: digest", "description: x", "1:1: name: required"},
		{"cron fields", `"0 2 * * *"`, `"0 2 * *"`, `2:30: trigger.cron.expression: "0 2 * *": has 4 fields; want 5`},
		{"cron characters", `"0 2 * * *"`, `"0 2 * * MON#1"`, `2:30: trigger.cron.expression: "0 2 * * MON#1": field 5 (MON#1) has characters cron does not use`},
		{"cron macro", `"0 2 * * *"`, `"@fortnightly"`, `2:30: trigger.cron.expression: "@fortnightly": unknown macro`},
		{"zone", "Europe/Berlin", "Mars/Olympus", `2:54: trigger.cron.time_zone: "Mars/Olympus" is not an IANA time zone`},
		{"zone Local", "Europe/Berlin", "Local", `2:54: trigger.cron.time_zone: "Local" is the server's zone`},
		{"zone missing", ", time_zone: Europe/Berlin", "", "2:17: trigger.cron.time_zone: required"},
		{"no trigger", "trigger: {cron: {expression: \"0 2 * * *\", time_zone: Europe/Berlin}}\n", "", "1:1: trigger: required"},
		{"empty trigger", `{cron: {expression: "0 2 * * *", time_zone: Europe/Berlin}}`, "{}", "2:10: trigger: set one of cron, once or webhook"},
		{"two triggers", `{cron: {expression: "0 2 * * *", time_zone: Europe/Berlin}}`, "{once: {at: '2026-12-24T18:00:00+01:00'}, webhook: {secret: HOOK_KEY}}", "2:10: trigger: set only one of cron, once or webhook"},
		{"once time", `{cron: {expression: "0 2 * * *", time_zone: Europe/Berlin}}`, "{once: {at: '2026-12-24 18:00'}}", `2:22: trigger.once.at: "2026-12-24 18:00" is not an RFC 3339 time`},
		{"webhook secret", `{cron: {expression: "0 2 * * *", time_zone: Europe/Berlin}}`, "{webhook: {secret: hook}}", `2:29: trigger.webhook.secret: "hook" is not a secret name`},
		{"webhook window", `{cron: {expression: "0 2 * * *", time_zone: Europe/Berlin}}`, "{webhook: {secret: K, replay_window_seconds: 7200}}", "2:55: trigger.webhook.replay_window_seconds: 7200 is out of range 1..3600"},
		{"no steps", "", "", ""}, // replaced below
		{"step id", "id: post", "id: Post", `8:9: steps[1].id: "Post": use a lowercase letter`},
		{"step id twice", "id: post", "id: fetch", `8:9: steps[1].id: "fetch" is already the id of steps[0]`},
		{"tool", "tool: feeds.fetch", "tool: feeds", `5:11: steps[0].tool: "feeds": name a tool as "<contract name>.<export>"`},
		{"pin", "contract: " + pinA, "contract: sha256:abc", `6:15: steps[0].contract: must be the tool contract's digest`},
		{"no input", "    input: {urls: {$ref: trigger.payload.urls}}\n", "", "4:5: steps[0].input: required"},
		{"ref to a later step", "$ref: trigger.payload.urls", "$ref: steps.post.output", `7:26: steps[0].input.urls["$ref"]: "steps.post.output": no earlier step has id "post"`},
		{"ref syntax", "$ref: trigger.payload.urls", "$ref: payload.urls", `7:26: steps[0].input.urls["$ref"]: "payload.urls": must start with "trigger.payload" or "steps.<id>.output"`},
		{"ref segment", "$ref: trigger.payload.urls", "$ref: trigger.payload..urls", `7:26: steps[0].input.urls["$ref"]: "trigger.payload..urls": segment ""`},
		{"ref not a string", "$ref: trigger.payload.urls", "$ref: 1", `7:26: steps[0].input.urls["$ref"]: a reference is a non-empty string`},
		{"ref with another key", "$ref: trigger.payload.urls", "$ref: trigger.payload.urls, x: 1", `7:19: steps[0].input.urls: an object with "$ref" is a reference and may have no other key`},
		{"bounds tool not called", "  - tool: chat.post\n    inputs", "  - tool: chat.send\n    inputs", `13:11: bounds[0].tool: "chat.send" is not called by any step`},
		{"bounds tool twice", "", "  - {tool: chat.post, inputs: [{pointer: /x}]}\n", `17:12: bounds[1].tool: "chat.post" already has bounds at bounds[0]`},
		{"no bound", "", "  - {tool: feeds.fetch, inputs: []}\n", "17:33: bounds[1].inputs: at least one bound is required"},
		{"pointer twice", "pointer: /text", "pointer: /channel", `16:19: bounds[0].inputs[1].pointer: "/channel" is already bounded at inputs[0]`},
		{"pointer syntax", "pointer: /text", "pointer: text", `16:19: bounds[0].inputs[1].pointer: "text": a JSON pointer is "" or starts with "/"`},
		{"pointer escape", "pointer: /text", "pointer: /a~2", `16:19: bounds[0].inputs[1].pointer: "/a~2": "~" must be followed by 0 or 1`},
		{"pattern", "max_length: 4000", "pattern: '('", "16:35: bounds[0].inputs[1].pattern: not an RE2 regular expression"},
		{"min above max", "max_length: 4000", "minimum: 5, maximum: 1", "16:47: bounds[0].inputs[1].maximum: 1 is below the minimum 5"},
		{"pattern and range", "max_length: 4000", "minimum: 1, pattern: a", "16:47: bounds[0].inputs[1].pattern: a pattern holds strings and minimum/maximum numbers"},
		{"length and range", "max_length: 4000", "max_length: 4, maximum: 1", "16:38: bounds[0].inputs[1].max_length: max_length holds strings and arrays"},
		{"calls below steps", "", "budgets: {tool_calls_per_run: 1}\n", "17:31: budgets.tool_calls_per_run: 1 is fewer than the 2 tool steps"},
		{"budget range", "", "budgets: {runs_per_day: 2000}\n", "17:25: budgets.runs_per_day: 2000 is out of range 1..1440"},
		{"catch up without max", "", "misfire: {policy: catch_up}\n", "17:10: misfire.max_catch_up: catch_up needs max_catch_up in 1..100"},
		{"max without catch up", "", "misfire: {max_catch_up: 3}\n", "17:25: misfire.max_catch_up: only with policy catch_up"},
		{"misfire on a webhook", `{cron: {expression: "0 2 * * *", time_zone: Europe/Berlin}}`, "{webhook: {secret: K}}\nmisfire: {policy: skip}", "3:10: misfire: a webhook trigger has no schedule to miss"},
		{"attempts", "", "retry: {attempts: 11}\n", "17:19: retry.attempts: 11 is out of range 0..10"},
		{"backoff without attempts", "", "retry: {backoff_seconds: 5}\n", "17:26: retry.backoff_seconds: only with attempts"},
	} {
		if tc.name == "no steps" {
			tc.old = base[strings.Index(base, "steps:"):strings.Index(base, "bounds:")]
			tc.want = "4:11: bounds[0].tool: \"chat.post\" is not called by any step"
		}
		t.Run(tc.name, func(t *testing.T) {
			_, err := Load([]byte(edit(t, tc.old, tc.new)), "job.yaml")
			if tc.name == "no steps" {
				lines := problemLines(t, err)
				if len(lines) != 2 || lines[0] != "1:1: steps: at least one step is required" || !strings.HasPrefix(lines[1], tc.want) {
					t.Fatalf("problems: %q", lines)
				}
				return
			}
			wantProblem(t, err, tc.want)
		})
	}
}

// TestLoadErrorText checks the error's text: file:line:col, path, message.
func TestLoadErrorText(t *testing.T) {
	_, err := Load([]byte(edit(t, "name: digest", "name: Digest")), "nightly.yaml")
	if got, want := err.Error(), `invalid job: nightly.yaml:1:7: name: "Digest": use lowercase letters`; !strings.HasPrefix(got, want) {
		t.Fatalf("error %q, want it to start with %q", got, want)
	}
}

// TestValidateWithoutFile checks Validate on a job built in code: the
// problems have paths but no positions.
func TestValidateWithoutFile(t *testing.T) {
	j, err := Parse([]byte(edit(t, "id: post", "id: fetch")), "")
	if err != nil {
		t.Fatal(err)
	}
	wantProblem(t, Validate(j), `steps[1].id: "fetch" is already the id of steps[0]`)
	wantProblem(t, Validate(nil), "job is missing")
}

func TestParseRef(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want Ref
	}{
		{"trigger.payload", Ref{}},
		{"trigger.payload.items.0.url", Ref{Path: []string{"items", "0", "url"}}},
		{"steps.fetch.output", Ref{Step: "fetch"}},
		{"steps.fetch.output.items", Ref{Step: "fetch", Path: []string{"items"}}},
	} {
		got, err := ParseRef(tc.in)
		if err != nil || got.String() != tc.in || got.Step != tc.want.Step || strings.Join(got.Path, ".") != strings.Join(tc.want.Path, ".") {
			t.Errorf("ParseRef(%q) = %+v, %v; want %+v", tc.in, got, err, tc.want)
		}
	}
	for _, in := range []string{"", "trigger", "trigger.body", "steps.fetch", "steps.Fetch.output", "steps.fetch.input", "trigger.payload.", "trigger.payload.a b"} {
		if r, err := ParseRef(in); err == nil {
			t.Errorf("ParseRef(%q) = %+v, want an error", in, r)
		}
	}
}
