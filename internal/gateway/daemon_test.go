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

// TestDaemonPeers: contractual-gateway dials every service devices reach
// through it, the worker (JobRunService), the scheduler (webhook
// deliveries) and the engine (SessionService) among them, at compose's
// names by default.
func TestDaemonPeers(t *testing.T) {
	fs := flag.NewFlagSet("gateway", flag.ContinueOnError)
	Daemon().Flags(fs)
	for _, s := range []string{"policy", "runner", "broker", "audit", "scheduler", "worker", "engine"} {
		f := fs.Lookup(s + "-url")
		if f == nil {
			t.Errorf("no --%s-url", s)
			continue
		}
		if want := "https://" + s + ":8443"; f.DefValue != want {
			t.Errorf("--%s-url defaults to %q, want %q", s, f.DefValue, want)
		}
	}
}
