// Package ui is the Control UI: server-rendered pages (html/template,
// embedded) with one small stylesheet and one small script, through which
// the owner pairs a browser, approves contracts with their permissions card
// and diff, approves or denies one-shot calls, decides pairing requests, revokes devices, writes secrets,
// chats with the engine and reads the runs and the audit log.
//
// Security model, in short (see README.md):
//   - a browser is a paired device: app.js makes an Ed25519 key with
//     WebCrypto (non-extractable, in memory only) and pairs through three
//     JSON endpoints of this package, which call the PairingService in
//     process, so the device token never reaches JavaScript;
//   - the token lives only in an HttpOnly, SameSite=Strict cookie (Secure on
//     TLS) and is re-authenticated on every request, so a revoked or
//     expired device is signed out at once; the cookie's Max-Age follows
//     the token's sliding expiry;
//   - the browser's device has scopes, and every service call the UI makes
//     for it is authorized from pairing's one table, as the API's are
//     (guard.go);
//   - every state change is a POST that passes Go's CrossOriginProtection
//     (Sec-Fetch-Site, Origin against Host), and every form carries a CSRF
//     token bound to the session (HMAC of the token's hash under a server
//     key); GETs change nothing;
//   - every response carries a strict Content-Security-Policy (no inline
//     script or style), nosniff, no referrer and no framing.
package ui

import (
	"bytes"
	"context"
	"crypto/rand"
	"embed"
	"errors"
	"html/template"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/contractual/contractual/contracts/gen/contractual/v1/contractualv1connect"
	"github.com/contractual/contractual/internal/errs"
	"github.com/contractual/contractual/internal/pairing"
)

// Authenticator checks a device token (pairing.Store implements it):
// it returns the identity (principal "device:<id>", scopes, expiry) of a
// valid, unrevoked, unexpired token, and renews it. source is where the
// attempt came from (the remote IP), for rate limits.
type Authenticator interface {
	Authenticate(ctx context.Context, token, source string) (pairing.Identity, error)
}

// Config configures the Control UI.
type Config struct {
	Policy  contractualv1connect.PolicyServiceHandler
	Pairing contractualv1connect.PairingServiceHandler
	Broker  contractualv1connect.BrokerServiceHandler
	Audit   contractualv1connect.AuditServiceHandler
	// Jobs (policy's JobService) and Runs (the worker's JobRunService)
	// are optional: without them the jobs' pages say that jobs are not
	// available here.
	Jobs contractualv1connect.JobServiceHandler
	Runs contractualv1connect.JobRunServiceHandler
	// Sessions (the engine's SessionService, as a client: its turns are
	// server streams) is optional: without it the chat pages say that
	// chat is not available here.
	Sessions contractualv1connect.SessionServiceClient
	Auth     Authenticator
	// Log receives internal errors (never tokens or secret values); nil
	// discards.
	Log *slog.Logger
	// KeyFile holds the CSRF key: 32 random bytes, created (mode 0600, in a
	// 0700 directory) if missing; New refuses it if group or others may
	// access it. Empty means a key in memory only, new at each start (open
	// forms then fail once after a restart, harmlessly).
	KeyFile string
	// PublicURL is optional, e.g. "https://box.tail1234.ts.net" (behind
	// `tailscale serve`). When it is https, cookies get Secure and the
	// __Host- prefix; its origin is trusted for POSTs.
	PublicURL string
	// Now returns the current time (default time.Now), for the cookie's
	// Max-Age; tests set it to the pairing store's clock.
	Now func() time.Time
}

