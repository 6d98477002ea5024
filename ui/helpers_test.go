package ui_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	contractualv1 "github.com/contractual/contractual/contracts/gen/contractual/v1"
	"github.com/contractual/contractual/internal/audit"
	"github.com/contractual/contractual/internal/broker"
	"github.com/contractual/contractual/internal/pairing"
	"github.com/contractual/contractual/internal/policy"
	"github.com/contractual/contractual/internal/principal"
	"github.com/contractual/contractual/ui"
)

// env is a Control UI over real services in a temporary directory, served
// by an httptest server.
type env struct {
	t       *testing.T
	dir     string
	ctx     context.Context
	audit   *audit.Service
	policy  *policy.Service
	broker  *broker.Service
	store   *pairing.Store
	pairing *pairing.Service
	ui      *ui.UI
	srv     *httptest.Server

	// bodies records every response body any browser of this env read, to
	// check that a secret value never appears in one.
	mu     sync.Mutex
	bodies []string
}

// envOptions tune newEnv.
type envOptions struct {
	pairing   pairing.Config
	publicURL string
	// now, if set, is the clock of the pairing store and of the UI.
	now func() time.Time
	// jobs gives the UI policy's JobService.
	jobs bool
}

// newEnv builds the services the way internal/server does and serves the
// UI over them.
func newEnv(t *testing.T, opts ...envOptions) *env {
	t.Helper()
	var o envOptions
	if len(opts) > 0 {
		o = opts[0]
	}
	if o.pairing.AuthFailuresPerMinute == 0 {
		o.pairing.AuthFailuresPerMinute = 1000
	}
	if o.now != nil {
		o.pairing.Now = o.now
	}
	e := &env{t: t, dir: t.TempDir(), ctx: context.Background()}
	var err error
	e.audit, err = audit.OpenService(e.ctx, audit.Config{Dir: filepath.Join(e.dir, "audit")}, audit.Deps{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.audit.Close(context.Background()) })
	e.policy, err = policy.Open(e.ctx, policy.Config{Dir: filepath.Join(e.dir, "policy")}, policy.Deps{Audit: e.audit})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.policy.Close(context.Background()) })
	kek := filepath.Join(e.dir, "broker.kek")
	if err := broker.GenerateKEK(kek); err != nil {
		t.Fatal(err)
	}
	e.broker, err = broker.Open(e.ctx, broker.Config{Dir: filepath.Join(e.dir, "broker"), KEKFile: kek}, broker.Deps{Policy: e.policy, Audit: e.audit})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.broker.Close(context.Background()) })
	o.pairing.Dir = filepath.Join(e.dir, "gateway")
	e.store, err = pairing.Open(e.ctx, o.pairing, pairing.Deps{Audit: e.audit})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.store.Close() })
	e.pairing = pairing.NewService(e.store)
	cfg := ui.Config{
		Policy: e.policy, Pairing: e.pairing, Broker: e.broker, Audit: e.audit, Auth: e.store,
		KeyFile: filepath.Join(e.dir, "gateway", "ui.key"), PublicURL: o.publicURL, Now: o.now,
	}
	if o.jobs {
		cfg.Jobs = e.policy
	}
	e.ui, err = ui.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.Handle("/ui/", e.ui)
	e.srv = httptest.NewServer(mux)
	t.Cleanup(e.srv.Close)
	return e
}

// owner is a context for calls made as one of the owner's devices (the
// CLI, say), outside the UI.
func (e *env) owner() context.Context { return principal.With(e.ctx, "device:owner-cli") }

// toolFile is a file of an example tool.
func toolFile(tool, name string) string { return filepath.Join("..", "tools", tool, name) }

// publish publishes an example tool with its contract (edited by edit, if
// set) and returns the contract's digest.
func (e *env) publish(tool string, edit func(string) string) string {
	e.t.Helper()
	wasm, err := os.ReadFile(toolFile(tool, tool+".wasm"))
	if err != nil {
		e.t.Fatal(err)
	}
	src, err := os.ReadFile(toolFile(tool, "contract.yaml"))
	if err != nil {
		e.t.Fatal(err)
	}
	if edit != nil {
		src = []byte(edit(string(src)))
	}
	resp, err := e.policy.Publish(e.owner(), &contractualv1.PublishRequest{Module: wasm, Contract: src, ContractFilename: "contract.yaml"})
	if err != nil {
		e.t.Fatalf("publish %s: %v", tool, err)
	}
	return resp.GetRecord().GetDigest()
}

