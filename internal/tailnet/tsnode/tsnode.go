// Package tsnode runs the all-in-one server's own node on the owner's
// tailnet (`contractual serve --tailnet`): tailscale.com/tsnet in the
// process, its state under the data directory, and the listener the
// gateway serves the tailnet on, HTTPS with the tailnet's certificate
// where the tailnet offers one. Its Node identifies each request's peer
// with the tailnet's WhoIs (it is a tailnet.Identifier).
//
// It is the only package that links tsnet, so that no service binary but
// cmd/contractual does (package depcheck checks it).
package tsnode

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"time"

	"tailscale.com/client/local"
	"tailscale.com/ipn"
	"tailscale.com/ipn/ipnstate"
	"tailscale.com/tailcfg"
	"tailscale.com/tsnet"

	"github.com/contractual/contractual/internal/errs"
	"github.com/contractual/contractual/internal/tailnet"
)

// HTTPS modes: whether the node serves HTTPS with the tailnet's
// certificate.
const (
	// HTTPSAuto serves HTTPS on :443 (and redirects :80 to it) when the
	// tailnet offers certificate domains and a certificate can be had;
	// otherwise plain HTTP on :80, which WireGuard encrypts, saying so in
	// the log. Browsers then lack WebCrypto (not a secure context), so
	// pairing from a browser needs HTTPS.
	HTTPSAuto = "auto"
	// HTTPSOn serves HTTPS or fails to start.
	HTTPSOn = "on"
	// HTTPSOff serves plain HTTP on :80.
	HTTPSOff = "off"
)

// DefaultHostname is the node's name on the tailnet unless configured.
const DefaultHostname = "contractual"

// certTimeout bounds getting the tailnet's certificate at start (the
// first time from Let's Encrypt, which takes seconds).
const certTimeout = 2 * time.Minute

// Config configures the node.
type Config struct {
	// Dir holds the node's state (its keys, its certificates); created
	// 0700. The server uses <data>/tailnet.
	Dir string
	// Hostname is the node's name on the tailnet (DefaultHostname if
	// empty): it becomes <hostname>.<tailnet>.ts.net.
	Hostname string
	// AuthKeyFile holds the auth key that adds the node to the tailnet
	// the first time; empty means none: unless $TS_AUTHKEY is file:<path>
	// (see AuthKeyFile), the node asks for an interactive login, whose
	// URL goes to LoginURL. A node already in the tailnet (its state in
	// Dir) needs no key.
	AuthKeyFile string
	// ControlURL is the coordination server: empty for Tailscale's, or
	// a Headscale's URL, or a test's.
	ControlURL string
	// HTTPS is HTTPSAuto (if empty), HTTPSOn or HTTPSOff.
	HTTPS string
	// Cap is the app capability Identify reports (tailnet.DefaultCap if
	// empty); the peer's other capabilities are dropped.
	Cap string
	// LoginURL, if set, is told the URL at which the owner adds the node
	// to the tailnet, when it needs a login; else the URL is logged.
	LoginURL func(url string)
	// Log receives the node's logs: what matters at Info, tsnet's own at
	// Debug. Nil discards them.
	Log *slog.Logger
	// Ephemeral makes the tailnet forget the node when it leaves (tests).
	Ephemeral bool
}

// Node is the server's running node on the tailnet.
type Node struct {
	// URL is the base URL devices use: https://<name>.<tailnet>.ts.net,
	// or http://... without HTTPS.
	URL string
	// Name is the node's MagicDNS name (without the final dot).
	Name string

	srv      *tsnet.Server
	lc       *local.Client
	ln       net.Listener // the gateway's: HTTPS :443 or HTTP :80
	redirect *http.Server // :80 → HTTPS, with HTTPS
	capName  tailcfg.PeerCapability
	log      *slog.Logger
}

// AuthKeyFile returns the auth key file to use: flagFile if set, else the
// path in $TS_AUTHKEY (or $TS_AUTH_KEY) if it is file:<path>, else "".
// A key itself in the environment is refused: a key in the environment
// leaks into every child process and crash report, so it is named by
// file only, as `tailscale up --auth-key=file:...` does.
func AuthKeyFile(flagFile string, getenv func(string) string) (string, error) {
	if flagFile != "" {
		return flagFile, nil
	}
	for _, name := range []string{"TS_AUTHKEY", "TS_AUTH_KEY"} {
		v := getenv(name)
		if v == "" {
			continue
		}
		path, ok := strings.CutPrefix(v, "file:")
		if !ok || path == "" {
			return "", errs.E(errs.Invalid, "$%s holds an auth key itself; put the key in a file (mode 0600) and set %s=file:/path/to/it, or pass --tailnet-auth-key-file", name, name)
		}
		return path, nil
	}
	return "", nil
}