// UI is the Control UI's HTTP handler.
type UI struct {
	cfg Config
	// The services, each behind its guard (guard.go).
	policy       contractualv1connect.PolicyServiceHandler
	pairing      contractualv1connect.PairingServiceHandler
	broker       contractualv1connect.BrokerServiceHandler
	audit        contractualv1connect.AuditServiceHandler
	jobs         contractualv1connect.JobServiceHandler    // nil without Config.Jobs
	runs         contractualv1connect.JobRunServiceHandler // nil without Config.Runs
	sessions     contractualv1connect.SessionServiceClient // nil without Config.Sessions
	log          *slog.Logger
	key          []byte
	cookieName   string
	secureCookie bool
	cop          *http.CrossOriginProtection
	pages        map[string]*template.Template
	mux          *http.ServeMux
	static       http.Handler
	verified     verified
}

//go:embed templates/*.html
var templateFS embed.FS

//go:embed static
var staticFS embed.FS

// Cookie names: the __Host- prefix (Secure, Path=/, no Domain) when the UI
// is served over https at PublicURL.
const (
	cookieName     = "contractual_session"
	hostCookieName = "__Host-" + cookieName
)

// keySize is the size of the CSRF key.
const keySize = 32

// New checks cfg, loads (or creates) the CSRF key and parses the pages.
func New(cfg Config) (*UI, error) {
	switch {
	case cfg.Policy == nil, cfg.Pairing == nil, cfg.Broker == nil, cfg.Audit == nil:
		return nil, errs.E(errs.Invalid, "ui: the policy, pairing, broker and audit services are all required")
	case cfg.Auth == nil:
		return nil, errs.E(errs.Invalid, "ui: an authenticator is required")
	}
	u := &UI{
		cfg: cfg, log: cfg.Log, cookieName: cookieName, cop: http.NewCrossOriginProtection(),
		policy:  policyGuard{next: cfg.Policy},
		pairing: pairingGuard{next: cfg.Pairing},
		broker:  brokerGuard{next: cfg.Broker},
		audit:   auditGuard{next: cfg.Audit},
	}
	if cfg.Jobs != nil {
		u.jobs = jobGuard{next: cfg.Jobs}
	}
	if cfg.Runs != nil {
		u.runs = runGuard{next: cfg.Runs}
	}
	if cfg.Sessions != nil {
		u.sessions = sessionGuard{next: cfg.Sessions}
	}
	if u.cfg.Now == nil {
		u.cfg.Now = time.Now
	}
	u.verified.every = verifyEvery
	if u.log == nil {
		u.log = slog.New(slog.DiscardHandler)
	}
	if cfg.PublicURL != "" {
		origin, secure, err := publicOrigin(cfg.PublicURL)
		if err != nil {
			return nil, err
		}
		if err := u.cop.AddTrustedOrigin(origin); err != nil {
			return nil, errs.Wrap(errs.Invalid, err, "ui: PublicURL %q", cfg.PublicURL)
		}
		if secure {
			u.secureCookie, u.cookieName = true, hostCookieName
		}
	}
	key, err := loadKey(cfg.KeyFile)
	if err != nil {
		return nil, err
	}
	u.key = key
	if u.pages, err = parsePages(); err != nil {
		return nil, err
	}
	sub, err := fs.Sub(staticFS, "static")
	if err != nil {
		return nil, errs.Wrap(errs.Internal, err, "ui: static files")
	}
	u.static = http.StripPrefix("/ui/static/", http.FileServerFS(sub))
	u.routes()
	return u, nil
}

// AddOrigin trusts the origin of url, another base URL devices use (a
// tailnet listener's), for form posts. It may be called while serving.
func (u *UI) AddOrigin(url string) error {
	origin, _, err := publicOrigin(url)
	if err != nil {
		return err
	}
	if err := u.cop.AddTrustedOrigin(origin); err != nil {
		return errs.Wrap(errs.Invalid, err, "ui: origin %q", url)
	}
	return nil
}

