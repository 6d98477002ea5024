package node_test

import (
	"bytes"
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/contractual/contractual/internal/authz"
	"github.com/contractual/contractual/internal/daemon"
	"github.com/contractual/contractual/internal/node"
	"github.com/contractual/contractual/internal/pki"
)

// certs makes a CA and the certificates of services in a temporary
// directory, with the CA's clock at now.
func certs(t *testing.T, now time.Time, services ...string) string {
	t.Helper()
	dir := t.TempDir()
	if _, err := pki.Init(filepath.Join(dir, "root"), filepath.Join(dir, "issuer"), filepath.Join(dir, "certs"), services, pki.Options{Now: func() time.Time { return now }}); err != nil {
		t.Fatal(err)
	}
	return filepath.Join(dir, "certs")
}

// run runs a service named self on the certificate in tlsDir until it is
// ready or fails, and returns its exit code and log.
func run(t *testing.T, self authz.Service, tlsDir string) (int, string) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var log bytes.Buffer
	svc := daemon.Service{Name: string(self), Run: func(ctx context.Context, env *daemon.Env) error {
		if _, err := node.New(env, self, nil); err != nil {
			return err
		}
		cancel() // started: stop
		<-ctx.Done()
		return nil
	}}
	code := daemon.Run(ctx, []string{"serve", "--ops=127.0.0.1:0", "--tls-dir=" + tlsDir}, &bytes.Buffer{}, &log, svc)
	return code, log.String()
}

// TestIdentity: a service starts only with a certificate that names it.
func TestIdentity(t *testing.T) {
	dir := certs(t, time.Now(), "policy", "runner")
	if code, log := run(t, authz.Policy, filepath.Join(dir, "policy")); code != 0 {
		t.Fatalf("policy with its own certificate: exit %d\n%s", code, log)
	}
	code, log := run(t, authz.Policy, filepath.Join(dir, "runner"))
	if code != 1 || !strings.Contains(log, "names spiffe://contractual.internal/runner, not spiffe://contractual.internal/policy") {
		t.Fatalf("policy with the runner's certificate: exit %d\n%s", code, log)
	}
}
