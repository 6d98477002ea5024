package pairing

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base32"
	"encoding/base64"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/contractual/contractual/internal/errs"
)

func TestDeviceID(t *testing.T) {
	d := newDevice(t)
	sum := sha256.Sum256(d.pub)
	want := strings.ToLower(base32.StdEncoding.WithPadding(base32.NoPadding).EncodeToString(sum[:16]))
	if d.id != want || len(d.id) != deviceIDLen {
		t.Fatalf("DeviceID = %q, want %q", d.id, want)
	}
	if got := string(SignedMessage("abc", []byte{0xff, 0x00})); got != "contractual-pair-v1\nabc\n/wA=" {
		t.Fatalf("SignedMessage = %q", got)
	}
}

func TestFirstDeviceEndToEnd(t *testing.T) {
	f := newFixture(t, Config{})
	d, tok := f.pairFirst()
	p, err := f.s.Authenticate(f.ctx, tok, "1.2.3.4")
	if err != nil || p.Principal != "device:"+d.id || p.Scopes != ScopeOwner || p.Kind != KindClient ||
		!p.ExpiresAt.Equal(f.clk.Now().Add(DefaultClientLifetime.Idle)) {
		t.Fatalf("Authenticate = %+v, %v", p, err)
	}
	devs, err := f.s.Devices(f.ctx)
	if err != nil || len(devs) != 1 {
		t.Fatalf("Devices = %v, %v", devs, err)
	}
	got := devs[0]
	if got.ID != d.id || got.Name != "laptop" || !bytes.Equal(got.PublicKey, d.pub) || got.Scopes != ScopeOwner ||
		got.ApprovedBy != "setup-code" || !got.PairedAt.Equal(f.clk.Now()) || !got.RevokedAt.IsZero() {
		t.Fatalf("device = %+v", got)
	}
	if pend, _ := f.s.Pending(f.ctx); len(pend) != 0 {
		t.Fatalf("Pending after completion = %v", pend)
	}
	// A restart keeps the device and its token.
	f.s.Close()
	s2, err := Open(f.ctx, Config{Dir: f.dir, Now: f.clk.Now}, Deps{Audit: f.log})
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	if p, err := s2.Authenticate(f.ctx, tok, "1.2.3.4"); err != nil || p.Principal != "device:"+d.id {
		t.Fatalf("Authenticate after restart = %+v, %v", p, err)
	}
}

func TestSecondDeviceApprovedByFirst(t *testing.T) {
	f := newFixture(t, Config{})
	first, _ := f.pairFirst()
	d := newDevice(t)
	r := f.begin(d, "phone")
	pend, err := f.s.Pending(f.ctx)
	if err != nil || len(pend) != 1 || pend[0].Code != r.Code || pend[0].Nonce != nil || pend[0].State != Pending {
		t.Fatalf("Pending = %+v, %v", pend, err)
	}
	if err := f.s.Approve(f.ctx, strings.ToLower(r.Code), Principal(first.id)); err != nil {
		t.Fatal(err)
	}
	tok := f.complete(d, r)
	if p, err := f.s.Authenticate(f.ctx, tok, "src"); err != nil || p.Principal != Principal(d.id) {
		t.Fatalf("Authenticate = %+v, %v", p, err)
	}
	devs, _ := f.s.Devices(f.ctx)
	if len(devs) != 2 || devs[1].ApprovedBy != Principal(first.id) {
		t.Fatalf("Devices = %+v", devs)
	}
}

// wrongSetupCode is the message for a setup code that was never issued.
const wrongSetupCode = "pairing: wrong setup code; use the latest one the server printed on its console (in the output of `contractual serve`)"

