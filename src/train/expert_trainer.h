// Algorithm 1, steps 4 and 5, for one expert k: e_k starts from the base
// model's weights (its non-shared blocks), the shared trunk stays frozen, and
// e_k minimises sum_x w_k(x) CE(e_k(x), y) with w_k = clip(g0(k|x), gamma, 1)
// (or samples batches with probability proportional to w_k). Then the
// stacking ensembler d_k is fitted on the frozen base and expert logits with
// the same weights.
#pragma once

#include <ATen/core/Tensor.h>

#include <functional>
#include <memory>
#include <string>

#include "data/batch.h"
#include "data/dataset.h"
#include "models/ensembler.h"
#include "models/fused_branch.h"
#include "models/gate.h"
#include "models/network.h"
#include "train/row_cache.h"
#include "train/sgd_loop.h"
#include "train/trainer_options.h"

namespace smoe::train {

// The expert's inputs (the trunk's output) for any training ids: from the
// trunk cache (row_cache.h: in RAM or spilled to disk), or computed per
// batch (live: with augmentation when training the experts on augmented
// data). Live, the host's part of a batch (reading, augmenting, normalising;
// in pinned memory for a CUDA trunk) is built ahead on a loader thread for
// the batches announced by prefetch(), while the device runs the trunk and
// the expert on the current one.
class ExpertInputs {
 public:
  explicit ExpertInputs(std::shared_ptr<const RowCache> cache);
  ExpertInputs(models::Backbone base, std::shared_ptr<const data::Dataset> ds, int64_t branch_after,
               data::Transform transform, int64_t prefetch = 2);
  ~ExpertInputs();
  // Live: the next get() calls will ask for `batches`, in order, with
  // `augment_seed`; a loader thread starts building them (nothing when
  // cached, or with prefetch 0). A get() off that list is computed directly.
  void prefetch(std::vector<std::vector<int64_t>> batches, uint64_t seed) const;
  // Trunk outputs of `ids`; `augment_seed` drives augmentation in live mode.
  at::Tensor get(const std::vector<int64_t>& ids, uint64_t augment_seed) const;
  // Un-augmented trunk outputs of `ids`.
  at::Tensor plain(const std::vector<int64_t>& ids) const;
  int64_t size() const;
  bool cached() const { return cache_ != nullptr; }
  const RowCache* cache() const { return cache_.get(); }

 private:
  at::Tensor compute(const std::vector<int64_t>& ids, const data::Transform& t) const;

  std::shared_ptr<const RowCache> cache_;
  mutable models::Backbone base_{nullptr};  // forward passes only
  std::shared_ptr<const data::Dataset> ds_;
  int64_t branch_after_ = 0;
  data::Transform transform_;
  int64_t prefetch_ = 2;
  // The batches announced by prefetch(), their loader and the next one's index.
  mutable std::vector<std::vector<int64_t>> announced_;
  mutable uint64_t announced_seed_ = 0;
  mutable size_t next_announced_ = 0;
  mutable std::unique_ptr<data::BatchLoader> loader_;
};

// Logits [N, classes] of `net` on the un-augmented inputs of every training
// sample, computed by this rank in batches of `batch` consecutive ids (eval
// mode, no grad): held in RAM (memory) or in `file`, which goes with the
// cache (disk). The inputs are never all in memory at once.
std::unique_ptr<RowCache> logits_of(models::ExpertModule& net, const ExpertInputs& inputs, int64_t classes,
                                    int64_t batch, RowCacheMode mode, const std::string& file);

struct ExpertTrainOptions {
  OptimConfig optim;
  Weighting weighting = Weighting::reweight;
  uint64_t seed = 0;  // the expert's own stream
  int64_t log_every = 50;
  std::string name = "expert";
  // Resuming after an epoch, and the per-epoch hook (train/sgd_loop.h).
  int64_t start_epoch = 0;
  std::string optimizer_state;
  double loss_scale = 0;  // the loss scaler's state then (float16; 0: fresh)
  int64_t loss_scale_good_steps = 0;
  LoopEpochHook on_epoch_end;
  bool stop_on_signal = false;  // LoopSpec::stop_on_signal
};

LoopStats train_expert(models::ExpertModule& expert, const ExpertInputs& inputs, const at::Tensor& labels,
                       const at::Tensor& weights, const ExpertTrainOptions& options);

// The K experts stacked in `fused` trained together (experts.fuse): one pass
// over the data in the order and augmentation of options.seed, every batch
// through all K at once, minimising sum_k sum_x w_k(x) CE(e_k(x), y) / B with
// weights [N, K]. Each expert's gradient is its own loss's, so this is
// train_expert on each expert with the same options (reweighting only), up to
// float summation order in the kernels. `expert_losses` receives each
// expert's mean batch loss over the last epoch.
LoopStats train_experts_fused(models::FusedBranchImpl& fused, const ExpertInputs& inputs, const at::Tensor& labels,
                              const at::Tensor& weights, const ExpertTrainOptions& options,
                              std::vector<double>* expert_losses = nullptr);

// Rows of a per-sample tensor by id (from RAM or disk, row_cache.h).
using RowsOf = std::function<at::Tensor(const std::vector<int64_t>& ids)>;
using GateRowsOf = std::function<models::GateFeatures(const std::vector<int64_t>& ids)>;

// These two small loops print one progress line, at the end.
// Fits d_k on frozen logits: minimises sum_x w(x) CE(d_k(base(x), e_k(x)), y).
LoopStats train_ensembler(models::EnsemblerModule& ensembler, const RowsOf& base_logits, const RowsOf& expert_logits,
                          const at::Tensor& labels, const at::Tensor& weights, const OptimConfig& optim, uint64_t seed,
                          const std::string& name);

// Fits the gate g on the base model's outputs by minimising KL(target || g)
// over n rows (targets [n, K]: g0, or q in EM mode), reading the features
// and the targets by batch.
LoopStats train_gate(models::GateModule& gate, const GateRowsOf& features, const RowsOf& targets, int64_t n,
                     const OptimConfig& optim, uint64_t seed);
// The same on features held whole.
LoopStats train_gate(models::GateModule& gate, const models::GateFeatures& inputs, const at::Tensor& targets,
                     const OptimConfig& optim, uint64_t seed);

// How well g matches the targets over every row, in batches of `batch` ids:
// the mean KL(target || g) and the fraction whose top expert agrees.
struct GateFit {
  double kl = 0;
  double top1_agreement = 0;
};
GateFit gate_fit(models::GateModule& gate, const GateRowsOf& features, const RowsOf& targets, int64_t n, int64_t batch);

}  // namespace smoe::train
