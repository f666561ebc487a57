package leasekeeper

import (
	"syscall"
	"unsafe"
)

// monoNowMs reads CLOCK_MONOTONIC, the clock the agent's until_mono_ms is on. Go's time
// package measures monotonic time but does not expose its absolute value, so ask the kernel.
func monoNowMs() int64 {
	var ts syscall.Timespec
	const clockMonotonic = 1
	syscall.Syscall(syscall.SYS_CLOCK_GETTIME, clockMonotonic, uintptr(unsafe.Pointer(&ts)), 0)
	return ts.Sec*1000 + ts.Nsec/1000000
}
