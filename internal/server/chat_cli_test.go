package server_test

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"

	contractualv1 "github.com/contractual/contractual/contracts/gen/contractual/v1"
	"github.com/contractual/contractual/contracts/gen/contractual/v1/contractualv1connect"
	"github.com/contractual/contractual/internal/cli"
	"github.com/contractual/contractual/internal/engine/modeltest"
	"github.com/contractual/contractual/internal/server"
)

// chatCLI runs contractual chat in-process as the owner device of s, with
// stdin, and returns its exit status, stdout and stderr.
func chatCLI(t *testing.T, s *server.Server, stdin string, args ...string) (int, string, string) {
	t.Helper()
	var out, errOut bytes.Buffer
	_, file := owner(t, s)
	args = append(append([]string{"chat"}, args...), "--server", s.URL, "--token-file", file)
	code := cli.Main(context.Background(), args, &cli.Env{
		Stdin: strings.NewReader(stdin), Stdout: &out, Stderr: &errOut,
		Getenv: func(string) string { return "" },
	})
	return code, out.String(), errOut.String()
}

var sessionHint = regexp.MustCompile(`session ([0-9a-f]{32}): continue with contractual chat --session ([0-9a-f]{32})`)

// TestChatCLI is contractual chat against a real server whose engine
// talks to the scripted model: a message shows the proposal, policy's
// decision, the result and the answer, then the session to continue; a
// REPL of two lines over stdin is two turns of that session; chat show
// prints the whole transcript and chat list the session; a failed turn
// exits 1 with its reason on stderr.
func TestChatCLI(t *testing.T) {
	m := modeltest.New(t,
		modeltest.Turn{Content: `{"answer": null, "calls": [{"tool": "textkit.slugify", "input": "{\"text\": \"Hello World\"}"}]}`, PromptTokens: 100, CompletionTokens: 20},
		modeltest.Turn{Content: `{"answer": "The slug is hello-world.", "calls": []}`, PromptTokens: 150, CompletionTokens: 10},
	)
	s, _ := startChat(t, m)
	tok, _ := owner(t, s)
	publishApproved(t, s, tok)

	code, out, errOut := chatCLI(t, s, "", "--tools", "textkit.slugify,textkit.word_count", "--max-calls", "5", "Slugify Hello World")
	if code != 0 {
		t.Fatalf("chat: exit %d\n%s%s", code, out, errOut)
	}
	for _, want := range []string{
		`→ textkit.slugify {"text":"Hello World"}`,
		"  allowed: ",
		`  ← result: {"slug":"hello-world"}`,
		"The slug is hello-world.\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("chat's output lacks %q:\n%s", want, out)
		}
	}
	if p, a := strings.Index(out, "→ textkit.slugify"), strings.Index(out, "The slug is"); p < 0 || a < p {
		t.Errorf("the proposal should come before the answer:\n%s", out)
	}
	hint := sessionHint.FindStringSubmatch(errOut)
	if hint == nil || hint[1] != hint[2] {
		t.Fatalf("no session to continue on stderr: %q", errOut)
	}
	id := hint[1]

	// A REPL: one turn per line of stdin, in the same session. The model's
	// text cannot drive the terminal: its escape sequences show escaped.
	m.Push(
		modeltest.Turn{Content: `{"answer": "first answer", "calls": []}`, PromptTokens: 10, CompletionTokens: 2},
		modeltest.Turn{Content: `{"answer": "second answer\u001b[2J", "calls": []}`, PromptTokens: 10, CompletionTokens: 2},
	)
	code, out, errOut = chatCLI(t, s, "first line\n\nsecond line\n", "--session", id)
	if code != 0 || out != "first answer\nsecond answer\\x1b[2J\n" {
		t.Fatalf("REPL: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	if reqs := m.Requests(); len(reqs) != 4 || !strings.Contains(reqs[3].Messages[len(reqs[3].Messages)-1].Content, "second line") {
		t.Fatalf("the model saw %d requests; the last: %v", len(reqs), reqs[len(reqs)-1].Messages)
	}

	// The whole transcript, and the list.
	code, out, errOut = chatCLI(t, s, "", "show", id)
	if code != 0 {
		t.Fatalf("chat show: exit %d\n%s%s", code, out, errOut)
	}
	wantOrder := []string{
		"session " + id + " (session:" + id + "): idle",
		"tools      textkit.slugify, textkit.word_count",
		"tool calls 1 of 5",
		"you: Slugify Hello World",
		"→ textkit.slugify",
		"allowed: ",
		`← result: {"slug":"hello-world"}`,
		"model: The slug is hello-world.",
		"you: first line",
		"model: first answer",
		"you: second line",
		"model: second answer",
	}
	at := 0
	for _, want := range wantOrder {
		i := strings.Index(out[at:], want)
		if i < 0 {
			t.Fatalf("chat show lacks %q after byte %d:\n%s", want, at, out)
		}
		at += i + len(want)
	}
	code, out, _ = chatCLI(t, s, "", "list")
	if code != 0 || !strings.Contains(out, id) || !strings.Contains(out, "idle") || !strings.Contains(out, "Slugify Hello World") {
		t.Errorf("chat list: exit %d\n%s", code, out)
	}
	code, out, _ = chatCLI(t, s, "", "tools")
	if code != 0 || !regexp.MustCompile(`(?m)^textkit\.slugify +low +sha256:[0-9a-f]{64} +Turn a text into a URL slug`).MatchString(out) {
		t.Errorf("chat tools: exit %d\n%s", code, out)
	}
	code, out, _ = chatCLI(t, s, "", "show", id, "--json")
	var shown struct {
		Session struct{ ID string }
		Events  []struct{ Kind string }
	}
	if err := json.Unmarshal([]byte(out), &shown); code != 0 || err != nil || shown.Session.ID != id || len(shown.Events) < 12 {
		t.Errorf("chat show --json: exit %d, %v: %.300s", code, err, out)
	}

	// A failed turn: the provider refuses; the reason goes to stderr and
	// the command exits 1, after printing the session to continue.
	m.Push(modeltest.Turn{Status: 400, ErrMessage: "scripted refusal: context too long"})
	code, out, errOut = chatCLI(t, s, "", "--session", id, "one more")
	if code != 1 || !strings.Contains(errOut, "the turn failed: ") || !strings.Contains(errOut, "scripted refusal") {
		t.Fatalf("failed turn: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	if strings.Contains(out, "scripted refusal") {
		t.Errorf("the failure went to stdout: %q", out)
	}
	// Bad usage: budgets belong to a new session.
	if code, _, errOut := chatCLI(t, s, "", "--session", id, "--max-calls", "3", "x"); code != 2 || !strings.Contains(errOut, "not with --session") {
		t.Errorf("--max-calls with --session: exit %d: %s", code, errOut)
	}
}

// TestChatCLIApproval: a call of a high-risk tool is held; contractual chat
// shows it while the turn waits, with where and how to approve it; the
// owner approves it with contractual approvals (the call is the session's,
// not this device's own), and the same chat goes on to the result and the
// answer.
func TestChatCLIApproval(t *testing.T) {
	t.Run("on the stream", func(t *testing.T) { chatCLIApproval(t, false) })
	// The gateway ends a request after its time bound (InvokeTimeout),
	// here a second, while the turn waits: chat follows the rest of it.
	t.Run("past the gateway's time bound", func(t *testing.T) { chatCLIApproval(t, true) })
}

func chatCLIApproval(t *testing.T, cut bool) {
	m := modeltest.New(t,
		modeltest.Turn{Content: `{"answer": null, "calls": [{"tool": "greeter.greet", "input": "{\"name\": \"Ada\"}"}]}`, PromptTokens: 50, CompletionTokens: 10},
		modeltest.Turn{Content: `{"answer": "Greeted Ada.", "calls": []}`, PromptTokens: 60, CompletionTokens: 5},
	)
	s, dir := startChat(t, m, func(c *server.Config) {
		if cut {
			c.Limits.InvokeTimeout = time.Second
		}
	})
	tok, file := owner(t, s)
	pol := contractualv1connect.NewPolicyServiceClient(http.DefaultClient, s.URL, connect.WithInterceptors(bearer(tok)))
	mod, err := os.ReadFile(tool("greeter", "greeter.wasm"))
	if err != nil {
		t.Fatal(err)
	}
	pub, err := pol.Publish(context.Background(), &contractualv1.PublishRequest{Module: mod, Contract: []byte(highRiskGreeter(t)), ContractFilename: "contract.yaml"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := pol.Approve(context.Background(), &contractualv1.ApproveRequest{Digest: pub.GetRecord().GetDigest()}); err != nil {
		t.Fatal(err)
	}

	var out, errOut syncBuffer
	exit := make(chan int, 1)
	go func() {
		exit <- cli.Main(context.Background(), []string{"chat", "--tools", "greeter.greet", "Greet Ada", "--server", s.URL, "--token-file", file}, &cli.Env{
			Stdin: strings.NewReader(""), Stdout: &out, Stderr: &errOut, Getenv: func(string) string { return "" },
		})
	}()
	hint := regexp.MustCompile(`or: contractual approvals show ([0-9a-f]{32}), then contractual approvals approve ([0-9a-f]{32})`)
	var id string
	for deadline := time.Now().Add(2 * time.Minute); id == ""; {
		if h := hint.FindStringSubmatch(out.String()); h != nil && h[1] == h[2] {
			id = h[1]
			break
		}
		select {
		case code := <-exit:
			t.Fatalf("chat ended (exit %d) before the approval:\n%s%s", code, out.String(), errOut.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("no approval shown while the turn waits:\n%s%s", out.String(), errOut.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	for _, want := range []string{`→ greeter.greet {"name":"Ada"}`, "  held: ", "review it: " + s.URL + "/ui/approvals/" + id} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("while the turn waits, chat's output lacks %q:\n%s", want, out.String())
		}
	}
	if strings.Contains(out.String(), "Greeted Ada.") {
		t.Fatalf("the model answered before the approval:\n%s", out.String())
	}
	if cut {
		for deadline := time.Now().Add(2 * time.Minute); !strings.Contains(errOut.String(), "following the turn"); time.Sleep(20 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("the gateway never cut the stream:\n%s", errOut.String())
			}
		}
	}
	mustRun(t, s, dir, "approvals", "approve", id, "--reason", "from the terminal")
	select {
	case code := <-exit:
		if code != 0 {
			t.Fatalf("chat: exit %d\n%s%s", code, out.String(), errOut.String())
		}
	case <-time.After(2 * time.Minute):
		t.Fatalf("chat did not end after the approval:\n%s", out.String())
	}
	got := out.String()
	for _, want := range []string{"  allowed: ", `  ← result: {"message":"Hello, Ada!"}`, "Greeted Ada.\n"} {
		if !strings.Contains(got, want) {
			t.Errorf("after the approval, chat's output lacks %q:\n%s", want, got)
		}
	}
}
