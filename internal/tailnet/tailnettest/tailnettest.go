// Package tailnettest runs a whole tailnet inside a test process, with no
// internet: Tailscale's own test control server, a DERP relay and a STUN
// server, all on one host address (loopback unless told otherwise), and
// tsnet nodes that join it.
//
//	tn := tailnettest.New(t)
//	phone := tn.Node(t, "phone")
//	resp, err := phone.HTTPClient().Get("http://contractual." + tn.Domain + "/")
//
// A server under test joins the same tailnet with ControlURL. The control
// server accepts every node (and every auth key, unless Options.AuthKey
// names the one it requires), gives every node its own user unless the node
// advertises tags, and names nodes <hostname>.<Domain> in MagicDNS.
//
// It is tailscale.com/tsnet's own test setup (tsnet_test.go, startControl)
// made reusable from any package's tests and from containers: the sidecar
// test binds it to the Docker bridge address so that a Tailscale container
// joins it too.
package tailnettest

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"tailscale.com/ipn/store/mem"
	"tailscale.com/net/netns"
	"tailscale.com/tailcfg"
	"tailscale.com/tsnet"
	"tailscale.com/tstest/integration"
	"tailscale.com/tstest/integration/testcontrol"
	"tailscale.com/types/logger"
)

// Domain is the tailnet's MagicDNS domain: node "phone" is
// "phone.tail-scale.ts.net".
const Domain = "tail-scale.ts.net"

// upTimeout bounds a node's joining the tailnet. Joining takes well under
// a second; the bound only stops a test whose tailnet is broken, and is
// far above need so that a loaded machine still passes.
const upTimeout = 2 * time.Minute

// Options configure a Tailnet.
type Options struct {
	// Host is the address the control server, DERP and STUN listen on:
	// "127.0.0.1" by default. A test whose containers join the tailnet
	// passes the Docker bridge's address.
	Host string
	// AuthKey, if set, is the only auth key the control server accepts;
	// nodes started with Node use it.
	AuthKey string
	// RequireLogin makes a node without an auth key log in interactively:
	// the node is given a login URL, and joins once the test calls
	// Control.CompleteAuth with it (the owner's login in a browser).
	// Every node must: Node does not, so it cannot be used on such a
	// tailnet.
	RequireLogin bool
	// Verbose logs the control server's and nodes' messages to the test.
	Verbose bool
}

// Tailnet is a running test tailnet.
type Tailnet struct {
	// Control is Tailscale's test control server.
	Control *testcontrol.Server
	// ControlURL is its base URL ("http://127.0.0.1:port"), what a node's
	// ControlURL (or `tailscale up --login-server`) is set to.
	ControlURL string
	// Domain is the MagicDNS domain.
	Domain string

	opts Options
	logf logger.Logf
}

// New starts a tailnet on loopback for t; it stops when t ends.
func New(t testing.TB) *Tailnet {
	return NewWith(t, Options{})
}

// NewWith starts a tailnet configured by opts for t; it stops when t ends.
func NewWith(t testing.TB, opts Options) *Tailnet {
	t.Helper()
	if opts.Host == "" {
		opts.Host = "127.0.0.1"
	}
	// As tsnet's own tests do: the netns package marks sockets so that
	// they bypass a system Tailscale's routes, which needs privileges and
	// would send the test's traffic elsewhere. It is process-wide, and it
	// stays off for the test binary: tailnets of parallel tests share it.
	netns.SetEnabled(false)

	logf := testLogf(t)
	derpLogf := logger.Discard
	if opts.Verbose {
		derpLogf = logf
	}
	control := &testcontrol.Server{
		DERPMap:        integration.RunDERPAndSTUN(t, derpLogf, opts.Host),
		DNSConfig:      &tailcfg.DNSConfig{Proxied: true},
		MagicDNSDomain: Domain,
		RequireAuthKey: opts.AuthKey,
		RequireAuth:    opts.RequireLogin,
		// Non-nil: nodes that advertise tags get them (who owns which
		// tag is not modelled at sign-up).
		TagOwners: map[string][]string{},
		Logf:      logger.Discard,
	}
	if opts.Verbose {
		control.Logf = logf
	}
	ln, err := net.Listen("tcp", net.JoinHostPort(opts.Host, "0"))
	if err != nil {
		t.Fatalf("tailnettest: control server: %v", err)
	}
	control.HTTPTestServer = httptest.NewUnstartedServer(control)
	control.HTTPTestServer.Listener.Close()
	control.HTTPTestServer.Listener = ln
	control.HTTPTestServer.Start()
	t.Cleanup(control.HTTPTestServer.Close)
	return &Tailnet{Control: control, ControlURL: control.HTTPTestServer.URL, Domain: Domain, opts: opts, logf: logf}
}

