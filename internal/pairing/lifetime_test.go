package pairing

import (
	"context"
	"database/sql"
	"errors"
	"net/url"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/contractual/contractual/internal/errs"
	"github.com/contractual/contractual/internal/tailnet"
)

const day = 24 * time.Hour

// pairKind pairs a new device of kind k approved by approver, and returns
// it and its token.
func (f *fixture) pairKind(approver device, name string, k Kind) (device, string) {
	f.t.Helper()
	d := newDevice(f.t)
	r, err := f.s.Begin(f.ctx, d.pub, name, ScopeRead, k)
	if err != nil {
		f.t.Fatal(err)
	}
	if err := f.s.Approve(f.ctx, r.Code, Principal(approver.id)); err != nil {
		f.t.Fatal(err)
	}
	return d, f.complete(d, r)
}

// wantExpired fails unless token is refused as expired with msg.
func (f *fixture) wantExpired(token, msg string) {
	f.t.Helper()
	_, err := f.s.Authenticate(f.ctx, token, "s")
	if !errors.Is(err, ErrTokenExpired) {
		f.t.Fatalf("Authenticate = %v, want an expired token", err)
	}
	wantErr(f.t, err, errs.Unauthenticated, msg)
}

// TestClientTokenIdleExpiry: a client's token lasts DefaultClientLifetime.Idle
// after its last use, renewed on use, with no cap; an expired one is
// refused with a message that says so.
func TestClientTokenIdleExpiry(t *testing.T) {
	f := newFixture(t, Config{})
	owner, ownerTok := f.pairFirst()
	agent, tok := f.pairKind(owner, "agent", KindClient)
	paired := f.clk.Now()
	// Used every 80 days for two years: never expires.
	for range 9 {
		f.clk.Advance(80 * day)
		if _, err := f.s.Authenticate(f.ctx, ownerTok, "s"); err != nil {
			t.Fatalf("the owner after %s: %v", f.clk.Now().Sub(paired), err)
		}
		id, err := f.s.Authenticate(f.ctx, tok, "s")
		if err != nil || !id.ExpiresAt.Equal(f.clk.Now().Add(90*day)) {
			t.Fatalf("the agent after %s: %+v, %v", f.clk.Now().Sub(paired), id, err)
		}
	}
	// 90 days unused: expired.
	last := f.clk.Now()
	f.clk.Advance(90 * day)
	f.wantExpired(tok, "pairing: device token expired at "+last.Add(90*day).UTC().Format("2006-01-02 15:04 UTC")+
		" (unused for 90 days); pair this device again")
	devs, _ := f.s.Devices(f.ctx)
	if got := devs[1]; got.ID != agent.id || !got.LastUsedAt.Equal(last) || !got.ExpiresAt.Equal(last.Add(90*day)) || got.Kind != KindClient {
		t.Fatalf("the expired device = %+v", got)
	}
}

