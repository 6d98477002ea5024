package schedule

import (
	"testing"
	"time"
)

// BenchmarkNext measures Next on a few schedules against a baseline in the
// same run: time.Date building the same local time, the least a scheduler
// could do to find a daily fire time.
func BenchmarkNext(b *testing.B) {
	berlin, err := LoadZone("Europe/Berlin")
	if err != nil {
		b.Fatal(err)
	}
	after := time.Date(2024, 10, 26, 12, 0, 0, 0, time.UTC)
	b.Run("baseline=time.Date", func(b *testing.B) {
		var t time.Time
		for b.Loop() {
			l := after.In(berlin)
			t = time.Date(l.Year(), l.Month(), l.Day()+1, 2, 30, 0, 0, berlin).UTC()
		}
		_ = t
	})
	for _, c := range []struct{ name, expr, zone string }{
		{"daily", "30 2 * * *", "Europe/Berlin"}, // on the fall-back day: 02:30 is repeated
		{"daily-across-spring-forward", "30 2 * * *", "Europe/Berlin"},
		{"minutely", "* * * * *", "America/New_York"},
		{"weekdays-9-to-5-quarterly", "*/15 9-17 * * MON-FRI", "America/New_York"},
		{"dom-or-dow", "0 0 13 * FRI", "UTC"},
		{"leap-day", "0 0 29 2 *", "Europe/Berlin"},
	} {
		cr := mustParse(b, c.expr, c.zone)
		at := after
		if c.name == "daily-across-spring-forward" {
			at = time.Date(2024, 3, 30, 12, 0, 0, 0, time.UTC)
		}
		b.Run(c.name, func(b *testing.B) {
			var t time.Time
			for b.Loop() {
				t = cr.Next(at)
			}
			_ = t
		})
	}
}
