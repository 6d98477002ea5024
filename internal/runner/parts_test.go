package runner

import (
	"context"
	"encoding/base32"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/contractual/contractual/internal/errs"
	"github.com/contractual/contractual/runtime/sandbox"
)

// TestSpentSet: ids are held until they expire, then forgotten; a full set
// refuses rather than forgets.
func TestSpentSet(t *testing.T) {
	t0 := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	s := newSpentSet(3)
	for i, id := range []string{"a", "b", "c"} {
		if err := s.spend(id, t0.Add(time.Duration(i+1)*time.Minute), t0); err != nil {
			t.Fatal(err)
		}
	}
	wantKind(t, s.spend("b", t0.Add(time.Hour), t0), errs.PermissionDenied, "decision b was already used")
	wantKind(t, s.spend("d", t0.Add(time.Hour), t0), errs.ResourceExhausted, "3 unexpired spent decisions")

	// At a's expiry, a is forgotten; b and c are not.
	if err := s.spend("d", t0.Add(time.Hour), t0.Add(time.Minute)); err != nil {
		t.Fatal(err)
	}
	wantKind(t, s.spend("c", t0.Add(time.Hour), t0.Add(time.Minute)), errs.PermissionDenied, "already used")
	if n := s.len(); n != 3 {
		t.Fatalf("%d ids held, want 3", n)
	}
	// Past every expiry but d's, only d is held.
	if err := s.spend("e", t0.Add(2*time.Hour), t0.Add(time.Hour-time.Nanosecond)); err != nil {
		t.Fatal(err)
	}
	if n := s.len(); n != 2 {
		t.Fatalf("%d ids held, want 2 (d, e)", n)
	}
}

// TestSpentForgottenAfterExpiry: through the service, a spent decision's id
// is dropped once it has expired, and the expired decision is refused by
// verification instead.
func TestSpentForgottenAfterExpiry(t *testing.T) {
	f := newFixture(t, Config{})
	ct := f.count("count")
	req := f.call(ct, "count_vowels", `{}`)
	if _, err := f.svc.Execute(context.Background(), req); err != nil {
		t.Fatal(err)
	}
	f.clock.advance(time.Minute)
	if _, err := f.svc.Execute(context.Background(), f.request(f.decision(ct, "count_vowels", `{}`), `{}`)); err != nil {
		t.Fatal(err)
	}
	if n := f.svc.spent.len(); n != 1 {
		t.Fatalf("%d spent ids held, want 1", n)
	}
	_, err := f.svc.Execute(context.Background(), req)
	wantKind(t, err, errs.PermissionDenied, "has expired")
}

// TestModuleLoadFailureNotCached: a failed load is not cached; the next
// call tries again.
func TestModuleLoadFailureNotCached(t *testing.T) {
	f := newFixture(t, Config{})
	ct := f.count("count")
	f.policy.mu.Lock()
	wasm := f.policy.modules[ct.GetModule()]
	delete(f.policy.modules, ct.GetModule())
	f.policy.mu.Unlock()
	_, err := f.svc.Execute(context.Background(), f.call(ct, "count_vowels", `{}`))
	wantKind(t, err, errs.FailedPrecondition, "is not in policy")
	f.policy.mu.Lock()
	f.policy.modules[ct.GetModule()] = wasm
	f.policy.mu.Unlock()
	if _, err := f.svc.Execute(context.Background(), f.call(ct, "count_vowels", `{}`)); err != nil {
		t.Fatal(err)
	}
}

// everyChar spells each byte of b with format.
func everyChar(b []byte, format string) string {
	var sb strings.Builder
	for _, c := range b {
		fmt.Fprintf(&sb, format, c)
	}
	return sb.String()
}

// TestRedact: every common spelling of a released secret is redacted from
// the output, the logs and error messages.
func TestRedact(t *testing.T) {
	secret := []byte("s3cr/t+key?=&\"")
	spell := []string{
		string(secret),
		base64.StdEncoding.EncodeToString(secret),
		base64.RawURLEncoding.EncodeToString(secret),
		hex.EncodeToString(secret),
		strings.ToUpper(hex.EncodeToString(secret)),
		url.QueryEscape(string(secret)),
		url.PathEscape(string(secret)),
		`s3cr/t+key?=\u0026\"`,
		// The spellings servers produce that a fixed list missed: JSON with
		// escaped slashes, \uXXXX and percent-encoding of every character,
		// HTML references, quoted-printable, wrapped base64, base32, hex in
		// mixed case.
		`s3cr\/t+key?=&\"`,
		everyChar(secret, `\u%04X`),
		everyChar(secret, "%%%02x"),
		everyChar(secret, "&#%d;"),
		`s3cr/t+key?=3D&"`,
		"czNjci90K2tl\r\neT89JiI=",
		base32.StdEncoding.EncodeToString(secret),
		"73336372" + strings.ToUpper("2f742b6b") + "65793f3d2622",
	}
	for _, s := range spell {
		got := string(redact([]byte("before "+s+" after"), [][]byte{[]byte("other"), secret}))
		if got != "before "+redacted+" after" {
			t.Errorf("%q redacted to %q", s, got)
		}
	}
	if got := string(redact([]byte("nothing here"), [][]byte{secret})); got != "nothing here" {
		t.Errorf("clean text changed: %q", got)
	}
	err := redactError(errs.E(errs.ToolFailed, "tool error: got %s back", secret), [][]byte{secret})
	wantKind(t, err, errs.ToolFailed, "tool error: got "+redacted+" back")
	if plain := errors.New("x"); redactError(plain, nil) != plain {
		t.Error("an error without secrets was rebuilt")
	}
	lines := logLines([]sandbox.LogEntry{{Level: "info", Message: "key=" + string(secret)}}, [][]byte{secret})
	if lines[0].GetMessage() != "key="+redacted {
		t.Errorf("log line %q", lines[0].GetMessage())
	}
}

// TestTruncate keeps whole runes.
func TestTruncate(t *testing.T) {
	if got := truncate("ééé", 5); got != "é…" {
		t.Fatalf("%q", got)
	}
	if got := truncate("abc", 3); got != "abc" {
		t.Fatalf("%q", got)
	}
	long := strings.Repeat("é", 5000)
	if got := truncate(long, 4096); len(got) > 4096 || !strings.HasSuffix(got, "…") {
		t.Fatalf("truncated to %d bytes", len(got))
	}
}
