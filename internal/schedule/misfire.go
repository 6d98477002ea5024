package schedule

import "time"

// Misfire is the policy for fire times a scheduler missed while it was down.
type Misfire struct {
	// CatchUp is how many missed fire times to run late: the most recent
	// ones. Zero skips them all: the job waits for its next fire time.
	CatchUp int
}

// Due is what a scheduler should do now.
type Due struct {
	// Missed are the missed fire times to run now, oldest first: at most
	// CatchUp of them, the most recent.
	Missed []time.Time
	// Dropped reports that fire times were missed beyond Missed.
	Dropped bool
	// Next is the first fire time after now; zero if the trigger is done.
	Next time.Time
}

// Catch returns what is due for tr at now, given last, the last fire time
// recorded (or when the schedule started): the fire times in (last, now]
// that policy p runs late, and the next fire time after now. It is the
// function a durable scheduler calls on restart. If the clock went back (now
// is before last), nothing is missed and Next is after last, so that no fire
// time runs twice.
//
// Its work is bounded by the policy, not by the downtime: it looks back from
// now over a window that doubles until it holds CatchUp fire times, so a
// minutely schedule missed for three years costs a few dozen calls of Next,
// not 1.5 million.
func Catch(tr Trigger, last, now time.Time, p Misfire) Due {
	d := Due{Next: tr.Next(now)}
	if now.Before(last) {
		d.Next = tr.Next(last)
	}
	first := tr.Next(last)
	if first.IsZero() || first.After(now) {
		return d // nothing missed
	}
	if p.CatchUp <= 0 {
		d.Dropped = true
		return d
	}
	n := p.CatchUp
	gap := now.Sub(last)
	span := time.Minute
	for {
		from := last
		if span < gap {
			from = now.Add(-span)
		}
		// The last n fire times in (from, now], in a ring, and how many.
		ring := make([]time.Time, n)
		count := 0
		for f := tr.Next(from); !f.IsZero() && !f.After(now); f = tr.Next(f) {
			ring[count%n] = f
			count++
		}
		if count >= n || from.Equal(last) {
			k := min(count, n)
			for i := range k {
				d.Missed = append(d.Missed, ring[(count-k+i)%n])
			}
			d.Dropped = count > n || first.Before(d.Missed[0])
			return d
		}
		if span >= gap/2 {
			span = gap
		} else {
			span *= 2
		}
	}
}
