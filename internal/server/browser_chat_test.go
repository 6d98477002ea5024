package server_test

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"

	"connectrpc.com/connect"
	"github.com/chromedp/chromedp"

	contractualv1 "github.com/contractual/contractual/contracts/gen/contractual/v1"
	"github.com/contractual/contractual/contracts/gen/contractual/v1/contractualv1connect"
	"github.com/contractual/contractual/internal/browsertest"
	"github.com/contractual/contractual/internal/engine/modeltest"
)

// TestControlUIChat is a chat session in real headless Chromium, against
// the scripted model: the owner's browser opens a session on the Chat
// page (every approved tool checked by default), sends a message whose
// turn proposes textkit.slugify (allowed by policy, run, its result shown
// beside it) and then a call of a high-risk tool (greeter, with a name
// that is markup), which is held for approval. The page links the
// approval; the browser, the owner's device, approves it on the Approvals
// page (the call is the session's, session:<id>, not this device's own),
// comes back and sees the result and the model's answer. What the tool
// and the model said shows as text: no element of it is ever made.
func TestControlUIChat(t *testing.T) {
	b := browsertest.New(t)
	m := modeltest.New(t)
	s, _ := startChat(t, m)
	css := func(sel string) chromedp.CSS { return chromedp.CSS(sel) }

	// Pair this browser, the owner's device, with the setup code.
	b.Run(chromedp.Navigate(s.URL + "/ui/pair"))
	b.Run(
		chromedp.SetValue(css("#pair-name"), "owner browser"),
		chromedp.Click(css("#pair-start")),
		chromedp.WaitVisible(css("#pair-code")),
	)
	b.Run(chromedp.SendKeys(css("#setup-code"), s.SetupCode), chromedp.Click(css("#setup-submit")))
	waitPath(t, b, "/ui/")

	// A publisher device, approved in the browser, publishes textkit and
	// the high-risk greeter; the browser approves both contracts.
	pub := beginScopes(t, s.URL, "publisher", "publish")
	b.Run(chromedp.Navigate(s.URL + "/ui/devices"))
	b.Run(chromedp.Click(css(fmt.Sprintf(`.request-row[data-code=%q] button.approve`, pub.begin.GetCode()))))
	waitFlash(t, b)
	pol := contractualv1connect.NewPolicyServiceClient(http.DefaultClient, s.URL, connect.WithInterceptors(bearer(pub.complete(t))))
	var digests []string
	for _, p := range []struct{ module, contract string }{
		{readTool(t, "textkit", "textkit.wasm"), readTool(t, "textkit", "contract.yaml")},
		{readTool(t, "greeter", "greeter.wasm"), highRiskGreeter(t)},
	} {
		resp, err := pol.Publish(context.Background(), &contractualv1.PublishRequest{Module: []byte(p.module), Contract: []byte(p.contract), ContractFilename: "contract.yaml"})
		if err != nil {
			t.Fatal(err)
		}
		digests = append(digests, resp.GetRecord().GetDigest())
	}
	for _, d := range digests {
		b.Run(chromedp.Navigate(s.URL + "/ui/contracts/" + d))
		b.Run(chromedp.Click(css("#approve")))
		waitFlash(t, b)
	}

	// The model: slugify, then the high-risk greeting of a name that is
	// markup, then an answer that is markup too. Both tools' schemas use
	// maxLength, so their input comes as JSON-encoded strings.
	const evil = "<script>alert(1)</script>"
	m.Push(
		modeltest.Turn{Content: `{"answer": null, "calls": [{"tool": "textkit.slugify", "input": "{\"text\": \"Hello World\"}"}]}`, PromptTokens: 100, CompletionTokens: 20},
		modeltest.Turn{Content: `{"answer": null, "calls": [{"tool": "greeter.greet", "input": "{\"name\": \"` + evil + `\"}"}]}`, PromptTokens: 120, CompletionTokens: 20},
		modeltest.Turn{Content: `{"answer": "The slug is hello-world; the greeting: Hello, ` + evil + `! <img src=x>", "calls": []}`, PromptTokens: 150, CompletionTokens: 10},
	)

	// Open a session: every approved tool is offered, checked.
	b.Run(chromedp.Navigate(s.URL + "/ui/chat"))
	b.Run(chromedp.WaitVisible(css("#open-form")))
	offered, err := chromedp.Run(b.Ctx(), chromedp.Evaluate[[]string](
		`Array.from(document.querySelectorAll('input[name="tool"]')).map(e => e.value + (e.checked ? " checked" : ""))`))
	if want := "greeter.greet checked,textkit.json_pick checked,textkit.slugify checked,textkit.word_count checked"; err != nil || strings.Join(offered, ",") != want {
		t.Errorf("the tools offered: %q (%v), want %s", offered, err, want)
	}
	b.Screenshot("chat")
	b.Run(
		chromedp.SetValue(css("#session-title"), "slug and greeting"),
		chromedp.SetValue(css("#max-calls"), "10"),
		chromedp.Click(css("#open-session")),
	)
	waitFlash(t, b)
	path := b.URL()[len(s.URL):]
	id, ok := strings.CutPrefix(strings.SplitN(path, "?", 2)[0], "/ui/chat/")
	if !ok || len(id) != 32 {
		t.Fatalf("after opening, the browser is at %s", path)
	}
	if got := b.Text("#session-principal"); got != "session:"+id {
		t.Errorf("the session's principal shows as %q", got)
	}

	// Send the message; the page follows the turn until the greeting is
	// held for approval.
	b.Run(chromedp.SetValue(css("#message"), "Slugify Hello World, then greet "+evil), chromedp.Click(css("#send-message")))
	greet := `.call-row[data-tool="greeter.greet"]`
	slug := `.call-row[data-tool="textkit.slugify"]`
	waitJS(t, b, fmt.Sprintf(`document.readyState === "complete" && !!document.querySelector('%s a.approval-link')`, greet))
	if v := attr(t, b, slug+" .decision", "data-verdict"); v != "allowed" {
		t.Errorf("slugify's decision shows %q", v)
	}
	if in := b.Text(slug + " .call-input"); !strings.Contains(in, `"text": "Hello World"`) {
		t.Errorf("slugify's input shows as %q", in)
	}
	if out := b.Text(slug + " .result-output"); !strings.Contains(out, `"slug": "hello-world"`) {
		t.Errorf("slugify's result shows as %q", out)
	}
	if v := attr(t, b, greet+" .decision", "data-verdict"); v != "held" {
		t.Errorf("the greeting's decision shows %q", v)
	}
	if st := attr(t, b, "#session-state", "data-state"); st != "running" {
		t.Errorf("while the call waits, the session is %q", st)
	}
	b.Screenshot("chat-held")

	// Approve the held call on its Approvals page.
	href := attr(t, b, greet+" a.approval-link", "href")
	approval, _ := strings.CutPrefix(href, "/ui/approvals/")
	b.Run(chromedp.Click(css(greet + " a.approval-link")))
	waitPath(t, b, href)
	if who := b.Text("#approval-principal"); !strings.Contains(who, "session:"+id) {
		t.Errorf("the approval was asked by %q", who)
	}
	if in := b.Text("#approval-input"); !strings.Contains(in, evil) {
		t.Errorf("the approval's input shows as %q", in)
	}
	b.Run(chromedp.SetValue(css("#reason"), "approved from the chat"), chromedp.Click(css("#approve")))
	waitFlash(t, b)

	// Back on the session: the turn ends (the page reloads itself while it
	// runs), with the greeting's result and the model's answer.
	b.Run(chromedp.Navigate(s.URL + "/ui/chat/" + id))
	waitJS(t, b, `document.readyState === "complete" && document.querySelector("#session-state")?.dataset.state === "idle"`)
	verdicts, err := chromedp.Run(b.Ctx(), chromedp.Evaluate[[]string](fmt.Sprintf(
		`Array.from(document.querySelectorAll('%s .decision')).map(e => e.dataset.verdict)`, greet)))
	if err != nil || strings.Join(verdicts, " ") != "held allowed" {
		t.Errorf("the greeting's decisions: %v (%v)", verdicts, err)
	}
	if a := attr(t, b, greet+" a.approval-link", "href"); a != "/ui/approvals/"+approval {
		t.Errorf("the approval link is %q", a)
	}
	if out := b.Text(greet + " .result-output"); !strings.Contains(out, `"message": "Hello, `+evil+`!"`) {
		t.Errorf("the greeting's result shows as %q", out)
	}
	answer := b.Text(".msg.answer .text")
	if !strings.Contains(answer, "The slug is hello-world") || !strings.Contains(answer, evil) || !strings.Contains(answer, "<img src=x>") {
		t.Errorf("the answer shows as %q", answer)
	}
	// Nothing the model or the tools said became an element: the only
	// script is app.js, and there is no image.
	scripts, err := chromedp.Run(b.Ctx(), chromedp.Evaluate[[]string](
		`Array.from(document.querySelectorAll("script")).map(e => e.getAttribute("src") || "inline")`))
	if err != nil || len(scripts) != 1 || scripts[0] != "/ui/static/app.js" {
		t.Errorf("the page's scripts: %v (%v)", scripts, err)
	}
	if imgs, err := chromedp.Run(b.Ctx(), chromedp.Evaluate[int](`document.querySelectorAll("img").length`)); err != nil || imgs != 0 {
		t.Errorf("the page has %d images (%v)", imgs, err)
	}
	if used := b.Text(`.budget-row[data-name="tool calls"] .used`); used != "2" {
		t.Errorf("tool calls used: %q", used)
	}
	b.Screenshot("chat-done")

	// The list shows the session, idle.
	b.Run(chromedp.Navigate(s.URL + "/ui/chat"))
	row := fmt.Sprintf(`.session-row[data-id=%q]`, id)
	if st := attr(t, b, row, "data-state"); st != "idle" {
		t.Errorf("the list shows the session %q", st)
	}
	if text := b.Text(row); !strings.Contains(text, "slug and greeting") {
		t.Errorf("the list's row: %q", text)
	}
	if errs := b.ConsoleErrors(); len(errs) > 0 {
		t.Errorf("the pages logged errors (a CSP violation?): %q", errs)
	}
}