func TestSetupCode(t *testing.T) {
	t.Run("single use and refused once a device exists", func(t *testing.T) {
		f := newFixture(t, Config{})
		code, exp, err := f.s.SetupCode(f.ctx)
		if err != nil || len(code) != setupCodeLen || !exp.Equal(f.clk.Now().Add(10*time.Minute)) {
			t.Fatalf("SetupCode = %q, %v, %v", code, exp, err)
		}
		d := newDevice(t)
		r := f.begin(d, "laptop")
		if err := f.s.ApproveWithSetupCode(f.ctx, r.Code, code); err != nil {
			t.Fatal(err)
		}
		// Used again before the device completes: the code is spent.
		r2 := f.begin(newDevice(t), "other")
		wantErr(t, f.s.ApproveWithSetupCode(f.ctx, r2.Code, code), errs.FailedPrecondition, "pairing: setup code already used; "+whereSetupCodes)
		f.complete(d, r)
		wantErr(t, f.s.ApproveWithSetupCode(f.ctx, r2.Code, code), errs.FailedPrecondition,
			"pairing: an owner device is already paired; the setup code is only for when none is: approve request "+r2.Code+" on a paired device")
		_, _, err = f.s.SetupCode(f.ctx)
		wantErr(t, err, errs.FailedPrecondition, "pairing: an owner device is already paired; pair more devices by approval")
	})
	t.Run("expired", func(t *testing.T) {
		f := newFixture(t, Config{})
		code, _, _ := f.s.SetupCode(f.ctx)
		f.clk.Advance(10 * time.Minute)
		r := f.begin(newDevice(t), "laptop")
		wantErr(t, f.s.ApproveWithSetupCode(f.ctx, r.Code, code), errs.FailedPrecondition,
			"pairing: setup code expired at 03:14:05 UTC (a code lasts 10m0s; a newer one, or too many wrong codes, end it sooner); "+whereSetupCodes)
	})
	t.Run("wrong", func(t *testing.T) {
		f := newFixture(t, Config{})
		f.s.SetupCode(f.ctx)
		r := f.begin(newDevice(t), "laptop")
		wantErr(t, f.s.ApproveWithSetupCode(f.ctx, r.Code, "ZZZZ-ZZZZ"), errs.PermissionDenied, wrongSetupCode)
	})
	t.Run("a new code replaces the old, which reads as expired", func(t *testing.T) {
		f := newFixture(t, Config{})
		old, _, _ := f.s.SetupCode(f.ctx)
		f.clk.Advance(time.Minute)
		code, _, _ := f.s.SetupCode(f.ctx)
		r := f.begin(newDevice(t), "laptop")
		if old != code {
			wantErr(t, f.s.ApproveWithSetupCode(f.ctx, r.Code, old), errs.FailedPrecondition,
				"pairing: setup code expired at 03:05:05 UTC (a code lasts 10m0s; a newer one, or too many wrong codes, end it sooner); "+whereSetupCodes)
		}
		if err := f.s.ApproveWithSetupCode(f.ctx, r.Code, code); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("wrong codes never lock out the right one; enough of them retire it", func(t *testing.T) {
		f := newFixture(t, Config{SetupCodeGuesses: 20})
		code, _, _ := f.s.SetupCode(f.ctx)
		r := f.begin(newDevice(t), "laptop")
		for range 19 {
			wantErr(t, f.s.ApproveWithSetupCode(f.ctx, r.Code, "ZZZZZZZZ"), errs.PermissionDenied, wrongSetupCode)
		}
		// 19 wrong codes a moment ago, from anyone: the right one works.
		if err := f.s.ApproveWithSetupCode(f.ctx, r.Code, code); err != nil {
			t.Fatalf("the right setup code after 19 wrong ones: %v", err)
		}

		// A new code, then 20 wrong ones: it is retired, says so, and a
		// fresh one is due (serve prints it) and works.
		f = newFixture(t, Config{SetupCodeGuesses: 20})
		code, _, _ = f.s.SetupCode(f.ctx)
		r = f.begin(newDevice(t), "laptop")
		for range 19 {
			wantErr(t, f.s.ApproveWithSetupCode(f.ctx, r.Code, "ZZZZZZZZ"), errs.PermissionDenied, wrongSetupCode)
		}
		wantErr(t, f.s.ApproveWithSetupCode(f.ctx, r.Code, "ZZZZZZZZ"), errs.PermissionDenied,
			wrongSetupCode+"; after 20 wrong setup codes the current one is retired, and "+whereSetupCodes)
		wantErr(t, f.s.ApproveWithSetupCode(f.ctx, r.Code, code), errs.FailedPrecondition, "pairing: setup code expired at "+
			f.clk.Now().UTC().Format("15:04:05 UTC")+" (a code lasts 10m0s; a newer one, or too many wrong codes, end it sooner); "+whereSetupCodes)
		if due, err := f.s.SetupCodeDue(f.ctx); err != nil || !due {
			t.Fatalf("after a retired code, a new one is due: %v %v", due, err)
		}
		fresh, _, _ := f.s.SetupCode(f.ctx)
		if err := f.s.ApproveWithSetupCode(f.ctx, f.begin(newDevice(t), "phone").Code, fresh); err != nil {
			t.Fatalf("the fresh setup code: %v", err)
		}
	})
}

func TestApproveAndReject(t *testing.T) {
	f := newFixture(t, Config{})
	first, _ := f.pairFirst()
	by := Principal(first.id)

	t.Run("expired request", func(t *testing.T) {
		d := newDevice(t)
		r := f.begin(d, "phone")
		f.clk.Advance(5 * time.Minute)
		wantErr(t, f.s.Approve(f.ctx, r.Code, by), errs.FailedPrecondition, "pairing: request "+r.Code+" expired")
		_, _, err := f.s.Complete(f.ctx, d.id, r.Nonce, d.sign(r.Nonce))
		wantErr(t, err, errs.FailedPrecondition, "pairing: request "+r.Code+" expired before approval")
	})
	t.Run("rejected", func(t *testing.T) {
		d := newDevice(t)
		r := f.begin(d, "phone")
		if err := f.s.Reject(f.ctx, r.Code, by); err != nil {
			t.Fatal(err)
		}
		_, _, err := f.s.Complete(f.ctx, d.id, r.Nonce, d.sign(r.Nonce))
		wantErr(t, err, errs.PermissionDenied, "pairing: request "+r.Code+" was rejected")
		wantErr(t, f.s.Approve(f.ctx, r.Code, by), errs.FailedPrecondition, "pairing: request "+r.Code+" is already rejected")
	})
	t.Run("approver must be a paired device", func(t *testing.T) {
		r := f.begin(newDevice(t), "phone")
		stranger := newDevice(t)
		for _, p := range []string{"", "owner", "device:", "device:" + stranger.id, "session:x"} {
			if err := f.s.Approve(f.ctx, r.Code, p); !errs.Is(err, errs.PermissionDenied) {
				t.Fatalf("Approve by %q: %v", p, err)
			}
		}
		if pend, _ := f.s.Pending(f.ctx); pend[len(pend)-1].State != Pending {
			t.Fatal("request changed")
		}
	})
	t.Run("unknown code", func(t *testing.T) {
		wantErr(t, f.s.Approve(f.ctx, "222222", by), errs.NotFound, "pairing: no pairing request with code 222222")
	})
}

func TestComplete(t *testing.T) {
	f := newFixture(t, Config{})
	first, _ := f.pairFirst()
	by := Principal(first.id)
	other := newDevice(t)

	// approved returns a new device with an approved request.
	approved := func(t *testing.T) (device, *Request) {
		d := newDevice(t)
		r := f.begin(d, "phone")
		if err := f.s.Approve(f.ctx, r.Code, by); err != nil {
			t.Fatal(err)
		}
		return d, r
	}
	t.Run("awaiting approval", func(t *testing.T) {
		d := newDevice(t)
		r := f.begin(d, "phone")
		_, _, err := f.s.Complete(f.ctx, d.id, r.Nonce, d.sign(r.Nonce))
		wantErr(t, err, errs.FailedPrecondition, "pairing: request "+r.Code+" is awaiting approval")
	})
	t.Run("unknown nonce", func(t *testing.T) {
		d, _ := approved(t)
		nonce := bytes.Repeat([]byte{7}, NonceSize)
		_, _, err := f.s.Complete(f.ctx, d.id, nonce, d.sign(nonce))
		wantErr(t, err, errs.NotFound, "pairing: no pairing request for this nonce")
	})
	t.Run("device id does not match the key", func(t *testing.T) {
		_, r := approved(t)
		_, _, err := f.s.Complete(f.ctx, other.id, r.Nonce, other.sign(r.Nonce))
		wantErr(t, err, errs.PermissionDenied, "pairing: device id "+other.id+" does not match the key of the request")
	})
	t.Run("bad signature", func(t *testing.T) {
		d, r := approved(t)
		forged := ed25519Sign(other, SignedMessage(d.id, r.Nonce))
		_, _, err := f.s.Complete(f.ctx, d.id, r.Nonce, forged)
		wantErr(t, err, errs.Unauthenticated, "pairing: bad signature of the nonce")
		// Signing the bare nonce, without the domain prefix, is refused too.
		_, _, err = f.s.Complete(f.ctx, d.id, r.Nonce, ed25519Sign(d, r.Nonce))
		wantErr(t, err, errs.Unauthenticated, "pairing: bad signature of the nonce")
		f.complete(d, r) // the request is still usable by its owner
	})
	t.Run("replay", func(t *testing.T) {
		d, r := approved(t)
		sig := d.sign(r.Nonce)
		tok, _, err := f.s.Complete(f.ctx, d.id, r.Nonce, sig)
		if err != nil {
			t.Fatal(err)
		}
		// The same proof again: no second token, and an answer that says
		// the device is paired rather than that something was replayed.
		again, _, err := f.s.Complete(f.ctx, d.id, r.Nonce, sig)
		wantErr(t, err, errs.AlreadyExists, "pairing: request "+r.Code+" was already completed: device "+d.id+
			" is paired, and its token went to the first completion only; if this device did not get it, begin again")
		if again != "" {
			t.Fatal("a replayed completion returned a token")
		}
		if id, err := f.s.Authenticate(f.ctx, tok, "s"); err != nil || id.Principal != Principal(d.id) {
			t.Fatalf("the first token after a replay: %+v, %v", id, err)
		}
	})
	t.Run("stale nonce", func(t *testing.T) {
		d, r := approved(t)
		f.clk.Advance(60 * time.Second)
		_, _, err := f.s.Complete(f.ctx, d.id, r.Nonce, d.sign(r.Nonce))
		wantErr(t, err, errs.FailedPrecondition, "pairing: nonce is stale (not completed within 1m0s of approval); begin again")
		// A stale request is no longer live: the device may begin again.
		r2 := f.begin(d, "phone")
		if err := f.s.Approve(f.ctx, r2.Code, by); err != nil {
			t.Fatal(err)
		}
		f.complete(d, r2)
	})
	t.Run("already paired", func(t *testing.T) {
		_, err := f.s.Begin(f.ctx, first.pub, "again", ScopeOwner, KindClient)
		wantErr(t, err, errs.AlreadyExists, "pairing: device "+first.id+" is already paired")
	})
	t.Run("beginning again replaces the live request", func(t *testing.T) {
		for _, approveFirst := range []bool{false, true} {
			d := newDevice(t)
			old := f.begin(d, "phone")
			if approveFirst {
				if err := f.s.Approve(f.ctx, old.Code, by); err != nil {
					t.Fatal(err)
				}
			}
			r := f.begin(d, "phone")
			if r.Code == old.Code {
				t.Fatal("the same code again")
			}
			pend, _ := f.s.Pending(f.ctx)
			for _, p := range pend {
				if p.Code == old.Code {
					t.Fatalf("the replaced request is still live: %+v", p)
				}
			}
			if !approveFirst {
				wantErr(t, f.s.Approve(f.ctx, old.Code, by), errs.FailedPrecondition,
					"pairing: request "+old.Code+" was replaced: its device began again; look for its new code")
			}
			_, _, err := f.s.Complete(f.ctx, d.id, old.Nonce, d.sign(old.Nonce))
			wantErr(t, err, errs.FailedPrecondition, "pairing: request "+old.Code+" was replaced: this device began again, so only its newest request counts")
			if err := f.s.Approve(f.ctx, r.Code, by); err != nil {
				t.Fatal(err)
			}
			f.complete(d, r)
		}
	})
}

func TestRevoke(t *testing.T) {
	f := newFixture(t, Config{})
	first, firstTok := f.pairFirst()
	second, tok := f.pairBy(first, "phone")
	if _, err := f.s.Authenticate(f.ctx, tok, "s"); err != nil {
		t.Fatal(err)
	}
	if err := f.s.Revoke(f.ctx, second.id, Principal(first.id)); err != nil {
		t.Fatal(err)
	}
	_, err := f.s.Authenticate(f.ctx, tok, "s")
	wantErr(t, err, errs.Unauthenticated, "pairing: invalid or revoked device token")
	wantErr(t, f.s.Revoke(f.ctx, second.id, Principal(first.id)), errs.FailedPrecondition, "pairing: device "+second.id+" is already revoked")
	wantErr(t, f.s.Revoke(f.ctx, first.id, Principal(second.id)), errs.PermissionDenied, "pairing: device:"+second.id+" is not a paired device")
	unknown := newDevice(t)
	wantErr(t, f.s.Revoke(f.ctx, unknown.id, Principal(first.id)), errs.NotFound, "pairing: no device "+unknown.id)
	if _, err := f.s.Authenticate(f.ctx, firstTok, "s"); err != nil {
		t.Fatalf("first device: %v", err)
	}
	devs, _ := f.s.Devices(f.ctx)
	if devs[1].RevokedAt.IsZero() || devs[1].RevokedBy != Principal(first.id) {
		t.Fatalf("revoked device = %+v", devs[1])
	}
	// A revoked device may pair again, with a new token.
	r := f.begin(second, "phone")
	if err := f.s.Approve(f.ctx, r.Code, Principal(first.id)); err != nil {
		t.Fatal(err)
	}
	tok2 := f.complete(second, r)
	if _, err := f.s.Authenticate(f.ctx, tok, "s"); err == nil {
		t.Fatal("old token accepted after re-pairing")
	}
	if p, err := f.s.Authenticate(f.ctx, tok2, "s"); err != nil || p.Principal != Principal(second.id) {
		t.Fatalf("new token: %+v, %v", p, err)
	}
}

func TestTokenNeverStoredInClear(t *testing.T) {
	f := newFixture(t, Config{})
	code, _, _ := f.s.SetupCode(f.ctx)
	d := newDevice(t)
	r := f.begin(d, "laptop")
	if err := f.s.ApproveWithSetupCode(f.ctx, r.Code, code); err != nil {
		t.Fatal(err)
	}
	tok := f.complete(d, r)
	secrets := map[string][]byte{"token": []byte(tok), "setup code": []byte(code), "nonce": r.Nonce}
	files, _ := filepath.Glob(filepath.Join(f.dir, DBFile+"*"))
	if len(files) < 2 {
		t.Fatalf("store files = %v, want the db and its WAL", files)
	}
	var all []byte
	for _, name := range files {
		b, err := os.ReadFile(name)
		if err != nil {
			t.Fatal(err)
		}
		all = append(all, b...)
		for what, s := range secrets {
			if bytes.Contains(b, s) {
				t.Errorf("%s found in clear in %s", what, filepath.Base(name))
			}
		}
	}
	// Positive control: what is stored in clear is found, so the search reads
	// the right bytes.
	for _, s := range [][]byte{[]byte("laptop"), d.pub, hash([]byte(tok))} {
		if !bytes.Contains(all, s) {
			t.Errorf("control %q not found in the store files", s)
		}
	}
}

func TestRateLimits(t *testing.T) {
	t.Run("pending requests", func(t *testing.T) {
		f := newFixture(t, Config{MaxPending: 2})
		f.begin(newDevice(t), "a")
		f.begin(newDevice(t), "b")
		_, err := f.s.Begin(f.ctx, newDevice(t).pub, "c", ScopeOwner, KindClient)
		wantErr(t, err, errs.ResourceExhausted, "pairing: 2 pairing requests are already pending; try again later")
		f.clk.Advance(5 * time.Minute) // both expire
		f.begin(newDevice(t), "c")
	})
	t.Run("begins per minute", func(t *testing.T) {
		f := newFixture(t, Config{BeginsPerMinute: 3})
		for range 3 {
			f.begin(newDevice(t), "a")
		}
		_, err := f.s.Begin(f.ctx, newDevice(t).pub, "a", ScopeOwner, KindClient)
		wantErr(t, err, errs.ResourceExhausted, "pairing: too many pairing requests in the last minute; try again later")
		f.clk.Advance(time.Minute)
		f.begin(newDevice(t), "a")
	})
	t.Run("auth failures per source", func(t *testing.T) {
		f := newFixture(t, Config{AuthFailuresPerMinute: 3})
		f.pairFirst()
		for _, bad := range []string{"", "x", strings.Repeat("A", 43)} {
			_, err := f.s.Authenticate(f.ctx, bad, "evil")
			wantErr(t, err, errs.Unauthenticated, "pairing: invalid or revoked device token")
		}
		_, err := f.s.Authenticate(f.ctx, "y", "evil")
		wantErr(t, err, errs.ResourceExhausted, "pairing: device token refused, and too many failed authentications from this source; try again later")
		_, err = f.s.Authenticate(f.ctx, "y", "good")
		wantErr(t, err, errs.Unauthenticated, "pairing: invalid or revoked device token")
		f.clk.Advance(time.Minute)
		_, err = f.s.Authenticate(f.ctx, "y", "evil")
		wantErr(t, err, errs.Unauthenticated, "pairing: invalid or revoked device token")
	})
}

// TestFailuresNeverLockOutAValidToken: however many failures came from a
// source, or from all sources, a valid token from that same source is
// accepted; only the failures are answered "back off".
func TestFailuresNeverLockOutAValidToken(t *testing.T) {
	f := newFixture(t, Config{AuthFailuresPerMinute: 10, AuthFailuresPerMinuteTotal: 50})
	first, tok := f.pairFirst()
	for i := range 100 {
		// Well-formed tokens, so that each one is looked up.
		_, err := f.s.Authenticate(f.ctx, base64.RawURLEncoding.EncodeToString(randomBytes(TokenSize)), "203.0.113.7")
		if i < 10 {
			wantKind(t, err, errs.Unauthenticated)
		} else {
			wantKind(t, err, errs.ResourceExhausted)
		}
		if id, err := f.s.Authenticate(f.ctx, tok, "203.0.113.7"); err != nil || id.Principal != Principal(first.id) {
			t.Fatalf("the valid token after %d failures from its source: %q %v", i+1, id.Principal, err)
		}
	}
	// Failures spread over many sources hit the overall bound; a valid
	// token still passes, from any of them.
	for i := range 100 {
		src := fmt.Sprintf("198.51.100.%d", i)
		_, err := f.s.Authenticate(f.ctx, "garbage", src)
		wantKind(t, err, errs.ResourceExhausted) // 100 failures above are already past the total of 50
		if _, err := f.s.Authenticate(f.ctx, tok, src); err != nil {
			t.Fatalf("the valid token from %s: %v", src, err)
		}
	}
	f.clk.Advance(time.Minute)
	_, err := f.s.Authenticate(f.ctx, "garbage", "198.51.100.200")
	wantKind(t, err, errs.Unauthenticated)
}

// TestLimiterBounded: the limiter keeps at most max events per key and at
// most limiterKeys keys, whatever the traffic.
func TestLimiterBounded(t *testing.T) {
	l := newLimiter(3, time.Minute)
	now := time.Unix(1000, 0)
	for i := range 10 {
		if full := l.add("a", now); full != (i >= 3) {
			t.Fatalf("event %d: wasFull %v", i, full)
		}
	}
	if n := len(l.events["a"]); n != 3 {
		t.Fatalf("kept %d events for one key, want 3", n)
	}
	for i := range 2 * limiterKeys {
		l.add(fmt.Sprint("k", i), now)
	}
	if n := len(l.events); n > limiterKeys {
		t.Fatalf("tracking %d keys, more than %d", n, limiterKeys)
	}
	if !l.full("a", now) {
		t.Fatal("a key tracked before the flood was dropped")
	}
	// Once the window has passed, room is made for new keys.
	later := now.Add(time.Minute)
	if l.add("new", later); len(l.events["new"]) != 1 {
		t.Fatalf("a new key after the window: %v", l.events["new"])
	}
}

func TestMalformedInput(t *testing.T) {
	f := newFixture(t, Config{})
	first, _ := f.pairFirst()
	d := newDevice(t)
	r := f.begin(d, "phone")
	nonce, sig := r.Nonce, d.sign(r.Nonce)
	tests := []struct {
		name string
		call func() error
		msg  string
	}{
		{"empty name", func() error { _, err := f.s.Begin(f.ctx, newDevice(t).pub, " ", ScopeOwner, KindClient); return err },
			"pairing: device name is empty"},
		{"long name", func() error {
			_, err := f.s.Begin(f.ctx, newDevice(t).pub, strings.Repeat("é", 65), ScopeOwner, KindClient)
			return err
		},
			"pairing: device name is longer than 64 characters"},
		{"control char", func() error { _, err := f.s.Begin(f.ctx, newDevice(t).pub, "a\nb", ScopeOwner, KindClient); return err },
			"pairing: device name has a control or non-printable character"},
		{"bad utf-8", func() error {
			_, err := f.s.Begin(f.ctx, newDevice(t).pub, "a\xffb", ScopeOwner, KindClient)
			return err
		},
			"pairing: device name is not valid UTF-8"},
		{"short key", func() error { _, err := f.s.Begin(f.ctx, d.pub[:31], "x", ScopeOwner, KindClient); return err },
			"pairing: public key must be 32 bytes, got 31"},
		{"nil key", func() error { _, err := f.s.Begin(f.ctx, nil, "x", ScopeOwner, KindClient); return err },
			"pairing: public key must be 32 bytes, got 0"},
		{"short code", func() error { return f.s.Approve(f.ctx, "123", Principal(first.id)) },
			"pairing: request code must be 6 characters"},
		{"code alphabet", func() error { return f.s.Approve(f.ctx, "0OI1!!", Principal(first.id)) },
			"pairing: request code has a character outside " + codeAlphabet},
		{"reject bad code", func() error { return f.s.Reject(f.ctx, "", Principal(first.id)) },
			"pairing: request code must be 6 characters"},
		{"setup code length", func() error { return f.s.ApproveWithSetupCode(f.ctx, r.Code, "ABC") },
			"pairing: setup code must be 8 characters"},
		{"device id", func() error { _, _, err := f.s.Complete(f.ctx, "short", nonce, sig); return err },
			"pairing: device id must be 26 characters, got 5"},
		{"device id alphabet", func() error { _, _, err := f.s.Complete(f.ctx, strings.ToUpper(d.id), nonce, sig); return err },
			"pairing: device id is not lowercase base32"},
		{"nonce size", func() error { _, _, err := f.s.Complete(f.ctx, d.id, nonce[:8], sig); return err },
			"pairing: nonce must be 32 bytes, got 8"},
		{"sig size", func() error { _, _, err := f.s.Complete(f.ctx, d.id, nonce, sig[:10]); return err },
			"pairing: signature must be 64 bytes, got 10"},
		{"revoke id", func() error { return f.s.Revoke(f.ctx, "", Principal(first.id)) },
			"pairing: device id must be 26 characters, got 0"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			wantErr(t, tt.call(), errs.Invalid, tt.msg)
			pend, err := f.s.Pending(f.ctx)
			if err != nil || len(pend) != 1 || pend[0].State != Pending {
				t.Fatalf("Pending changed: %+v, %v", pend, err)
			}
			if devs, _ := f.s.Devices(f.ctx); len(devs) != 1 || !devs[0].RevokedAt.IsZero() {
				t.Fatalf("Devices changed: %+v", devs)
			}
		})
	}
}

func randomBytes(n int) []byte {
	b := make([]byte, n)
	rand.Read(b)
	return b
}