// TestBrowserTokenLifetime: a browser's token lasts 30 days after its last
// use and 90 days after pairing at the latest, however often it is used.
func TestBrowserTokenLifetime(t *testing.T) {
	f := newFixture(t, Config{})
	owner, ownerTok := f.pairFirst()
	_, tok := f.pairKind(owner, "firefox", KindBrowser)
	paired := f.clk.Now()
	id, err := f.s.Authenticate(f.ctx, tok, "s")
	if err != nil || id.Kind != KindBrowser || !id.ExpiresAt.Equal(paired.Add(30*day)) {
		t.Fatalf("Authenticate = %+v, %v", id, err)
	}
	// Idle: 29 days unused is fine and renews; then 30 more days is not.
	f.clk.Advance(29 * day)
	if id, err := f.s.Authenticate(f.ctx, tok, "s"); err != nil || !id.ExpiresAt.Equal(f.clk.Now().Add(30*day)) {
		t.Fatalf("after 29 days: %+v, %v", id, err)
	}
	f.clk.Advance(30 * day)
	f.wantExpired(tok, "pairing: device token expired at "+paired.Add(59*day).UTC().Format("2006-01-02 15:04 UTC")+
		" (unused for 30 days); pair this device again")

	// Cap: used every 10 days, it still ends 90 days after pairing.
	if _, err := f.s.Authenticate(f.ctx, ownerTok, "s"); err != nil {
		t.Fatal(err)
	}
	_, tok = f.pairKind(owner, "chrome", KindBrowser)
	paired = f.clk.Now()
	for range 8 {
		f.clk.Advance(10 * day)
		id, err := f.s.Authenticate(f.ctx, tok, "s")
		if err != nil {
			t.Fatalf("after %s: %v", f.clk.Now().Sub(paired), err)
		}
		want := f.clk.Now().Add(30 * day)
		if capped := paired.Add(90 * day); capped.Before(want) {
			want = capped
		}
		if !id.ExpiresAt.Equal(want) {
			t.Fatalf("after %s: expires %s, want %s", f.clk.Now().Sub(paired), id.ExpiresAt, want)
		}
	}
	f.clk.Advance(10 * day)
	f.wantExpired(tok, "pairing: device token expired at "+paired.Add(90*day).UTC().Format("2006-01-02 15:04 UTC")+
		" (90 days after pairing, the most a browser's token lasts); pair this device again")
}

// TestRenewalIsCoarse: a use is written down at most once an hour, so that
// authenticating stays a read; the expiry still follows the last use to
// within that hour.
func TestRenewalIsCoarse(t *testing.T) {
	f := newFixture(t, Config{})
	_, tok := f.pairFirst()
	start := f.clk.Now()
	f.clk.Advance(59 * time.Minute)
	if id, err := f.s.Authenticate(f.ctx, tok, "s"); err != nil || !id.ExpiresAt.Equal(start.Add(90*day)) {
		t.Fatalf("within the hour: %+v, %v", id, err)
	}
	f.clk.Advance(time.Minute)
	if id, err := f.s.Authenticate(f.ctx, tok, "s"); err != nil || !id.ExpiresAt.Equal(f.clk.Now().Add(90*day)) {
		t.Fatalf("after the hour: %+v, %v", id, err)
	}
	devs, _ := f.s.Devices(f.ctx)
	if !devs[0].LastUsedAt.Equal(f.clk.Now()) {
		t.Fatalf("last used %s, want %s", devs[0].LastUsedAt, f.clk.Now())
	}
}

// TestExpiredDevicePairsAgain: an expired device is no longer paired: it
// may begin again with the same key and gets a new token; the old one
// stays refused.
func TestExpiredDevicePairsAgain(t *testing.T) {
	f := newFixture(t, Config{Client: Lifetime{Idle: 100 * day}})
	owner, ownerTok := f.pairFirst()
	agent, tok := f.pairKind(owner, "agent", KindClient)
	f.clk.Advance(95 * day)
	if _, err := f.s.Authenticate(f.ctx, ownerTok, "s"); err != nil {
		t.Fatal(err)
	}
	f.clk.Advance(5 * day)
	f.wantExpired(tok, "pairing: device token expired at "+f.clk.Now().UTC().Format("2006-01-02 15:04 UTC")+
		" (unused for 100 days); pair this device again")
	r := f.beginScopes(agent, "agent", ScopeInvoke)
	if err := f.s.Approve(f.ctx, r.Code, Principal(owner.id)); err != nil {
		t.Fatal(err)
	}
	tok2 := f.complete(agent, r)
	if id, err := f.s.Authenticate(f.ctx, tok2, "s"); err != nil || id.Principal != Principal(agent.id) || id.Scopes != ScopeInvoke {
		t.Fatalf("the new token: %+v, %v", id, err)
	}
	if _, err := f.s.Authenticate(f.ctx, tok, "s"); err == nil {
		t.Fatal("the expired token works again")
	}
}

