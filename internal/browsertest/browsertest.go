// Package browsertest drives real headless Chromium from Go tests (chromedp over the DevTools protocol).
//
// A test calls New, drives the page with chromedp actions through Run, and
// reads the page back with Text, URL, Screenshot and ConsoleErrors:
//
//	b := browsertest.New(t)
//	b.Run(chromedp.Navigate(srv.URL), chromedp.Click(chromedp.CSS("#go")))
//	if got := b.Text("#out"); got != "done" { ... }
//	if errs := b.ConsoleErrors(); len(errs) > 0 { t.Errorf("console errors: %q", errs) }
//
// Each Browser is its own Chromium process with its own profile, so two
// Browsers in one test are two users with separate cookie jars.
package browsertest

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/browser"
	"github.com/chromedp/cdproto/cdp"
	jsonv2 "github.com/chromedp/cdproto/cdp/jsonv2"
	"github.com/chromedp/cdproto/log"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"
)

// EnvChromium names the environment variable that points at the browser
// binary. When it is set, New uses that binary and searches nothing else.
const EnvChromium = "CONTRACTUAL_CHROMIUM"

const (
	// testTimeout bounds all the actions of one Browser (see Ctx). It
	// only stops a test that waits for something that never comes: it is
	// far above what a test needs, so that a machine under heavy load
	// (a load average of 20 on 2 cores) still passes.
	testTimeout = 5 * time.Minute
	// closeTimeout bounds the graceful close of the browser and the
	// screenshot and URL that a failure reports.
	closeTimeout = time.Minute
)

// candidates are the names New looks for on PATH when EnvChromium is unset.
var candidates = []string{"chromium", "chromium-browser", "google-chrome"}

// flags start Chromium so that it never reaches for the network (this
// machine has none, and Chromium hangs on lookups without them) and runs as
// root in a container. They come after chromedp.DefaultExecAllocatorOptions.
var flags = []chromedp.ExecAllocatorOption{
	chromedp.Headless,
	chromedp.NoSandbox,
	chromedp.NoFirstRun,
	chromedp.Flag("disable-gpu", true),
	chromedp.Flag("disable-quic", true),
	chromedp.Flag("disable-background-networking", true),
	chromedp.Flag("disable-component-update", true),
	chromedp.Flag("disable-sync", true),
	chromedp.WindowSize(1280, 800),
}

// Browser is one headless Chromium with one tab, bound to one test.
type Browser struct {
	t   testing.TB
	tab context.Context // the tab, without the per-test timeout
	ctx context.Context // tab with the per-test timeout

	mu     sync.Mutex
	errors []string // console errors, see ConsoleErrors
}

// New starts a fresh headless Chromium for t, with a new profile in
// t.TempDir(), and returns a Browser; it is closed with t.Cleanup.
// Call New twice for two independent users (separate cookie jars).
//
// If no Chromium is found ($CONTRACTUAL_CHROMIUM, else chromium,
// chromium-browser or google-chrome on PATH), New calls t.Skip with a
// message that says what to install, unless the environment has CI=true:
// there a missing browser is t.Fatal, never a skip. A CONTRACTUAL_CHROMIUM
// that names no executable is always t.Fatal.
func New(t testing.TB) *Browser {
	t.Helper()
	path, msg, fatal := find(exec.LookPath, os.Getenv)
	switch {
	case fatal:
		t.Fatal(msg)
	case path == "":
		t.Skip(msg)
	}

	b := &Browser{t: t}
	tab, cancel := chromedp.NewContext(context.Background(),
		chromedp.WithAllocatorOptions(flags...),
		chromedp.WithAllocatorOptions(chromedp.ExecPath(path), chromedp.UserDataDir(t.TempDir())),
		chromedp.WithListener(b.listen))
	b.tab = tab
	ctx, cancelTimeout := context.WithTimeout(tab, testTimeout)
	b.ctx = ctx
	t.Cleanup(func() {
		cancelTimeout()
		cctx, ccancel := context.WithTimeout(tab, closeTimeout)
		defer ccancel()
		if err := chromedp.Cancel(cctx); err != nil && !errors.Is(err, context.Canceled) {
			t.Logf("browsertest: closing Chromium: %v", err)
		}
		cancel() // kills the browser if the graceful close failed, and waits for it
	})

	// The first action starts the browser and owns it, so it runs on tab and
	// not on ctx: the per-test timeout must not kill the browser itself.
	start := time.Now()
	if err := chromedp.Do(tab); err != nil {
		t.Fatalf("browsertest: starting %s: %v", path, err)
	}
	v, err := chromedp.CallBrowser(ctx, browser.GetVersion, cdp.Empty{})
	if err != nil {
		t.Fatalf("browsertest: asking %s for its version: %v", path, err)
	}
	t.Logf("browsertest: %s (%s), started in %v", v.Product, path, time.Since(start).Round(time.Millisecond))
	return b
}

