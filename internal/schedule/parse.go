package schedule

import (
	"math/bits"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/contractual/contractual/internal/errs"
)

// A field of a cron expression: its name, bounds and value names.
type field struct {
	name     string
	min, max int
	names    map[string]int
}

var (
	minuteField = field{name: "minute", min: 0, max: 59}
	hourField   = field{name: "hour", min: 0, max: 23}
	domField    = field{name: "day-of-month", min: 1, max: 31}
	monthField  = field{name: "month", min: 1, max: 12, names: map[string]int{
		"JAN": 1, "FEB": 2, "MAR": 3, "APR": 4, "MAY": 5, "JUN": 6,
		"JUL": 7, "AUG": 8, "SEP": 9, "OCT": 10, "NOV": 11, "DEC": 12}}
	// Day-of-week 7 is Sunday, like 0.
	dowField = field{name: "day-of-week", min: 0, max: 7, names: map[string]int{
		"SUN": 0, "MON": 1, "TUE": 2, "WED": 3, "THU": 4, "FRI": 5, "SAT": 6}}
)

var macros = map[string]string{
	"@yearly":   "0 0 1 1 *",
	"@annually": "0 0 1 1 *",
	"@monthly":  "0 0 1 * *",
	"@weekly":   "0 0 * * 0",
	"@daily":    "0 0 * * *",
	"@midnight": "0 0 * * *",
	"@hourly":   "0 * * * *",
}

// daysIn is the most days each month can have (February in a leap year).
var daysIn = [13]int{0, 31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31}

// Parse parses a 5-field cron expression (minute hour day-of-month month
// day-of-week) or a macro (@hourly, @daily, @weekly, @monthly, @yearly),
// interpreted in the IANA time zone named by zone ("" means UTC). An error
// is errs.Invalid and names the field and what is wrong with it.
func Parse(expr, zone string) (*Cron, error) {
	loc, err := LoadZone(zone)
	if err != nil {
		return nil, err
	}
	spec := strings.TrimSpace(expr)
	if strings.HasPrefix(spec, "@") {
		m, ok := macros[strings.ToLower(spec)]
		if !ok {
			return nil, errs.E(errs.Invalid, "cron %q: unknown macro (want @hourly, @daily, @weekly, @monthly or @yearly)", expr)
		}
		spec = m
	}
	fs := strings.Fields(spec)
	if len(fs) != 5 {
		return nil, errs.E(errs.Invalid, "cron %q: %d fields, want 5 (minute hour day-of-month month day-of-week)", expr, len(fs))
	}
	c := &Cron{expr: expr, loc: loc}
	for i, p := range []struct {
		f    field
		bits *uint64
	}{{minuteField, &c.minute}, {hourField, &c.hour}, {domField, &c.dom}, {monthField, &c.month}, {dowField, &c.dow}} {
		b, err := parseField(fs[i], p.f)
		if err != nil {
			return nil, errs.E(errs.Invalid, "cron %q: %s field %q: %v", expr, p.f.name, fs[i], err)
		}
		*p.bits = b
	}
	if c.dow&(1<<7) != 0 {
		c.dow = c.dow&^(1<<7) | 1
	}
	c.dayOr = fs[2] != "*" && fs[4] != "*"
	c.everyHour = c.hour == 1<<24-1
	if !c.dayOr || fs[4] == "*" {
		// Only day-of-month restricts the day: some month must have it.
		possible := false
		for m := 1; m <= 12; m++ {
			if c.month&(1<<m) != 0 && bits.TrailingZeros64(c.dom) <= daysIn[m] {
				possible = true
			}
		}
		if !possible {
			return nil, errs.E(errs.Invalid, "cron %q: day-of-month and month never meet (no such date)", expr)
		}
	}
	return c, nil
}

// LoadZone loads an IANA time zone; "" and "UTC" are UTC. The zone
// database is embedded (time/tzdata), so this works without /usr/share/zoneinfo.
func LoadZone(zone string) (*time.Location, error) {
	if zone == "" {
		return time.UTC, nil
	}
	if zone == "Local" {
		return nil, errs.E(errs.Invalid, "time zone %q: name an IANA zone, such as Europe/Berlin", zone)
	}
	if loc, ok := zones.Load(zone); ok {
		return loc.(*time.Location), nil
	}
	loc, err := time.LoadLocation(zone)
	if err != nil {
		return nil, errs.Wrap(errs.Invalid, err, "time zone %q", zone)
	}
	zones.Store(zone, loc)
	return loc, nil
}

// zones caches the locations loaded by name: loading one parses its tzdata
// (tens of microseconds), and 10,000 jobs use a handful of zones. A
// *time.Location is immutable, so sharing one is safe. Only zones that
// loaded are cached, so the cache holds at most the IANA zones.
var zones sync.Map // zone name → *time.Location

// parseField parses one comma-separated list of a field into a bit set.
func parseField(s string, f field) (uint64, error) {
	var set uint64
	for _, item := range strings.Split(s, ",") {
		b, err := parseItem(item, f)
		if err != nil {
			return 0, err
		}
		set |= b
	}
	return set, nil
}

// parseItem parses one list item: *, a value, a range a-b, each with an
// optional step /n; a/n means a-max/n.
func parseItem(item string, f field) (uint64, error) {
	if item == "" {
		return 0, errs.E(errs.Invalid, "empty list item")
	}
	rng, stepStr, hasStep := strings.Cut(item, "/")
	step := 1
	if hasStep {
		n, err := strconv.Atoi(stepStr)
		if err != nil || n < 1 {
			return 0, errs.E(errs.Invalid, "step %q is not a positive number", stepStr)
		}
		step = n
	}
	var lo, hi int
	if rng == "*" {
		lo, hi = f.min, f.max
		if f.name == dowField.name {
			hi = 6
		}
	} else {
		a, b, isRange := strings.Cut(rng, "-")
		var err error
		if lo, err = value(a, f); err != nil {
			return 0, err
		}
		hi = lo
		if isRange {
			if hi, err = value(b, f); err != nil {
				return 0, err
			}
			if hi < lo {
				return 0, errs.E(errs.Invalid, "range %q runs backwards", rng)
			}
		} else if hasStep {
			hi = f.max
		}
	}
	var set uint64
	for v := lo; v <= hi; v += step {
		set |= 1 << v
	}
	return set, nil
}

// value parses one number or name of a field and checks its bounds.
func value(s string, f field) (int, error) {
	if v, ok := f.names[strings.ToUpper(s)]; ok {
		return v, nil
	}
	v, err := strconv.Atoi(s)
	if err != nil {
		if f.names != nil {
			return 0, errs.E(errs.Invalid, "%q is not a number or a name (such as %s)", s, map[bool]string{true: "JAN", false: "MON"}[f.name == monthField.name])
		}
		return 0, errs.E(errs.Invalid, "%q is not a number", s)
	}
	if v < f.min || v > f.max {
		return 0, errs.E(errs.Invalid, "%d is out of range %d-%d", v, f.min, f.max)
	}
	return v, nil
}