// TestSetupCodeWhenNoOwnerIsLeft: when every owner device is revoked or
// expired, a setup code is due again and pairs a new owner, even with
// non-owner devices still active; while an owner is active, none is.
func TestSetupCodeWhenNoOwnerIsLeft(t *testing.T) {
	f := newFixture(t, Config{})
	due := func() bool {
		t.Helper()
		ok, err := f.s.SetupCodeDue(f.ctx)
		if err != nil {
			t.Fatal(err)
		}
		return ok
	}
	if !due() {
		t.Fatal("no setup code due on a new store")
	}
	owner, _ := f.pairFirst()
	if due() {
		t.Fatal("a setup code due with an owner paired")
	}
	_, agentTok := f.pairKind(owner, "agent", KindClient)

	// The owner unpairs itself: only the agent is left.
	if err := f.s.Revoke(f.ctx, owner.id, Principal(owner.id)); err != nil {
		t.Fatal(err)
	}
	if !due() {
		t.Fatal("no setup code due with no owner left")
	}
	code, _, err := f.s.SetupCode(f.ctx)
	if err != nil {
		t.Fatal(err)
	}
	if due() {
		t.Fatal("a setup code due while one is valid")
	}
	d := newDevice(t)
	r := f.begin(d, "new laptop")
	if err := f.s.ApproveWithSetupCode(f.ctx, r.Code, code); err != nil {
		t.Fatal(err)
	}
	if due() {
		t.Fatal("a setup code due while the used one's device has yet to complete")
	}
	tok := f.complete(d, r)

	// Every owner expires (the agent, used, does not): a code is due again.
	for range 3 {
		f.clk.Advance(30 * day)
		if _, err := f.s.Authenticate(f.ctx, agentTok, "s"); err != nil {
			t.Fatal(err)
		}
	}
	if !due() {
		t.Fatal("no setup code due with every owner expired")
	}
	f.wantExpired(tok, "pairing: device token expired at "+f.clk.Now().UTC().Format("2006-01-02 15:04 UTC")+
		" (unused for 90 days); pair this device again")
}

// TestBeginAgainAfterSetupCodeFailure: a mistyped or expired setup code
// does not lock the device out: it may begin again at once, and a good
// code then pairs it.
func TestBeginAgainAfterSetupCodeFailure(t *testing.T) {
	f := newFixture(t, Config{})
	d := newDevice(t)
	// Mistyped.
	code, _, _ := f.s.SetupCode(f.ctx)
	r := f.begin(d, "laptop")
	wantErr(t, f.s.ApproveWithSetupCode(f.ctx, r.Code, "ZZZZZZZZ"), errs.PermissionDenied, wrongSetupCode)
	// Expired: it says so, and where the new one is.
	f.clk.Advance(10 * time.Minute)
	r = f.begin(d, "laptop")
	err := f.s.ApproveWithSetupCode(f.ctx, r.Code, code)
	if !errs.Is(err, errs.FailedPrecondition) || !strings.Contains(err.Error(), "setup code expired") ||
		!strings.Contains(err.Error(), "the server prints a new one on its console") {
		t.Fatalf("an expired setup code: %v", err)
	}
	// The device begins again at once and pairs with the new code.
	code, _, _ = f.s.SetupCode(f.ctx)
	r = f.begin(d, "laptop")
	if err := f.s.ApproveWithSetupCode(f.ctx, r.Code, code); err != nil {
		t.Fatal(err)
	}
	f.complete(d, r)
}

// v1Schema is the pairing store as version 1 created it.
const v1Schema = `
CREATE TABLE setup_codes (hash BLOB PRIMARY KEY, created_at INTEGER NOT NULL, expires_at INTEGER NOT NULL, used_at INTEGER) STRICT;
CREATE TABLE requests (
	nonce_hash BLOB PRIMARY KEY, code TEXT NOT NULL, device_id TEXT NOT NULL, name TEXT NOT NULL, pub BLOB NOT NULL,
	created_at INTEGER NOT NULL, expires_at INTEGER NOT NULL, state INTEGER NOT NULL,
	decided_by TEXT NOT NULL DEFAULT '', decided_at INTEGER
) STRICT;
CREATE INDEX requests_by_code ON requests(code);
CREATE INDEX requests_by_device ON requests(device_id);
CREATE TABLE devices (
	id TEXT PRIMARY KEY, name TEXT NOT NULL, pub BLOB NOT NULL, scope TEXT NOT NULL, token_hash BLOB NOT NULL UNIQUE,
	paired_at INTEGER NOT NULL, approved_by TEXT NOT NULL, revoked_at INTEGER, revoked_by TEXT NOT NULL DEFAULT ''
) STRICT;
PRAGMA user_version = 1;
`

