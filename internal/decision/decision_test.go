package decision

import (
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	contractualv1 "github.com/contractual/contractual/contracts/gen/contractual/v1"
	"github.com/contractual/contractual/internal/errs"
)

func TestCanonical(t *testing.T) {
	tests := []struct{ in, want, err string }{
		{in: `{"b": 1, "a": [true, null, "x<y"]}`, want: `{"a":[true,null,"x<y"],"b":1}`},
		{in: " \n\"s\" ", want: `"s"`},
		{in: `{"n": 1.50, "m": -0, "big": 123456789012345678901234567890}`, want: `{"big":123456789012345678901234567890,"m":-0,"n":1.50}`},
		{in: `{"a": {"d": 1, "c": 2}}`, want: `{"a":{"c":2,"d":1}}`},
		{in: `{"a": 1, "a": 2}`, err: `duplicate key "a"`},
		{in: `{"a": 1} {}`, err: "data after the value"},
		{in: `{"a": }`, err: "not valid JSON"},
		{in: ``, err: "not valid JSON"},
		{in: strings.Repeat("[", 100) + strings.Repeat("]", 100), err: "nested deeper"},
	}
	for _, tt := range tests {
		got, err := Canonical([]byte(tt.in))
		if tt.err != "" {
			if err == nil || !strings.Contains(err.Error(), tt.err) || errs.KindOf(err) != errs.Invalid {
				t.Errorf("Canonical(%q) = %q, %v; want invalid error %q", tt.in, got, err, tt.err)
			}
			continue
		}
		if err != nil || string(got) != tt.want {
			t.Errorf("Canonical(%q) = %q, %v; want %q", tt.in, got, err, tt.want)
		}
	}
	if _, err := Canonical(make([]byte, MaxInputBytes+1)); errs.KindOf(err) != errs.Invalid {
		t.Errorf("oversized input: %v", err)
	}
}

func newPair(t *testing.T) (*Signer, *Verifier) {
	t.Helper()
	h, err := NewKeyset()
	if err != nil {
		t.Fatal(err)
	}
	// Round-trip the private keyset as policy stores it.
	priv, err := MarshalPrivate(h)
	if err != nil {
		t.Fatal(err)
	}
	if h, err = UnmarshalPrivate(priv); err != nil {
		t.Fatal(err)
	}
	s, err := NewSigner(h)
	if err != nil {
		t.Fatal(err)
	}
	pub, err := MarshalPublic(h)
	if err != nil {
		t.Fatal(err)
	}
	v, err := NewVerifier(pub)
	if err != nil {
		t.Fatal(err)
	}
	return s, v
}

func TestSignVerify(t *testing.T) {
	s, v := newPair(t)
	other, _ := newPair(t)
	now := time.Now()
	input := []byte(`{"text":"hi"}`)
	decide := func(mod func(*contractualv1.Decision)) *contractualv1.Decision {
		d := &contractualv1.Decision{
			Id: "d1", Verdict: contractualv1.Verdict_VERDICT_ALLOW, Tool: "textkit.slugify",
			InputHash: Hash(input), IssuedAt: timestamppb.New(now), ExpiresAt: timestamppb.New(now.Add(time.Minute)),
		}
		if mod != nil {
			mod(d)
		}
		return d
	}
	sign := func(s *Signer, d *contractualv1.Decision) *contractualv1.SignedDecision {
		sd, err := s.Sign(d)
		if err != nil {
			t.Fatal(err)
		}
		return sd
	}
	good := sign(s, decide(nil))
	if d, err := v.Verify(good, []byte(`{ "text": "hi" }`), now); err != nil || d.GetId() != "d1" {
		t.Fatalf("Verify = %v, %v", d, err)
	}
	tampered := sign(s, decide(nil))
	tampered.Decision[len(tampered.Decision)-1] ^= 1
	tests := []struct {
		name  string
		sd    *contractualv1.SignedDecision
		input string
		at    time.Time
		want  string
	}{
		{"nil", nil, `{"text":"hi"}`, now, "no decision"},
		{"other key", sign(other, decide(nil)), `{"text":"hi"}`, now, "bad signature"},
		{"tampered", tampered, `{"text":"hi"}`, now, "bad signature"},
		{"deny", sign(s, decide(func(d *contractualv1.Decision) { d.Verdict = contractualv1.Verdict_VERDICT_DENY })), `{"text":"hi"}`, now, "not allow"},
		{"expired", good, `{"text":"hi"}`, now.Add(time.Hour), "expired"},
		{"other input", good, `{"text":"ho"}`, now, "is for input"},
	}
	for _, tt := range tests {
		_, err := v.Verify(tt.sd, []byte(tt.input), tt.at)
		if err == nil || !strings.Contains(err.Error(), tt.want) || errs.KindOf(err) != errs.PermissionDenied {
			t.Errorf("%s: Verify error %v, want permission_denied %q", tt.name, err, tt.want)
		}
	}
}