// state is a contract's state.
func (e *env) state(digest string) contractualv1.ContractState {
	e.t.Helper()
	resp, err := e.policy.GetContract(e.ctx, &contractualv1.GetContractRequest{Digest: digest})
	if err != nil {
		e.t.Fatal(err)
	}
	return resp.GetRecord().GetState()
}

// browser is an HTTP client with a cookie jar that does not follow
// redirects.
type browser struct {
	e      *env
	c      *http.Client
	id     string // device id once paired
	origin string // Origin header on POSTs (this server's by default), if set
}

func (e *env) newBrowser() *browser {
	jar, _ := cookiejar.New(nil)
	return &browser{e: e, origin: e.srv.URL, c: &http.Client{
		Jar:           jar,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}}
}

// response is a finished response with its body read.
type response struct {
	*http.Response
	body string
}

// do sends req and reads the answer.
func (b *browser) do(req *http.Request) response {
	b.e.t.Helper()
	resp, err := b.c.Do(req)
	if err != nil {
		b.e.t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		b.e.t.Fatal(err)
	}
	b.e.mu.Lock()
	b.e.bodies = append(b.e.bodies, string(body))
	b.e.mu.Unlock()
	return response{resp, string(body)}
}

func (b *browser) get(path string) response {
	b.e.t.Helper()
	req, err := http.NewRequest(http.MethodGet, b.e.srv.URL+path, nil)
	if err != nil {
		b.e.t.Fatal(err)
	}
	return b.do(req)
}

// post sends body with content type ct; headers are extra header pairs.
func (b *browser) post(path, ct, body string, headers ...string) response {
	b.e.t.Helper()
	req, err := http.NewRequest(http.MethodPost, b.e.srv.URL+path, strings.NewReader(body))
	if err != nil {
		b.e.t.Fatal(err)
	}
	if ct != "" {
		req.Header.Set("Content-Type", ct)
	}
	if b.origin != "" {
		req.Header.Set("Origin", b.origin)
	}
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	return b.do(req)
}

// postForm posts a URL-encoded form.
func (b *browser) postForm(path string, form url.Values, headers ...string) response {
	b.e.t.Helper()
	return b.post(path, "application/x-www-form-urlencoded", form.Encode(), headers...)
}

// postJSON posts a JSON body.
func (b *browser) postJSON(path, body string) response {
	b.e.t.Helper()
	return b.post(path, "application/json", body)
}

var csrfRE = regexp.MustCompile(`name="csrf" value="([A-Za-z0-9_-]+)"`)

// csrf reads the form token from a page of the UI (every page of a
// signed-in browser has one, in the sign-out form, even one that refuses
// it for want of a scope).
func (b *browser) csrf() string {
	b.e.t.Helper()
	r := b.get("/ui/devices")
	m := csrfRE.FindStringSubmatch(r.body)
	if (r.StatusCode != http.StatusOK && r.StatusCode != http.StatusForbidden) || m == nil {
		b.e.t.Fatalf("no CSRF token on /ui/devices (%d)", r.StatusCode)
	}
	return m[1]
}

// form is a form with the browser's CSRF token and the given pairs.
func (b *browser) form(kv ...string) url.Values {
	v := url.Values{"csrf": {b.csrf()}}
	for i := 0; i+1 < len(kv); i += 2 {
		v.Add(kv[i], kv[i+1])
	}
	return v
}

// cookie returns the browser's session cookie value for the UI, or "".
func (b *browser) cookie() string {
	u, _ := url.Parse(b.e.srv.URL + "/ui/")
	for _, c := range b.c.Jar.Cookies(u) {
		if strings.HasSuffix(c.Name, "contractual_session") {
			return c.Value
		}
	}
	return ""
}