// publicOrigin returns the origin of PublicURL and whether it is https.
func publicOrigin(raw string) (string, bool, error) {
	p, err := url.Parse(raw)
	switch {
	case err != nil:
		return "", false, errs.Wrap(errs.Invalid, err, "ui: PublicURL %q", raw)
	case p.Scheme != "https" && p.Scheme != "http", p.Host == "", p.User != nil,
		p.Path != "" && p.Path != "/", p.RawQuery != "", p.Fragment != "":
		return "", false, errs.E(errs.Invalid, "ui: PublicURL %q must be an origin such as https://box.tail1234.ts.net", raw)
	}
	return p.Scheme + "://" + p.Host, p.Scheme == "https", nil
}

// loadKey reads the CSRF key from path, creating it at first use. Empty
// path: a random key in memory.
func loadKey(path string) ([]byte, error) {
	if path == "" {
		key := make([]byte, keySize)
		rand.Read(key)
		return key, nil
	}
	if err := createKey(path); err != nil {
		return nil, err
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, errs.Wrap(errs.Internal, err, "ui: opening the CSRF key")
	}
	defer f.Close()
	fi, err := f.Stat()
	switch {
	case err != nil:
		return nil, errs.Wrap(errs.Internal, err, "ui: reading the CSRF key")
	case !fi.Mode().IsRegular():
		return nil, errs.E(errs.FailedPrecondition, "ui: CSRF key %s is not a regular file", path)
	case fi.Mode().Perm()&0o077 != 0:
		return nil, errs.E(errs.FailedPrecondition, "ui: CSRF key %s is accessible by group or others (mode %v): chmod 600 it", path, fi.Mode().Perm())
	}
	key, err := io.ReadAll(io.LimitReader(f, keySize+1))
	if err != nil {
		return nil, errs.Wrap(errs.Internal, err, "ui: reading the CSRF key")
	}
	if len(key) != keySize {
		return nil, errs.E(errs.FailedPrecondition, "ui: CSRF key %s must hold exactly %d bytes", path, keySize)
	}
	return key, nil
}

// createKey writes a new random key to path unless the file exists.
func createKey(path string) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return errs.Wrap(errs.Internal, err, "ui: creating the directory of the CSRF key")
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, fs.ErrExist) {
		return nil
	}
	if err != nil {
		return errs.Wrap(errs.Internal, err, "ui: creating the CSRF key")
	}
	key := make([]byte, keySize)
	rand.Read(key)
	_, werr := f.Write(key)
	if cerr := f.Close(); werr == nil {
		werr = cerr
	}
	if werr != nil {
		os.Remove(path)
		return errs.Wrap(errs.Internal, werr, "ui: writing the CSRF key")
	}
	return nil
}

// csp is the Content-Security-Policy of every response: scripts, styles,
// images and fetches from this origin only, no inline code of any kind,
// forms posting only here, no framing, no <base>.
const csp = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"

// ServeHTTP serves everything under /ui/. Every response gets the security
// headers; every request that is not GET or HEAD must pass the
// cross-origin check first.
func (u *UI) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("Content-Security-Policy", csp)
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("X-Frame-Options", "DENY")
	h.Set("Cross-Origin-Opener-Policy", "same-origin")
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		if err := u.cop.Check(r); err != nil {
			u.fail(w, r, nil, http.StatusForbidden, "Refused: this request came from another site (its Origin or Sec-Fetch-Site is not this Control UI). Nothing was changed.")
			return
		}
	}
	if !strings.HasPrefix(r.URL.Path, "/ui/") {
		u.fail(w, r, nil, http.StatusNotFound, "No such page.")
		return
	}
	u.mux.ServeHTTP(w, r)
}

