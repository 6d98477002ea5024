package server_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"io/fs"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/contractual/contractual/internal/cli"
	"github.com/contractual/contractual/internal/server"
	"github.com/contractual/contractual/runtime/egress"
	"github.com/contractual/contractual/runtime/egress/egresstest"
)

// TestSecretWalkthrough is the README's secret walk-through against a real
// server: put a token, publish and approve a tool whose contract injects it,
// invoke. The API (a local TLS server standing in for api.github.com) checks
// the key and echoes it back; afterwards the token's bytes are nowhere: not
// in the output (through Invoke and over MCP), the logs, the audit log or
// any file of the data directory.
func TestSecretWalkthrough(t *testing.T) {
	const token = "ghp_walkthrough_0123456789abcdef"
	api := egresstest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer "+token {
			http.Error(w, `{"message":"Bad credentials"}`, http.StatusUnauthorized)
			return
		}
		w.Header().Set("X-Echo", r.Header.Get("Authorization"))
		json.NewEncoder(w).Encode(map[string]any{"login": "octo " + token, "name": base64.StdEncoding.EncodeToString([]byte(token)), "public_repos": 3})
	}), "api.github.com")
	defer api.Close()
	dialer, roots := egresstest.New(map[string]*httptest.Server{"api.github.com": api})
	var logs bytes.Buffer
	dir := t.TempDir()
	s, err := server.Start(context.Background(), server.Config{
		DataDir: dir, Addr: "127.0.0.1:0",
		Log:    slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		Egress: egress.Config{Dialer: dialer, RootCAs: roots},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close(context.Background())

	tok, tokenFile := owner(t, s)
	run := func(stdin string, args ...string) string {
		t.Helper()
		var out, errOut bytes.Buffer
		args = append(args, "--server", s.URL, "--token-file", tokenFile)
		code := cli.Main(context.Background(), args, &cli.Env{Stdin: strings.NewReader(stdin), Stdout: &out, Stderr: &errOut, Getenv: func(string) string { return "" }})
		if code != 0 {
			t.Fatalf("contractual %s: exit %d\n%s%s", strings.Join(args, " "), code, out.String(), errOut.String())
		}
		return out.String() + errOut.String()
	}
	run(token+"\n", "secrets", "put", "GITHUB_TOKEN")
	out := run("", "publish", tool("ghwhoami", "ghwhoami.wasm"), "--contract", tool("ghwhoami", "contract.yaml"))
	run("", "contracts", "approve", digestIn(t, out))
	out = run("", "invoke", "ghwhoami.whoami", "--input", "{}", "--json")
	var got struct {
		Output struct {
			Login       string  `json:"login"`
			PublicRepos float64 `json:"public_repos"`
		} `json:"output"`
	}
	if err := json.Unmarshal([]byte(out), &got); err != nil || got.Output.PublicRepos != 3 || got.Output.Login != "octo [REDACTED]" {
		t.Fatalf("invoke (%v): %s", err, out)
	}
	// An agent over MCP gets the same redacted output: the secret never
	// reaches it either.
	a, err := connectMCP(t, s, tok)
	if err != nil {
		t.Fatal(err)
	}
	res := a.call(t, "ghwhoami.whoami", map[string]any{})
	mcpOut := text(t, res)
	if res.IsError || !strings.Contains(mcpOut, `"login":"octo [REDACTED]"`) {
		t.Fatalf("ghwhoami.whoami over MCP: error %v, %s", res.IsError, mcpOut)
	}
	mcpJSON, err := json.Marshal(res)
	if err != nil {
		t.Fatal(err)
	}
	a.Close()
	list := run("", "secrets", "list")
	if !strings.Contains(list, "GITHUB_TOKEN") || strings.Contains(list, "never") {
		t.Errorf("secrets list: %s", list)
	}
	s.Close(context.Background())

	spellings := []string{token, base64.StdEncoding.EncodeToString([]byte(token)), hex.EncodeToString([]byte(token))}
	check := func(where string, b []byte) {
		for _, sp := range spellings {
			if bytes.Contains(b, []byte(sp)) {
				t.Errorf("the token appears in %s", where)
			}
		}
	}
	check("the invoke output", []byte(out))
	check("the MCP result", mcpJSON)
	check("the server's logs", logs.Bytes())
	filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(path)
		if err == nil {
			check(path, b)
		}
		return nil
	})
}

// TestWrongKEKStopsStart: a broker key-encryption key that is missing or is
// not the one the secrets were stored under stops the server at start-up.
func TestWrongKEKStopsStart(t *testing.T) {
	dir := t.TempDir()
	s, err := server.Start(context.Background(), server.Config{DataDir: dir, Addr: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	s.Close(context.Background())
	other := filepath.Join(t.TempDir(), "other.kek")
	os.WriteFile(other, []byte(base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{7}, 32))+"\n"), 0o600)
	for _, kek := range []string{other, filepath.Join(t.TempDir(), "missing.kek")} {
		_, err := server.Start(context.Background(), server.Config{DataDir: dir, Addr: "127.0.0.1:0", KEKFile: kek})
		if err == nil || !strings.Contains(err.Error(), filepath.Base(kek)) {
			t.Errorf("start with %s: %v", filepath.Base(kek), err)
		}
	}
}
