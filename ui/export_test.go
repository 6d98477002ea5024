package ui

import "time"

// SetVerifyEvery sets how long u reuses a good audit verification.
func SetVerifyEvery(u *UI, d time.Duration) { u.verified.every = d }
