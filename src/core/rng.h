// Deterministic seeds. Every random stream of a run is seeded from (run seed,
// stage, expert id, epoch, ...) — never from the rank that runs it — so the
// same config gives the same models whatever the number of ranks, and a
// resumed run equals an uninterrupted one (DESIGN.md, "Determinism").
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

}  // namespace smoe
