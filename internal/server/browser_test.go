package server_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"

	contractualv1 "github.com/contractual/contractual/contracts/gen/contractual/v1"
	"github.com/contractual/contractual/contracts/gen/contractual/v1/contractualv1connect"
	"github.com/contractual/contractual/internal/browsertest"
	"github.com/contractual/contractual/internal/pairing"
)

// TestControlUI walks the owner's path through the Control UI in real
// headless Chromium, against the all-in-one server: pair this browser with
// the setup code; approve a CLI device's pairing request; see a tool that
// device published pending, with its permissions card; approve it; invoke it
// with curl and the device token; see the run; approve a phone, revoke it,
// see its next call refused; see an update's diff and reject it; store a
// secret that no page shows again; and see cross-site and foreign-origin
// posts refused. Screenshots of every page go to the test's artifact
// directory (go test -artifacts keeps them).
func TestControlUI(t *testing.T) {
	b := browsertest.New(t)
	requireCurl(t)
	s, _ := start(t)
	css := func(sel string) chromedp.CSS { return chromedp.CSS(sel) }

	// Pair this browser, the first device, with the setup code the server
	// printed.
	b.Run(chromedp.Navigate(s.URL + "/"))
	waitPath(t, b, "/ui/pair")
	b.Run(
		chromedp.SetValue(css("#pair-name"), "test browser"),
		chromedp.Click(css("#pair-start")),
		chromedp.WaitVisible(css("#pair-code")),
	)
	if code := b.Text("#pair-code"); len(strings.TrimSpace(code)) < 6 {
		t.Fatalf("pairing code shown: %q", code)
	}
	b.Screenshot("01-pair")
	b.Run(chromedp.SendKeys(css("#setup-code"), s.SetupCode), chromedp.Click(css("#setup-submit")))
	waitPath(t, b, "/ui/")
	b.Screenshot("02-overview")
	session := checkSession(t, b, s.URL)

	// A CLI device asks to pair and the browser approves it.
	cli := beginPairing(t, s.URL, "ci laptop")
	b.Run(chromedp.Navigate(s.URL + "/ui/devices"))
	b.Run(chromedp.Click(css(fmt.Sprintf(`.request-row[data-code=%q] button.approve`, cli.begin.GetCode()))))
	waitFlash(t, b)
	token := cli.complete(t)
	auth := connect.WithInterceptors(bearer(token))

	// It publishes a tool through the API; the browser sees it pending,
	// with its permissions card, and approves it.
	pol := contractualv1connect.NewPolicyServiceClient(http.DefaultClient, s.URL, auth)
	digest := publish(t, pol, "textkit.wasm", readTool(t, "textkit", "contract.yaml"))
	b.Run(chromedp.Navigate(s.URL + "/ui/contracts"))
	b.Run(chromedp.WaitVisible(css(fmt.Sprintf(`.contract-row[data-digest=%q]`, digest))))
	b.Screenshot("03-contracts")
	b.Run(chromedp.Navigate(s.URL + "/ui/contracts/" + digest))
	card := b.Text("#permissions-card")
	for _, want := range []string{"slugify", "word_count", "json_pick", "low", "16"} {
		if !strings.Contains(card, want) {
			t.Errorf("permissions card lacks %q:\n%s", want, card)
		}
	}
	b.Screenshot("04-contract")
	b.Run(chromedp.SetValue(css("#reason"), "reviewed in the browser test"), chromedp.Click(css("#approve")))
	waitFlash(t, b)
	rec, err := pol.GetContract(context.Background(), &contractualv1.GetContractRequest{Digest: digest})
	if err != nil || rec.GetRecord().GetState() != contractualv1.ContractState_CONTRACT_STATE_APPROVED {
		t.Fatalf("after approving in the browser: %v %v", rec.GetRecord().GetState(), err)
	}
	if by := rec.GetRecord().GetDecidedBy(); !strings.HasPrefix(by, "device:") {
		t.Errorf("approved by %q, want the browser's device", by)
	}

	// Invoke it with curl and the CLI device's token; the run shows up.
	body, status := curlJSON(t, s.URL+"/contractual.v1.ToolService/Invoke", token, `{"tool": "textkit.slugify", "input": {"text": "Seen In The Browser"}}`)
	if status != "200" || !strings.Contains(body, "seen-in-the-browser") {
		t.Fatalf("curl invoke: %s %s", status, body)
	}
	b.Run(chromedp.Navigate(s.URL + "/ui/runs"))
	if runs := b.Text(".run-row"); !strings.Contains(runs, "slugify") {
		t.Errorf("runs page's first run: %q", runs)
	}
	if cls := attr(t, b, "#audit-status", "class"); !strings.Contains(cls, "ok") {
		t.Errorf("audit status class %q: %s", cls, b.Text("#audit-status"))
	}
	b.Screenshot("05-runs")

	// A phone pairs with the browser's approval, calls a tool, is revoked
	// in the browser, and its next call is refused.
	phone := beginPairing(t, s.URL, "phone")
	b.Run(chromedp.Navigate(s.URL + "/ui/devices"))
	b.Screenshot("06-devices-request")
	b.Run(chromedp.Click(css(fmt.Sprintf(`.request-row[data-code=%q] button.approve`, phone.begin.GetCode()))))
	waitFlash(t, b)
	phoneToken := phone.complete(t)
	if _, status := curlJSON(t, s.URL+"/contractual.v1.ToolService/Invoke", phoneToken, `{"tool": "textkit.slugify", "input": {"text": "phone"}}`); status != "200" {
		t.Fatalf("the phone's call before revocation: %s", status)
	}
	b.Run(chromedp.Navigate(s.URL+"/ui/devices"), chromedp.Click(css(fmt.Sprintf(`.device-row[data-id=%q] button.revoke`, phone.begin.GetDeviceId()))))
	waitFlash(t, b)
	b.Screenshot("07-devices")
	if body, status := curlJSON(t, s.URL+"/contractual.v1.ToolService/Invoke", phoneToken, `{"tool": "textkit.slugify", "input": {"text": "phone"}}`); status != "401" {
		t.Fatalf("the revoked phone's call: %s %s", status, body)
	}

	// An update that widens the contract shows its diff in plain words; the
	// browser rejects it.
	widened := strings.Replace(readTool(t, "textkit", "contract.yaml"), "version: 1.0.0", "version: 1.1.0", 1)
	widened = strings.Replace(widened, "capabilities:\n", "capabilities:\n  http:\n    - {scheme: https, host: api.example.com, methods: [GET]}\n", 1)
	update := publish(t, pol, "textkit.wasm", widened)
	b.Run(chromedp.Navigate(s.URL + "/ui/contracts/" + update))
	diff := b.Text("#diff")
	for _, want := range []string{"api.example.com", "1.1.0", "widened"} {
		if !strings.Contains(diff, want) {
			t.Errorf("diff lacks %q:\n%s", want, diff)
		}
	}
	b.Screenshot("08-diff")
	b.Run(chromedp.SetValue(css("#reason"), "no network for textkit"), chromedp.Click(css("#reject")))
	waitFlash(t, b)
	if rec, err := pol.GetContract(context.Background(), &contractualv1.GetContractRequest{Digest: update}); err != nil ||
		rec.GetRecord().GetState() != contractualv1.ContractState_CONTRACT_STATE_REJECTED {
		t.Fatalf("after rejecting in the browser: %v %v", rec.GetRecord().GetState(), err)
	}
	// The contracts list filters by state with its form.
	b.Run(chromedp.Navigate(s.URL+"/ui/contracts"), chromedp.SetValue(css("#filter-state"), "rejected"),
		chromedp.Click(css("#contracts-filter button")))
	// The unfiltered page shows the row too: wait for the filtered one.
	waitJS(t, b, `document.readyState === "complete" && location.search.includes("state=rejected")`)
	b.Run(chromedp.WaitVisible(css(fmt.Sprintf(`#contracts .contract-row[data-digest=%q]`, update))))
	if n := b.Text("#contracts tbody"); strings.Count(n, "textkit") != 1 {
		t.Fatalf("rejected contracts: %q", n)
	}
	b.Screenshot("08b-contracts-rejected")

	// The secret form stores a value that no page shows again.
	const secret = "ghp_BrowserTestSecretValue0123456789abcd"
	b.Run(chromedp.Navigate(s.URL + "/ui/secrets"))
	b.Run(
		chromedp.SetValue(css("#secret-name"), "GITHUB_TOKEN"),
		chromedp.SetValue(css("#secret-value"), secret),
		chromedp.Click(css("#secret-submit")),
	)
	waitFlash(t, b)
	b.Run(chromedp.WaitVisible(css(`.secret-row[data-name="GITHUB_TOKEN"]`)))
	b.Screenshot("09-secrets")
	secrets := contractualv1connect.NewBrokerServiceClient(http.DefaultClient, s.URL, auth)
	list, err := secrets.ListSecrets(context.Background(), &contractualv1.ListSecretsRequest{})
	if err != nil || len(list.GetSecrets()) != 1 || list.GetSecrets()[0].GetName() != "GITHUB_TOKEN" {
		t.Fatalf("secrets after the form: %v %v", list, err)
	}
	for _, page := range []string{"/ui/", "/ui/secrets", "/ui/contracts", "/ui/contracts/" + digest, "/ui/devices", "/ui/runs"} {
		b.Run(chromedp.Navigate(s.URL + page))
		html := outerHTML(t, b)
		if strings.Contains(html, secret) || strings.Contains(html, secret[4:20]) {
			t.Errorf("%s shows the secret value", page)
		}
	}
	if errs := b.ConsoleErrors(); len(errs) > 0 {
		t.Errorf("the pages logged errors (a CSP violation?): %q", errs)
	}

	// Refused: a form posted from another site (the cookie stays home), a
	// form posted from another origin of the same site (the cookie goes
	// along; the Origin check stops it), and a request that carries the
	// session cookie and a valid CSRF token but a foreign Origin.
	for _, host := range []string{"localhost", "127.0.0.1"} {
		evil := attacker(t, host, s.URL+"/ui/contracts/"+digest+"/revoke")
		b.Run(chromedp.Navigate(evil))
		waitJS(t, b, `document.readyState === "complete" && location.pathname.startsWith("/ui/")`)
		b.Screenshot("10-cross-site-" + host)
		if msg := b.Text("#error"); !strings.Contains(msg, "Refused") {
			t.Errorf("a cross-site post from %s: the page says %q", host, msg)
		}
		if rec, err := pol.GetContract(context.Background(), &contractualv1.GetContractRequest{Digest: digest}); err != nil ||
			rec.GetRecord().GetState() != contractualv1.ContractState_CONTRACT_STATE_APPROVED {
			t.Fatalf("a cross-site post from %s changed the contract: %v %v", host, rec.GetRecord().GetState(), err)
		}
	}
	b.Run(chromedp.Navigate(s.URL + "/ui/contracts/" + digest))
	csrf := attr(t, b, `input[name="csrf"]`, "value")
	for _, origin := range []string{"https://evil.example", "null", s.URL + ".evil.example"} {
		form := url.Values{"csrf": {csrf}, "reason": {"forged"}}
		req, _ := http.NewRequest("POST", s.URL+"/ui/contracts/"+digest+"/revoke", strings.NewReader(form.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.Header.Set("Origin", origin)
		req.AddCookie(&http.Cookie{Name: session.Name, Value: session.Value})
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusForbidden {
			t.Errorf("a post with Origin %s: %s", origin, resp.Status)
		}
	}
	if rec, _ := pol.GetContract(context.Background(), &contractualv1.GetContractRequest{Digest: digest}); rec.GetRecord().GetState() != contractualv1.ContractState_CONTRACT_STATE_APPROVED {
		t.Fatalf("a foreign-origin post changed the contract: %v", rec.GetRecord().GetState())
	}
	// The same request from the page's own origin works: the refusals above
	// were the Origin check's, not a broken form.
	form := url.Values{"csrf": {csrf}, "reason": {"revoked in the test"}}
	req, _ := http.NewRequest("POST", s.URL+"/ui/contracts/"+digest+"/revoke", strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Origin", s.URL)
	req.AddCookie(&http.Cookie{Name: session.Name, Value: session.Value})
	noRedirect := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := noRedirect.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if rec, _ := pol.GetContract(context.Background(), &contractualv1.GetContractRequest{Digest: digest}); resp.StatusCode != http.StatusSeeOther ||
		rec.GetRecord().GetState() != contractualv1.ContractState_CONTRACT_STATE_REVOKED {
		t.Fatalf("a same-origin post: %s, contract %v", resp.Status, rec.GetRecord().GetState())
	}

	// Signing out revokes the browser's own device.
	b.Run(chromedp.Navigate(s.URL+"/ui/"), chromedp.Click(css("#logout")))
	waitPath(t, b, "/ui/pair")
	b.Run(chromedp.Navigate(s.URL + "/ui/devices"))
	waitPath(t, b, "/ui/pair")
}

// checkSession checks that the browser's session is an HttpOnly,
// SameSite=Strict cookie and that no token is within reach of scripts, and
// returns the cookie (read through DevTools, as only a test can).
func checkSession(t *testing.T, b *browsertest.Browser, base string) *network.Cookie {
	t.Helper()
	var exposed struct {
		Cookie  string `json:"cookie"`
		Storage int    `json:"storage"`
	}
	// The one thing the pages keep in storage is the audit log's newest
	// checkpoint (public, see ui/README.md).
	raw, err := chromedp.Run(b.Ctx(), chromedp.Evaluate[json.RawMessage](`({cookie: document.cookie,
		storage: localStorage.length + sessionStorage.length - (localStorage.getItem("contractual.audit.checkpoint.v1") === null ? 0 : 1)})`))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(raw, &exposed); err != nil {
		t.Fatal(err)
	}
	if exposed.Cookie != "" || exposed.Storage != 0 {
		t.Errorf("within reach of scripts: document.cookie %q, %d storage items", exposed.Cookie, exposed.Storage)
	}
	res, err := chromedp.Call(b.Ctx(), network.GetCookies, network.GetCookiesParams{URLs: []string{base + "/ui/"}})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Cookies) != 1 {
		t.Fatalf("cookies after pairing: %+v", res.Cookies)
	}
	c := res.Cookies[0]
	if !c.HTTPOnly || c.SameSite != network.CookieSameSiteStrict || c.Path != "/" {
		t.Errorf("session cookie %s: HttpOnly %v, SameSite %q, Path %q", c.Name, c.HTTPOnly, c.SameSite, c.Path)
	}
	return c
}

// pendingDevice is a device that asked to pair and waits for approval.
type pendingDevice struct {
	pc    contractualv1connect.PairingServiceClient
	priv  ed25519.PrivateKey
	begin *contractualv1.BeginPairingResponse
}

func beginPairing(t testing.TB, base, name string) *pendingDevice {
	t.Helper()
	return beginPairingWith(t, base, &contractualv1.BeginPairingRequest{Name: name})
}

// beginPairingWith asks to pair a new device (a fresh key) with req.
func beginPairingWith(t testing.TB, base string, req *contractualv1.BeginPairingRequest) *pendingDevice {
	t.Helper()
	pub, priv, _ := ed25519.GenerateKey(rand.Reader)
	req.PublicKey = pub
	pc := contractualv1connect.NewPairingServiceClient(http.DefaultClient, base)
	begin, err := pc.BeginPairing(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	return &pendingDevice{pc: pc, priv: priv, begin: begin}
}

// proof is the device's proof of possession of its key.
func (d *pendingDevice) proof() *contractualv1.CompletePairingRequest {
	return &contractualv1.CompletePairingRequest{
		DeviceId: d.begin.GetDeviceId(), Nonce: d.begin.GetNonce(),
		Signature: ed25519.Sign(d.priv, pairing.SignedMessage(d.begin.GetDeviceId(), d.begin.GetNonce())),
	}
}

// complete proves possession and returns the device's token.
func (d *pendingDevice) complete(t testing.TB) string {
	t.Helper()
	done, err := d.pc.CompletePairing(context.Background(), d.proof())
	if err != nil {
		t.Fatalf("completing pairing: %v", err)
	}
	return done.GetToken()
}

func readTool(t *testing.T, name, file string) string {
	t.Helper()
	b, err := os.ReadFile(tool(name, file))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// publish publishes textkit's module with contract src and returns the
// contract's digest.
func publish(t *testing.T, pol contractualv1connect.PolicyServiceClient, wasm, src string) string {
	t.Helper()
	mod, err := os.ReadFile(tool("textkit", wasm))
	if err != nil {
		t.Fatal(err)
	}
	pub, err := pol.Publish(context.Background(), &contractualv1.PublishRequest{Module: mod, Contract: []byte(src), ContractFilename: "contract.yaml"})
	if err != nil {
		t.Fatal(err)
	}
	return pub.GetRecord().GetDigest()
}

// waitPath waits until the tab shows path.
func waitPath(t *testing.T, b *browsertest.Browser, path string) {
	t.Helper()
	waitJS(t, b, fmt.Sprintf(`document.readyState === "complete" && location.pathname === %q`, path))
}

// waitJS waits until the JavaScript expression is true, across the
// navigations a click may start (they interrupt a chromedp.Poll).
func waitJS(t *testing.T, b *browsertest.Browser, expr string) {
	t.Helper()
	for {
		ok, err := chromedp.Run(b.Ctx(), chromedp.Evaluate[bool](expr))
		if err == nil && ok {
			return
		}
		if b.Ctx().Err() != nil {
			t.Fatalf("waiting for %s: %v (at %s)", expr, err, b.URL())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// waitFlash waits for the confirmation that a form post worked, failing the
// test on an error page.
func waitFlash(t *testing.T, b *browsertest.Browser) {
	t.Helper()
	waitJS(t, b, `document.readyState === "complete" && !!(document.querySelector("#flash") || document.querySelector("#error"))`)
	if strings.Contains(outerHTML(t, b), `id="error"`) {
		b.Screenshot("unexpected-error")
		t.Fatalf("the form post failed: %s", b.Text("#error"))
	}
}

// outerHTML returns the page's HTML.
func outerHTML(t *testing.T, b *browsertest.Browser) string {
	t.Helper()
	html, err := chromedp.Run(b.Ctx(), chromedp.OuterHTML(chromedp.CSS("html")))
	if err != nil {
		t.Fatal(err)
	}
	return html
}

// attr returns attribute name of the first element matching sel.
func attr(t *testing.T, b *browsertest.Browser, sel, name string) string {
	t.Helper()
	v, err := chromedp.Run(b.Ctx(), chromedp.AttributeValue(chromedp.CSS(sel), name))
	if err != nil {
		t.Fatalf("%s[%s]: %v", sel, name, err)
	}
	return v.Value
}

// attacker serves, on host (a name for this machine other than the
// server's, or the same name on another port), a page that posts a form to
// target as soon as it loads.
func attacker(t *testing.T, host, target string) string {
	t.Helper()
	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, `<!doctype html><form id="f" method="POST" action="%s"><input name="reason" value="pwned"></form><script src="/go.js"></script>`, target)
	})
	mux.HandleFunc("/go.js", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/javascript")
		io.WriteString(w, `document.getElementById("f").submit();`)
	})
	srv := httptest.NewUnstartedServer(mux)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv.Listener = ln
	srv.Start()
	t.Cleanup(srv.Close)
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	return "http://" + net.JoinHostPort(host, port) + "/"
}

// curlJSON posts body to u with curl and the bearer token (none if
// empty), and returns the response body and HTTP status.
func curlJSON(t *testing.T, u, token, body string) (string, string) {
	t.Helper()
	f := filepath.Join(t.TempDir(), "body.json")
	os.WriteFile(f, []byte(body), 0o600)
	args := []string{"-sS", "-w", "\n%{http_code}", "-H", "Content-Type: application/json", "--data-binary", "@" + f}
	if token != "" {
		args = append(args, "-H", "Authorization: Bearer "+token)
	}
	out, err := exec.Command("curl", append(args, u)...).Output()
	if err != nil {
		t.Fatal(err)
	}
	s := strings.TrimSpace(string(out))
	i := strings.LastIndex(s, "\n")
	return s[:i], s[i+1:]
}

func requireCurl(t *testing.T) {
	t.Helper()
	if _, err := exec.LookPath("curl"); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("curl is required in CI")
		}
		t.Skip("curl not installed")
	}
}
