package pairing

import (
	"context"
	"testing"
	"time"
)

// BenchmarkAuthenticate measures checking a device token that is in
// steady use: one prepared read, since its renewal is written at most once
// an hour (renewEvery). The clock moves a millisecond a call.
//
//	go test -run '^$' -bench Authenticate ./internal/pairing
func BenchmarkAuthenticate(b *testing.B) {
	clk := newClock()
	s, err := Open(context.Background(), Config{Dir: b.TempDir(), Now: clk.Now}, Deps{Audit: openLog(b)})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	code, _, _ := s.SetupCode(context.Background())
	d := newDevice(b)
	r, err := s.Begin(context.Background(), d.pub, "bench", ScopeOwner, KindClient)
	if err != nil {
		b.Fatal(err)
	}
	if err := s.ApproveWithSetupCode(context.Background(), r.Code, code); err != nil {
		b.Fatal(err)
	}
	tok, _, err := s.Complete(context.Background(), d.id, r.Nonce, d.sign(r.Nonce))
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	b.ResetTimer()
	for b.Loop() {
		clk.Advance(time.Millisecond)
		if _, err := s.Authenticate(ctx, tok, "bench"); err != nil {
			b.Fatal(err)
		}
	}
}
