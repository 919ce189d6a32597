// How many of a job's ranks a stage can keep busy, and the warning when it
// is fewer than the job has (a GPU that waits is a GPU paid for and idle).
// The base stage splits each step's batch into batch_size / micro_batch
// micro-batches, one rank each: more ranks than micro-batches wait in every
// step's allreduce. The experts stage has one task per expert: more ranks
// than experts have nothing to train. Results never depend on the rank
// count (they depend on micro_batch), so the fix is always the same: fewer
// ranks, or a smaller micro-batch.
#pragma once

#include <cstdint>
#include <string>

namespace smoe::pipeline {

struct RankUse {
  int64_t work = 0;  // units one step (base) or the stage (experts) can spread
  int ranks = 1;
  double idle = 0;  // the share of rank time with nothing to do, at best
  bool wasteful() const { return idle > 0; }
};

// Base stage: ceil(batch / micro_batch) micro-batches per step over `ranks`.
RankUse base_rank_use(int64_t batch, int64_t micro_batch, int ranks);

// Experts stage: one task per expert over `ranks`.
RankUse experts_rank_use(int64_t experts, int ranks);

// The best efficiency `work` equal units can reach on `ranks` ranks, each
// unit whole on one rank: work / (ranks * ceil(work / ranks)) (20 experts on
// 8 ranks: 3 rounds of 8 slots for 20 tasks, 0.83). The bound `smoe
// scaling` warns with; 1 when the units fill every round.
double packing_efficiency(int64_t work, int ranks);

// The warning for a wasteful use (empty when every rank has work), e.g.
// "base: 8 ranks but 1 micro-batch per step (base.batch_size 128 /
// base.micro_batch 128): 88% of the ranks' time idles; set base.micro_batch
// to 16 or less to use every rank (results depend on micro_batch, not on the
// rank count)".
std::string base_idle_warning(int64_t batch, int64_t micro_batch, int ranks);
std::string experts_idle_warning(int64_t experts, int ranks);

}  // namespace smoe::pipeline
