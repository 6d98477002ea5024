package pairing

import "time"

// Kind is how a device keeps its token, which sets the token's Lifetime.
type Kind uint8

// The kinds of device.
const (
	// KindClient sends its token as a bearer token: the CLI, an agent's
	// machine, curl.
	KindClient Kind = iota
	// KindBrowser keeps its token in the Control UI's session cookie.
	KindBrowser
)

func (k Kind) String() string {
	if k == KindBrowser {
		return "browser"
	}
	return "client"
}

// parseKind reads a stored kind; anything unknown is a client.
func parseKind(s string) Kind {
	if s == "browser" {
		return KindBrowser
	}
	return KindClient
}

// Lifetime is how long a device token lasts.
type Lifetime struct {
	// Idle: the token expires this long after its last use.
	Idle time.Duration
	// Max: and at the latest this long after pairing; 0 is no cap.
	Max time.Duration
}

// The default lifetimes. A browser's token is a cookie in a profile that
// may be synced, backed up or left signed in on a borrowed machine: it
// lapses after 30 days unused and 90 days after pairing at the latest
// (re-pairing then takes one approval). A client's token sits 0600 on a
// machine the owner runs, often unattended (an agent): a fixed cap would
// break it on a schedule with nobody there to approve it again, so it only
// lapses after 90 days unused, which retires forgotten machines.
var (
	DefaultBrowserLifetime = Lifetime{Idle: 30 * 24 * time.Hour, Max: 90 * 24 * time.Hour}
	DefaultClientLifetime  = Lifetime{Idle: 90 * 24 * time.Hour}
)

// renewEvery is how often, at most, a token's use is written down: its
// expiry moves at most once an hour, so that authenticating stays a read.
const renewEvery = time.Hour

// expiry returns when a token paired at paired and last used at used
// expires.
func (l Lifetime) expiry(paired, used time.Time) time.Time {
	exp := used.Add(l.Idle)
	if l.Max > 0 && paired.Add(l.Max).Before(exp) {
		exp = paired.Add(l.Max)
	}
	return exp
}

// lifetime returns the lifetime of kind k's tokens.
func (s *Store) lifetime(k Kind) Lifetime {
	if k == KindBrowser {
		return s.opts.Browser
	}
	return s.opts.Client
}