// routes registers every page, form and endpoint. Each path answers its
// methods and 405 to any other.
func (u *UI) routes() {
	u.mux = http.NewServeMux()
	u.mux.HandleFunc("/ui/static/", u.serveStatic)
	u.route("/ui/pair", u.pairPage, nil)
	u.route("/ui/pair/begin", nil, u.pairBegin)
	u.route("/ui/pair/setup", nil, u.pairSetup)
	u.route("/ui/pair/complete", nil, u.pairComplete)
	u.route("/ui/logout", nil, u.authed(u.logout))

	u.route("/ui/{$}", u.authed(u.overviewPage), nil)
	u.route("/ui/contracts", u.authed(u.contractsPage), nil)
	u.route("/ui/contracts/{digest}", u.authed(u.contractPage), nil)
	for _, a := range contractActions {
		u.route("/ui/contracts/{digest}/"+a.verb, nil, u.authed(u.contractAction(a)))
	}
	u.route("/ui/approvals", u.authed(u.approvalsPage), nil)
	u.route("/ui/approvals/{id}", u.authed(u.approvalPage), nil)
	u.route("/ui/approvals/{id}/approve", nil, u.authed(u.callAction(true)))
	u.route("/ui/approvals/{id}/deny", nil, u.authed(u.callAction(false)))
	u.route("/ui/devices", u.authed(u.devicesPage), nil)
	u.route("/ui/devices/requests/{code}/approve", nil, u.authed(u.requestAction(true)))
	u.route("/ui/devices/requests/{code}/reject", nil, u.authed(u.requestAction(false)))
	u.route("/ui/devices/{id}/revoke", nil, u.authed(u.revokeDevice))
	u.route("/ui/secrets", u.authed(u.secretsPage), u.authed(u.putSecret))
	u.route("/ui/secrets/{name}/delete", nil, u.authed(u.deleteSecret))
	u.route("/ui/runs", u.authed(u.runsPage), nil)
	u.route("/ui/jobs", u.authed(u.jobsPage), nil)
	u.route("/ui/jobs/{id}", u.authed(u.jobPage), nil)
	u.route("/ui/jobs/{id}/runs/{run}", u.authed(u.runPage), nil)
	for _, a := range jobActions {
		u.route("/ui/jobs/{id}/"+a.verb, nil, u.authed(u.jobAction(a)))
	}
	u.chatRoutes()
	u.route(checkpointPath, nil, u.authed(u.auditCheckpoint))
	u.mux.HandleFunc("/ui/", u.authed(func(w http.ResponseWriter, r *http.Request, s *session) {
		u.fail(w, r, s, http.StatusNotFound, "No such page.")
	}))
}

// route serves path with get (GET and HEAD) and post (POST); a nil
// handler, or any other method, gets 405.
func (u *UI) route(path string, get, post http.HandlerFunc) {
	var allow []string
	if get != nil {
		allow = append(allow, http.MethodGet, http.MethodHead)
	}
	if post != nil {
		allow = append(allow, http.MethodPost)
	}
	u.mux.HandleFunc(path, func(w http.ResponseWriter, r *http.Request) {
		switch {
		case (r.Method == http.MethodGet || r.Method == http.MethodHead) && get != nil:
			get(w, r)
		case r.Method == http.MethodPost && post != nil:
			post(w, r)
		default:
			w.Header().Set("Allow", strings.Join(allow, ", "))
			msg := "Method " + r.Method + " is not allowed here; use " + strings.Join(allow, " or ") + "."
			if isJSONPath(r.URL.Path) {
				writeJSONError(w, http.StatusMethodNotAllowed, msg)
				return
			}
			u.fail(w, r, nil, http.StatusMethodNotAllowed, msg)
		}
	})
}

// serveStatic serves the embedded stylesheet, script and icon; no
// directory listings.
func (u *UI) serveStatic(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	if strings.HasSuffix(r.URL.Path, "/") {
		http.NotFound(w, r)
		return
	}
	w.Header().Set("Cache-Control", "no-cache")
	u.static.ServeHTTP(w, r)
}

// sourceOf is where r comes from, for the pairing rate limits: the source
// the gateway named (pairing.WithSource), else the peer's IP address.
func sourceOf(r *http.Request) string {
	if src := pairing.SourceFrom(r.Context()); src != "" {
		return src
	}
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

// writeHTML writes a rendered page with its status.
func writeHTML(w http.ResponseWriter, status int, body *bytes.Buffer) {
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	w.Write(body.Bytes())
}
