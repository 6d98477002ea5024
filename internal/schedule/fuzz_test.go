package schedule

import (
	"testing"
	"time"
)

var fuzzZones = []string{"UTC", "Europe/Berlin", "America/New_York", "Australia/Lord_Howe",
	"America/Sao_Paulo", "Pacific/Apia", "Asia/Kathmandu"}

// oracle finds the first fire time after after by brute force: it steps
// through instants minute by minute (every zone in fuzzZones has whole-minute
// offsets since 1970) and applies the package doc's rules directly. It gives
// up after steps minutes.
func oracle(c *Cron, after time.Time, steps int) (time.Time, bool) {
	wall := func(t time.Time) time.Time {
		return time.Date(t.Year(), t.Month(), t.Day(), t.Hour(), t.Minute(), 0, 0, time.UTC)
	}
	u := after.UTC().Truncate(time.Minute).Add(time.Minute)
	for range steps {
		lu, prev := u.In(c.loc), u.Add(-time.Minute).In(c.loc)
		_, o1 := prev.Zone()
		_, o2 := lu.Zone()
		if o2 > o1 && !c.everyHour {
			for w := wall(prev).Add(time.Minute); w.Before(wall(lu)); w = w.Add(time.Minute) {
				if c.matches(w) {
					return u, true
				}
			}
		}
		if c.matches(lu) {
			seen := false
			for _, d := range []time.Duration{30 * time.Minute, time.Hour, 2 * time.Hour} {
				seen = seen || wall(u.Add(-d).In(c.loc)).Equal(wall(lu))
			}
			if c.everyHour || !seen {
				return u, true
			}
		}
		u = u.Add(time.Minute)
	}
	return time.Time{}, false
}

// FuzzNext checks that Next is strictly increasing and agrees with the
// brute-force oracle, for any expression Parse accepts, in zones with
// hour, half-hour, midnight and whole-day transitions.
func FuzzNext(f *testing.F) {
	for _, s := range []string{"* * * * *", "*/15 * * * *", "30 2 * * *", "0 2,3 * * *", "*/10 1-2 * * *",
		"0 0 * * *", "@hourly", "5 * * * *", "0 0 13 * FRI", "0 0 31 * *", "0 12 29 2 *", "45 1 * * SUN",
		"0,30 0-3 * MAR,APR,OCT,NOV *", "15/20 */3 1-7 * MON"} {
		for i := range fuzzZones {
			for _, at := range []string{"2024-03-10T06:00:00Z", "2024-11-03T04:30:00Z", "2024-10-26T23:50:00Z",
				"2024-10-05T15:00:00Z", "2024-04-06T14:20:00Z", "2011-12-29T09:00:00Z", "2018-11-03T02:00:00Z", "2019-02-16T01:00:00Z"} {
				f.Add(s, uint8(i), mustTime(f, at).Unix())
			}
		}
	}
	f.Fuzz(func(t *testing.T, expr string, zone uint8, unix int64) {
		c, err := Parse(expr, fuzzZones[int(zone)%len(fuzzZones)])
		if err != nil {
			return
		}
		// 1970 to 2100, where the zones' offsets are whole minutes.
		after := time.Unix(mod(unix, 130*365*86400), 0).UTC()
		const steps = 3 * 24 * 60
		for range 4 {
			got := c.Next(after)
			if !got.After(after) {
				t.Fatalf("%s: Next(%v) = %v, not after", c, after, got)
			}
			if want, ok := oracle(c, after, steps); ok && !got.Equal(want) {
				t.Fatalf("%s: Next(%v) = %v (%v); oracle says %v (%v)", c, after, got, got.In(c.loc), want, want.In(c.loc))
			} else if !ok && got.Sub(after) <= steps*time.Minute {
				t.Fatalf("%s: Next(%v) = %v (%v); oracle found nothing that soon", c, after, got, got.In(c.loc))
			}
			after = got
		}
	})
}
