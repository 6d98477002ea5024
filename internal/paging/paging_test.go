package paging

import (
	"encoding/base64"
	"strings"
	"testing"

	"github.com/contractual/contractual/internal/errs"
)

func TestSize(t *testing.T) {
	for _, c := range []struct {
		in   int32
		want int
	}{{0, DefaultSize}, {1, 1}, {MaxSize, MaxSize}, {MaxSize + 1, MaxSize}, {1 << 30, MaxSize}} {
		if got, err := Size(c.in); err != nil || got != c.want {
			t.Errorf("Size(%d) = %d, %v; want %d", c.in, got, err, c.want)
		}
	}
	if _, err := Size(-1); errs.KindOf(err) != errs.Invalid {
		t.Errorf("Size(-1): %v", err)
	}
}

func TestToken(t *testing.T) {
	type key struct {
		At  int64  `json:"a"`
		Row string `json:"r"`
	}
	tok := Encode("devices", "state=1", key{At: 42, Row: "x"})
	var got key
	if ok, err := Decode(tok, "devices", "state=1", &got); !ok || err != nil || got != (key{42, "x"}) {
		t.Fatalf("round trip: %v %v %+v", ok, err, got)
	}
	if ok, err := Decode("", "devices", "state=1", &got); ok || err != nil {
		t.Errorf("empty token: %v %v", ok, err)
	}
	var n int64
	for name, c := range map[string]struct {
		tok, list, filter string
		key               any
	}{
		"another list":       {tok, "contracts", "state=1", &got},
		"other filters":      {tok, "devices", "state=2", &got},
		"not base64":         {"!!!", "devices", "state=1", &got},
		"not JSON":           {base64.RawURLEncoding.EncodeToString([]byte("seq 10")), "devices", "state=1", &got},
		"trailing data":      {base64.RawURLEncoding.EncodeToString([]byte(`{"l":"devices"} {}`)), "devices", "state=1", &got},
		"another key's type": {tok, "devices", "state=1", &n},
		"too long":           {strings.Repeat("A", maxToken+1), "devices", "state=1", &got},
		"padded base64":      {tok + "=", "devices", "state=1", &got},
	} {
		if _, err := Decode(c.tok, c.list, c.filter, c.key); errs.KindOf(err) != errs.Invalid || !strings.Contains(err.Error(), "page_token") {
			t.Errorf("%s: %v", name, err)
		}
	}
}
