// This process's resident memory (Linux /proc), for the per-stage peaks that
// report.json records and the memory-scaling benchmark reads.
#pragma once

#include <cstdint>

namespace smoe::memory {

// Resident set size now, and its peak (VmHWM) since start or the last reset;
// 0 where /proc is unavailable.
int64_t resident_bytes();
int64_t peak_resident_bytes();
// Starts a new peak at the current resident size (writes 5 to
// /proc/self/clear_refs); returns false where the kernel does not allow it,
// in which case peaks are since the process started.
bool reset_peak();

}  // namespace smoe::memory
