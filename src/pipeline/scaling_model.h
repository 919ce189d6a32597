// How a stage's time changes with the rank count: the model `smoe scaling`
// predicts with, fed with one run's measurements (docs/scaling.md).
//
// A stage's time on P ranks is its compute on P ranks plus its collectives:
//   rows           (embed, cluster, gate, em, eval, ...) the samples are split
//                  among the ranks: compute(P) = compute(P0) P0 / P;
//   micro_batches  (base, joint, ...: stages that record
//                  micro_batches_per_step) each step's m micro-batches, one
//                  rank each: compute(P) = compute(P0) ceil(m/P) / ceil(m/P0);
//   tasks          (experts) the scheduler's makespan (simulate_schedule, the
//                  measured per-expert seconds in the scheduler's order, one
//                  request/reply round trip per task), plus the trunk cache
//                  shared out among the ranks, plus the rest, which does not
//                  shrink.
// compute(P) = serial + parallel w(P), fitted to the measured times less
// the model's collective time (fit_stage below); the serial part is a fixed
// cost that neither a weak study nor a work factor grows.
// Collectives cost what the textbook algorithms of comm/traffic.h cost with
// a latency a per message and b seconds per byte (Hockney's model):
//   allreduce (ring)         2 (P-1) (a + n/P b)
//   broadcast (binomial)     ceil(log2 P) (a + n b)
//   allgather, gather (ring) (P-1) a + (P-1)/P N b, N the bytes of all ranks
//   barrier                  2 ceil(log2 P) a
// The calls and their bytes are those of the largest run measured (a run on
// one rank may skip collectives). Point-to-point control messages (the
// scheduler's, the stall inspector's) are left out but for the scheduler's
// round trip. Torch-free.
#pragma once

#include <cstdint>
#include <nlohmann/json_fwd.hpp>
#include <string>
#include <vector>

#include "comm/communicator.h"
#include "comm/traffic.h"
#include "core/options.h"

namespace smoe::pipeline {

// Strong scaling: the same work at every rank count; weak: the training
// samples grow with it (data.limit_train = N0 x P).
enum class ScalingMode { strong, weak };
inline const options::Names<ScalingMode>& option_names(ScalingMode) {
  static const options::Names<ScalingMode> n{{ScalingMode::strong, "strong"}, {ScalingMode::weak, "weak"}};
  return n;
}

// How a stage's work divides among ranks: rows of data (1/P), whole
// micro-batches of each step (the base stage's ceil(m/P)), or tasks (the
// experts, as the scheduler packs them).
enum class WorkKind { rows, micro_batches, tasks };

struct CollectiveModel {
  double latency_s = -1;         // a, per message
  double seconds_per_byte = -1;  // b = 1 / bandwidth
  std::string source;            // how the constants were found
  bool known() const { return latency_s >= 0 && seconds_per_byte >= 0; }
  // Seconds of one call of `op` on P ranks; `bytes` is the payload of one
  // rank (allgather and gather: of all ranks together).
  double cost(comm::Op op, double bytes, int P) const;
};

// Collective on `comm`: a and b fitted from timed allreduces of 8 bytes and
// of 4 MiB on comm's ranks (a comm of one rank: no measurement, zeros).
CollectiveModel measure_collectives(comm::Communicator& comm);

// One stage of one run, as the model needs it.
struct StageMeasure {
  std::string stage;
  int ranks = 1;
  double seconds = 0;
  WorkKind kind = WorkKind::rows;
  int64_t units = 0;                            // micro_batches: per step; tasks: the tasks
  std::vector<double> task_seconds, task_cost;  // tasks: measured, and the scheduler's predicted cost
  double shared_seconds = 0;                    // tasks: the trunk cache, shared out among the ranks
  comm::TrafficCounts ops;                      // rank 0's counts over the stage
};

// Stage `stage` of the finished run in folder `run_dir` (for messages),
// from its report.json and run.json's "done" records.
StageMeasure stage_measure(const nlohmann::json& report, const nlohmann::json& done, const std::string& stage,
                           const std::string& run_dir);

// A stage's model, fitted to its runs at one or more rank counts.
struct StageModel {
  StageMeasure base;    // the smallest run: the kind, the units, the tasks
  double serial = 0;    // rows, micro_batches: seconds that do not shrink with P
  double parallel = 0;  // rows, micro_batches: the seconds that do, at P = 1 (one round per unit)
  comm::TrafficCounts calls;
  int calls_ranks = 1;
  CollectiveModel collectives;
  bool weak = false;  // the work grows with P: scale(P) = P / base.ranks, else 1
  // The work of the run to predict over the work measured (--work-scale:
  // e.g. the full config's samples x epochs over a short run's): multiplies
  // the compute and a micro-batch stage's per-step collectives.
  double work = 1;

  double scale(int P) const { return (weak ? static_cast<double>(P) / base.ranks : 1.0) * work; }
  double compute(int P) const;
  double collective(int P) const;
  double seconds(int P) const { return compute(P) + collective(P); }
  // tasks: the scheduler simulated with `run`'s own task seconds and trunk
  // cache (measured on run.ranks ranks) plus this model's serial part: how
  // well the simulation reproduces the run's stage time once the tasks'
  // durations are known (on a machine whose cores slow each other down, a
  // task takes longer on more ranks, which no model of one run foresees).
  double replay(const StageMeasure& run) const;
};

// Fits the model to `runs` (the same stage at increasing rank counts; at
// least one). rows and micro_batches: compute(P) = serial + parallel w(P),
// w(P) = 1/P or ceil(m/P), least squares over the runs (one run, or a fit
// with s < 0: serial 0; a fit with p < 0, a stage more ranks did not
// shorten: all serial).
// tasks: the scheduler's makespan for the smallest run's task seconds, its
// trunk cache shared out, and its remainder as the serial part. The
// collective calls are the largest run's. The serial part is a fixed cost:
// a weak study (the work N0 P) and a work factor grow the shared work (p,
// the tasks, the trunk cache) and a micro-batch stage's allreduces (one per
// step) by scale(P), not s nor the stage's one-time broadcasts.
StageModel fit_stage(const std::vector<StageMeasure>& runs, const CollectiveModel& collectives, bool weak = false);

// The modelled seconds of the collectives `calls` (rank 0's counts from a
// run on calls_ranks ranks) on P ranks.
double collective_seconds(const comm::TrafficCounts& calls, int calls_ranks, int P, const CollectiveModel& model);

}  // namespace smoe::pipeline