// find decides which browser to use. It returns the path of the browser, or
// an empty path and a message for t.Skip, or, if fatal, for t.Fatal.
func find(lookPath func(string) (string, error), getenv func(string) string) (path, msg string, fatal bool) {
	if p := getenv(EnvChromium); p != "" {
		found, err := lookPath(p)
		if err != nil {
			return "", fmt.Sprintf("browsertest: %s=%s is not an executable browser: %v", EnvChromium, p, err), true
		}
		return found, "", false
	}
	for _, name := range candidates {
		if found, err := lookPath(name); err == nil {
			return found, "", false
		}
	}
	msg = fmt.Sprintf("browsertest: no Chromium found (%s is unset; none of %s on PATH); "+
		"install it with `apt-get install chromium chromium-driver`, or set %s to the browser binary",
		EnvChromium, strings.Join(candidates, ", "), EnvChromium)
	if ci, _ := strconv.ParseBool(getenv("CI")); ci {
		return "", msg + " (CI=true: a missing browser fails the test instead of skipping it)", true
	}
	return "", msg, false
}

// Ctx returns the chromedp context of the Browser's tab, for chromedp calls
// that Run does not cover (chromedp.Run with a value, chromedp.Events, ...).
// All actions of one Browser share a timeout of 5 minutes, counted from New.
func (b *Browser) Ctx() context.Context { return b.ctx }

// Run runs the actions in order in the tab. On error it fails the test with
// t.Fatal, reporting the error, the current URL, a screenshot and the
// console errors so far.
func (b *Browser) Run(actions ...chromedp.Action[chromedp.Void]) {
	b.t.Helper()
	if err := chromedp.Do(b.ctx, actions...); err != nil {
		b.fatal("Run", err)
	}
}

// Step adapts an action that returns a value, such as chromedp.Poll or
// chromedp.Evaluate, to a step of Run; the value is dropped:
//
//	b.Run(chromedp.Click(chromedp.CSS("#go")), browsertest.Step(chromedp.Poll[bool](`done === true`)))
func Step[T any](a chromedp.Action[T]) chromedp.Action[chromedp.Void] {
	return func(ctx context.Context, t *chromedp.Target) (chromedp.Void, error) {
		_, err := a(ctx, t)
		return chromedp.Void{}, err
	}
}

// Screenshot writes a full-page PNG of the tab to t.ArtifactDir()/<name>.png
// and returns its path. The artifact dir is temporary unless go test runs
// with -artifacts (then it is under -outputdir).
func (b *Browser) Screenshot(name string) string {
	b.t.Helper()
	path, err := b.screenshot(b.ctx, name)
	if err != nil {
		b.t.Fatalf("browsertest: screenshot %q: %v", name, err)
	}
	return path
}

// Text returns the rendered text (innerText) of the first element that
// matches the CSS selector sel, waiting for the element to exist.
func (b *Browser) Text(sel string) string {
	b.t.Helper()
	return run(b, fmt.Sprintf("Text(%q)", sel), chromedp.Text(chromedp.CSS(sel)))
}

// URL returns the URL of the page in the tab.
func (b *Browser) URL() string {
	b.t.Helper()
	return run(b, "URL()", chromedp.Location())
}

// ConsoleErrors returns the errors the tab has reported so far, oldest
// first: uncaught JavaScript exceptions, console.error and console.assert
// calls, and browser log entries of level error (such as Content Security
// Policy violations and failed resource loads). Tests assert it is empty to
// show that, for example, a strict CSP did not break the page.
func (b *Browser) ConsoleErrors() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]string(nil), b.errors...)
}

