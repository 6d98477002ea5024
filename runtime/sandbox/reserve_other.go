//go:build !linux

package sandbox

import "errors"

// On systems other than Linux a reservation is a Go heap buffer: the Go
// runtime backs large allocations with lazily committed pages, but once it
// reuses its heap a reservation may become resident as a whole, and the pool
// cannot tell which pages are. Linux maps reservations outside the heap
// (reserve_linux.go).

// heapReserveLimit is the largest reservation made on the heap; a larger
// memory is a heap buffer that grows by copying (see linearMemory).
const heapReserveLimit = 256 << 20

func reserve(size uint64) ([]byte, error) {
	if size > heapReserveLimit {
		return nil, errors.New("reservation too large for the Go heap")
	}
	return make([]byte, size), nil
}

func commit([]byte) error { return nil }

// decommit zeroes b: the heap cannot give pages back one range at a time.
func decommit(b []byte) error {
	clear(b)
	return nil
}

// zeroResident zeroes b[:dirty]; all of b counts as resident.
func zeroResident(b []byte, dirty uint64) (uint64, error) {
	clear(b[:min(dirty, uint64(len(b)))])
	return uint64(len(b)), nil
}

func unreserve([]byte) error { return nil }
