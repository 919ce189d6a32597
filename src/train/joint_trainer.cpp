#include "train/joint_trainer.h"

#include <fmt/ranges.h>
#include <torch/torch.h>

#include <random>

#include "comm/tensor_collectives.h"
#include "core/error.h"
#include "core/log.h"
#include "core/progress.h"
#include "core/rng.h"
#include "core/stop.h"
#include "data/batch.h"
#include "data/sampler.h"
#include "train/base_trainer.h"
#include "train/checkpoint.h"
#include "train/moe_losses.h"
#include "train/optim.h"
#include "train/tensors.h"

namespace smoe::train {
namespace {

// One of this rank's micro-batches of a step, run forward.
struct Live {
  models::JointOutputs out;
  at::Tensor x, y, nll;  // x after mixup; nll per sample (mixed between the two labels)
  int64_t pos = 0;       // its first row's position in the global batch
  int64_t index = 0;     // its index among the epoch's micro-batches
};

// Mixup (Zhang et al.): lambda ~ Beta(alpha, alpha) and a partner
// permutation of the micro-batch, both from `seed`.
struct Mix {
  double lambda = 1;
  at::Tensor partner;  // int64 [b]
};
Mix draw_mix(int64_t b, double alpha, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::gamma_distribution<double> gamma(alpha, 1.0);
  const double u = gamma(rng), v = gamma(rng);
  Mix m;
  m.lambda = u + v > 0 ? u / (u + v) : 1.0;
  m.partner = torch::tensor(data::permutation(b, seed ^ 0x9e3779b97f4a7c15ULL), torch::kLong);
  return m;
}

// The parameters the optimiser steps, in groups: the gate (at
// gate_lr_scale x lr), then the experts unless frozen. Frozen parameters (a
// fine-tuned Algorithm-1 MoE's base tail inside its gate) are left out.
struct ParamGroups {
  std::vector<std::vector<at::Tensor>> groups;
  std::vector<double> lr_scales;
  std::vector<at::Tensor> all;  // the groups' parameters, in order
};
ParamGroups trainable_groups(models::JointMoeImpl& moe, const JointTrainOptions& o) {
  auto trainable = [](const std::vector<at::Tensor>& ps) {
    std::vector<at::Tensor> out;
    for (const auto& p : ps)
      if (p.requires_grad()) out.push_back(p);
    return out;
  };
  ParamGroups g;
  g.groups = {trainable(moe.gate().parameters())};
  g.lr_scales = {o.gate_lr_scale};
  if (!o.freeze_experts) {
    g.groups.push_back(trainable(moe.expert_parameters()));
    g.lr_scales.push_back(1.0);
  }
  for (const auto& group : g.groups) g.all.insert(g.all.end(), group.begin(), group.end());
  return g;
}

// Conditional training: owns[c][e] = expert e owns class c (undefined: off).
at::Tensor class_ownership(const JointTrainOptions& o, int64_t K, c10::Device device) {
  if (o.class_owner.empty()) return {};
  SMOE_CHECK(o.mixup == 0, "joint.conditional: mixup mixes the classes the experts' gradients are masked by");
  at::Tensor owner = torch::tensor(o.class_owner, torch::kLong);
  SMOE_CHECK(owner.min().item<int64_t>() >= 0 && owner.max().item<int64_t>() < K,
             "joint.class_owner: every entry must be an expert in [0, {})", K);
  return torch::one_hot(owner, K).to(torch::kBool).to(device);
}

// One epoch's global batches and this rank's micro-batches of them, in step
// order: micro-batch g of the epoch goes to rank g % P.
struct EpochPlan {
  std::vector<std::vector<int64_t>> batches;  // the global batches' sample ids
  std::vector<std::vector<int64_t>> mine;     // this rank's micro-batches
  std::vector<int64_t> step, pos, index;      // each one's step, first row in its batch, index in the epoch
};
EpochPlan plan_epoch(int64_t N, const JointTrainOptions& o, int64_t epoch, int rank, int P) {
  EpochPlan p;
  p.batches = data::make_batches(data::permutation(N, derive_seed(o.seed, o.stage, {uint64_t(epoch)})),
                                 o.optim.batch_size, true);
  int64_t g = 0;
  for (size_t s = 0; s < p.batches.size(); ++s) {
    int64_t pos = 0;
    for (auto& mb : data::make_batches(p.batches[s], o.micro_batch, false)) {
      const auto size = static_cast<int64_t>(mb.size());
      if (g % P == rank) {
        p.mine.push_back(std::move(mb));
        p.step.push_back(static_cast<int64_t>(s));
        p.pos.push_back(pos);
        p.index.push_back(g);
      }
      ++g;
      pos += size;
    }
  }
  return p;
}

// An epoch's running sums on this rank, and the epoch's statistics from
// every rank's.
struct EpochTally {
  EpochTally(int64_t K, c10::Device device)
      : dopt(torch::TensorOptions().dtype(torch::kDouble).device(device)),
        loss_sum(torch::zeros({}, dopt)),
        correct(torch::zeros({}, dopt)),
        top1_count(torch::zeros({K}, dopt)) {}
  void add(const Live& l) {
    top1_count.index_add_(0, l.out.gate_probs.detach().argmax(1), torch::ones({l.x.size(0)}, dopt));
    loss_sum += l.nll.detach().sum().to(torch::kDouble);
    correct += (l.out.mixture.argmax(1) == l.y).sum().to(torch::kDouble);
    seen += static_cast<double>(l.x.size(0));
    images += l.x.size(0);
  }
  double mean_loss() const { return seen > 0 ? loss_sum.item<double>() / seen : 0.0; }
  // Collective.
  JointEpochStats finish(comm::Communicator& comm, int64_t epoch, size_t steps_run) const {
    const auto K = static_cast<size_t>(top1_count.size(0));
    std::vector<double> tot = {loss_sum.item<double>(), correct.item<double>(), seen, similarity};
    at::Tensor top1 = top1_count.cpu().contiguous();
    tot.insert(tot.end(), top1.data_ptr<double>(), top1.data_ptr<double>() + K);
    comm.allreduce(comm::host_buffer(tot), comm::ReduceOp::sum);
    const double steps = static_cast<double>(std::max<size_t>(steps_run, 1));
    JointEpochStats last;
    last.epoch = epoch + 1;
    last.loss = tot[2] > 0 ? tot[0] / tot[2] : 0;
    last.train_error = tot[2] > 0 ? 1 - tot[1] / tot[2] : 0;
    last.importance = importance / steps;  // the same on every rank
    last.balance = balance / steps;
    last.diversity = diversity / steps;  // the same on every rank
    last.load.assign(K, 0.0);
    for (size_t e = 0; e < K; ++e) last.load[e] = tot[2] > 0 ? tot[4 + e] / tot[2] : 0;
    last.similarity = tot[3] / steps;
    last.images = images;
    return last;
  }

