package egress

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"strings"
	"testing"

	"github.com/contractual/contractual/internal/errs"
)

// fakeResolver answers from a map and counts lookups.
type fakeResolver struct {
	answers map[string][]string
	asked   []string
}

func (r *fakeResolver) LookupNetIP(_ context.Context, network, host string) ([]netip.Addr, error) {
	r.asked = append(r.asked, network+" "+host)
	texts, ok := r.answers[host]
	if !ok {
		return nil, errors.New("no such host")
	}
	out := make([]netip.Addr, len(texts))
	for i, s := range texts {
		out[i] = netip.MustParseAddr(s)
	}
	return out, nil
}

// recordingDial stands in for the final connect and remembers its address.
type recordingDial struct{ addrs []string }

func (d *recordingDial) dial(_ context.Context, network, address string) (net.Conn, error) {
	d.addrs = append(d.addrs, network+" "+address)
	c1, c2 := net.Pipe()
	c2.Close()
	return c1, nil
}

func TestPublicDialer(t *testing.T) {
	answers := map[string][]string{
		"public.example.com.":   {"93.184.215.14", "2606:2800:21f:cb07:6820:80da:af6b:8b2c"},
		"hosts.example.com.":    {"::ffff:93.184.215.14"}, // how Go reports /etc/hosts IPv4
		"loop.example.com.":     {"127.0.0.1"},
		"private.example.com.":  {"10.0.0.5"},
		"meta.example.com.":     {"169.254.169.254"},
		"cgnat.example.com.":    {"100.64.1.1"},
		"mapped.example.com.":   {"::ffff:127.0.0.1"},
		"mapped6.example.com.":  {"::ffff:10.0.0.1"},
		"ula.example.com.":      {"fd00::1"},
		"v6loop.example.com.":   {"::1"},
		"nat64.example.com.":    {"64:ff9b::a9fe:a9fe"},
		"mixed.example.com.":    {"93.184.215.14", "10.0.0.1"},
		"mixedlast.example.com": {"93.184.215.14"}, // never asked: names are absolute
		"empty.example.com.":    {},
	}
	tests := []struct {
		address string
		dialed  string // the address connected to; "" means refused
		kind    errs.Kind
	}{
		{"public.example.com:443", "tcp 93.184.215.14:443", 0},
		{"PUBLIC.example.com.:443", "tcp 93.184.215.14:443", 0},
		{"hosts.example.com:80", "tcp 93.184.215.14:80", 0},
		{"8.8.8.8:443", "tcp 8.8.8.8:443", 0},
		{"[2606:4700:4700::1111]:443", "tcp [2606:4700:4700::1111]:443", 0},

		{"loop.example.com:443", "", errs.PermissionDenied},
		{"private.example.com:443", "", errs.PermissionDenied},
		{"meta.example.com:80", "", errs.PermissionDenied},
		{"cgnat.example.com:443", "", errs.PermissionDenied},
		{"mapped.example.com:443", "", errs.PermissionDenied},
		{"mapped6.example.com:443", "", errs.PermissionDenied},
		{"ula.example.com:443", "", errs.PermissionDenied},
		{"v6loop.example.com:443", "", errs.PermissionDenied},
		{"nat64.example.com:443", "", errs.PermissionDenied},
		{"mixed.example.com:443", "", errs.PermissionDenied},
		{"127.0.0.1:443", "", errs.PermissionDenied},
		{"[::1]:443", "", errs.PermissionDenied},
		{"[::ffff:127.0.0.1]:443", "", errs.PermissionDenied},
		{"[::ffff:8.8.8.8]:443", "", errs.PermissionDenied},
		{"2130706433:80", "", errs.PermissionDenied},
		{"0x7f000001:80", "", errs.PermissionDenied},
		{"127.1:80", "", errs.PermissionDenied},
		{"localhost:80", "", errs.PermissionDenied},
		{"metadata.google.internal:80", "", errs.PermissionDenied},
		{"empty.example.com:443", "", errs.Unavailable},
		{"unknown.example.com:443", "", errs.Unavailable},
		{"public.example.com", "", errs.Invalid},
		{"public.example.com:0", "", errs.Invalid},
	}
	for _, tt := range tests {
		t.Run(tt.address, func(t *testing.T) {
			res := &fakeResolver{answers: answers}
			rd := &recordingDial{}
			d := PublicDialer{Resolver: res, dial: rd.dial}
			conn, err := d.DialContext(context.Background(), "tcp", tt.address)
			if tt.dialed != "" {
				if err != nil {
					t.Fatalf("DialContext(%s) = %v", tt.address, err)
				}
				conn.Close()
				if len(rd.addrs) != 1 || rd.addrs[0] != tt.dialed {
					t.Fatalf("dialled %v, want [%s]", rd.addrs, tt.dialed)
				}
				if len(res.asked) > 1 {
					t.Fatalf("resolved %d times (%v), want at most once", len(res.asked), res.asked)
				}
				return
			}
			if err == nil || errs.KindOf(err) != tt.kind {
				t.Fatalf("DialContext(%s) = %v, want a %v error", tt.address, err, tt.kind)
			}
			if len(rd.addrs) != 0 {
				t.Fatalf("dialled %v after refusing", rd.addrs)
			}
		})
	}
}