// beginResp is /ui/pair/begin's answer.
type beginResp struct {
	Code      string   `json:"code"`
	DeviceID  string   `json:"device_id"`
	Nonce     string   `json:"nonce"`
	ExpiresAt string   `json:"expires_at"`
	Scopes    []string `json:"scopes"`
	Error     string   `json:"error"`
}

// pairing is a browser's pairing in progress.
type pairingState struct {
	begin beginResp
	priv  ed25519.PrivateKey
}

// beginPairing does what app.js does first: a key, then /ui/pair/begin,
// asking for scopes (none: the default, owner).
func (b *browser) beginPairing(name string, scopes ...string) pairingState {
	b.e.t.Helper()
	pub, priv, _ := ed25519.GenerateKey(rand.Reader)
	req := map[string]any{"name": name, "public_key": base64.StdEncoding.EncodeToString(pub)}
	if len(scopes) > 0 {
		req["scopes"] = scopes
	}
	body, _ := json.Marshal(req)
	r := b.postJSON("/ui/pair/begin", string(body))
	var br beginResp
	if err := json.Unmarshal([]byte(r.body), &br); err != nil || r.StatusCode != http.StatusOK || br.Code == "" {
		b.e.t.Fatalf("begin: %d %s", r.StatusCode, r.body)
	}
	return pairingState{begin: br, priv: priv}
}

// completeBody is the JSON of /ui/pair/complete for p.
func (p pairingState) completeBody() string {
	nonce, _ := base64.StdEncoding.DecodeString(p.begin.Nonce)
	sig := ed25519.Sign(p.priv, pairing.SignedMessage(p.begin.DeviceID, nonce))
	body, _ := json.Marshal(map[string]string{
		"device_id": p.begin.DeviceID, "nonce": p.begin.Nonce,
		"signature": base64.StdEncoding.EncodeToString(sig),
	})
	return string(body)
}

// complete finishes pairing and checks that the browser got its cookie.
func (b *browser) complete(p pairingState) {
	b.e.t.Helper()
	r := b.postJSON("/ui/pair/complete", p.completeBody())
	if r.StatusCode != http.StatusOK || !strings.Contains(r.body, `"ok":true`) {
		b.e.t.Fatalf("complete: %d %s", r.StatusCode, r.body)
	}
	if b.cookie() == "" {
		b.e.t.Fatal("complete set no session cookie")
	}
	if strings.Contains(r.body, b.cookie()) {
		b.e.t.Fatal("the device token is in the response body")
	}
	b.id = p.begin.DeviceID
}

// pairFirst pairs a new browser as the first device, with the setup code.
func (e *env) pairFirst(name string) *browser {
	e.t.Helper()
	code, _, err := e.store.SetupCode(e.ctx)
	if err != nil {
		e.t.Fatal(err)
	}
	b := e.newBrowser()
	p := b.beginPairing(name)
	body, _ := json.Marshal(map[string]string{"code": p.begin.Code, "setup_code": code})
	if r := b.postJSON("/ui/pair/setup", string(body)); r.StatusCode != http.StatusOK {
		e.t.Fatalf("setup: %d %s", r.StatusCode, r.body)
	}
	b.complete(p)
	return b
}

// pairBy pairs a new browser asking for scopes (none: owner), approved by
// browser by through the devices page's form.
func (e *env) pairBy(by *browser, name string, scopes ...string) *browser {
	e.t.Helper()
	b := e.newBrowser()
	p := b.beginPairing(name, scopes...)
	if r := by.postForm("/ui/devices/requests/"+p.begin.Code+"/approve", by.form()); r.StatusCode != http.StatusSeeOther {
		e.t.Fatalf("approve request: %d %s", r.StatusCode, r.body)
	}
	b.complete(p)
	return b
}

// errorText is the text of the page's #error element, or "".
func errorText(body string) string {
	m := regexp.MustCompile(`<p id="error"[^>]*>([^<]*)</p>`).FindStringSubmatch(body)
	if m == nil {
		return ""
	}
	return m[1]
}

// flashText is the text of the page's #flash element, or "".
func flashText(body string) string {
	m := regexp.MustCompile(`<p id="flash"[^>]*>([^<]*)</p>`).FindStringSubmatch(body)
	if m == nil {
		return ""
	}
	return m[1]
}
