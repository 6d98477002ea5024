package sandbox

import (
	"os"
	"unsafe"

	"golang.org/x/sys/unix"
)

// reserve maps size bytes of address space that commit no memory: an
// anonymous private mapping with no access and no swap reservation. Pages
// become resident only when commit makes them accessible and a guest
// touches them.
func reserve(size uint64) ([]byte, error) {
	return unix.Mmap(-1, 0, int(size), unix.PROT_NONE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS|unix.MAP_NORESERVE)
}

// commit makes b, a page-aligned part of a reservation, readable and
// writable. Its untouched pages still cost nothing.
func commit(b []byte) error { return unix.Mprotect(b, unix.PROT_READ|unix.PROT_WRITE) }

// decommit gives b's pages back to the system; they read as zeros when next
// touched (MADV_DONTNEED on a private anonymous mapping).
func decommit(b []byte) error {
	if len(b) == 0 {
		return nil
	}
	return unix.Madvise(b, unix.MADV_DONTNEED)
}

// zeroResident counts the resident pages of b, a page-aligned part of a
// reservation, and zeroes those in b[:dirty]. It returns their size. Pages
// that are not resident read as zeros already, and writing them would make
// them resident.
func zeroResident(b []byte, dirty uint64) (uint64, error) {
	if len(b) == 0 {
		return 0, nil
	}
	ps := os.Getpagesize()
	vec := make([]byte, (len(b)+ps-1)/ps)
	_, _, errno := unix.Syscall(unix.SYS_MINCORE, uintptr(unsafe.Pointer(unsafe.SliceData(b))), uintptr(len(b)),
		uintptr(unsafe.Pointer(unsafe.SliceData(vec))))
	if errno != 0 {
		return 0, errno
	}
	var n uint64
	for i, v := range vec {
		if v&1 == 0 {
			continue
		}
		if lo := uint64(i * ps); lo < dirty {
			clear(b[lo:min(lo+uint64(ps), dirty)])
		}
		n += uint64(ps)
	}
	return n, nil
}

// unreserve unmaps a reservation.
func unreserve(b []byte) error { return unix.Munmap(b) }
