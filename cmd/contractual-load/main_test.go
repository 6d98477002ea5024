package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/contractual/contractual/internal/loadtest"
)

const vowels = `module: %s
name: vowels
version: 1.0.0
publisher: load tests
description: Counts vowels.
tools:
  - export: count_vowels
    description: Count the vowels of the input.
    risk: low
    input_schema: {type: object, properties: {text: {type: string}}, required: [text]}
`

// TestLoad runs the command against a real server process: at each
// concurrency every call and every baseline call succeeds, and the
// server's peak RSS is printed.
func TestLoad(t *testing.T) {
	dir := t.TempDir()
	bin, err := loadtest.Build(context.Background(), dir)
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal(err)
		}
		t.Skipf("skipping: cannot build the server (%v); in CI this fails", err)
	}
	s, err := loadtest.Start(context.Background(), bin, filepath.Join(dir, "data"))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Stop()
	o, err := loadtest.PairOwner(context.Background(), loadtest.NewHTTPClient(2), s, "owner")
	if err != nil {
		t.Fatal(err)
	}
	wasm, err := os.ReadFile("../../runtime/sandbox/testdata/hostile/count.wasm")
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := o.PublishApproved(context.Background(), wasm, fmt.Sprintf(vowels, "%s")); err != nil {
		t.Fatal(err)
	}
	tok := filepath.Join(dir, "device.token")
	if err := os.WriteFile(tok, []byte(o.Token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	var out strings.Builder
	err = run(context.Background(), []string{"--server", s.URL, "--token-file", tok, "--tool", "vowels.count_vowels",
		"--input", `{"text": "hello"}`, "-c", "1,3", "-n", "6", "--pid", fmt.Sprint(s.PID())}, &out)
	if err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	for _, want := range []string{
		"c=1 vowels.count_vowels: 6 calls, 6 ok, p50", "c=1 baseline: 6 calls, 6 ok, p50", "c=1 server peak RSS",
		"c=3 vowels.count_vowels: 6 calls, 6 ok, p50", "c=3 baseline: 6 calls, 6 ok, p50", "c=3 server peak RSS",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, out.String())
		}
	}
}

// TestUsage: a run without a tool is refused before any call.
func TestUsage(t *testing.T) {
	if err := run(context.Background(), []string{"-c", "1"}, new(strings.Builder)); err == nil || !strings.Contains(err.Error(), "usage") {
		t.Errorf("err = %v", err)
	}
	if err := run(context.Background(), []string{"--tool", "x", "-c", "0"}, new(strings.Builder)); err == nil || !strings.Contains(err.Error(), "-c") {
		t.Errorf("concurrency 0: err = %v", err)
	}
}
