// Deterministic seeds. Every random stream of a run is seeded from (run seed,
// stage, expert id, epoch, ...) — never from the rank that runs it — so the
// same config gives the same models whatever the number of ranks, and a
// resumed run equals an uninterrupted one (docs/architecture.md, "Determinism").
#pragma once

#include <cstdint>
#include <initializer_list>
#include <string_view>

namespace smoe {

// SplitMix64 finaliser: a bijective mix of 64 bits.
constexpr uint64_t mix64(uint64_t z) {
  z += 0x9e3779b97f4a7c15ULL;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

// FNV-1a of a stage name, so that stages get unrelated streams.
constexpr uint64_t stage_tag(std::string_view stage) {
  uint64_t h = 0xcbf29ce484222325ULL;
  for (char c : stage) h = (h ^ static_cast<unsigned char>(c)) * 0x100000001b3ULL;
  return h;
}

// Seed of the stream identified by (run seed, stage, ids...).
inline uint64_t derive_seed(uint64_t run_seed, std::string_view stage, std::initializer_list<uint64_t> ids = {}) {
  uint64_t h = mix64(run_seed ^ mix64(stage_tag(stage)));
  for (uint64_t id : ids) h = mix64(h ^ mix64(id + 0x632be59bd9b4e019ULL));
  return h;
}

// A portable generator (SplitMix64): the same seed gives the same stream on
// every machine and library version (sample orders, K-means++ draws).
class SplitMix64 {
 public:
  explicit SplitMix64(uint64_t seed) : state_(seed) {}
  uint64_t next() {
    state_ += 0x9e3779b97f4a7c15ULL;
    uint64_t z = state_;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
  }
  // Uniform in [0, 1) with 53 random bits.
  double uniform() { return static_cast<double>(next() >> 11) * 0x1.0p-53; }
  // Uniform integer in [0, n), unbiased (rejection sampling on the top of the range); n > 0.
  uint64_t below(uint64_t n) {
    const uint64_t limit = UINT64_MAX - UINT64_MAX % n;
    uint64_t v;
    do v = next();
    while (v >= limit);
    return v % n;
  }

 private:
  uint64_t state_;
};

}  // namespace smoe
