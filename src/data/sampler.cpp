#include "data/sampler.h"

#include <algorithm>
#include <numeric>

#include "core/error.h"
#include "core/rng.h"

namespace smoe::data {

namespace {

template <typename It>
void shuffle(It begin, It end, SplitMix64& rng) {
  const auto n = static_cast<uint64_t>(end - begin);
  for (uint64_t i = n; i > 1; --i) std::iter_swap(begin + (i - 1), begin + rng.below(i));
}

}  // namespace

std::vector<int64_t> permutation(int64_t n, uint64_t seed) {
  std::vector<int64_t> ids(static_cast<size_t>(n));
  std::iota(ids.begin(), ids.end(), 0);
  SplitMix64 rng(seed);
  shuffle(ids.begin(), ids.end(), rng);
  return ids;
}

std::vector<int64_t> chunk_aware_permutation(int64_t n, int64_t chunk, int64_t window, uint64_t seed) {
  SMOE_CHECK(chunk >= 1 && window >= 1, "chunk-aware permutation needs chunk >= 1 and window >= 1");
  const int64_t chunks = (n + chunk - 1) / chunk;
  std::vector<int64_t> order = permutation(chunks, seed);
  std::vector<int64_t> ids;
  ids.reserve(static_cast<size_t>(n));
  for (int64_t c : order)
    for (int64_t i = c * chunk; i < std::min(n, (c + 1) * chunk); ++i) ids.push_back(i);
  SplitMix64 rng(mix64(seed ^ 0x5bd1e995ULL));
  // Window boundaries follow the shuffled chunks, so each window spans `window` chunks.
  size_t pos = 0;
  for (int64_t w = 0; w < chunks; w += window) {
    size_t len = 0;
    for (int64_t c = w; c < std::min(chunks, w + window); ++c)
      len += static_cast<size_t>(std::min(n, (order[c] + 1) * chunk) - order[c] * chunk);
    shuffle(ids.begin() + pos, ids.begin() + pos + len, rng);
    pos += len;
  }
  return ids;
}

std::vector<int64_t> weighted_sample(const std::vector<double>& weights, int64_t count, uint64_t seed) {
  std::vector<double> cdf(weights.size());
  double total = 0;
  for (size_t i = 0; i < weights.size(); ++i) {
    SMOE_CHECK(weights[i] >= 0 && std::isfinite(weights[i]), "sampling weight {} of sample {} is invalid", weights[i],
               i);
    total += weights[i];
    cdf[i] = total;
  }
  SMOE_CHECK(total > 0, "weighted sampling needs a positive total weight");
  SplitMix64 rng(seed);
  std::vector<int64_t> out(static_cast<size_t>(count));
  for (auto& id : out) {
    double u = rng.uniform() * total;
    auto it = std::upper_bound(cdf.begin(), cdf.end(), u);
    if (it == cdf.end()) --it;
    id = static_cast<int64_t>(it - cdf.begin());
  }
  return out;
}

std::vector<std::vector<int64_t>> make_batches(const std::vector<int64_t>& ids, int64_t batch, bool drop_last) {
  SMOE_CHECK(batch >= 1, "batch size must be at least 1, got {}", batch);
  std::vector<std::vector<int64_t>> out;
  for (size_t i = 0; i < ids.size(); i += static_cast<size_t>(batch)) {
    size_t end = std::min(ids.size(), i + static_cast<size_t>(batch));
    if (drop_last && end - i < static_cast<size_t>(batch)) break;
    out.emplace_back(ids.begin() + static_cast<std::ptrdiff_t>(i), ids.begin() + static_cast<std::ptrdiff_t>(end));
  }
  return out;
}

std::pair<int64_t, int64_t> rank_range(int64_t n, int rank, int world) {
  SMOE_ASSERT(world >= 1 && rank >= 0 && rank < world, "rank_range: rank {} of {}", rank, world);
  const int64_t base = n / world, extra = n % world;
  const int64_t begin = rank * base + std::min<int64_t>(rank, extra);
  return {begin, begin + base + (rank < extra ? 1 : 0)};
}

std::vector<int64_t> round_robin(int64_t n, int rank, int world) {
  std::vector<int64_t> out;
  for (int64_t i = rank; i < n; i += world) out.push_back(i);
  return out;
}

}  // namespace smoe::data
