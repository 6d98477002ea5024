//go:build race

package sandbox

// raceEnabled: the race detector's shadow memory makes RSS no measure of
// what the sandbox holds.
const raceEnabled = true
