package engine

import (
	"flag"
	"testing"
)

// TestDaemonFlags: contractual-engine takes the URLs of the services it
// calls (never the broker's), and the model's flags, which default from
// the environment.
func TestDaemonFlags(t *testing.T) {
	t.Setenv(EnvModel, "gpt-4.1-mini")
	t.Setenv(EnvModelRelay, "llm.chat")
	t.Setenv(EnvModelURL, "")
	fs := flag.NewFlagSet("engine", flag.ContinueOnError)
	d := Daemon()
	d.Flags(fs)
	if d.Name != "engine" {
		t.Errorf("name %q", d.Name)
	}
	for peer, def := range map[string]string{
		"policy-url": "https://policy:8443", "runner-url": "https://runner:8443", "audit-url": "https://audit:8443",
	} {
		if f := fs.Lookup(peer); f == nil || f.DefValue != def {
			t.Errorf("--%s: %v, want default %s", peer, f, def)
		}
	}
	for _, s := range []string{"broker", "gateway", "scheduler", "worker", "engine"} {
		if fs.Lookup(s+"-url") != nil {
			t.Errorf("the engine calls no %s", s)
		}
	}
	for name, want := range map[string]string{"model": "gpt-4.1-mini", "model-relay": "llm.chat", "model-url": ""} {
		if f := fs.Lookup(name); f == nil || f.Value.String() != want {
			t.Errorf("--%s: %v, want %q from the environment", name, f, want)
		}
	}
}
