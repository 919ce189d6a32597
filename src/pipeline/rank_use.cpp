#include "pipeline/rank_use.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>

namespace smoe::pipeline {
namespace {

RankUse use(int64_t work, int ranks) {
  RankUse u;
  u.work = work;
  u.ranks = std::max(ranks, 1);
  u.idle = work >= u.ranks ? 0.0 : 1.0 - static_cast<double>(work) / u.ranks;
  return u;
}

int percent(double share) { return static_cast<int>(std::lround(100 * share)); }

}  // namespace

RankUse base_rank_use(int64_t batch, int64_t micro_batch, int ranks) {
  return use(micro_batch > 0 ? (batch + micro_batch - 1) / micro_batch : 1, ranks);
}

RankUse experts_rank_use(int64_t experts, int ranks) { return use(experts, ranks); }

double packing_efficiency(int64_t work, int ranks) {
  if (work <= 0 || ranks <= 1) return 1.0;
  const int64_t rounds = (work + ranks - 1) / ranks;
  return static_cast<double>(work) / static_cast<double>(rounds * ranks);
}

std::string base_idle_warning(int64_t batch, int64_t micro_batch, int ranks) {
  const RankUse u = base_rank_use(batch, micro_batch, ranks);
  if (!u.wasteful()) return "";
  return fmt::format(
      "base: {} ranks but {} micro-batch{} per step (base.batch_size {} / base.micro_batch {}): {}% of the ranks' "
      "time idles; set base.micro_batch to {} or less to use every rank (results depend on micro_batch, not on the "
      "rank count)",
      ranks, u.work, u.work == 1 ? "" : "es", batch, micro_batch, percent(u.idle), std::max<int64_t>(batch / ranks, 1));
}

std::string experts_idle_warning(int64_t experts, int ranks) {
  const RankUse u = experts_rank_use(experts, ranks);
  if (!u.wasteful()) return "";
  return fmt::format(
      "experts: {} ranks but {} expert{} to train (experts.count): {} rank{} idle{} through the stage ({}% of the "
      "ranks' time); start at most {} ranks for this stage",
      ranks, experts, experts == 1 ? "" : "s", ranks - experts, ranks - experts == 1 ? "" : "s",
      ranks - experts == 1 ? "s" : "", percent(u.idle), experts);
}

}  // namespace smoe::pipeline