  torch::TensorOptions dopt;
  at::Tensor loss_sum, correct, top1_count;
  double seen = 0, importance = 0, balance = 0, similarity = 0, diversity = 0;
  int64_t images = 0;
};

// One step of the jointly trained MoE: its micro-batches forward
// (forward()), then their gradients into the exact sum, with or without the
// batch-level regularisers (backward()).
class JointStep {
 public:
  JointStep(models::JointMoeImpl& moe, const data::Dataset& train, comm::Communicator& comm, const JointTrainOptions& o,
            std::vector<at::Tensor> params, at::Tensor owns)
      : moe_(moe),
        train_(train),
        comm_(comm),
        o_(o),
        params_(std::move(params)),
        owns_(std::move(owns)),
        K_(moe.num_experts()),
        B_(o.optim.batch_size),
        per_step_((B_ + o.micro_batch - 1) / o.micro_batch),
        noisy_(moe.gate().uses_noise()),
        regularized_(any_regularizer(o.reg)),
        similarity_(o.reg.similarity_same > 0 || o.reg.similarity_diff > 0),
        device_(moe.parameters().front().device()),
        grad_sum_(params_) {}

  bool regularized() const { return regularized_; }
  comm::ExactSum& grad_sum() { return grad_sum_; }
  const std::vector<at::Tensor>& params() const { return params_; }

  // Micro-batch `index` of `epoch` (its first row at `pos` in the batch),
  // forward: mixup, a noisy gate's noise, the conditional mixture, the NLL.
  Live forward(const data::Batch& b, int64_t epoch, int64_t pos, int64_t index) const;
  // The step's micro-batches' gradients, added to grad_sum(); step: the
  // step's index in the epoch (the diversity slots).
  void backward(std::vector<Live>& live, size_t step, EpochTally& tally, torch::optim::Optimizer& opt);

