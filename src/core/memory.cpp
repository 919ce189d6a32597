#include "core/memory.h"

#include <fstream>
#include <string>

#ifdef __GLIBC__
#include <malloc.h>
#endif

namespace smoe::memory {
namespace {

// A "Name:   1234 kB" line of /proc/self/status, in bytes.
int64_t status_field(const char* name) {
  std::ifstream in("/proc/self/status");
  std::string key;
  while (in >> key) {
    if (key == name) {
      int64_t kb = 0;
      in >> kb;
      return kb * 1024;
    }
    in.ignore(1 << 16, '\n');
  }
  return 0;
}

}  // namespace

int64_t resident_bytes() { return status_field("VmRSS:"); }
int64_t peak_resident_bytes() { return status_field("VmHWM:"); }

void tune_malloc(int arenas) {
#ifdef __GLIBC__
  mallopt(M_ARENA_MAX, arenas);
#else
  (void)arenas;
#endif
}

void release_free_memory() {
#ifdef __GLIBC__
  malloc_trim(0);
#endif
}

bool reset_peak() {
  std::ofstream out("/proc/self/clear_refs");
  if (!out) return false;
  out << "5";
  out.flush();
  return static_cast<bool>(out);
}

}  // namespace smoe::memory
