package pairing

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"github.com/contractual/contractual/internal/audit"
	"sync"
	"testing"
	"time"

	"github.com/contractual/contractual/internal/errs"
)

// clock is an injectable clock that moves only when told.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *clock { return &clock{t: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// fixture is a store in a temp directory with its clock.
type fixture struct {
	t   *testing.T
	ctx context.Context
	dir string
	clk *clock
	s   *Store
	log *audit.Service // the store's audit log
}

// newFixture opens a store with a test clock; opts.Now is overridden.
func newFixture(t *testing.T, opts Config) *fixture {
	t.Helper()
	f := &fixture{t: t, ctx: context.Background(), dir: t.TempDir(), clk: newClock()}
	opts.Now = f.clk.Now
	opts.Dir = f.dir
	f.log = openLog(t)
	s, err := Open(f.ctx, opts, Deps{Audit: f.log})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	f.s = s
	return f
}

// device is a test device with a real key pair.
type device struct {
	pub  ed25519.PublicKey
	priv ed25519.PrivateKey
	id   string
}

func newDevice(t testing.TB) device {
	t.Helper()
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return device{pub: pub, priv: priv, id: DeviceID(pub)}
}

// sign signs the pairing message for nonce.
func (d device) sign(nonce []byte) []byte {
	return ed25519.Sign(d.priv, SignedMessage(d.id, nonce))
}

// begin starts a request for d asking for scope owner, failing the test on
// error.
func (f *fixture) begin(d device, name string) *Request {
	f.t.Helper()
	return f.beginScopes(d, name, ScopeOwner)
}

// beginScopes starts a request for d asking for scopes.
func (f *fixture) beginScopes(d device, name string, scopes Scopes) *Request {
	f.t.Helper()
	r, err := f.s.Begin(f.ctx, d.pub, name, scopes, KindClient)
	if err != nil {
		f.t.Fatalf("Begin: %v", err)
	}
	return r
}

// complete completes r for d, failing the test on error.
func (f *fixture) complete(d device, r *Request) string {
	f.t.Helper()
	tok, _, err := f.s.Complete(f.ctx, d.id, r.Nonce, d.sign(r.Nonce))
	if err != nil {
		f.t.Fatalf("Complete: %v", err)
	}
	return tok
}

// pairFirst pairs a first device with a setup code and returns it and its
// token.
func (f *fixture) pairFirst() (device, string) {
	f.t.Helper()
	code, _, err := f.s.SetupCode(f.ctx)
	if err != nil {
		f.t.Fatalf("SetupCode: %v", err)
	}
	d := newDevice(f.t)
	r := f.begin(d, "laptop")
	if err := f.s.ApproveWithSetupCode(f.ctx, r.Code, code); err != nil {
		f.t.Fatalf("ApproveWithSetupCode: %v", err)
	}
	return d, f.complete(d, r)
}

// pairBy pairs a new device approved by approver and returns it and its
// token.
func (f *fixture) pairBy(approver device, name string) (device, string) {
	f.t.Helper()
	d := newDevice(f.t)
	r := f.begin(d, name)
	if err := f.s.Approve(f.ctx, r.Code, Principal(approver.id)); err != nil {
		f.t.Fatalf("Approve: %v", err)
	}
	return d, f.complete(d, r)
}

// wantErr fails unless err has kind k and message msg (exactly).
func wantErr(t *testing.T, err error, k errs.Kind, msg string) {
	t.Helper()
	if err == nil {
		t.Fatalf("got no error, want %s %q", k, msg)
	}
	if errs.KindOf(err) != k || err.Error() != msg {
		t.Fatalf("got %s %q, want %s %q", errs.KindOf(err), err.Error(), k, msg)
	}
}

// ed25519Sign signs msg with d's key.
func ed25519Sign(d device, msg []byte) []byte { return ed25519.Sign(d.priv, msg) }

// openLog opens an audit log in a temporary directory, closed at the end
// of the test.
func openLog(t testing.TB) *audit.Service {
	t.Helper()
	log, err := audit.OpenService(context.Background(), audit.Config{Dir: t.TempDir()}, audit.Deps{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { log.Close(context.Background()) })
	return log
}