 private:
  void backward_plain(std::vector<Live>& live, torch::optim::Optimizer& opt);
  void backward_regularized(std::vector<Live>& live, size_t step, EpochTally& tally, torch::optim::Optimizer& opt);
  // Diversity's gradient dL_div / d sum_e [K, C], from every micro-batch's
  // per-expert sums of its routed samples' output distributions, each in
  // its own slot of the step (one owner each: the sum over ranks is exact),
  // added in slot order.
  at::Tensor diversity_grad_of(const std::vector<Live>& live, size_t step, double* value) const;
  // Each micro-batch's squared distances to the whole batch's inputs, and
  // their largest value over the ranks.
  std::vector<at::Tensor> similarity_distances(const std::vector<Live>& live, double* dmax) const;

  models::JointMoeImpl& moe_;
  const data::Dataset& train_;
  comm::Communicator& comm_;
  const JointTrainOptions& o_;
  std::vector<at::Tensor> params_;
  at::Tensor owns_;
  const int64_t K_, B_, per_step_;
  const bool noisy_, regularized_, similarity_;
  const c10::Device device_;
  comm::ExactSum grad_sum_;
};

Live JointStep::forward(const data::Batch& b, int64_t epoch, int64_t pos, int64_t index) const {
  const auto ix = static_cast<uint64_t>(index);
  Live l;
  l.x = to_device(b.images, device_);
  l.y = to_device(b.labels, device_);
  l.pos = pos;
  l.index = index;
  Mix mix;
  if (o_.mixup > 0) {
    mix = draw_mix(l.x.size(0), o_.mixup, derive_seed(o_.seed, o_.stage + "-mixup", {uint64_t(epoch), ix}));
    mix.partner = mix.partner.to(device_);
    l.x = mix.lambda * l.x + (1 - mix.lambda) * l.x.index_select(0, mix.partner);
  }
  at::Tensor noise;
  if (noisy_) {
    auto gen =
        at::make_generator<at::CPUGeneratorImpl>(derive_seed(o_.seed, o_.stage + "-noise", {uint64_t(epoch), ix}));
    noise = at::randn({l.x.size(0), K_}, gen, torch::TensorOptions().dtype(torch::kFloat)).to(device_);
  }
  l.out = o_.freeze_experts ? moe_.forward_frozen_experts(l.x, noise) : moe_.forward(l.x, noise);
  const double eps = o_.optim.label_smoothing;
  if (owns_.defined()) {
    // Conditional training: an expert's output counts in the mixture of a
    // sample of a class it does not own as a constant.
    at::Tensor own = owns_.index_select(0, l.y);  // [b, K]
    at::Tensor probs = torch::softmax(l.out.expert_logits, 2);
    probs = torch::where(own.unsqueeze(2), probs, probs.detach());
    l.out.mixture = (l.out.gate_probs.unsqueeze(2) * probs).sum(1);
  }
  l.nll = models::mixture_nll(l.out.mixture, l.y, eps);
  if (owns_.defined()) {
    at::Tensor own = owns_.index_select(0, l.y).to(l.out.expert_logits.dtype());
    at::Tensor ce = -torch::log_softmax(l.out.expert_logits, 2)
                         .gather(2, l.y.view({-1, 1, 1}).expand({l.x.size(0), K_, 1}))
                         .squeeze(2);  // [b, K]
    l.nll = l.nll + (own * ce).sum(1);
  }
  if (o_.mixup > 0)
    l.nll = mix.lambda * l.nll +
            (1 - mix.lambda) * models::mixture_nll(l.out.mixture, l.y.index_select(0, mix.partner), eps);
  return l;
}

void JointStep::backward(std::vector<Live>& live, size_t step, EpochTally& tally, torch::optim::Optimizer& opt) {
  // Every forward of the step, then every backward: measured 1.5x faster on
  // one core than backward after each forward, the same weights (README).
  if (regularized_)
    backward_regularized(live, step, tally, opt);
  else
    backward_plain(live, opt);
}

void JointStep::backward_plain(std::vector<Live>& live, torch::optim::Optimizer& opt) {
  for (auto& l : live) {
    opt.zero_grad();
    l.nll.sum().backward();
    grad_sum_.add(gradients_of(params_), "gradient of parameter");
  }
}

at::Tensor JointStep::diversity_grad_of(const std::vector<Live>& live, size_t step, double* value) const {
  const auto dopt = torch::TensorOptions().dtype(torch::kDouble).device(device_);
  const int64_t C = train_.num_classes();
  at::Tensor slots = torch::zeros({per_step_, K_, C + 1}, dopt);
  for (const auto& l : live) {
    at::Tensor routed = l.out.routed.to(torch::kDouble);                                    // [b, K]
    at::Tensor probs = torch::softmax(l.out.expert_logits.detach(), 2).to(torch::kDouble);  // [b, K, C]
    at::Tensor slot = slots[l.index - static_cast<int64_t>(step) * per_step_];
    slot.narrow(1, 0, C).copy_((probs * routed.unsqueeze(2)).sum(0));
    slot.select(1, C).copy_(routed.sum(0));
  }
  comm::allreduce(comm_, slots);
  at::Tensor total = slots[0].clone();
  for (int64_t i = 1; i < per_step_; ++i) total += slots[i];
  at::Tensor counts = total.select(1, C).contiguous();
  return diversity_grad(total.narrow(1, 0, C), counts, o_.reg.diversity, value).to(device_);
}

std::vector<at::Tensor> JointStep::similarity_distances(const std::vector<Live>& live, double* dmax) const {
  at::Tensor x_all =
      torch::zeros({B_, train_.manifest().image_bytes()}, torch::TensorOptions().dtype(torch::kFloat).device(device_));
  for (const auto& l : live) x_all.narrow(0, l.pos, l.x.size(0)).copy_(l.x.flatten(1));
  comm::allreduce(comm_, x_all);
  std::vector<at::Tensor> rows(live.size());
  *dmax = 0;
  for (size_t i = 0; i < live.size(); ++i) {
    rows[i] = pairwise_sq_distances(live[i].x.flatten(1), x_all);
    *dmax = std::max(*dmax, rows[i].max().item<double>());
  }
  *dmax = comm_.allreduce_max(*dmax);
  return rows;
}

void JointStep::backward_regularized(std::vector<Live>& live, size_t step, EpochTally& tally,
                                     torch::optim::Optimizer& opt) {
  // The whole batch's gate probabilities, each row from its one owner.
  at::Tensor p_all = torch::zeros({B_, K_}, torch::TensorOptions().dtype(torch::kDouble).device(device_));
  for (const auto& l : live) p_all.narrow(0, l.pos, l.x.size(0)).copy_(l.out.gate_probs.detach().to(torch::kDouble));
  comm::allreduce(comm_, p_all);
  at::Tensor div_grad;  // [K, C] dL_div / d sum_e
  if (o_.reg.diversity > 0) {
    double div_value = 0;
    div_grad = diversity_grad_of(live, step, &div_value);
    tally.diversity += div_value;
  }
  double imp_value = 0, bal_value = 0;
  at::Tensor imp_grad = usage_grad(p_all, o_.reg.importance, o_.reg.load_balance, &imp_value, &bal_value).to(device_);
  tally.importance += imp_value;
  tally.balance += bal_value;
  double dmax = 0;
  std::vector<at::Tensor> dist_rows(live.size());
  if (similarity_) dist_rows = similarity_distances(live, &dmax);
  double sim_partial = 0;
  for (size_t i = 0; i < live.size(); ++i) {
    Live& l = live[i];
    at::Tensor grad_p = imp_grad.unsqueeze(0).expand({l.x.size(0), K_});
    if (similarity_ && dmax > 0) {
      double part = 0;
      grad_p = grad_p + similarity_grad_rows(dist_rows[i] / dmax, p_all, l.out.gate_probs, o_.reg.similarity_same,
                                             o_.reg.similarity_diff, &part);
      sim_partial += part;
    }
    // Sum of NLLs + B * the regularisers' first-order term: divided by B
    // below, the gradient of mean NLL + L_imp + L_bal + L_s + L_div.
    at::Tensor surrogate =
        l.nll.sum() + static_cast<double>(B_) * (l.out.gate_probs * grad_p.to(l.out.gate_probs.scalar_type())).sum();
    if (div_grad.defined()) {
      at::Tensor probs = torch::softmax(l.out.expert_logits, 2) * l.out.routed.unsqueeze(2);  // [b, K, C]
      surrogate = surrogate + static_cast<double>(B_) * (probs * div_grad.to(probs.scalar_type()).unsqueeze(0)).sum();
    }
    opt.zero_grad();
    surrogate.backward();
    grad_sum_.add(gradients_of(params_), "gradient of parameter");
  }
  tally.similarity += sim_partial;
}

void log_epoch(const JointTrainOptions& o, const JointEpochStats& last, bool regularized) {
  log::info("{:<9} epoch {}/{}: loss {:.4f}, train error {:.2f}%, expert load {:.3f}{}", o.stage, last.epoch,
            o.optim.epochs, last.loss, 100 * last.train_error, fmt::join(last.load, " "),
            regularized ? fmt::format(", L_imp {:.4g}, L_bal {:.4g}, L_s {:.4g}, L_div {:.4g}", last.importance,
                                      last.balance, last.similarity, last.diversity)
                        : "");
  nlohmann::json event = stats_json(last);
  event["seconds"] = last.seconds;
  log::event(o.stage + "_epoch", event);
}

}  // namespace

nlohmann::json stats_json(const JointEpochStats& s) {
  return {{"epoch", s.epoch},
          {"loss", s.loss},
          {"train_error", s.train_error},
          {"importance", s.importance},
          {"balance", s.balance},
          {"diversity", s.diversity},
          {"load", s.load},
          {"similarity", s.similarity}};
}

JointEpochStats train_joint(models::JointMoeImpl& moe, const std::shared_ptr<const data::Dataset>& train,
                            comm::Communicator& comm, const JointTrainOptions& o, int64_t start_epoch,
                            const std::string& optimizer_bytes, const JointEpochHook& on_epoch_end) {
  const int64_t N = train->size(), B = o.optim.batch_size, K = moe.num_experts();
  SMOE_CHECK(N >= B, "{}.batch_size ({}) exceeds the {} training samples", o.stage, B, N);
  const auto device = moe.parameters().front().device();
  ParamGroups groups = trainable_groups(moe, o);
  if (o.freeze_experts)
    for (auto& p : moe.expert_parameters()) p.set_requires_grad(false);
  auto opt = make_optimizer(groups.groups, o.optim);
  if (!optimizer_bytes.empty()) load_optimizer_state(*opt, optimizer_bytes, o.stage + " progress checkpoint");
  const int64_t steps_per_epoch = N / B;
  Schedule schedule(o.optim, steps_per_epoch);
  JointStep step(moe, *train, comm, o, groups.all, class_ownership(o, K, device));
  auto set_modes = [&] {
    moe.train();
    if (o.freeze_experts)
      for (int64_t e = 0; e < K; ++e) moe.expert(e).eval();
  };

  JointEpochStats last;
  Progress progress(o.stage, (o.optim.epochs - start_epoch) * steps_per_epoch, o.log_every);
  StopScope stop_scope;  // SIGTERM / SIGUSR1 stop at the next step boundary
  for (int64_t epoch = start_epoch; epoch < o.optim.epochs; ++epoch) {
    set_modes();
    Progress epoch_clock(o.stage, 1, 1);
    const EpochPlan plan = plan_epoch(N, o, epoch, comm.rank(), comm.size());
    data::BatchLoader loader(train, plan.mine, data::Transform{}, o.prefetch, /*pin_memory=*/device.is_cuda());
    EpochTally tally(K, device);
    size_t next = 0;
    for (size_t s = 0; s < plan.batches.size(); ++s) {
      if (stop_requested_anywhere(comm))
        throw Stopped(
            fmt::format("{}: a stop signal (SIGTERM or SIGUSR1) reached the job in epoch {}: it resumes after epoch {}",
                        o.stage, epoch + 1, epoch));
      set_lr(*opt, schedule.lr(epoch * steps_per_epoch + static_cast<int64_t>(s)), groups.lr_scales);
      std::vector<Live> live;
      for (; next < plan.mine.size() && plan.step[next] == static_cast<int64_t>(s); ++next) {
        live.push_back(step.forward(*loader.next(), epoch, plan.pos[next], plan.index[next]));
        tally.add(live.back());
      }
      step.backward(live, s, tally, *opt);
      apply_exact_sum(step.grad_sum(), step.params(), comm, static_cast<int64_t>(plan.batches[s].size()), o.optim,
                      *opt);
      nlohmann::json fields = nlohmann::json::object();
      if (progress.due()) fields = {{"epoch", epoch + 1}, {"loss", tally.mean_loss()}};
      progress.step(static_cast<int64_t>(plan.batches[s].size()), fields);
    }
    last = tally.finish(comm, epoch, plan.batches.size());
    last.seconds = epoch_clock.seconds();
    log_epoch(o, last, step.regularized());
    if (on_epoch_end) on_epoch_end(last, *opt);
  }
  if (o.freeze_experts)
    for (auto& p : moe.expert_parameters()) p.set_requires_grad(true);
  if (!o.freeze_experts && has_batchnorm(moe)) {
    // Each rank's running statistics saw only its micro-batches: recompute them, the same on every rank.
    auto calib = data::permutation(N, derive_seed(o.seed, o.stage + "-bn-calibration"));
    calib.resize(static_cast<size_t>(std::min(N, o.bn_calibration)));
    calibrate_batchnorm(
        moe, [&](const at::Tensor& x) { moe.forward(x); }, train, calib, o.micro_batch);
  }
  moe.eval();
  return last;
}

}  // namespace smoe::train
