#include "train/expert_trainer.h"

#include <torch/torch.h>

#include <limits>

#include "core/error.h"
#include "core/heartbeat.h"
#include "core/rng.h"
#include "train/losses.h"
#include "train/tensors.h"

namespace smoe::train {
namespace {

// The small loops (ensemblers, gate) print one progress line, at the end.
LoopSpec quiet_loop(const std::string& stage, int64_t n, const OptimConfig& optim, uint64_t seed) {
  LoopSpec spec;
  spec.stage = stage;
  spec.n = n;
  spec.optim = optim;
  spec.seed = seed;
  spec.log_every = std::numeric_limits<int64_t>::max();
  return spec;
}

// The loop of an expert task (alone or fused) over n samples.
LoopSpec expert_loop(const ExpertTrainOptions& o, int64_t n) {
  LoopSpec spec;
  spec.stage = o.name;
  spec.n = n;
  spec.optim = o.optim;
  spec.seed = o.seed;
  spec.log_every = o.log_every;
  spec.start_epoch = o.start_epoch;
  spec.optimizer_state = o.optimizer_state;
  spec.loss_scale = o.loss_scale;
  spec.loss_scale_good_steps = o.loss_scale_good_steps;
  spec.on_epoch_end = o.on_epoch_end;
  spec.stop_on_signal = o.stop_on_signal;
  return spec;
}

// The frozen trunk's output on host `images`, computed on the trunk's device.
at::Tensor frozen_trunk(models::Backbone& base, const at::Tensor& images, int64_t branch_after) {
  torch::NoGradGuard no_grad;
  base->eval();
  return base->blocks(to_device(images, base->parameters().front().device()), 0, branch_after);
}

// The seed of an expert task's augmentation in `epoch`.
uint64_t augment_seed(const ExpertTrainOptions& o, int64_t epoch) {
  return derive_seed(o.seed, "augment", {uint64_t(epoch)});
}

// Each epoch's batches announced to live inputs, with the augmentation
// seed batch_loss passes for that epoch.
std::function<void(const std::vector<std::vector<int64_t>>&, int64_t)> announce_to(const ExpertInputs& inputs,
                                                                                   const ExpertTrainOptions& o) {
  if (inputs.cached()) return {};
  return [&inputs, &o](const std::vector<std::vector<int64_t>>& batches, int64_t epoch) {
    inputs.prefetch(batches, augment_seed(o, epoch));
  };
}

}  // namespace

ExpertInputs::ExpertInputs(std::shared_ptr<const RowCache> cache) : cache_(std::move(cache)) {}

ExpertInputs::ExpertInputs(models::Backbone base, std::shared_ptr<const data::Dataset> ds, int64_t branch_after,
                           data::Transform transform, int64_t prefetch)
    : base_(std::move(base)),
      ds_(std::move(ds)),
      branch_after_(branch_after),
      transform_(transform),
      prefetch_(prefetch) {}

ExpertInputs::~ExpertInputs() = default;

void ExpertInputs::prefetch(std::vector<std::vector<int64_t>> batches, uint64_t seed) const {
  loader_.reset();  // an earlier epoch's loader stops first
  if (cache_ || prefetch_ <= 0) return;
  announced_ = std::move(batches);
  announced_seed_ = seed;
  next_announced_ = 0;
  data::Transform t = transform_;
  t.seed = seed;
  loader_ = std::make_unique<data::BatchLoader>(ds_, announced_, t, prefetch_,
                                                /*pin_memory=*/base_->parameters().front().device().is_cuda());
}

int64_t ExpertInputs::size() const { return cache_ ? cache_->size() : ds_->size(); }

at::Tensor ExpertInputs::get(const std::vector<int64_t>& ids, uint64_t seed) const {
  if (loader_ && next_announced_ < announced_.size() && announced_[next_announced_] == ids && announced_seed_ == seed) {
    ++next_announced_;
    std::optional<data::Batch> b = loader_->next();
    SMOE_ASSERT(b.has_value(), "expert inputs: the loader ended before batch {} of {}", next_announced_,
                announced_.size());
    return frozen_trunk(base_, b->images, branch_after_);
  }
  loader_.reset();  // asked for something else: what was announced no longer holds
  data::Transform t = transform_;
  t.seed = seed;
  return compute(ids, t);
}

at::Tensor ExpertInputs::plain(const std::vector<int64_t>& ids) const { return compute(ids, data::Transform{}); }

at::Tensor ExpertInputs::compute(const std::vector<int64_t>& ids, const data::Transform& t) const {
  if (cache_) return cache_->rows(ids);
  return frozen_trunk(base_, data::make_batch(*ds_, ids, t).images, branch_after_);
}

std::unique_ptr<RowCache> logits_of(models::ExpertModule& net, const ExpertInputs& inputs, int64_t classes,
                                    int64_t batch, RowCacheMode mode, const std::string& file) {
  net.eval();
  const auto device = net.parameters().front().device();
  return RowCache::build_local(inputs.size(), {classes}, batch, mode, file, [&](const std::vector<int64_t>& ids) {
    heartbeat::beat("logits batch");
    return net.forward(inputs.plain(ids).to(device));
  });
}

LoopStats train_expert(models::ExpertModule& expert, const ExpertInputs& inputs, const at::Tensor& labels,
                       const at::Tensor& weights, const ExpertTrainOptions& o) {
  SMOE_CHECK(labels.size(0) == inputs.size() && weights.size(0) == inputs.size(),
             "expert training: {} inputs, {} labels, {} weights", inputs.size(), labels.size(0), weights.size(0));
  const bool sample = o.weighting == Weighting::sample;
  std::vector<double> w;
  if (sample) {
    at::Tensor wd = weights.to(torch::kDouble).cpu().contiguous();
    w.assign(wd.data_ptr<double>(), wd.data_ptr<double>() + wd.numel());
  }
  LoopSpec spec = expert_loop(o, inputs.size());
  spec.sample_weights = sample ? &w : nullptr;
  spec.on_epoch_batches = announce_to(inputs, o);
  expert.train();
  const auto device = expert.parameters().front().device();
  const double smoothing = o.optim.label_smoothing;
  // Labels and weights where the expert is, so that a batch indexes them in place.
  const at::Tensor labels_d = labels.to(device), weights_d = weights.to(device);
  return sgd_loop(expert.parameters(), spec, [&](const std::vector<int64_t>& ids, int64_t epoch) {
    at::Tensor x = inputs.get(ids, augment_seed(o, epoch));
    at::Tensor idx = torch::tensor(ids, torch::kLong).to(device);
    at::Tensor ce = cross_entropy(expert.forward(x.to(device)), labels_d.index_select(0, idx), smoothing);
    if (sample) return ce.mean();
    // sum_x w_k(x) CE(e_k(x), y), normalised by the batch size
    return (weights_d.index_select(0, idx) * ce).sum() / static_cast<double>(ids.size());
  });
}

LoopStats train_experts_fused(models::FusedBranchImpl& fused, const ExpertInputs& inputs, const at::Tensor& labels,
                              const at::Tensor& weights, const ExpertTrainOptions& o,
                              std::vector<double>* expert_losses) {
  const int64_t K = fused.count();
  SMOE_CHECK(o.weighting == Weighting::reweight, "experts trained together need weighting: reweight, not '{}'",
             options::name(o.weighting));
  SMOE_CHECK(
      labels.size(0) == inputs.size() && weights.dim() == 2 && weights.size(0) == inputs.size() && weights.size(1) == K,
      "fused expert training: {} inputs, {} labels, weights of {} dims for {} experts", inputs.size(), labels.size(0),
      weights.dim(), K);
  LoopSpec spec = expert_loop(o, inputs.size());
  spec.on_epoch_batches = announce_to(inputs, o);
  fused.train();
  const auto device = fused.parameters().front().device();
  const double smoothing = o.optim.label_smoothing;
  const at::Tensor labels_d = labels.to(device), weights_d = weights.to(device).contiguous();
  // Each expert's summed batch losses over the current epoch (read once, at the end).
  at::Tensor epoch_losses;
  int64_t loss_epoch = -1, batches = 0;
  LoopStats stats = sgd_loop(fused.parameters(), spec, [&](const std::vector<int64_t>& ids, int64_t epoch) {
    at::Tensor x = inputs.get(ids, augment_seed(o, epoch));
    at::Tensor idx = torch::tensor(ids, torch::kLong).to(device);
    const int64_t B = static_cast<int64_t>(ids.size());
    at::Tensor logits = fused.forward(x.to(device));  // [B, K, classes]
    at::Tensor y = labels_d.index_select(0, idx).repeat_interleave(K);
    at::Tensor ce = cross_entropy(logits.reshape({B * K, -1}), y, smoothing).view({B, K});
    // per expert: sum_x w_k(x) CE(e_k(x), y) / B
    at::Tensor per_expert = (weights_d.index_select(0, idx) * ce).sum(0) / static_cast<double>(B);
    if (epoch != loss_epoch) {
      loss_epoch = epoch;
      batches = 0;
      epoch_losses = torch::zeros({K}, per_expert.options().dtype(torch::kDouble));
    }
    epoch_losses += per_expert.detach();
    ++batches;
    return per_expert.sum();
  });
  if (expert_losses) {
    expert_losses->assign(static_cast<size_t>(K), 0.0);
    if (epoch_losses.defined() && batches > 0) {
      at::Tensor mean = (epoch_losses / static_cast<double>(batches)).cpu().contiguous();
      expert_losses->assign(mean.data_ptr<double>(), mean.data_ptr<double>() + K);
    }
  }
  return stats;
}

LoopStats train_ensembler(models::EnsemblerModule& stacking, const RowsOf& base_logits, const RowsOf& expert_logits,
                          const at::Tensor& labels, const at::Tensor& weights, const OptimConfig& optim, uint64_t seed,
                          const std::string& name) {
  stacking.train();
  const c10::Device device =
      stacking.parameters().empty() ? c10::Device(c10::kCPU) : stacking.parameters().front().device();
  return sgd_loop(stacking.parameters(), quiet_loop(name, labels.size(0), optim, seed),
                  [&](const std::vector<int64_t>& ids, int64_t) {
                    at::Tensor out =
                        stacking.forward(to_device(base_logits(ids), device), to_device(expert_logits(ids), device));
                    at::Tensor ce = cross_entropy(out, rows_to(labels, ids, device), 0.0);
                    return (rows_to(weights, ids, device) * ce).sum() / static_cast<double>(ids.size());
                  });
}

LoopStats train_gate(models::GateModule& gate, const GateRowsOf& features, const RowsOf& targets, int64_t n,
                     const OptimConfig& optim, uint64_t seed) {
  SMOE_CHECK(gate.trainable(), "this gate kind has no weights to train");
  gate.train();
  return sgd_loop(gate.parameters(), quiet_loop("gate", n, optim, seed), [&](const std::vector<int64_t>& ids, int64_t) {
    return kl_to_logits(targets(ids), gate.forward(features(ids))).mean();
  });
}

LoopStats train_gate(models::GateModule& gate, const models::GateFeatures& inputs, const at::Tensor& targets,
                     const OptimConfig& optim, uint64_t seed) {
  return train_gate(
      gate, [&](const std::vector<int64_t>& ids) { return inputs.rows(torch::tensor(ids, torch::kLong)); },
      [&](const std::vector<int64_t>& ids) { return rows_to(targets, ids, targets.device()); }, targets.size(0), optim,
      seed);
}

namespace {

// f(ids, start) over consecutive batches of `batch` ids covering [0, n).
void for_batches(int64_t n, int64_t batch, const std::function<void(const std::vector<int64_t>&, int64_t)>& f) {
  for (int64_t start = 0; start < n; start += batch) {
    std::vector<int64_t> ids;
    for (int64_t i = start; i < std::min(n, start + batch); ++i) ids.push_back(i);
    f(ids, start);
  }
}

}  // namespace

GateFit gate_fit(models::GateModule& gate, const GateRowsOf& features, const RowsOf& targets, int64_t n,
                 int64_t batch) {
  torch::NoGradGuard no_grad;
  gate.eval();
  double kl = 0;
  int64_t agree = 0;
  for_batches(n, batch, [&](const std::vector<int64_t>& ids, int64_t) {
    at::Tensor t = targets(ids), logits = gate.forward(features(ids));
    kl += kl_to_logits(t, logits).sum().item<double>();
    agree += (logits.argmax(1) == t.argmax(1)).sum().item<int64_t>();
  });
  return {kl / static_cast<double>(std::max<int64_t>(n, 1)),
          static_cast<double>(agree) / static_cast<double>(std::max<int64_t>(n, 1))};
}

}  // namespace smoe::train