// Start brings the node up on the tailnet, waiting (until ctx ends) for
// the owner's login if it has no auth key and is not in the tailnet yet,
// and opens the listener the gateway serves.
func Start(ctx context.Context, cfg Config) (_ *Node, err error) {
	log := cfg.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if cfg.Hostname == "" {
		cfg.Hostname = DefaultHostname
	}
	if cfg.Cap == "" {
		cfg.Cap = tailnet.DefaultCap
	}
	switch cfg.HTTPS {
	case "":
		cfg.HTTPS = HTTPSAuto
	case HTTPSAuto, HTTPSOn, HTTPSOff:
	default:
		return nil, errs.E(errs.Invalid, "tailnet HTTPS mode %q: want auto, on or off", cfg.HTTPS)
	}
	if cfg.Dir == "" {
		return nil, errs.E(errs.Invalid, "tailnet: no state directory")
	}
	// tsnet reads $TS_AUTHKEY itself when given no key: resolve it here,
	// so that a key in the environment is refused rather than used.
	keyFile, err := AuthKeyFile(cfg.AuthKeyFile, os.Getenv)
	if err != nil {
		return nil, err
	}
	var authKey string
	if keyFile != "" {
		b, err := os.ReadFile(keyFile)
		if err != nil {
			return nil, errs.Wrap(errs.Invalid, err, "tailnet auth key")
		}
		if authKey = strings.TrimSpace(string(b)); authKey == "" {
			return nil, errs.E(errs.Invalid, "tailnet auth key file %s is empty", keyFile)
		}
	}
	if err := os.MkdirAll(cfg.Dir, 0o700); err != nil {
		return nil, errs.Wrap(errs.Internal, err, "tailnet state directory")
	}
	if err := os.Chmod(cfg.Dir, 0o700); err != nil {
		return nil, errs.Wrap(errs.Internal, err, "tailnet state directory")
	}

	debug := func(format string, args ...any) {
		if log.Enabled(context.Background(), slog.LevelDebug) {
			log.Debug(fmt.Sprintf(format, args...), "component", "tsnet")
		}
	}
	n := &Node{
		srv: &tsnet.Server{
			Dir: cfg.Dir, Hostname: cfg.Hostname, AuthKey: authKey, ControlURL: cfg.ControlURL,
			Ephemeral: cfg.Ephemeral, Logf: debug, UserLogf: debug,
		},
		capName: tailcfg.PeerCapability(cfg.Cap),
		log:     log,
	}
	defer func() {
		if err != nil {
			n.Close()
		}
	}()
	if n.lc, err = n.srv.LocalClient(); err != nil { // starts the node
		return nil, errs.Wrap(errs.Unavailable, err, "starting the tailnet node")
	}
	st, err := n.up(ctx, cfg.LoginURL)
	if err != nil {
		return nil, err
	}
	n.Name = strings.TrimSuffix(st.Self.DNSName, ".")
	if n.Name == "" {
		return nil, errs.E(errs.FailedPrecondition, "the tailnet gave this node no MagicDNS name: enable MagicDNS in the tailnet's DNS settings")
	}
	https, err := n.certificate(ctx, cfg.HTTPS, st.CertDomains)
	if err != nil {
		return nil, err
	}
	if https == "" {
		if n.ln, err = n.srv.Listen("tcp", ":80"); err != nil {
			return nil, errs.Wrap(errs.Unavailable, err, "listening on the tailnet")
		}
		n.URL = "http://" + n.Name
	} else {
		if err := n.serveHTTPS(https); err != nil {
			return nil, err
		}
	}
	log.Info("on the tailnet", "url", n.URL, "node", n.Name, "addresses", st.TailscaleIPs)
	return n, nil
}

// up waits until the node is running on the tailnet, telling loginURL the
// URL of an interactive login if the control server asks for one.
func (n *Node) up(ctx context.Context, loginURL func(string)) (*ipnstate.Status, error) {
	w, err := n.lc.WatchIPNBus(ctx, ipn.NotifyInitialState)
	if err != nil {
		return nil, errs.Wrap(errs.Unavailable, err, "watching the tailnet node")
	}
	defer w.Close()
	for {
		note, err := w.Next()
		if err != nil {
			if ctx.Err() != nil {
				return nil, errs.Wrap(errs.Unavailable, ctx.Err(), "the node did not join the tailnet")
			}
			return nil, errs.Wrap(errs.Unavailable, err, "the tailnet node")
		}
		if note.ErrMessage != nil {
			return nil, errs.E(errs.Unavailable, "the tailnet node: %s", *note.ErrMessage)
		}
		if u := note.BrowseToURL; u != nil && *u != "" {
			if loginURL != nil {
				loginURL(*u)
			} else {
				n.log.Warn("to add this server to your tailnet, open the login URL", "url", *u)
			}
		}
		if note.State != nil && *note.State == ipn.Running {
			break
		}
	}
	// tsnet.Server.Up returns once the node runs (which the loop above saw)
	// and clears a serve config left in the state from elsewhere.
	st, err := n.srv.Up(ctx)
	if err != nil {
		return nil, errs.Wrap(errs.Unavailable, err, "the tailnet node")
	}
	return st, nil
}

