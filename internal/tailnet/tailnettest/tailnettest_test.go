package tailnettest_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"tailscale.com/ipn/store/mem"
	"tailscale.com/tailcfg"
	"tailscale.com/tsnet"
	"tailscale.com/types/logger"

	"github.com/contractual/contractual/internal/tailnet/tailnettest"
)

// testTimeout bounds a test's tailnet traffic, far above need.
const testTimeout = 2 * time.Minute

// TestTailnet: two nodes on the in-process tailnet reach each other by
// MagicDNS name over WireGuard, and the server's WhoIs names the caller
// (stable id, name, user, tags) and the app capabilities the tailnet grants
// it. (The test control server gives a tagged node a user too; a real
// tailnet does not.)
func TestTailnet(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	tn := tailnettest.New(t)
	tn.SetAppCaps(map[string][]json.RawMessage{"example.com/cap/test": {json.RawMessage(`{"n":1}`)}})
	srv := tn.Node(t, "server")
	if want := "server." + tailnettest.Domain; srv.Name != want {
		t.Errorf("server's name = %q, want %q", srv.Name, want)
	}

	lc, err := srv.LocalClient()
	if err != nil {
		t.Fatal(err)
	}
	ln, err := srv.Listen("tcp", ":80")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go http.Serve(ln, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		who, err := lc.WhoIs(r.Context(), r.RemoteAddr)
		if err != nil {
			http.Error(w, err.Error(), http.StatusForbidden)
			return
		}
		caps, _ := json.Marshal(who.CapMap[tailcfg.PeerCapability("example.com/cap/test")])
		fmt.Fprintf(w, "%s %s %s %v %s", who.Node.StableID, strings.TrimSuffix(who.Node.Name, "."), who.UserProfile.LoginName, who.Node.Tags, caps)
	}))

	phone := tn.Node(t, "phone")
	agent := tn.Node(t, "agent", "tag:agent")
	for _, c := range []struct {
		node *tailnettest.Node
		want string
		tags string
	}{
		{phone, phone.ID + " phone." + tailnettest.Domain + " user-", "[]"},
		{agent, agent.ID + " agent." + tailnettest.Domain + " user-", "[tag:agent]"},
	} {
		status, body, err := c.node.Get(ctx, srv.URL("/"))
		if err != nil || status != http.StatusOK {
			t.Fatalf("GET %s from %s: %d %q %v", srv.URL("/"), c.node.Name, status, body, err)
		}
		if !strings.HasPrefix(body, c.want) || !strings.HasSuffix(body, c.tags+` [{"n":1}]`) {
			t.Errorf("%s: server saw %q, want %q... with the capability", c.node.Name, body, c.want)
		}
	}
	if phone.ID == agent.ID || phone.Addr == agent.Addr {
		t.Errorf("two nodes share an id or address: %+v %+v", phone, agent)
	}
}

// TestAuthKey: a tailnet with an auth key lets in the nodes that present it
// (Node does) and refuses one that presents another.
func TestAuthKey(t *testing.T) {
	tn := tailnettest.NewWith(t, tailnettest.Options{AuthKey: "tskey-auth-test"})
	tn.Node(t, "good")

	bad := &tsnet.Server{
		Dir: filepath.Join(t.TempDir(), "bad"), Hostname: "bad", Store: new(mem.Store), Ephemeral: true,
		ControlURL: tn.ControlURL, AuthKey: "tskey-auth-wrong", Logf: logger.Discard, UserLogf: logger.Discard,
	}
	defer bad.Close()
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	if st, err := bad.Up(ctx); err == nil {
		t.Fatalf("a node with the wrong auth key joined: %v", st.Self)
	}
	if n := tn.Control.NumNodes(); n != 1 {
		t.Errorf("control has %d nodes, want only the one with the key", n)
	}
}
