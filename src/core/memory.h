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

// glibc gives each thread its own malloc arena: buffers that the loader
// thread allocates and the training thread frees leave free pages there, and
// a rank's resident memory grows with the threads it has run, not with what
// it holds. smoe caps the arenas at start (before any thread) and returns
// free heap pages to the system before each stage (malloc_trim), so that the
// per-stage peaks measure what the stage holds. (A fixed 1 MiB mmap
// threshold lowered the peaks further but doubled the run time in page
// faults.) No-ops without glibc.
void tune_malloc(int arenas);
void release_free_memory();

}  // namespace smoe::memory
