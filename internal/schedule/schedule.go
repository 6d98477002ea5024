// Package schedule computes when jobs fire: cron expressions interpreted in
// an IANA time zone, one-shot times, and what a durable scheduler runs after
// downtime under a misfire policy. It is pure: every function takes the
// times it needs as arguments and never reads the wall clock.
//
// A cron expression names wall-clock times in its zone; fire times are
// instants, returned in UTC. Where daylight saving time makes a wall time
// not exist or exist twice, the rule depends on whether the schedule fires
// in every hour (its hour field matches all 24 hours, such as @hourly or
// "*/15 * * * *"):
//
//   - A schedule with chosen hours (such as "30 2 * * *") names moments of
//     the local day. A wall time skipped by a spring-forward gap fires once,
//     at the first instant after the gap (several skipped times, and a match
//     at that instant itself, fire once together). A wall time repeated by a
//     fall-back fires once, at its first occurrence.
//   - A schedule that fires every hour follows elapsed time: the wall times
//     of a gap do not exist and do not fire, and a repeated hour fires in both
//     of its occurrences, so @hourly fires every real hour and "*/15 * * * *"
//     every 15 real minutes through both transitions.
//
// This is Vixie cron's behaviour (it runs skipped fixed-time jobs right after
// the change, repeated fixed-time jobs once, and wildcard jobs by the new
// time), made exact and independent of when the process happens to wake.
//
// When both day-of-month and day-of-week are restricted (neither is a bare
// "*"), a day matches if either matches, as in every cron since Vixie's:
// "0 0 13 * FRI" fires on every 13th and on every Friday.
package schedule

import (
	_ "time/tzdata" // zones work in a scratch container, without /usr/share/zoneinfo

	"math"
	"math/bits"
	"time"
)

// A Trigger says when a job fires.
type Trigger interface {
	// Next returns the first fire time strictly after after, in UTC, or the
	// zero Time if the trigger never fires again.
	Next(after time.Time) time.Time
}

// horizon bounds a search for the next fire time. Every expression Parse
// accepts matches within it (the rarest, February 29th, recurs within 8
// years).
const horizon = 10 * 366 * 24 * time.Hour

// Cron is a parsed cron expression in a time zone. It is immutable and safe
// for concurrent use.
type Cron struct {
	expr string
	loc  *time.Location
	// Bit sets of the values each field matches; dow bit 0 is Sunday.
	minute, hour, dom, month, dow uint64
	// dayOr: both day fields are restricted, so a day matches if either does.
	dayOr bool
	// everyHour: the hour field matches all 24 hours (see the package doc).
	everyHour bool
}

// String returns the expression as written and its zone.
func (c *Cron) String() string { return c.expr + " (" + c.loc.String() + ")" }

// Location returns the zone the expression is interpreted in.
func (c *Cron) Location() *time.Location { return c.loc }

// Next returns the first fire time strictly after after, in UTC.
func (c *Cron) Next(after time.Time) time.Time {
	// Walk the zone's periods of constant offset; within one, wall time and
	// instant differ by a constant, so the search is on wall time alone.
	t := after.In(c.loc)
	strict := true
	for t.Sub(after) < horizon {
		start, end := t.ZoneBounds()
		if !end.IsZero() && !end.After(t) {
			// Past a zone's last listed transition, Go computes periods from
			// its rule and, in a leap year, ends the year a day early: for the
			// last day of the year it reports a period that ended at or before
			// t (golang/go#81583). No rule changes the offset on December
			// 31st, so step over that day at the offset of t.
			end = t.Add(24 * time.Hour)
		}
		_, off := t.Zone()
		wall := t.Unix() + int64(off)
		from := ceilMinute(wall) // the period's start: instants >= t
		if strict {
			from = wall - mod(wall, 60) + 60 // instants > after
		}
		limit := wall + int64(horizon/time.Second)
		if !end.IsZero() {
			limit = end.Unix() + int64(off)
		}
		// Wall times before repeatEnd occurred already in the previous period.
		repeatEnd := int64(math.MinInt64)
		if !start.IsZero() && !c.everyHour {
			if _, prevOff := start.Add(-time.Second).Zone(); prevOff > off {
				repeatEnd = start.Unix() + int64(prevOff)
			}
		}
		for {
			w, ok := c.nextWall(from, limit)
			if !ok {
				break
			}
			if w < repeatEnd {
				from = ceilMinute(repeatEnd)
				continue
			}
			return time.Unix(w-int64(off), 0).UTC()
		}
		if end.IsZero() {
			return time.Time{}
		}
		next := end.In(c.loc)
		if _, nextOff := next.Zone(); nextOff > off && !c.everyHour {
			// A spring-forward gap: its matching wall times fire at end.
			if _, ok := c.nextWall(ceilMinute(limit), end.Unix()+int64(nextOff)); ok {
				return end.UTC()
			}
		}
		t, strict = next, false
	}
	return time.Time{}
}

// nextWall returns the first matching minute-aligned wall time w with
// from <= w < limit. Wall times are seconds since the epoch of the civil
// time, as if the zone were UTC; from is minute-aligned.
func (c *Cron) nextWall(from, limit int64) (int64, bool) {
	t := time.Unix(from, 0).UTC()
	lim := time.Unix(limit, 0).UTC()
	for t.Before(lim) {
		y, mo, d := t.Date()
		if c.month&(1<<mo) == 0 {
			t = time.Date(y, mo+1, 1, 0, 0, 0, 0, time.UTC)
			continue
		}
		if !c.dayMatches(d, t.Weekday()) {
			t = time.Date(y, mo, d+1, 0, 0, 0, 0, time.UTC)
			continue
		}
		h, m := t.Hour(), t.Minute()
		if nh, ok := nextBit(c.hour, h); !ok {
			t = time.Date(y, mo, d+1, 0, 0, 0, 0, time.UTC)
			continue
		} else if nh != h {
			t = time.Date(y, mo, d, nh, 0, 0, 0, time.UTC)
			continue
		}
		nm, ok := nextBit(c.minute, m)
		if !ok {
			t = time.Date(y, mo, d, h+1, 0, 0, 0, time.UTC)
			continue
		}
		t = time.Date(y, mo, d, h, nm, 0, 0, time.UTC)
		if !t.Before(lim) {
			break
		}
		return t.Unix(), true
	}
	return 0, false
}

// matches reports whether a wall time (read in any zone) matches the
// expression, ignoring seconds.
func (c *Cron) matches(w time.Time) bool {
	return c.month&(1<<w.Month()) != 0 && c.dayMatches(w.Day(), w.Weekday()) &&
		c.hour&(1<<w.Hour()) != 0 && c.minute&(1<<w.Minute()) != 0
}

func (c *Cron) dayMatches(d int, wd time.Weekday) bool {
	dom, dow := c.dom&(1<<d) != 0, c.dow&(1<<wd) != 0
	if c.dayOr {
		return dom || dow
	}
	return dom && dow
}

// nextBit returns the lowest set bit of set at or above i.
func nextBit(set uint64, i int) (int, bool) {
	rest := set >> i << i
	if rest == 0 {
		return 0, false
	}
	return bits.TrailingZeros64(rest), true
}

func mod(a, b int64) int64 {
	r := a % b
	if r < 0 {
		r += b
	}
	return r
}

func ceilMinute(w int64) int64 { return w + mod(-w, 60) }

// At is a one-shot trigger: it fires once, at T.
type At struct{ T time.Time }

// Next returns T in UTC if it is after after, else the zero Time.
func (a At) Next(after time.Time) time.Time {
	if a.T.After(after) {
		return a.T.UTC()
	}
	return time.Time{}
}