// TestMigrateFromV1: a store written by version 1 opens; its devices keep
// full (owner) scope, become clients whose idle expiry starts now and are
// bound to no tailnet node, and its pending request asks for owner, as it
// did.
func TestMigrateFromV1(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	dsn := (&url.URL{Scheme: "file", Path: filepath.Join(dir, DBFile)}).String()
	db, err := sql.Open("sqlite", dsn)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec(v1Schema); err != nil {
		t.Fatal(err)
	}
	owner, agent := newDevice(t), newDevice(t)
	const tok = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
	clk := newClock()
	then := clk.Now().Add(-400 * day)
	if _, err := db.Exec(`INSERT INTO devices (id, name, pub, scope, token_hash, paired_at, approved_by) VALUES (?, 'laptop', ?, 'owner', ?, ?, 'setup-code')`,
		owner.id, []byte(owner.pub), hash([]byte(tok)), nanos(then)); err != nil {
		t.Fatal(err)
	}
	nonce := make([]byte, NonceSize)
	if _, err := db.Exec(`INSERT INTO requests (nonce_hash, code, device_id, name, pub, created_at, expires_at, state) VALUES (?, 'ABCDEF', ?, 'agent', ?, ?, ?, 0)`,
		hash(nonce), agent.id, []byte(agent.pub), nanos(clk.Now()), nanos(clk.Now().Add(5*time.Minute))); err != nil {
		t.Fatal(err)
	}
	db.Close()

	s, err := Open(ctx, Config{Dir: dir, Now: clk.Now}, Deps{Audit: openLog(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	id, err := s.Authenticate(ctx, tok, "s")
	if err != nil || id.Principal != Principal(owner.id) || id.Scopes != ScopeOwner || id.Kind != KindClient ||
		!id.ExpiresAt.Equal(clk.Now().Add(DefaultClientLifetime.Idle)) {
		t.Fatalf("the v1 device: %+v, %v", id, err)
	}
	// It paired before devices were bound to a tailnet node: it stays
	// bound to none, accepted from outside the tailnet only.
	if _, err := s.Authenticate(tailnet.With(ctx, nodeA), tok, "s"); !errors.Is(err, ErrOtherNode) {
		t.Errorf("the v1 device from a tailnet node: %v", err)
	}
	pend, err := s.Pending(ctx)
	if err != nil || len(pend) != 1 || pend[0].Scopes != ScopeOwner || pend[0].Kind != KindClient {
		t.Fatalf("the v1 request: %+v, %v", pend, err)
	}
	if err := s.Approve(ctx, "ABCDEF", Principal(owner.id)); err != nil {
		t.Fatalf("approving the v1 request: %v", err)
	}
	_, aid, err := s.Complete(ctx, agent.id, nonce, agent.sign(nonce))
	if err != nil || aid.Scopes != ScopeOwner {
		t.Fatalf("completing the v1 request: %+v, %v", aid, err)
	}
	var v int
	if err := s.db.QueryRow(`PRAGMA user_version`).Scan(&v); err != nil || v != schemaVersion {
		t.Fatalf("user_version %d, %v", v, err)
	}
	// Opening again changes nothing.
	s.Close()
	clk.Advance(day)
	s2, err := Open(ctx, Config{Dir: dir, Now: clk.Now}, Deps{Audit: openLog(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	devs, _ := s2.Devices(ctx)
	if len(devs) != 2 || !devs[0].ExpiresAt.Equal(clk.Now().Add(-day).Add(DefaultClientLifetime.Idle)) {
		t.Fatalf("after reopening: %+v", devs)
	}
}
