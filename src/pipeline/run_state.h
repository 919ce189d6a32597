// What the stages of a run share: the config, the ranks, the run folder and
// its model store, the datasets, the base model, and the tensors stages hand
// on (embeddings, g0, the experts' targets and inputs). Tensors that a
// finished stage left on disk are loaded when a later stage first needs them,
// so a resumed run redoes nothing.
#pragma once

#include <ATen/core/Tensor.h>

#include <memory>
#include <optional>
#include <vector>

#include "comm/communicator.h"
#include "data/batch.h"
#include "data/dataset.h"
#include "models/gate.h"
#include "models/network.h"
#include "pipeline/config.h"
#include "pipeline/model_store.h"
#include "pipeline/run_dir.h"
#include "pipeline/runtime.h"
#include "train/expert_trainer.h"
#include "train/row_cache.h"

namespace smoe::pipeline {

struct RunState {
  // Opens the datasets and builds the base model (not yet trained).
  RunState(Config config, comm::Communicator& comm, RunDir& run, RuntimeInfo runtime);
  ~RunState();

  Config cfg;
  comm::Communicator& comm;
  RunDir& run;
  RuntimeInfo rt;
  int64_t budget_left = 0;  // bytes of runtime.memory_budget_mb the caches have not taken
  std::shared_ptr<data::Dataset> train, test;
  ModelStore store;
  models::Backbone base{nullptr};

  // Pre-logits and logits of every training sample [N, D + C]
  // (embeddings.f32): in RAM within the budget, else read by rows from disk.
  std::unique_ptr<train::RowCache> embeddings;
  at::Tensor local_ids, local_prelogits;  // this rank's rows of the embed stage, when it ran in this process
  // The frozen initial gate g0 [N, K] (g0.f32) and, in EM mode, the current
  // round's posterior q [N, K] (em-R/q.f32), written by the ranks at their
  // rows' offsets: in RAM within the budget, else read by rows from the run
  // folder. No rank gathers them.
  std::unique_ptr<train::RowCache> g0, q;
  const train::RowCache* targets = nullptr;            // what the experts fit: g0, or q of the current EM round
  std::unique_ptr<train::ExpertInputs> expert_inputs;  // the frozen trunk's outputs
  // The model the scheme's latest training stage left (Stage::trained_model),
  // which the evaluation after it evaluates: set by the pipeline when a
  // stage runs, or is skipped as already done.
  std::optional<TrainedModel> model;
  double trunk_cache_seconds = 0;

  // The last round of the scheme's model (0: Algorithm 1, em.steps in EM mode).
  int64_t final_round() const { return cfg.em.steps; }
  // Loads base.pt into the base model (eval mode).
  void load_base(const std::string& path);
  // Takes `bytes` of the memory budget if that much is left.
  bool take_budget(int64_t bytes);
  // D + C: a row of embeddings.f32.
  int64_t embedding_width() const;
  // The embed stage's rows (opened on first use after a resume).
  train::RowCache& open_embeddings();
  // This rank's share of the test batches `batches` (batch i on rank
  // i mod P), read ahead on a loader thread (data.prefetch batches), in
  // pinned memory when the device is a GPU: the evaluations' input.
  data::BatchLoader test_loader(const std::vector<std::vector<int64_t>>& batches) const;
  // Rows of `ids`: the gate's features (pre-logits, normalised when
  // cluster.normalize, and logits), and the base model's logits.
  models::GateFeatures gate_features(const std::vector<int64_t>& ids);
  at::Tensor base_logits(const std::vector<int64_t>& ids);
  // Where a row cache of `bytes` stays on this rank: in RAM when it fits in
  // what is left of the budget (then taken), else on disk.
  train::RowCacheMode reserve_rows(int64_t bytes);
  // Opens rows of every training sample that a finished stage left in `file`,
  // in RAM when the budget allows.
  std::unique_ptr<train::RowCache> open_rows(const std::string& file, const std::vector<int64_t>& shape);
  // Closes a row cache, giving back the budget it took in RAM (and unsetting
  // `targets` if they were its rows).
  void drop_rows(std::unique_ptr<train::RowCache>& cache);
  // g0.f32 (opened on first use after a resume).
  train::RowCache& open_g0();
  // em-R/q.f32 of a finished E-step, replacing the previous round's q.
  train::RowCache& open_q(int64_t round);
  // Collective: the experts' inputs (the trunk's features, cached once and
  // shared out among the ranks, in RAM or on disk as the budget allows,
  // unless the experts train on augmented images).
  void prepare_expert_inputs();
  // memory, disk, off (computed per batch) or none (not prepared).
  std::string trunk_cache_mode() const;
  at::Tensor train_labels() const;
};

// Collective: every rank's peak resident memory (MiB, one decimal) since the
// current stage started (Pipeline resets the peak at each stage's start).
std::vector<double> ranks_peak_rss_mb(comm::Communicator& comm);

// The seed of the label noise and of the trusted subset (data::is_trusted).
uint64_t trusted_seed(const Config& c);

}  // namespace smoe::pipeline