// certificate returns the domain to serve HTTPS for, or "" for plain
// HTTP: by mode, whether the tailnet offers certificate domains, and
// whether a certificate for the node's can be had.
func (n *Node) certificate(ctx context.Context, mode string, domains []string) (string, error) {
	if mode == HTTPSOff {
		n.log.Info("serving plain HTTP on the tailnet (--tailnet-https=off); WireGuard encrypts it, but browsers will not pair over it (no WebCrypto outside HTTPS)")
		return "", nil
	}
	if len(domains) == 0 {
		if mode == HTTPSOn {
			return "", errs.E(errs.FailedPrecondition, "the tailnet offers no HTTPS certificates: enable HTTPS in the tailnet's DNS settings, or use --tailnet-https=auto or off")
		}
		n.log.Warn("the tailnet offers no HTTPS certificates, so serving plain HTTP on the tailnet (WireGuard encrypts it; browsers will not pair over it): enable HTTPS in the tailnet's DNS settings for HTTPS")
		return "", nil
	}
	domain := domains[0]
	for _, d := range domains {
		if d == n.Name {
			domain = d
		}
	}
	cctx, cancel := context.WithTimeout(ctx, certTimeout)
	defer cancel()
	n.log.Info("getting the tailnet's certificate", "domain", domain)
	if _, _, err := n.lc.CertPair(cctx, domain); err != nil {
		if mode == HTTPSOn {
			return "", errs.Wrap(errs.Unavailable, err, "getting the tailnet's certificate for %s", domain)
		}
		n.log.Warn("no certificate from the tailnet, so serving plain HTTP on the tailnet (WireGuard encrypts it; browsers will not pair over it)", "domain", domain, "err", err)
		return "", nil
	}
	return domain, nil
}

// serveHTTPS opens HTTPS :443 for the gateway, with the tailnet's
// certificate for domain (renewed by the node as it nears expiry), and
// redirects :80 to it.
func (n *Node) serveHTTPS(domain string) error {
	ln, err := n.srv.Listen("tcp", ":443")
	if err != nil {
		return errs.Wrap(errs.Unavailable, err, "listening on the tailnet")
	}
	n.ln = tls.NewListener(ln, &tls.Config{
		GetCertificate: n.lc.GetCertificate,
		NextProtos:     []string{"h2", "http/1.1"},
		MinVersion:     tls.VersionTLS12,
	})
	n.URL = "https://" + domain
	plain, err := n.srv.Listen("tcp", ":80")
	if err != nil {
		return errs.Wrap(errs.Unavailable, err, "listening on the tailnet")
	}
	n.redirect = &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			http.Redirect(w, r, n.URL+r.URL.RequestURI(), http.StatusPermanentRedirect)
		}),
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          slog.NewLogLogger(n.log.Handler(), slog.LevelDebug),
	}
	go n.redirect.Serve(plain)
	return nil
}

// Listener is what the gateway serves on the tailnet: HTTPS :443 or HTTP
// :80. The gateway closes it.
func (n *Node) Listener() net.Listener { return n.ln }

// Identify implements tailnet.Identifier: the tailnet's WhoIs of the
// request's address names its node, the node's user (none for a tagged
// node), its tags, and the app capability Config.Cap that the tailnet
// policy grants it here. A request the tailnet cannot name is refused.
func (n *Node) Identify(r *http.Request) (*tailnet.Peer, error) {
	addr, err := tailnet.RemoteAddr(r)
	if err != nil {
		return nil, errs.Wrap(errs.PermissionDenied, err, "tailnet request")
	}
	who, err := n.lc.WhoIs(r.Context(), r.RemoteAddr)
	if err != nil || who.Node == nil {
		return nil, errs.E(errs.PermissionDenied, "the tailnet does not know %s: %v", addr, err)
	}
	p := &tailnet.Peer{
		NodeID:   string(who.Node.StableID),
		NodeName: strings.TrimSuffix(who.Node.Name, "."),
		Addr:     addr,
		Tags:     who.Node.Tags,
	}
	if !who.Node.IsTagged() && who.UserProfile != nil {
		p.User = who.UserProfile.LoginName
	}
	// Checked as every recorded peer is (FromProto checks its fields).
	if p, err = tailnet.FromProto(p.Proto()); err != nil {
		return nil, errs.Wrap(errs.PermissionDenied, err, "the tailnet's WhoIs of %s", addr)
	}
	if vals, ok := who.CapMap[n.capName]; ok {
		raw := make([]json.RawMessage, len(vals))
		for i, v := range vals {
			raw[i] = json.RawMessage(v)
		}
		p.Caps = map[string][]json.RawMessage{string(n.capName): raw}
	}
	return p, nil
}

// Close takes the node off the tailnet (an ephemeral node leaves it).
func (n *Node) Close() error {
	if n.redirect != nil {
		n.redirect.Close()
	}
	return n.srv.Close()
}
