package scheduler

import (
	"flag"
	"testing"
)

// TestDaemonFlags: contractual-scheduler takes the URLs of the services it
// calls, and nothing else of its own.
func TestDaemonFlags(t *testing.T) {
	fs := flag.NewFlagSet("scheduler", flag.ContinueOnError)
	d := Daemon()
	d.Flags(fs)
	if d.Name != "scheduler" {
		t.Errorf("name %q", d.Name)
	}
	for peer, def := range map[string]string{
		"policy-url": "https://policy:8443", "worker-url": "https://worker:8443",
		"broker-url": "https://broker:8443", "audit-url": "https://audit:8443",
	} {
		if f := fs.Lookup(peer); f == nil || f.DefValue != def {
			t.Errorf("--%s: %v, want default %s", peer, f, def)
		}
	}
	if fs.Lookup("runner-url") != nil {
		t.Error("the scheduler calls no runner")
	}
}
