package server_test

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"

	"connectrpc.com/connect"
	"github.com/chromedp/cdproto/fetch"
	"github.com/chromedp/chromedp"

	contractualv1 "github.com/contractual/contractual/contracts/gen/contractual/v1"
	"github.com/contractual/contractual/contracts/gen/contractual/v1/contractualv1connect"
	"github.com/contractual/contractual/internal/browsertest"
	"github.com/contractual/contractual/internal/server"
)

// TestBrowserSetupCodePairing pairs a browser with the setup code while
// one of its completion polls is on its way (the test holds it), which is
// when it used to complete twice: once by that poll and once right after
// the setup code was accepted, the second refused as a replay of the same
// proof and logged. Now the page sends one completion at a time, so it
// completes once and the server logs no refusal. Then the Devices page
// shows the scopes of a request, of the device it pairs and of this
// browser.
func TestBrowserSetupCodePairing(t *testing.T) {
	b := browsertest.New(t)
	var logs syncBuffer
	s, err := server.Start(context.Background(), server.Config{
		DataDir: t.TempDir(), Addr: "127.0.0.1:0", Log: slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close(context.Background()) })
	css := func(sel string) chromedp.CSS { return chromedp.CSS(sel) }

	b.Run(chromedp.Navigate(s.URL + "/ui/pair"))
	if v := attr(t, b, "#pair-scopes option", "value"); v != "owner" {
		t.Errorf("the pairing page's default scope is %q", v)
	}
	// Hold every completion request the page sends.
	events := chromedp.Events(b.Ctx(), fetch.RequestPaused)
	paused := make(chan fetch.EventRequestPaused, 16)
	go func() {
		defer close(paused)
		for ev, err := range events {
			if err != nil {
				return
			}
			paused <- ev
		}
	}()
	if _, err := chromedp.Call(b.Ctx(), fetch.Enable, fetch.EnableParams{Patterns: []*fetch.RequestPattern{{URLPattern: "*/ui/pair/complete"}}}); err != nil {
		t.Fatal(err)
	}
	b.Run(
		chromedp.SetValue(css("#pair-name"), "setup browser"),
		chromedp.Click(css("#pair-start")),
		chromedp.WaitVisible(css("#pair-code")),
	)
	// The page's first poll is on its way, held here.
	first, ok := <-paused
	if !ok {
		t.Fatal("no completion poll")
	}
	// The setup code is accepted while that poll is in flight.
	b.Run(chromedp.SendKeys(css("#setup-code"), s.SetupCode), chromedp.Click(css("#setup-submit")))
	waitJS(t, b, `document.getElementById("pair-status").textContent.startsWith("Setup code accepted")`)
	// Let it go, and every completion the page sends after it.
	var completions atomic.Int32
	completions.Add(1)
	release := func(id fetch.RequestID) error {
		_, err := chromedp.Call(b.Ctx(), fetch.ContinueRequest, fetch.ContinueRequestParams{RequestID: id})
		return err
	}
	go func() {
		for ev := range paused {
			completions.Add(1)
			if release(ev.RequestID) != nil {
				return
			}
		}
	}()
	if err := release(first.RequestID); err != nil {
		t.Fatal(err)
	}
	waitPath(t, b, "/ui/")
	if n := completions.Load(); n != 1 {
		t.Errorf("the page sent %d completions, want 1", n)
	}
	if _, err := chromedp.Call(b.Ctx(), fetch.Disable, struct{}{}); err != nil {
		t.Fatal(err)
	}
	b.Screenshot("setup-code-paired")

	// The server logged no refused completion: not in the audit log, not
	// in its log.
	token := checkSession(t, b, s.URL).Value
	auditc := contractualv1connect.NewAuditServiceClient(http.DefaultClient, s.URL, connect.WithInterceptors(bearer(token)))
	tail, err := auditc.Tail(context.Background(), &contractualv1.TailRequest{Limit: 100})
	if err != nil {
		t.Fatal(err)
	}
	var pairs []string
	for _, e := range tail.GetEvents() {
		if e.GetAction() == "device.pair" {
			pairs = append(pairs, e.GetOutcome()+": "+e.GetDetail())
		}
	}
	if len(pairs) != 1 || !strings.HasPrefix(pairs[0], "ok: ") {
		t.Errorf("the audit log's pairing events: %q, want one that succeeded", pairs)
	}
	for _, bad := range []string{"replay", "already completed", "already used"} {
		if strings.Contains(logs.String(), bad) {
			t.Errorf("the server logged %q:\n%s", bad, logs.String())
		}
	}

	// An agent asks for scope invoke: the Devices page shows what it asks,
	// the browser approves it, and it is listed with its scope.
	agent := beginScopes(t, s.URL, "agent box", "invoke")
	b.Run(chromedp.Navigate(s.URL + "/ui/devices"))
	row := fmt.Sprintf(`.request-row[data-code=%q]`, agent.begin.GetCode())
	if got := b.Text(row + " .scopes"); strings.TrimSpace(got) != "invoke" {
		t.Errorf("the request's scopes show as %q", got)
	}
	b.Screenshot("devices-request-scopes")
	b.Run(chromedp.Click(css(row + " button.approve")))
	waitFlash(t, b)
	agent.complete(t)
	b.Run(chromedp.Navigate(s.URL + "/ui/devices"))
	if got := b.Text(fmt.Sprintf(`.device-row[data-id=%q] .scopes`, agent.begin.GetDeviceId())); strings.TrimSpace(got) != "invoke" {
		t.Errorf("the agent's scopes show as %q", got)
	}
	if got := b.Text(".device-row.this .scopes"); strings.TrimSpace(got) != "owner" {
		t.Errorf("this browser's scopes show as %q", got)
	}
	if got := b.Text("#device-scopes"); got != "owner" {
		t.Errorf("the header shows scopes %q", got)
	}
	b.Screenshot("devices-scopes")
	if errs := b.ConsoleErrors(); len(errs) > 0 {
		t.Errorf("the pages logged errors: %q", errs)
	}
}

// beginScopes asks to pair a new client device with scopes.
func beginScopes(t testing.TB, base, name string, scopes ...string) *pendingDevice {
	t.Helper()
	return beginPairingWith(t, base, &contractualv1.BeginPairingRequest{Name: name, Scopes: scopes})
}
