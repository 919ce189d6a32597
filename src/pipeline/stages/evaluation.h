// The evaluation of a trained MoE on the test split, whichever family it is
// (pipeline/trained_model.h): Algorithm 1's single-gate MoE (the anytime
// grid, the ensemblers, top-2; single_gate_evaluation.cpp) or a jointly
// trained one (the mixture, top-1, top-2, each expert alone;
// joint_evaluation.cpp). The one eval stage (eval.cpp) runs it:
//
//   every rank: for its batches of the test split   add(batch)
//   every rank: the counts summed                   pack -> allreduce -> unpack
//   rank 0:     the family's report                 report(), inference_time()
//   rank 0:     the run's common records added,     write(): report.json, plots
//
// so each family says what it counts and reports, and the loop over the
// batches, the reduction, the timing and the run's bookkeeping are written
// once. An evaluation's counts are integers: the report does not depend on
// how the batches were split among the ranks.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <utility>
#include <vector>

#include "pipeline/trained_model.h"

namespace smoe::data {
struct Batch;
}

namespace smoe::pipeline {

struct RunState;

class Evaluation {
 public:
  virtual ~Evaluation() = default;
  // What is evaluated, for the log ("model of EM round 0", "joint.pt, attentive gate").
  virtual std::string what() const = 0;
  // Runs the model on one test batch (on the run's device) and counts what it did.
  virtual void add(const data::Batch& batch) = 0;
  // The counts as integers, in a fixed order, to be summed over the ranks.
  virtual std::vector<int64_t> pack() const = 0;
  virtual void unpack(const std::vector<int64_t>& counts) = 0;
  virtual int64_t samples() const = 0;
  // Rank 0, once the counts are summed: the family's figures.
  virtual nlohmann::json report() = 0;
  // Rank 0: the models to time (time_per_sample) and what the timing adds
  // to the report's "inference_time" (the anytime model's tau).
  using TimedModel = std::function<at::Tensor(const at::Tensor&)>;
  using TimedModels = std::vector<std::pair<std::string, TimedModel>>;
  virtual TimedModels timed_models(const nlohmann::json& report, nlohmann::json& timing) = 0;
  // Rank 0: adds the family's run records to the report (already holding
  // the run's common ones), writes report.json and the plots, and logs a summary.
  virtual void write(nlohmann::json report) = 0;
};

// The evaluation of `model` as the run state holds it (the base model, the
// model store), which it reads and writes through until it ends; a
// single-gate model is that of `round` (0: Algorithm 1, r: EM round r).
std::unique_ptr<Evaluation> make_evaluation(RunState& state, const TrainedModel& model, int64_t round);
std::unique_ptr<Evaluation> make_single_gate_evaluation(RunState& state, int64_t round);
std::unique_ptr<Evaluation> make_joint_evaluation(RunState& state, const TrainedModel& model);

// Collective: the evaluation over the test split in fixed batches of
// eval.batch_size shared round-robin among the ranks, the counts summed;
// on rank 0 the report with the test set's figures, the inference timing
// (eval.timing_samples) and the dataset's sizes; null elsewhere.
nlohmann::json evaluate_test(RunState& state, Evaluation& evaluation);

// Wall-clock inference time per test sample of each named model (images ->
// class scores), measured by the calling rank on the first
// eval.timing_samples test samples in batches of eval.batch_size, with its
// threads: the batches are read before the clock starts, each batch's
// predictions are brought back to the host (on a GPU, the wait for the
// kernels counts), one warm-up batch per model. {samples, batch_size,
// threads, device, ms_per_sample: {name: ms}}.
nlohmann::json time_per_sample(RunState& state, const Evaluation::TimedModels& models);

}  // namespace smoe::pipeline
