// Sample orders: permutations, weighted draws, batches and per-rank shares.
// Everything is driven by a seed and a portable generator (SplitMix64, core/rng.h), so
// the same seed gives the same order on every machine and library version.
#pragma once

#include <cstdint>
#include <utility>
#include <vector>

#include "core/rng.h"

namespace smoe::data {

using smoe::SplitMix64;

// A uniformly random permutation of [0, n).
std::vector<int64_t> permutation(int64_t n, uint64_t seed);

// A permutation that keeps reads local for streamed shards: the order of
// chunks of `chunk` consecutive ids is shuffled, then ids are shuffled within
// windows of `window` chunks. A chunk cache of `window` chunks then serves
// every read.
std::vector<int64_t> chunk_aware_permutation(int64_t n, int64_t chunk, int64_t window, uint64_t seed);

// `count` ids drawn with replacement with probability proportional to weights[id].
std::vector<int64_t> weighted_sample(const std::vector<double>& weights, int64_t count, uint64_t seed);

// Consecutive batches of `batch` ids (the last may be smaller unless drop_last).
std::vector<std::vector<int64_t>> make_batches(const std::vector<int64_t>& ids, int64_t batch, bool drop_last);

// Rank `rank`'s share of [0, n): a contiguous range [begin, end), sizes
// differing by at most one between ranks.
std::pair<int64_t, int64_t> rank_range(int64_t n, int rank, int world);

// Items i of [0, n) with i % world == rank (round-robin share, for work units
// of fixed composition such as evaluation batches).
std::vector<int64_t> round_robin(int64_t n, int rank, int world);

}  // namespace smoe::data
