package schedule

import (
	"slices"
	"testing"
	"time"
)

func TestCatch(t *testing.T) {
	daily := mustParse(t, "0 2 * * *", "Europe/Berlin")
	hourly := mustParse(t, "@hourly", "America/New_York")
	once := At{T: mustTime(t, "2024-10-22T12:00:00Z")}
	for _, c := range []struct {
		name      string
		tr        Trigger
		last, now string
		catchUp   int
		missed    []string
		dropped   bool
		next      string
	}{
		{"skip", daily, "2024-10-20T02:00:00+02:00", "2024-10-23T10:00:00+02:00", 0,
			nil, true, "2024-10-24T02:00:00+02:00"},
		{"catch up 2 of 3: the latest", daily, "2024-10-20T02:00:00+02:00", "2024-10-23T10:00:00+02:00", 2,
			[]string{"2024-10-22T02:00:00+02:00", "2024-10-23T02:00:00+02:00"}, true, "2024-10-24T02:00:00+02:00"},
		{"catch up 5 of 3: all", daily, "2024-10-20T02:00:00+02:00", "2024-10-23T10:00:00+02:00", 5,
			[]string{"2024-10-21T02:00:00+02:00", "2024-10-22T02:00:00+02:00", "2024-10-23T02:00:00+02:00"}, false, "2024-10-24T02:00:00+02:00"},
		{"catch up exactly 3", daily, "2024-10-20T02:00:00+02:00", "2024-10-23T10:00:00+02:00", 3,
			[]string{"2024-10-21T02:00:00+02:00", "2024-10-22T02:00:00+02:00", "2024-10-23T02:00:00+02:00"}, false, "2024-10-24T02:00:00+02:00"},
		{"nothing missed", daily, "2024-10-23T02:00:00+02:00", "2024-10-23T10:00:00+02:00", 3,
			nil, false, "2024-10-24T02:00:00+02:00"},
		{"a fire time at now is due", daily, "2024-10-22T02:00:00+02:00", "2024-10-23T02:00:00+02:00", 1,
			[]string{"2024-10-23T02:00:00+02:00"}, false, "2024-10-24T02:00:00+02:00"},
		{"skip, one due at now", daily, "2024-10-22T02:00:00+02:00", "2024-10-23T02:00:00+02:00", 0,
			nil, true, "2024-10-24T02:00:00+02:00"},
		{"across the fall-back, hourly", hourly, "2024-11-03T00:00:00-04:00", "2024-11-03T02:30:00-05:00", 10,
			[]string{"2024-11-03T01:00:00-04:00", "2024-11-03T01:00:00-05:00", "2024-11-03T02:00:00-05:00"}, false, "2024-11-03T03:00:00-05:00"},
		{"one-shot missed, caught up", once, "2024-10-20T00:00:00Z", "2024-10-23T00:00:00Z", 1,
			[]string{"2024-10-22T12:00:00Z"}, false, ""},
		{"one-shot missed, skipped", once, "2024-10-20T00:00:00Z", "2024-10-23T00:00:00Z", 0,
			nil, true, ""},
		{"one-shot ahead", once, "2024-10-20T00:00:00Z", "2024-10-21T00:00:00Z", 1,
			nil, false, "2024-10-22T12:00:00Z"},
		{"the clock went back", daily, "2024-10-23T02:00:00+02:00", "2024-10-22T10:00:00+02:00", 3,
			nil, false, "2024-10-24T02:00:00+02:00"},
		{"since the beginning of time", daily, "0001-01-01T00:00:00Z", "2024-10-23T10:00:00+02:00", 1,
			[]string{"2024-10-23T02:00:00+02:00"}, true, "2024-10-24T02:00:00+02:00"},
	} {
		t.Run(c.name, func(t *testing.T) {
			d := Catch(c.tr, mustTime(t, c.last), mustTime(t, c.now), Misfire{CatchUp: c.catchUp})
			var want []time.Time
			for _, m := range c.missed {
				want = append(want, mustTime(t, m))
			}
			if !slices.EqualFunc(d.Missed, want, time.Time.Equal) {
				t.Errorf("Missed = %v; want %v", d.Missed, want)
			}
			if d.Dropped != c.dropped {
				t.Errorf("Dropped = %v; want %v", d.Dropped, c.dropped)
			}
			var next time.Time
			if c.next != "" {
				next = mustTime(t, c.next)
			}
			if !d.Next.Equal(next) {
				t.Errorf("Next = %v; want %v", d.Next, next)
			}
		})
	}
}

// counting is a Trigger that counts the calls of Next of the one it wraps.
type counting struct {
	Trigger
	calls int
}

func (c *counting) Next(after time.Time) time.Time { c.calls++; return c.Trigger.Next(after) }

// TestCatchBounded: a minutely schedule missed for three years (1.5 million
// fire times) costs a few dozen calls of Next to catch up the last 3.
func TestCatchBounded(t *testing.T) {
	wantLast := map[string][]string{
		"* * * * *": {"2024-10-23T09:58:00Z", "2024-10-23T09:59:00Z", "2024-10-23T10:00:00Z"},
		"0 0 1 1 *": {"2022-01-01T00:00:00+01:00", "2023-01-01T00:00:00+01:00", "2024-01-01T00:00:00+01:00"},
	}
	for _, expr := range []string{"* * * * *", "0 0 1 1 *"} {
		tr := &counting{Trigger: mustParse(t, expr, "Europe/Berlin")}
		last := mustTime(t, "2020-10-23T10:00:00Z")
		now := mustTime(t, "2024-10-23T10:00:30Z")
		d := Catch(tr, last, now, Misfire{CatchUp: 3})
		if len(d.Missed) != 3 || !d.Dropped {
			t.Fatalf("%s: Catch = %+v; want 3 missed and some dropped", expr, d)
		}
		for i, m := range d.Missed {
			if want := wantLast[expr][i]; !m.Equal(mustTime(t, want)) {
				t.Errorf("%s: missed[%d] = %v; want %s", expr, i, m, want)
			}
		}
		if tr.calls > 100 {
			t.Errorf("%s: Catch called Next %d times; want at most 100", expr, tr.calls)
		}
		t.Logf("%s: %d calls of Next", expr, tr.calls)
	}
}