// Node is a tsnet node on the test tailnet. Its embedded tsnet.Server
// gives its HTTPClient, its Dial (for any client that takes a dialer, such
// as grpc-go), Listen and LocalClient.
type Node struct {
	*tsnet.Server
	// ID is the node's stable id, what the tailnet's WhoIs names it by.
	ID string
	// Name is its MagicDNS name, without the final dot.
	Name string
	// Addr is its tailnet IPv4 address.
	Addr netip.Addr
}

// Node starts a node called hostname, tagged with tags if any, and returns
// it once it is up; it is closed when t ends. Its state is in memory, and
// it is ephemeral: the control server forgets it when it leaves.
func (tn *Tailnet) Node(t testing.TB, hostname string, tags ...string) *Node {
	t.Helper()
	s := &tsnet.Server{
		Dir:           filepath.Join(t.TempDir(), "tsnet"),
		Hostname:      hostname,
		Store:         new(mem.Store),
		Ephemeral:     true,
		ControlURL:    tn.ControlURL,
		AuthKey:       tn.opts.AuthKey,
		AdvertiseTags: tags,
		Logf:          logger.Discard,
		UserLogf:      logger.Discard,
	}
	if tn.opts.Verbose {
		s.Logf, s.UserLogf = tn.logf, tn.logf
	}
	t.Cleanup(func() { s.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), upTimeout)
	defer cancel()
	st, err := s.Up(ctx)
	if err != nil {
		t.Fatalf("tailnettest: node %q: %v", hostname, err)
	}
	n := &Node{Server: s, ID: string(st.Self.ID), Name: strings.TrimSuffix(st.Self.DNSName, ".")}
	for _, a := range st.TailscaleIPs {
		if a.Is4() {
			n.Addr = a
		}
	}
	if n.ID == "" || n.Name == "" || !n.Addr.IsValid() {
		t.Fatalf("tailnettest: node %q is up without an id, name or IPv4 address: %+v", hostname, st.Self)
	}
	return n
}

// URL returns "http://<name>" + path: a URL on the node's port 80 by its
// MagicDNS name.
func (n *Node) URL(path string) string {
	return "http://" + n.Name + path
}

// SetAppCaps grants every node app capabilities on every other node, as a
// tailnet policy's grant {"src": ["*"], "dst": ["*"], "app": caps} does:
// capability name → its values (JSON), one per grant. Nil removes them.
// The control server pushes the change to the nodes that are up, which
// apply it when the update reaches them (there is no event to wait on);
// a node that joins afterwards is seen with it at once, since the update
// that adds the node to its peers' maps comes after the change.
func (tn *Tailnet) SetAppCaps(caps map[string][]json.RawMessage) {
	var m tailcfg.PeerCapMap
	for name, vals := range caps {
		if m == nil {
			m = tailcfg.PeerCapMap{}
		}
		for _, v := range vals {
			m[tailcfg.PeerCapability(name)] = append(m[tailcfg.PeerCapability(name)], tailcfg.RawMessage(v))
		}
	}
	tn.Control.SetGlobalAppCaps(m)
}

// testLogf returns t.Logf that drops what is logged after t ends: tsnet
// and DERP log from their own goroutines, and t.Logf panics after the test.
func testLogf(t testing.TB) logger.Logf {
	var mu sync.Mutex
	done := false
	t.Cleanup(func() {
		mu.Lock()
		done = true
		mu.Unlock()
	})
	return func(format string, args ...any) {
		mu.Lock()
		defer mu.Unlock()
		if !done {
			t.Logf(format, args...)
		}
	}
}

// Get is a helper for the simplest request: GET url from node n, returning
// the response's status and body.
func (n *Node) Get(ctx context.Context, url string) (status int, body string, err error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, "", err
	}
	resp, err := n.HTTPClient().Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	var b strings.Builder
	if _, err := io.Copy(&b, resp.Body); err != nil {
		return resp.StatusCode, b.String(), err
	}
	return resp.StatusCode, b.String(), nil
}
