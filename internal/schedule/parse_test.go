package schedule

import "testing"

// TestLoadZoneCached checks that a zone is loaded once: the scheduler
// parses every job's trigger, and 10,000 jobs share a handful of zones.
func TestLoadZoneCached(t *testing.T) {
	a, err := LoadZone("America/New_York")
	if err != nil {
		t.Fatal(err)
	}
	b, err := LoadZone("America/New_York")
	if err != nil || a != b {
		t.Fatalf("second load: %p, %v; want the cached %p", b, err, a)
	}
	if _, err := LoadZone("Mars/Olympus_Mons"); err == nil {
		t.Fatal("unknown zone loaded")
	}
	if _, ok := zones.Load("Mars/Olympus_Mons"); ok {
		t.Fatal("a zone that failed to load was cached")
	}
}
