package gateway

import (
	"flag"
	"slices"
	"testing"

	"github.com/contractual/contractual/internal/tailnet"
)

// TestDaemonTailnetFlags: contractual-gateway takes the sidecar's hosts and
// the capability's name, which defaults to tailnet.DefaultCap.
func TestDaemonTailnetFlags(t *testing.T) {
	fs := flag.NewFlagSet("gateway", flag.ContinueOnError)
	Daemon().Flags(fs)
	if err := fs.Parse([]string{"--tailscale-serve-from= tailscale, 10.0.0.9,,"}); err != nil {
		t.Fatal(err)
	}
	if got := splitHosts(fs.Lookup("tailscale-serve-from").Value.String()); !slices.Equal(got, []string{"tailscale", "10.0.0.9"}) {
		t.Errorf("hosts %q", got)
	}
	if got := fs.Lookup("tailnet-cap").Value.String(); got != tailnet.DefaultCap {
		t.Errorf("default capability %q", got)
	}
}
