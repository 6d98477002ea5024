package pairing

import (
	"crypto/rand"
	"crypto/sha256"
	"strings"
	"sync"
	"time"

	"github.com/contractual/contractual/internal/errs"
)

// codeAlphabet has 32 symbols without the look-alikes 0/O and 1/I, so a byte
// modulo 32 is uniform.
const codeAlphabet = "23456789ABCDEFGHJKLMNPQRSTUVWXYZ"

// Code lengths: a setup code is 8 symbols (40 bits), a request code 6
// (30 bits).
const (
	setupCodeLen   = 8
	requestCodeLen = 6
)

// newCode returns n random symbols of codeAlphabet.
func newCode(n int) string {
	b := make([]byte, n)
	rand.Read(b) // never fails (crypto/rand, Go ≥ 1.24)
	for i := range b {
		b[i] = codeAlphabet[int(b[i])%len(codeAlphabet)]
	}
	return string(b)
}

// normalizeCode uppercases a typed code and drops spaces and dashes, then
// checks its length and alphabet; what names the code in messages.
func normalizeCode(code string, n int, what string) (string, error) {
	c := strings.ToUpper(strings.NewReplacer(" ", "", "-", "").Replace(code))
	if len(c) != n {
		return "", errs.E(errs.Invalid, "pairing: %s must be %d characters", what, n)
	}
	for i := 0; i < len(c); i++ {
		if !strings.ContainsRune(codeAlphabet, rune(c[i])) {
			return "", errs.E(errs.Invalid, "pairing: %s has a character outside %s", what, codeAlphabet)
		}
	}
	return c, nil
}

// hash is SHA-256 as a slice.
func hash(b []byte) []byte {
	sum := sha256.Sum256(b)
	return sum[:]
}

// limiterKeys bounds the keys a limiter tracks, so that a flood of
// distinct sources cannot grow it: past it, a new key is not tracked (its
// events still count against the overall limits, which have one key).
const limiterKeys = 4096

// limiter counts events per key in a sliding window, in memory. It keeps
// at most the newest max events of each key (enough to tell whether the
// key is full) and at most limiterKeys keys, so its size is bounded
// whatever the traffic.
type limiter struct {
	mu     sync.Mutex
	max    int
	window time.Duration
	events map[string][]time.Time
}

// newLimiter allows max events per key in any window.
func newLimiter(max int, window time.Duration) *limiter {
	return &limiter{max: max, window: window, events: map[string][]time.Time{}}
}

// full reports whether key has max events in the window ending at now.
func (l *limiter) full(key string, now time.Time) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.prune(key, now)) >= l.max
}

// add records an event for key at now and reports whether key was already
// full before it.
func (l *limiter) add(key string, now time.Time) (wasFull bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	ev := l.prune(key, now)
	if ev == nil && len(l.events) >= limiterKeys {
		for k := range l.events {
			l.prune(k, now)
		}
		if len(l.events) >= limiterKeys {
			return false
		}
	}
	wasFull = len(ev) >= l.max
	ev = append(ev, now)
	if len(ev) > l.max {
		ev = ev[len(ev)-l.max:]
	}
	l.events[key] = ev
	return wasFull
}

// prune drops key's events older than the window and returns the rest.
func (l *limiter) prune(key string, now time.Time) []time.Time {
	ev := l.events[key]
	i := 0
	for i < len(ev) && !ev[i].After(now.Add(-l.window)) {
		i++
	}
	ev = ev[i:]
	if len(ev) == 0 {
		delete(l.events, key)
		return nil
	}
	l.events[key] = ev
	return ev
}