func TestPublicDialerNetworks(t *testing.T) {
	res := &fakeResolver{answers: map[string][]string{"dual.example.com.": {"93.184.215.14", "2606:4700:4700::1111"}}}
	for _, tt := range []struct{ network, want string }{
		{"tcp4", "tcp 93.184.215.14:443"},
		{"tcp6", "tcp [2606:4700:4700::1111]:443"},
	} {
		rd := &recordingDial{}
		d := PublicDialer{Resolver: res, dial: rd.dial}
		conn, err := d.DialContext(context.Background(), tt.network, "dual.example.com:443")
		if err != nil {
			t.Fatal(err)
		}
		conn.Close()
		if len(rd.addrs) != 1 || rd.addrs[0] != tt.want {
			t.Errorf("%s dialled %v, want %s", tt.network, rd.addrs, tt.want)
		}
	}
	_, err := PublicDialer{Resolver: res}.DialContext(context.Background(), "udp", "dual.example.com:53")
	if !errs.Is(err, errs.PermissionDenied) {
		t.Errorf("udp: %v, want PermissionDenied", err)
	}
}

func TestPublicDialerTriesNextAddress(t *testing.T) {
	res := &fakeResolver{answers: map[string][]string{"two.example.com.": {"93.184.215.14", "8.8.8.8"}}}
	var tried []string
	d := PublicDialer{Resolver: res, dial: func(_ context.Context, _, address string) (net.Conn, error) {
		tried = append(tried, address)
		if len(tried) == 1 {
			return nil, errors.New("connection refused")
		}
		c1, c2 := net.Pipe()
		c2.Close()
		return c1, nil
	}}
	conn, err := d.DialContext(context.Background(), "tcp", "two.example.com:443")
	if err != nil {
		t.Fatal(err)
	}
	conn.Close()
	if strings.Join(tried, ",") != "93.184.215.14:443,8.8.8.8:443" {
		t.Fatalf("tried %v", tried)
	}
}

// TestControlPublic checks the last-moment socket check, which also guards
// the real net.Dialer path.
func TestControlPublic(t *testing.T) {
	for addr, ok := range map[string]bool{
		"93.184.215.14:443":      true,
		"[2606:4700::1111]:443":  true,
		"127.0.0.1:443":          false,
		"[::1]:443":              false,
		"[::ffff:127.0.0.1]:443": false,
		"10.0.0.1:80":            false,
		"not-an-address":         false,
	} {
		err := controlPublic("tcp", addr, nil)
		if (err == nil) != ok {
			t.Errorf("controlPublic(%s) = %v, want ok=%v", addr, err, ok)
		}
	}
}

// TestPublicDialerRealConnectRefusesLoopback goes through the real
// net.Dialer: a loopback listener is not reachable, however it is named.
func TestPublicDialerRealConnectRefusesLoopback(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	res := &fakeResolver{answers: map[string][]string{"rebind.example.com.": {"127.0.0.1"}}}
	for _, addr := range []string{ln.Addr().String(), "rebind.example.com:" + port, "[::ffff:127.0.0.1]:" + port} {
		conn, err := PublicDialer{Resolver: res}.DialContext(context.Background(), "tcp", addr)
		if err == nil {
			conn.Close()
			t.Fatalf("DialContext(%s) connected to loopback", addr)
		}
		if !errs.Is(err, errs.PermissionDenied) {
			t.Fatalf("DialContext(%s) = %v, want PermissionDenied", addr, err)
		}
	}
}
