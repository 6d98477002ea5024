// Package splittest runs Contractual split into its services, in this
// process: each service is its binary's own code (its Daemon, through
// daemon.Run), with its own certificate from a fresh internal CA, serving
// over mutual TLS on a loopback port and calling the others over mutual
// TLS — the compose deployment without the containers. Tests and
// benchmarks use it to exercise the split against the all-in-one server.
package splittest

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/contractual/contractual/internal/audit"
	"github.com/contractual/contractual/internal/authz"
	"github.com/contractual/contractual/internal/broker"
	"github.com/contractual/contractual/internal/daemon"
	"github.com/contractual/contractual/internal/engine"
	"github.com/contractual/contractual/internal/gateway"
	"github.com/contractual/contractual/internal/pki"
	"github.com/contractual/contractual/internal/policy"
	"github.com/contractual/contractual/internal/runner"
)

// Split is a running split deployment.
type Split struct {
	// URL is the gateway's base URL; SetupCode pairs the owner's device.
	URL, SetupCode string
	// Addrs are the services' mutual TLS addresses (host:port), by name.
	Addrs map[authz.Service]string
	// Certs holds each service's certificate directory (Certs/<service>),
	// and Issuer the issuing CA's, for tests that need a certificate of
	// their own.
	Certs, Issuer string

	logs map[authz.Service]*logLines
}

// Services are the services a Split runs, in the order they start: each
// only calls services started before it.
var Services = []authz.Service{authz.Audit, authz.Policy, authz.Broker, authz.Runner, authz.Engine, authz.Gateway}

// Options configure a Split.
type Options struct {
	// Engine are more flags of the engine: its model (--model, and
	// --model-url for a provider on loopback). Without them the engine
	// runs without a model, and refuses sessions.
	Engine []string
}

// Start starts a Split in t's temporary directories; it stops when t ends.
func Start(t testing.TB) *Split {
	t.Helper()
	return StartWith(t, Options{})
}

// StartWith is Start with options.
func StartWith(t testing.TB, opts Options) *Split {
	t.Helper()
	dir := t.TempDir()
	s := &Split{
		Certs: filepath.Join(dir, "certs"), Issuer: filepath.Join(dir, "issuer"),
		Addrs: map[authz.Service]string{}, logs: map[authz.Service]*logLines{},
	}
	names := make([]string, len(Services))
	for i, svc := range Services {
		names[i] = string(svc)
	}
	if _, err := pki.Init(filepath.Join(dir, "root"), s.Issuer, s.Certs, names, pki.Options{}); err != nil {
		t.Fatal(err)
	}
	kek := filepath.Join(dir, "kek")
	if err := broker.GenerateKEK(kek); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	t.Cleanup(func() {
		cancel()
		wg.Wait()
	})
	daemons := map[authz.Service]daemon.Service{
		authz.Audit: audit.Daemon(), authz.Policy: policy.Daemon(), authz.Broker: broker.Daemon(),
		authz.Runner: runner.Daemon(), authz.Engine: engine.Daemon(), authz.Gateway: gateway.Daemon(),
	}
	for _, svc := range Services {
		args := []string{"serve",
			"--listen=127.0.0.1:0", "--ops=127.0.0.1:0",
			"--tls-dir=" + filepath.Join(s.Certs, string(svc)),
			"--data=" + filepath.Join(dir, "data", string(svc)),
		}
		// The URL of each service started so far that svc calls (has a
		// flag for).
		fs := flag.NewFlagSet(string(svc), flag.ContinueOnError)
		if daemons[svc].Flags != nil {
			daemons[svc].Flags(fs)
		}
		for _, peer := range Services {
			if a, ok := s.Addrs[peer]; ok && fs.Lookup(string(peer)+"-url") != nil {
				args = append(args, fmt.Sprintf("--%s-url=https://%s", peer, a))
			}
		}
		switch svc {
		case authz.Broker:
			args = append(args, "--kek="+kek)
		case authz.Runner:
			args = append(args, "--cache="+filepath.Join(dir, "cache"))
		case authz.Engine:
			args = append(args, opts.Engine...)
		}
		logs := newLogLines()
		s.logs[svc] = logs
		wg.Add(1)
		go func() {
			defer wg.Done()
			if code := daemon.Run(ctx, args, io.Discard, logs, daemons[svc]); code != 0 && ctx.Err() == nil {
				logs.fail(fmt.Errorf("contractual-%s exited %d", svc, code))
			}
		}()
		serving, err := logs.wait("serving")
		if err != nil {
			t.Fatalf("starting %s: %v\n%s", svc, err, logs)
		}
		if svc == authz.Gateway {
			s.URL, _ = serving["url"].(string)
			if m, err := logs.wait("no owner device is paired: pair one with this setup code"); err == nil {
				s.SetupCode, _ = m["setup_code"].(string)
			}
		} else {
			s.Addrs[svc], _ = serving["listen"].(string)
		}
	}
	return s
}

// Log returns what service svc logged so far.
func (s *Split) Log(svc authz.Service) string { return s.logs[svc].String() }

// logLines is a service's log: JSON lines, kept, and searched by message.
type logLines struct {
	mu      sync.Mutex
	buf     bytes.Buffer
	lines   []map[string]any
	err     error
	changed chan struct{} // closed and replaced on each new line or error
}

func newLogLines() *logLines { return &logLines{changed: make(chan struct{})} }

func (l *logLines) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.buf.Write(p)
	for _, line := range bytes.Split(bytes.TrimSpace(p), []byte("\n")) {
		var m map[string]any
		if json.Unmarshal(line, &m) == nil {
			l.lines = append(l.lines, m)
		}
	}
	close(l.changed)
	l.changed = make(chan struct{})
	return len(p), nil
}

func (l *logLines) fail(err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.err = err
	close(l.changed)
	l.changed = make(chan struct{})
}

// wait waits for a line with message msg and returns it; it gives up if
// the service exits, or after two minutes (far above what starting takes).
func (l *logLines) wait(msg string) (map[string]any, error) {
	deadline := time.After(2 * time.Minute)
	for {
		l.mu.Lock()
		for _, m := range l.lines {
			if m["msg"] == msg {
				l.mu.Unlock()
				return m, nil
			}
		}
		err, changed := l.err, l.changed
		l.mu.Unlock()
		if err != nil {
			return nil, err
		}
		select {
		case <-changed:
		case <-deadline:
			return nil, fmt.Errorf("no %q in the log after 2 minutes", msg)
		}
	}
}

func (l *logLines) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}
