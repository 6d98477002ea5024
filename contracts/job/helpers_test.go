package job

import (
	"errors"
	"strings"
	"testing"

	"github.com/contractual/contractual/internal/errs"
)

// Digests for the tests' pins.
const (
	pinA = "sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
	pinB = "sha256:bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"
)

// base is a valid job; tests build on it line by line, so line numbers in
// expectations are stable: its trigger is line 2, steps line 3.
const base = `name: digest
trigger: {cron: {expression: "0 2 * * *", time_zone: Europe/Berlin}}
steps:
  - id: fetch
    tool: feeds.fetch
    contract: ` + pinA + `
    input: {urls: {$ref: trigger.payload.urls}}
  - id: post
    tool: chat.post
    contract: ` + pinB + `
    input: {channel: news, text: {$ref: steps.fetch.output.items.0}}
bounds:
  - tool: chat.post
    inputs:
      - {pointer: /channel, allowed: [news, ops]}
      - {pointer: /text, max_length: 4000}
`

// problemLines returns the lines of a *ValidationError's problems as
// "line:col: path: msg", failing if err is not one.
func problemLines(t *testing.T, err error) []string {
	t.Helper()
	if !errs.Is(err, errs.Invalid) {
		t.Fatalf("error %v is not errs.Invalid", err)
	}
	var verr *ValidationError
	if !errors.As(err, &verr) {
		t.Fatalf("error %v does not wrap a *ValidationError", err)
	}
	var lines []string
	for _, p := range verr.Problems {
		lines = append(lines, p.String())
	}
	return lines
}

// wantProblem fails unless err has exactly one problem, starting with
// want ("line:col: path: msg-prefix").
func wantProblem(t *testing.T, err error, want string) {
	t.Helper()
	if err == nil {
		t.Fatalf("no error; want %q", want)
	}
	lines := problemLines(t, err)
	if len(lines) != 1 || !strings.HasPrefix(lines[0], want) {
		t.Fatalf("problems:\n\t%s\nwant one starting with\n\t%s", strings.Join(lines, "\n\t"), want)
	}
}