// run runs one action that returns a value, failing the test on error.
func run[T any](b *Browser, what string, a chromedp.Action[T]) T {
	b.t.Helper()
	v, err := chromedp.Run(b.ctx, a)
	if err != nil {
		b.fatal(what, err)
	}
	return v
}

// fatal fails the test with the error of the call what and with what the tab
// looks like now. It uses the tab without the per-test timeout, so it still
// works after a timeout.
func (b *Browser) fatal(what string, err error) {
	b.t.Helper()
	if errors.Is(err, context.DeadlineExceeded) {
		err = fmt.Errorf("%w (the Browser's %v timeout, counted from New, ran out: waiting for something that never came?)", err, testTimeout)
	}
	ctx, cancel := context.WithTimeout(b.tab, closeTimeout)
	defer cancel()
	url, uerr := chromedp.Run(ctx, chromedp.Location())
	if uerr != nil {
		url = fmt.Sprintf("unknown (%v)", uerr)
	}
	shot, serr := b.screenshot(ctx, "failure")
	if serr != nil {
		shot = fmt.Sprintf("none (%v)", serr)
	} else {
		shot += " (removed after the test unless go test runs with -artifacts)"
	}
	b.t.Fatalf("browsertest: %s: %v\n\tpage: %s\n\tscreenshot: %s\n\tconsole errors: %q", what, err, url, shot, b.ConsoleErrors())
}

// screenshot writes a full-page PNG named name.png to the artifact dir. Some
// pages, such as Chromium's own error page, cannot be captured full-page;
// then it falls back to the viewport.
func (b *Browser) screenshot(ctx context.Context, name string) (string, error) {
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100)) // quality 100 means PNG
	if err != nil {
		var err2 error
		if png, err2 = chromedp.Run(ctx, chromedp.CaptureScreenshot()); err2 != nil {
			return "", err
		}
	}
	path := filepath.Join(b.t.ArtifactDir(), filepath.Base(name)+".png")
	return path, os.WriteFile(path, png, 0o644)
}

// listen records console errors. It runs in chromedp's read loop, so it
// must be quick and must not call the browser.
func (b *Browser) listen(ev any) {
	var msg string
	switch ev := ev.(type) {
	case *runtime.EventExceptionThrown:
		d := ev.ExceptionDetails
		msg = d.Text
		if d.Exception != nil && d.Exception.Description != "" {
			desc, _, _ := strings.Cut(d.Exception.Description, "\n")
			msg += " " + desc
		}
		if d.URL != "" {
			msg += fmt.Sprintf(" (%s:%d:%d)", d.URL, d.LineNumber+1, d.ColumnNumber+1)
		}
	case *runtime.EventConsoleAPICalled:
		if ev.Type != runtime.ConsoleAPICalledTypeError && ev.Type != runtime.ConsoleAPICalledTypeAssert {
			return
		}
		args := make([]string, len(ev.Args))
		for i, a := range ev.Args {
			args[i] = describe(a)
		}
		msg = fmt.Sprintf("console.%s: %s", ev.Type, strings.Join(args, " "))
	case *log.EventEntryAdded:
		if ev.Entry.Level != "error" {
			return
		}
		msg = fmt.Sprintf("%s: %s", ev.Entry.Source, ev.Entry.Text)
		if ev.Entry.URL != "" {
			msg += " (" + ev.Entry.URL + ")"
		}
	default:
		return
	}
	b.mu.Lock()
	b.errors = append(b.errors, msg)
	b.mu.Unlock()
}

// describe renders an argument of a console call as the DevTools console
// would, roughly: strings bare, everything else by its description or JSON.
func describe(o *runtime.RemoteObject) string {
	var s string
	switch {
	case o.Type == "string" && jsonv2.Unmarshal(o.Value, &s) == nil:
		return s
	case o.Description != "":
		return o.Description
	case len(o.Value) > 0:
		return string(o.Value)
	case o.UnserializableValue != "":
		return string(o.UnserializableValue)
	}
	return string(o.Type)
}
