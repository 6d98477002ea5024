package deploytest

import (
	"errors"
	"os/exec"
	"strings"
	"testing"
)

// A /proc/<pid>/status of a process of the deployment (trimmed).
const hardenedStatus = `Name:	contractual-pol
Umask:	0022
State:	S (sleeping)
Uid:	10003	10003	10003	10003
Gid:	10000	10000	10000	10000
FDSize:	64
Groups:	10000 
CapInh:	0000000000000000
CapPrm:	0000000000000000
CapEff:	0000000000000000
CapBnd:	0000000000000000
CapAmb:	0000000000000000
NoNewPrivs:	1
Seccomp:	2
Seccomp_filters:	1
`

// A root process with docker's default capabilities and no seccomp.
const rootStatus = `Uid:	0	0	0	0
Gid:	0	0	0	0
Groups:	
CapEff:	00000000a80425fb
NoNewPrivs:	0
Seccomp:	0
`

func TestParseStatus(t *testing.T) {
	s, err := parseStatus(strings.NewReader(hardenedStatus))
	if err != nil {
		t.Fatal(err)
	}
	if s.UID != [4]int{10003, 10003, 10003, 10003} || s.GID != [4]int{10000, 10000, 10000, 10000} ||
		len(s.Groups) != 1 || s.Groups[0] != 10000 || s.CapEff != 0 || s.NoNewPrivs != 1 || s.Seccomp != 2 {
		t.Errorf("hardened: %+v", s)
	}
	s, err = parseStatus(strings.NewReader(rootStatus))
	if err != nil {
		t.Fatal(err)
	}
	if s.UID != [4]int{} || len(s.Groups) != 0 || s.CapEff != 0xa80425fb || s.NoNewPrivs != 0 || s.Seccomp != 0 {
		t.Errorf("root: %+v", s)
	}
}

// TestParseStatusIncomplete: a status without a line the checks read, or
// with one that does not parse, is an error, never a zero that would pass
// for "no capabilities".
func TestParseStatusIncomplete(t *testing.T) {
	for name, text := range map[string]string{
		"no CapEff":     strings.Replace(hardenedStatus, "CapEff:\t0000000000000000\n", "", 1),
		"no Seccomp":    strings.Replace(hardenedStatus, "Seccomp:\t2\n", "", 1),
		"no Uid":        strings.Replace(hardenedStatus, "Uid:\t10003\t10003\t10003\t10003\n", "", 1),
		"bad CapEff":    strings.Replace(hardenedStatus, "CapEff:\t0000000000000000", "CapEff:\tzz", 1),
		"short Uid":     strings.Replace(hardenedStatus, "Uid:\t10003\t10003\t10003\t10003", "Uid:\t10003", 1),
		"bad NoNewPriv": strings.Replace(hardenedStatus, "NoNewPrivs:\t1", "NoNewPrivs:\tyes", 1),
	} {
		if s, err := parseStatus(strings.NewReader(text)); err == nil {
			t.Errorf("%s: no error (%+v)", name, s)
		}
	}
}

// TestFind: what is missing is said, in order: root, the docker command,
// its daemon, the compose plugin, a static busybox (only when the test
// makes the builder image).
func TestFind(t *testing.T) {
	found := func(name string) (string, error) { return "/usr/bin/" + name, nil }
	missing := func(string) (string, error) { return "", exec.ErrNotFound }
	noBusybox := func(name string) (string, error) {
		if name == "busybox" {
			return "", exec.ErrNotFound
		}
		return found(name)
	}
	// ok answers docker, and ldd as for a static binary.
	ok := func(name string, _ ...string) ([]byte, error) {
		if name == "ldd" {
			return []byte("\tnot a dynamic executable\n"), errors.New("exit status 1")
		}
		return []byte("28.2.2\n"), nil
	}
	failOn := func(word string) func(string, ...string) ([]byte, error) {
		return func(name string, args ...string) ([]byte, error) {
			if name == word || args[0] == word {
				return []byte("boom\nmore"), errors.New("exit status 1")
			}
			return ok(name, args...)
		}
	}
	dynamic := func(name string, args ...string) ([]byte, error) {
		if name == "ldd" {
			return []byte("\tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6\n"), nil
		}
		return ok(name, args...)
	}
	for _, c := range []struct {
		name     string
		lookPath func(string) (string, error)
		run      func(string, ...string) ([]byte, error)
		euid     int
		builder  bool
		want     string // in the message; "" means found
	}{
		{"all there", found, ok, 0, true, ""},
		{"not root", found, ok, 1000, true, "run as root"},
		{"no docker", missing, ok, 0, true, "no docker on PATH"},
		{"no daemon", found, failOn("version"), 0, true, "daemon does not answer (exit status 1: boom)"},
		{"no compose", found, failOn("compose"), 0, true, "no Compose v2 plugin"},
		{"no busybox", noBusybox, ok, 0, true, "install busybox-static"},
		{"dynamic busybox", found, dynamic, 0, true, "/usr/bin/busybox is not static"},
		{"a Go image instead", noBusybox, ok, 0, false, ""},
	} {
		docker, msg := find(c.lookPath, c.run, c.euid, c.builder)
		switch {
		case c.want == "" && (msg != "" || docker != "/usr/bin/docker"):
			t.Errorf("%s: %q, %q", c.name, docker, msg)
		case c.want != "" && (docker != "" || !strings.Contains(msg, c.want)):
			t.Errorf("%s: %q, %q; want a message with %q", c.name, docker, msg, c.want)
		}
	}
}

func TestParseProbe(t *testing.T) {
	out := `{"url":"https://policy:8443/x","status":0,"error":"remote error: tls: certificate required"}
{"url":"http://gateway:8080/y","status":401,"body":"{\"code\":\"unauthenticated\"}"}
`
	rs, err := ParseProbe([]byte(out))
	if err != nil || len(rs) != 2 || rs[0].Status != 0 || !strings.Contains(rs[0].Error, "certificate required") ||
		rs[1].Status != 401 || !strings.Contains(rs[1].Body, "unauthenticated") {
		t.Errorf("%+v, %v", rs, err)
	}
	if _, err := ParseProbe([]byte(out + "not json\n")); err == nil {
		t.Error("garbage after the results: no error")
	}
}

// TestFindCompose: `docker compose config` needs docker and the plugin,
// and neither root nor a daemon.
func TestFindCompose(t *testing.T) {
	found := func(name string) (string, error) { return "/usr/bin/" + name, nil }
	missing := func(string) (string, error) { return "", exec.ErrNotFound }
	ok := func(string, ...string) ([]byte, error) { return []byte("2.40.3\n"), nil }
	noPlugin := func(string, ...string) ([]byte, error) {
		return []byte("docker: unknown command: docker compose"), errors.New("exit status 1")
	}
	if msg := findCompose(found, ok); msg != "" {
		t.Errorf("all there: %q", msg)
	}
	if msg := findCompose(missing, ok); !strings.Contains(msg, "no docker on PATH") {
		t.Errorf("no docker: %q", msg)
	}
	if msg := findCompose(found, noPlugin); !strings.Contains(msg, "no Compose v2 plugin") {
		t.Errorf("no plugin: %q", msg)
	}
}
