package leasekeeper

import (
	"syscall"
	"unsafe"
)

// monoNowNs reads CLOCK_MONOTONIC, the clock the agent's until_mono_ms and banner mono_ms are
// on. Go's time package measures with that clock but does not expose its absolute value (a
// time.Time's monotonic reading is relative to process start), so ask the kernel. Reading it
// directly, rather than deriving an offset from the banner's mono_ms, is what lets us check the
// banner: an agent on another kernel (another CLOCK_MONOTONIC) is then recognized, and its
// deadlines are counted from each line's arrival instead (see proto/PROTOCOL.md).
func monoNowNs() int64 {
	var ts syscall.Timespec
	const clockMonotonic = 1
	syscall.Syscall(syscall.SYS_CLOCK_GETTIME, clockMonotonic, uintptr(unsafe.Pointer(&ts)), 0)
	return ts.Sec*1e9 + ts.Nsec
}

// monoNowMs is CLOCK_MONOTONIC in milliseconds.
func monoNowMs() int64 { return monoNowNs() / 1e6 }
