package schedule

import (
	"strings"
	"testing"
	"time"

	"github.com/contractual/contractual/internal/errs"
)

func mustTime(t testing.TB, s string) time.Time {
	t.Helper()
	v, err := time.Parse(time.RFC3339, s)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func mustParse(t testing.TB, expr, zone string) *Cron {
	t.Helper()
	c, err := Parse(expr, zone)
	if err != nil {
		t.Fatalf("Parse(%q, %q): %v", expr, zone, err)
	}
	return c
}

// TestNext walks each schedule from after and checks the fire times it
// returns, written with the zone's offset so that each side of a DST change
// is explicit. NY: 2024-03-10 02:00 EST -> 03:00 EDT, 2024-11-03 02:00 EDT ->
// 01:00 EST. Berlin: 2024-03-31 02:00 CET -> 03:00 CEST, 2024-10-27 03:00
// CEST -> 02:00 CET. Lord Howe (30 minutes): 2024-10-06 02:00 -> 02:30
// (+10:30 -> +11), 2024-04-07 02:00 -> 01:30 (+11 -> +10:30).
func TestNext(t *testing.T) {
	for _, c := range []struct {
		name, expr, zone, after string
		want                    []string
	}{
		// Spring forward: a skipped wall time fires at the first instant after the gap.
		{"ny gap", "30 2 * * *", "America/New_York", "2024-03-09T02:30:00-05:00",
			[]string{"2024-03-10T03:00:00-04:00", "2024-03-11T02:30:00-04:00"}},
		{"ny gap, match after it fires once", "0 2,3 * * *", "America/New_York", "2024-03-10T01:00:00-05:00",
			[]string{"2024-03-10T03:00:00-04:00", "2024-03-11T02:00:00-04:00"}},
		{"berlin gap", "30 2 * * *", "Europe/Berlin", "2024-03-30T02:30:00+01:00",
			[]string{"2024-03-31T03:00:00+02:00", "2024-04-01T02:30:00+02:00"}},
		{"lord howe half-hour gap", "15 2 * * *", "Australia/Lord_Howe", "2024-10-05T12:00:00+10:30",
			[]string{"2024-10-06T02:30:00+11:00", "2024-10-07T02:15:00+11:00"}},
		{"gap, minutes in a chosen hour fire once", "*/10 2 * * *", "America/New_York", "2024-03-09T23:00:00-05:00",
			[]string{"2024-03-10T03:00:00-04:00", "2024-03-11T02:00:00-04:00"}},

		// Fall back: a repeated wall time fires at its first occurrence only.
		{"ny overlap", "30 1 * * *", "America/New_York", "2024-11-02T01:30:00-04:00",
			[]string{"2024-11-03T01:30:00-04:00", "2024-11-04T01:30:00-05:00"}},
		{"ny overlap, minutes in a chosen hour", "*/30 1 * * *", "America/New_York", "2024-11-03T00:59:00-04:00",
			[]string{"2024-11-03T01:00:00-04:00", "2024-11-03T01:30:00-04:00", "2024-11-04T01:00:00-05:00"}},
		{"berlin overlap", "30 2 * * *", "Europe/Berlin", "2024-10-26T02:30:00+02:00",
			[]string{"2024-10-27T02:30:00+02:00", "2024-10-28T02:30:00+01:00"}},
		{"berlin, after in the second occurrence", "45 2 * * *", "Europe/Berlin", "2024-10-27T02:10:00+01:00",
			[]string{"2024-10-28T02:45:00+01:00"}},
		{"lord howe half-hour overlap", "45 1 * * *", "Australia/Lord_Howe", "2024-04-06T12:00:00+11:00",
			[]string{"2024-04-07T01:45:00+11:00", "2024-04-08T01:45:00+10:30"}},

		// Schedules of every hour follow elapsed time.
		{"ny hourly spring", "@hourly", "America/New_York", "2024-03-10T01:00:00-05:00",
			[]string{"2024-03-10T03:00:00-04:00", "2024-03-10T04:00:00-04:00"}},
		{"ny hourly fall", "@hourly", "America/New_York", "2024-11-03T00:30:00-04:00",
			[]string{"2024-11-03T01:00:00-04:00", "2024-11-03T01:00:00-05:00", "2024-11-03T02:00:00-05:00"}},
		{"ny :05 hourly spring", "5 * * * *", "America/New_York", "2024-03-10T01:05:00-05:00",
			[]string{"2024-03-10T03:05:00-04:00"}},
		{"ny quarter-hourly spring", "*/15 * * * *", "America/New_York", "2024-03-10T01:45:00-05:00",
			[]string{"2024-03-10T03:00:00-04:00", "2024-03-10T03:15:00-04:00"}},
		{"berlin 20-minutely fall", "*/20 * * * *", "Europe/Berlin", "2024-10-27T02:40:00+02:00",
			[]string{"2024-10-27T02:00:00+01:00", "2024-10-27T02:20:00+01:00"}},
		{"lord howe quarter-hourly spring", "*/15 * * * *", "Australia/Lord_Howe", "2024-10-06T01:45:00+10:30",
			[]string{"2024-10-06T02:30:00+11:00"}},
		{"lord howe quarter-hourly fall", "*/15 * * * *", "Australia/Lord_Howe", "2024-04-07T01:45:00+11:00",
			[]string{"2024-04-07T01:30:00+10:30", "2024-04-07T01:45:00+10:30", "2024-04-07T02:00:00+10:30"}},

		// Calendar.
		{"leap day", "0 0 29 2 *", "Europe/Berlin", "2024-03-01T00:00:00Z",
			[]string{"2028-02-29T00:00:00+01:00", "2032-02-29T00:00:00+01:00"}},
		{"leap day skips 2100", "0 12 29 2 *", "America/New_York", "2096-03-01T00:00:00Z",
			[]string{"2104-02-29T12:00:00-05:00"}},
		{"31st skips short months", "0 0 31 * *", "UTC", "2024-01-31T00:00:00Z",
			[]string{"2024-03-31T00:00:00Z", "2024-05-31T00:00:00Z", "2024-07-31T00:00:00Z", "2024-08-31T00:00:00Z"}},
		{"dom or dow", "0 0 13 * FRI", "UTC", "2024-09-01T00:00:00Z",
			[]string{"2024-09-06T00:00:00Z", "2024-09-13T00:00:00Z", "2024-09-20T00:00:00Z", "2024-09-27T00:00:00Z",
				"2024-10-04T00:00:00Z", "2024-10-11T00:00:00Z", "2024-10-13T00:00:00Z", "2024-10-18T00:00:00Z"}},
		{"dom alone", "0 0 13 * *", "UTC", "2024-09-01T00:00:00Z",
			[]string{"2024-09-13T00:00:00Z", "2024-10-13T00:00:00Z"}},
		{"dow alone, 7 is sunday", "0 0 * * 7", "UTC", "2024-09-01T00:00:00Z",
			[]string{"2024-09-08T00:00:00Z", "2024-09-15T00:00:00Z"}},
		{"names and ranges", "0 9 * jan-MAR Mon-Fri", "Europe/Berlin", "2024-03-29T09:00:00+01:00",
			[]string{"2025-01-01T09:00:00+01:00", "2025-01-02T09:00:00+01:00", "2025-01-03T09:00:00+01:00", "2025-01-06T09:00:00+01:00"}},
		{"steps from a start", "10/25 8-10/2 * * *", "UTC", "2024-01-01T07:00:00Z",
			[]string{"2024-01-01T08:10:00Z", "2024-01-01T08:35:00Z", "2024-01-01T10:10:00Z", "2024-01-01T10:35:00Z", "2024-01-02T08:10:00Z"}},
		{"strictly after, sub-second", "* * * * *", "UTC", "2024-01-01T00:00:59.999Z",
			[]string{"2024-01-01T00:01:00Z", "2024-01-01T00:02:00Z"}},
		{"amsterdam 1936, offsets with seconds, after in the repeated hour", "30 2 * * *", "Europe/Amsterdam", "1936-10-04T01:45:00Z",
			[]string{"1936-10-05T02:10:28Z", "1936-10-06T02:10:28Z"}}, // 02:30 at +00:19:32
		{"before 1970", "0 2 * * *", "Europe/Berlin", "1960-01-01T00:00:00Z",
			[]string{"1960-01-01T02:00:00+01:00", "1960-01-02T02:00:00+01:00"}},
		{"past the zone table, across a leap year's end", "0 12 * * *", "America/New_York", "2096-12-30T12:00:00-05:00",
			[]string{"2096-12-31T12:00:00-05:00", "2097-01-01T12:00:00-05:00"}},
		{"year end", "@yearly", "Asia/Tokyo", "2024-12-31T23:59:00+09:00",
			[]string{"2025-01-01T00:00:00+09:00", "2026-01-01T00:00:00+09:00"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			cr := mustParse(t, c.expr, c.zone)
			at := mustTime(t, c.after)
			for i, w := range c.want {
				got := cr.Next(at)
				if want := mustTime(t, w); !got.Equal(want) || got.Location() != time.UTC {
					t.Fatalf("%s: fire %d after %s = %s (%s); want %s",
						cr, i, at.In(cr.Location()), got, got.In(cr.Location()), w)
				}
				at = got
			}
		})
	}
}

func TestParseErrors(t *testing.T) {
	for _, c := range []struct{ expr, zone, want string }{
		{"* * * *", "", "4 fields, want 5"},
		{"60 * * * *", "", `minute field "60": 60 is out of range 0-59`},
		{"* 24 * * *", "", "hour field"},
		{"* * 0 * *", "", `day-of-month field "0": 0 is out of range 1-31`},
		{"* * * 13 *", "", "month field"},
		{"* * * FOO *", "", `month field "FOO": "FOO" is not a number or a name (such as JAN)`},
		{"* * * * 8", "", "day-of-week field"},
		{"* * * * MON-SUNDAY", "", "day-of-week field"},
		{"5-1 * * * *", "", `range "5-1" runs backwards`},
		{"*/0 * * * *", "", `step "0" is not a positive number`},
		{"1,,2 * * * *", "", "empty list item"},
		{"@reboot", "", "unknown macro"},
		{"0 0 30 2 *", "", "never meet"},
		{"0 0 31 4,6,9,11 *", "", "never meet"},
		{"0 0 * * *", "Mars/Olympus", `time zone "Mars/Olympus"`},
		{"0 0 * * *", "Local", "IANA zone"},
	} {
		_, err := Parse(c.expr, c.zone)
		if err == nil || !errs.Is(err, errs.Invalid) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("Parse(%q, %q) = %v; want an invalid error containing %q", c.expr, c.zone, err, c.want)
		}
	}
	// February 30th is impossible, but with a restricted day-of-week the OR rule makes it fire.
	if _, err := Parse("0 0 30 2 MON", ""); err != nil {
		t.Errorf("Parse(0 0 30 2 MON) = %v", err)
	}
}

func TestAt(t *testing.T) {
	at := At{T: mustTime(t, "2024-03-10T02:30:00+01:00")}
	if got := at.Next(mustTime(t, "2024-03-10T01:29:59Z")); !got.Equal(at.T) || got.Location() != time.UTC {
		t.Errorf("Next before = %v", got)
	}
	if got := at.Next(at.T); !got.IsZero() {
		t.Errorf("Next at T = %v; want zero (strictly after)", got)
	}
}
