package cacmd

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/contractual/contractual/internal/pki"
)

var t0 = time.Date(2030, 6, 1, 12, 0, 0, 0, time.UTC)

// clock is a settable clock for Env.Now.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Set(t time.Time) {
	c.mu.Lock()
	c.t = t
	c.mu.Unlock()
}

// logLines is a writer of JSON log lines that hands each on to a channel.
type logLines chan map[string]any

func (l logLines) Write(p []byte) (int, error) {
	for _, line := range bytes.Split(bytes.TrimSpace(p), []byte("\n")) {
		var m map[string]any
		if err := json.Unmarshal(line, &m); err != nil {
			m = map[string]any{"msg": "NOT JSON: " + string(line)}
		}
		l <- m
	}
	return len(p), nil
}

// waitFor returns the next log line whose message is msg, and the lines
// before it.
func (l logLines) waitFor(t *testing.T, msg string) (map[string]any, []map[string]any) {
	t.Helper()
	var before []map[string]any
	timeout := time.After(2 * time.Minute)
	for {
		select {
		case m := <-l:
			if m["msg"] == msg {
				return m, before
			}
			before = append(before, m)
		case <-timeout:
			t.Fatalf("no %q in the log; got %v", msg, before)
		}
	}
}

// issuedIn returns the services of the "issued a certificate" lines.
func issuedIn(lines []map[string]any) []string {
	var s []string
	for _, m := range lines {
		if m["msg"] == "issued a certificate" {
			s = append(s, m["service"].(string))
		}
	}
	return s
}

func serialOf(t *testing.T, dir string) string {
	t.Helper()
	s, err := pki.NewSource(dir, pki.SourceOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return s.Leaf().SerialNumber.String()
}

func TestInitRenewHealth(t *testing.T) {
	dir := t.TempDir()
	root, issuer, certs := filepath.Join(dir, "root"), filepath.Join(dir, "issuer"), filepath.Join(dir, "certs")
	status := filepath.Join(dir, "status.json")
	clk := &clock{t: t0}
	logs := make(logLines, 100)
	var stdout bytes.Buffer
	env := Env{Stdout: &stdout, Stderr: logs, Now: clk.Now}
	ctx := context.Background()

	// init: the CA and both certificates, logged as JSON.
	if err := Run(ctx, []string{"init", "--root", root, "--issuer", issuer, "--certs", certs, "--services", "policy, runner"}, env); err != nil {
		t.Fatal(err)
	}
	_, lines := logs.waitFor(t, "init done")
	if got := issuedIn(lines); strings.Join(got, ",") != "policy,runner" {
		t.Errorf("init issued %v", got)
	}
	if lines[0]["msg"] != "created the root CA" {
		t.Errorf("first log line %v", lines[0])
	}
	policy, runner := serialOf(t, filepath.Join(certs, "policy")), serialOf(t, filepath.Join(certs, "runner"))

	// health before renew has run.
	health := func() error {
		stdout.Reset()
		return Run(ctx, []string{"health", "--status", status}, env)
	}
	if err := health(); err == nil || !strings.Contains(err.Error(), "renew has not finished a pass") {
		t.Fatalf("health before renew = %v", err)
	}

	// renew: a pass at start, then one on each SIGHUP.
	clk.Set(t0.Add(time.Hour))
	hup := make(chan os.Signal)
	renewCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	renewEnv := env
	renewEnv.HUP = hup
	go func() {
		done <- Run(renewCtx, []string{"renew", "--issuer", issuer, "--certs", certs, "--services", "policy,runner",
			"--every", "1h", "--status", status, "--log-level", "debug"}, renewEnv)
	}()
	_, lines = logs.waitFor(t, "renew pass done")
	if got := issuedIn(lines); len(got) != 0 {
		t.Errorf("the first pass issued %v; nothing was due", got)
	}
	if err := health(); err != nil || !strings.HasPrefix(stdout.String(), "healthy: the last pass, at 2030-06-01T13:00:00Z, succeeded") {
		t.Fatalf("health after a pass = %v, %q", err, stdout.String())
	}

	// Past half their life (3h), SIGHUP makes a pass that renews both.
	clk.Set(t0.Add(3*time.Hour + time.Minute))
	hup <- os.Interrupt // any signal value: the channel is what counts
	_, lines = logs.waitFor(t, "renew pass done")
	if got := issuedIn(lines); strings.Join(got, ",") != "policy,runner" {
		t.Errorf("the pass after SIGHUP issued %v", got)
	}
	if serialOf(t, filepath.Join(certs, "policy")) == policy || serialOf(t, filepath.Join(certs, "runner")) == runner {
		t.Error("the certificates were not replaced")
	}

	// SIGTERM (the context) ends renew.
	stop()
	if err := <-done; err != nil {
		t.Fatalf("renew returned %v", err)
	}

	// health: fine within 3 × --every of the last pass, not after.
	clk.Set(t0.Add(6*time.Hour + time.Minute))
	if err := health(); err != nil {
		t.Fatalf("health 3h after the last pass = %v", err)
	}
	clk.Set(t0.Add(6*time.Hour + time.Minute + time.Second))
	if err := health(); err == nil || !strings.Contains(err.Error(), "more than 3 × 1h0m0s") {
		t.Fatalf("health just over 3h after the last pass = %v", err)
	}
}

func TestHealthReportsAFailedPass(t *testing.T) {
	dir := t.TempDir()
	status := filepath.Join(dir, "status.json")
	logs := make(logLines, 100)
	env := Env{Stdout: new(bytes.Buffer), Stderr: logs, Now: func() time.Time { return t0 }}
	// One pass (the context is already done) against an issuer directory
	// that init never made.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	err := Run(ctx, []string{"renew", "--issuer", filepath.Join(dir, "none"), "--certs", filepath.Join(dir, "certs"),
		"--services", "policy", "--status", status}, env)
	if err != nil {
		t.Fatalf("renew = %v; a failed pass does not stop it", err)
	}
	m, _ := logs.waitFor(t, "renew pass failed")
	if !strings.Contains(m["err"].(string), "no issuing CA") {
		t.Errorf("logged %v", m)
	}
	err = Run(context.Background(), []string{"health", "--status", status}, env)
	if err == nil || !strings.Contains(err.Error(), "unhealthy: the last pass, at 2030-06-01T12:00:00Z, failed: pki: no issuing CA") {
		t.Fatalf("health = %v", err)
	}
}

func TestUsage(t *testing.T) {
	env := Env{Stdout: new(bytes.Buffer), Stderr: new(bytes.Buffer)}
	for _, args := range [][]string{
		nil,
		{"sign"},
		{"init"}, // no --services
		{"renew", "--services", "policy", "--every", "0s"},
		{"init", "--services", "policy", "extra"},
		{"init", "--services", "Policy", "--root", "r", "--issuer", "i", "--certs", "c"},
	} {
		if err := Run(context.Background(), args, env); err == nil {
			t.Errorf("Run(%q) succeeded", args)
		}
	}
}
