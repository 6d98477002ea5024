package server_test

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"

	"connectrpc.com/connect"
	"github.com/chromedp/chromedp"
	"google.golang.org/protobuf/types/known/durationpb"

	contractualv1 "github.com/contractual/contractual/contracts/gen/contractual/v1"
	"github.com/contractual/contractual/contracts/gen/contractual/v1/contractualv1connect"
	"github.com/contractual/contractual/internal/browsertest"
)

// TestControlUICallApproval is the one-shot approval in real headless
// Chromium: an agent device calls a high-risk tool (greeter's module under
// a copy of its contract that says risk: high) and waits; the browser, the
// owner's device, sees the call on the Approvals page with its exact
// input (escaped), who asked and what the contract lets it reach, and
// approves it; the waiting caller gets the result. The approval cannot be
// used twice: the same call then needs a new approval, and the page shows
// the old one used.
func TestControlUICallApproval(t *testing.T) {
	b := browsertest.New(t)
	s, _ := start(t)
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

	// An agent device (invoke and publish) pairs with the browser's
	// approval, publishes the high-risk greeter, and the browser approves
	// the contract.
	agent := beginScopes(t, s.URL, "agent laptop", "invoke", "publish")
	b.Run(chromedp.Navigate(s.URL + "/ui/devices"))
	b.Run(chromedp.Click(css(fmt.Sprintf(`.request-row[data-code=%q] button.approve`, agent.begin.GetCode()))))
	waitFlash(t, b)
	auth := connect.WithInterceptors(bearer(agent.complete(t)))
	pol := contractualv1connect.NewPolicyServiceClient(http.DefaultClient, s.URL, auth)
	mod := readTool(t, "greeter", "greeter.wasm")
	pub, err := pol.Publish(context.Background(), &contractualv1.PublishRequest{Module: []byte(mod), Contract: []byte(highRiskGreeter(t)), ContractFilename: "contract.yaml"})
	if err != nil {
		t.Fatal(err)
	}
	b.Run(chromedp.Navigate(s.URL + "/ui/contracts/" + pub.GetRecord().GetDigest()))
	b.Run(chromedp.Click(css("#approve")))
	waitFlash(t, b)

	// The agent asks; its call waits.
	tools := contractualv1connect.NewToolServiceClient(http.DefaultClient, s.URL, auth)
	const name = "Chromium <b>bold</b>"
	first, err := tools.Invoke(context.Background(), greet(name, durationpb.New(0)))
	id := first.GetPendingApproval().GetId()
	if err != nil || id == "" {
		t.Fatalf("the agent's call: %v, %v", first, err)
	}
	type result struct {
		msg string
		err error
	}
	done := make(chan result, 1)
	go func() {
		msg, err := waitGreet(tools, name)
		done <- result{msg, err}
	}()

	// The browser sees it pending, reviews it, and approves it.
	b.Run(chromedp.Navigate(s.URL + "/ui/approvals"))
	row := fmt.Sprintf(`.approval-row[data-id=%q]`, id)
	b.Run(chromedp.WaitVisible(css(row)))
	if text := b.Text(row); !strings.Contains(text, "greeter.greet") || !strings.Contains(text, name) || !strings.Contains(text, "agent laptop") {
		t.Errorf("the approvals list shows %q", text)
	}
	b.Screenshot("approvals")
	b.Run(chromedp.Click(css(row + " a.review")))
	waitPath(t, b, "/ui/approvals/"+id)
	if in := b.Text("#approval-input"); !strings.Contains(in, `"name": "Chromium <b>bold</b>"`) {
		t.Errorf("the exact input shows as %q", in)
	}
	injected, err := chromedp.Run(b.Ctx(), chromedp.Evaluate[bool](`document.querySelector("#approval-input b") !== null`))
	if err != nil {
		t.Fatal(err)
	}
	if injected {
		t.Error("the input's markup was rendered, not escaped")
	}
	card := b.Text("#permissions-card")
	for _, want := range []string{"greet", "high", "greeting", "Hello", "No network access"} {
		if !strings.Contains(card, want) {
			t.Errorf("the permissions card lacks %q:\n%s", want, card)
		}
	}
	if who := b.Text("#approval-principal"); !strings.Contains(who, "agent laptop") || !strings.Contains(who, "device:") {
		t.Errorf("asked by %q", who)
	}
	b.Screenshot("approval")
	b.Run(chromedp.SetValue(css("#reason"), "approved in the browser"), chromedp.Click(css("#approve")))
	waitFlash(t, b)
	if r := <-done; r.err != nil || r.msg != "Hello, "+name+"!" {
		t.Fatalf("the waiting caller got %q, %v", r.msg, r.err)
	}

	// Used once: the page says so, and the same call needs a new approval.
	b.Run(chromedp.Navigate(s.URL + "/ui/approvals/" + id))
	if st := attr(t, b, "#call-approval", "data-state"); st != "used" {
		t.Errorf("after the call, the approval is %q", st)
	}
	b.Screenshot("approval-used")
	again, err := tools.Invoke(context.Background(), greet(name, durationpb.New(0)))
	if err != nil || again.GetPendingApproval().GetId() == "" || again.GetPendingApproval().GetId() == id || again.GetOutput() != nil {
		t.Fatalf("the same call again: %v, %v", again, err)
	}
	if errs := b.ConsoleErrors(); len(errs) > 0 {
		t.Errorf("the pages logged errors (a CSP violation?): %q", errs)
	}
}
