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

}  // namespace

JointEpochStats train_joint(models::JointMoeImpl& moe, const std::shared_ptr<const data::Dataset>& train,
                            comm::Communicator& comm, const JointTrainOptions& o, int64_t start_epoch,
                            const std::string& optimizer_bytes, const JointEpochHook& on_epoch_end) {
  const int64_t N = train->size(), B = o.optim.batch_size, K = moe.num_experts();
  const int rank = comm.rank(), P = comm.size();
  SMOE_CHECK(N >= B, "{}.batch_size ({}) exceeds the {} training samples", o.stage, B, N);
  const auto device = moe.parameters().front().device();
  const bool regularized = any_regularizer(o.reg);
  const bool similarity = o.reg.similarity_same > 0 || o.reg.similarity_diff > 0;

  // Parameter groups: the gate (at gate_lr_scale x lr), then the experts.
  // Frozen parameters (a fine-tuned Algorithm-1 MoE's base tail inside its
  // gate) are left out.
  auto trainable = [](const std::vector<at::Tensor>& ps) {
    std::vector<at::Tensor> out;
    for (const auto& p : ps)
      if (p.requires_grad()) out.push_back(p);
    return out;
  };
  std::vector<std::vector<at::Tensor>> groups = {trainable(moe.gate().parameters())};
  std::vector<double> lr_scales = {o.gate_lr_scale};
  if (!o.freeze_experts) {
    groups.push_back(trainable(moe.expert_parameters()));
    lr_scales.push_back(1.0);
  }
  std::vector<at::Tensor> params;
  for (const auto& g : groups) params.insert(params.end(), g.begin(), g.end());
  if (o.freeze_experts)
    for (auto& p : moe.expert_parameters()) p.set_requires_grad(false);
  auto opt = make_optimizer(groups, o.optim);
  const bool noisy = moe.gate().uses_noise();
  if (!optimizer_bytes.empty()) load_optimizer_state(*opt, optimizer_bytes, o.stage + " progress checkpoint");
  const int64_t steps_per_epoch = N / B;
  const int64_t per_step = (B + o.micro_batch - 1) / o.micro_batch;  // micro-batches of a step
  Schedule schedule(o.optim, steps_per_epoch);
  comm::ExactSum grad_sum(params);
  auto set_modes = [&] {
    moe.train();
    if (o.freeze_experts)
      for (int64_t e = 0; e < K; ++e) moe.expert(e).eval();
  };

  // Conditional training: owns[c][e] = expert e owns class c.
  at::Tensor owns;
  if (!o.class_owner.empty()) {
    SMOE_CHECK(o.mixup == 0, "joint.conditional: mixup mixes the classes the experts' gradients are masked by");
    at::Tensor owner = torch::tensor(o.class_owner, torch::kLong);
    SMOE_CHECK(owner.min().item<int64_t>() >= 0 && owner.max().item<int64_t>() < K,
               "joint.class_owner: every entry must be an expert in [0, {})", K);
    owns = torch::one_hot(owner, K).to(torch::kBool).to(device);
  }
  JointEpochStats last;
  Progress progress(o.stage, (o.optim.epochs - start_epoch) * steps_per_epoch, o.log_every);
  StopScope stop_scope;  // SIGTERM / SIGUSR1 stop at the next step boundary
  for (int64_t epoch = start_epoch; epoch < o.optim.epochs; ++epoch) {
    set_modes();
    Progress epoch_clock(o.stage, 1, 1);
    auto batches = data::make_batches(data::permutation(N, derive_seed(o.seed, o.stage, {uint64_t(epoch)})), B, true);
    // This rank's micro-batches in step order: micro-batch g of the epoch goes to rank g % P.
    std::vector<std::vector<int64_t>> mine;
    std::vector<int64_t> mine_step, mine_pos, mine_index;
    int64_t g = 0;
    for (size_t s = 0; s < batches.size(); ++s) {
      int64_t pos = 0;
      for (auto& mb : data::make_batches(batches[s], o.micro_batch, false)) {
        const auto size = static_cast<int64_t>(mb.size());
        if (g % P == rank) {
          mine.push_back(std::move(mb));
          mine_step.push_back(static_cast<int64_t>(s));
          mine_pos.push_back(pos);
          mine_index.push_back(g);
        }
        ++g;
        pos += size;
      }
    }
    data::BatchLoader loader(train, mine, data::Transform{}, o.prefetch, /*pin_memory=*/device.is_cuda());
    const auto dopt = torch::TensorOptions().dtype(torch::kDouble).device(device);
    at::Tensor loss_sum = torch::zeros({}, dopt), correct = torch::zeros({}, dopt);
    at::Tensor top1_count = torch::zeros({K}, dopt);
    double seen = 0, importance_sum = 0, balance_sum = 0, similarity_sum = 0, diversity_sum = 0;
    int64_t images = 0;
    size_t next = 0;
    for (size_t s = 0; s < batches.size(); ++s) {
      if (stop_requested_anywhere(comm))
        throw Stopped(
            fmt::format("{}: a stop signal (SIGTERM or SIGUSR1) reached the job in epoch {}: it resumes after epoch {}",
                        o.stage, epoch + 1, epoch));
      const int64_t global_step = epoch * steps_per_epoch + static_cast<int64_t>(s);
      set_lr(*opt, schedule.lr(global_step), lr_scales);
      std::vector<Live> live;
      while (next < mine.size() && mine_step[next] == static_cast<int64_t>(s)) {
        data::Batch b = *loader.next();
        const uint64_t index = static_cast<uint64_t>(mine_index[next]);
        Live l;
        l.x = to_device(b.images, device);
        l.y = to_device(b.labels, device);
        l.pos = mine_pos[next];
        l.index = mine_index[next++];
        Mix mix;
        if (o.mixup > 0) {
          mix = draw_mix(l.x.size(0), o.mixup, derive_seed(o.seed, o.stage + "-mixup", {uint64_t(epoch), index}));
          mix.partner = mix.partner.to(device);
          l.x = mix.lambda * l.x + (1 - mix.lambda) * l.x.index_select(0, mix.partner);
        }
        at::Tensor noise;
        if (noisy) {
          auto gen = at::make_generator<at::CPUGeneratorImpl>(
              derive_seed(o.seed, o.stage + "-noise", {uint64_t(epoch), index}));
          noise = at::randn({l.x.size(0), K}, gen, torch::TensorOptions().dtype(torch::kFloat)).to(device);
        }
        l.out = o.freeze_experts ? moe.forward_frozen_experts(l.x, noise) : moe.forward(l.x, noise);
        const double eps = o.optim.label_smoothing;
        if (owns.defined()) {
          // Conditional training: an expert's output counts in the mixture of
          // a sample of a class it does not own as a constant.
          at::Tensor own = owns.index_select(0, l.y);  // [b, K]
          at::Tensor probs = torch::softmax(l.out.expert_logits, 2);
          probs = torch::where(own.unsqueeze(2), probs, probs.detach());
          l.out.mixture = (l.out.gate_probs.unsqueeze(2) * probs).sum(1);
        }
        l.nll = models::mixture_nll(l.out.mixture, l.y, eps);
        if (owns.defined()) {
          at::Tensor own = owns.index_select(0, l.y).to(l.out.expert_logits.dtype());
          at::Tensor ce = -torch::log_softmax(l.out.expert_logits, 2)
                               .gather(2, l.y.view({-1, 1, 1}).expand({l.x.size(0), K, 1}))
                               .squeeze(2);  // [b, K]
          l.nll = l.nll + (own * ce).sum(1);
        }
        if (o.mixup > 0)
          l.nll = mix.lambda * l.nll +
                  (1 - mix.lambda) * models::mixture_nll(l.out.mixture, l.y.index_select(0, mix.partner), eps);
        top1_count.index_add_(0, l.out.gate_probs.detach().argmax(1), torch::ones({l.x.size(0)}, dopt));
        loss_sum += l.nll.detach().sum().to(torch::kDouble);
        correct += (l.out.mixture.argmax(1) == l.y).sum().to(torch::kDouble);
        seen += static_cast<double>(l.x.size(0));
        images += l.x.size(0);
        live.push_back(std::move(l));
      }
      // Every forward of the step, then every backward: measured 1.5x faster
      // on one core than backward after each forward, the same weights (README).
      if (!regularized) {
        for (auto& l : live) {
          opt->zero_grad();
          l.nll.sum().backward();
          grad_sum.add(gradients_of(params), "gradient of parameter");
        }
      } else {
        // The whole batch's gate probabilities (and inputs), each row from its one owner.
        at::Tensor p_all = torch::zeros({B, K}, dopt);
        for (const auto& l : live)
          p_all.narrow(0, l.pos, l.x.size(0)).copy_(l.out.gate_probs.detach().to(torch::kDouble));
        comm::allreduce(comm, p_all);
        // Diversity: every micro-batch's per-expert sums of its routed
        // samples' output distributions, in its own slot of the step (one
        // owner each: the sum over ranks is exact), then added in slot order.
        at::Tensor div_grad;  // [K, C] dL_div / d sum_e
        at::Tensor div_counts;
        if (o.reg.diversity > 0) {
          const int64_t C = train->num_classes();
          at::Tensor slots = torch::zeros({per_step, K, C + 1}, dopt);
          for (const auto& l : live) {
            at::Tensor routed = l.out.routed.to(torch::kDouble);                                    // [b, K]
            at::Tensor probs = torch::softmax(l.out.expert_logits.detach(), 2).to(torch::kDouble);  // [b, K, C]
            at::Tensor slot = slots[l.index - static_cast<int64_t>(s) * per_step];
            slot.narrow(1, 0, C).copy_((probs * routed.unsqueeze(2)).sum(0));
            slot.select(1, C).copy_(routed.sum(0));
          }
          comm::allreduce(comm, slots);
          at::Tensor total = slots[0].clone();
          for (int64_t i = 1; i < per_step; ++i) total += slots[i];
          div_counts = total.select(1, C).contiguous();
          double div_value = 0;
          div_grad = diversity_grad(total.narrow(1, 0, C), div_counts, o.reg.diversity, &div_value).to(device);
          diversity_sum += div_value;
        }
        double imp_value = 0, bal_value = 0;
        at::Tensor imp_grad =
            usage_grad(p_all, o.reg.importance, o.reg.load_balance, &imp_value, &bal_value).to(device);  // [K]
        importance_sum += imp_value;
        balance_sum += bal_value;
        std::vector<at::Tensor> dist_rows(live.size());
        double dmax = 0;
        if (similarity) {
          at::Tensor x_all = torch::zeros({B, train->manifest().image_bytes()},
                                          torch::TensorOptions().dtype(torch::kFloat).device(device));
          for (const auto& l : live) x_all.narrow(0, l.pos, l.x.size(0)).copy_(l.x.flatten(1));
          comm::allreduce(comm, x_all);
          for (size_t i = 0; i < live.size(); ++i) {
            dist_rows[i] = pairwise_sq_distances(live[i].x.flatten(1), x_all);
            dmax = std::max(dmax, dist_rows[i].max().item<double>());
          }
          dmax = comm.allreduce_max(dmax);
        }
        double sim_partial = 0;
        for (auto& l : live) {
          at::Tensor grad_p = imp_grad.unsqueeze(0).expand({l.x.size(0), K});
          if (similarity && dmax > 0) {
            double part = 0;
            grad_p = grad_p + similarity_grad_rows(dist_rows[&l - live.data()] / dmax, p_all, l.out.gate_probs,
                                                   o.reg.similarity_same, o.reg.similarity_diff, &part);
            sim_partial += part;
          }
          // Sum of NLLs + B * the regularisers' first-order term: divided by B
          // below, the gradient of mean NLL + L_imp + L_bal + L_s + L_div.
          at::Tensor surrogate = l.nll.sum() + static_cast<double>(B) *
                                                   (l.out.gate_probs * grad_p.to(l.out.gate_probs.scalar_type())).sum();
          if (div_grad.defined()) {
            at::Tensor probs = torch::softmax(l.out.expert_logits, 2) * l.out.routed.unsqueeze(2);  // [b, K, C]
            surrogate =
                surrogate + static_cast<double>(B) * (probs * div_grad.to(probs.scalar_type()).unsqueeze(0)).sum();
          }
          opt->zero_grad();
          surrogate.backward();
          grad_sum.add(gradients_of(params), "gradient of parameter");
        }
        similarity_sum += sim_partial;
      }
      apply_exact_sum(grad_sum, params, comm, static_cast<int64_t>(batches[s].size()), o.optim, *opt);
      nlohmann::json fields = nlohmann::json::object();
      if (progress.due()) fields = {{"epoch", epoch + 1}, {"loss", seen > 0 ? loss_sum.item<double>() / seen : 0.0}};
      progress.step(static_cast<int64_t>(batches[s].size()), fields);
    }
    std::vector<double> tot = {loss_sum.item<double>(), correct.item<double>(), seen, similarity_sum};
    at::Tensor top1 = top1_count.cpu().contiguous();
    tot.insert(tot.end(), top1.data_ptr<double>(), top1.data_ptr<double>() + K);
    comm.allreduce(comm::host_buffer(tot), comm::ReduceOp::sum);
    const double steps = static_cast<double>(std::max<size_t>(batches.size(), 1));
    last.epoch = epoch + 1;
    last.loss = tot[2] > 0 ? tot[0] / tot[2] : 0;
    last.train_error = tot[2] > 0 ? 1 - tot[1] / tot[2] : 0;
    last.importance = importance_sum / steps;  // the same on every rank
    last.balance = balance_sum / steps;
    last.diversity = diversity_sum / steps;  // the same on every rank
    last.load.assign(static_cast<size_t>(K), 0.0);
    for (int64_t e = 0; e < K; ++e)
      last.load[static_cast<size_t>(e)] = tot[2] > 0 ? tot[4 + static_cast<size_t>(e)] / tot[2] : 0;
    last.similarity = tot[3] / steps;
    last.seconds = epoch_clock.seconds();
    last.images = images;
    log::info("{:<9} epoch {}/{}: loss {:.4f}, train error {:.2f}%, expert load {:.3f}{}", o.stage, epoch + 1,
              o.optim.epochs, last.loss, 100 * last.train_error, fmt::join(last.load, " "),
              regularized ? fmt::format(", L_imp {:.4g}, L_bal {:.4g}, L_s {:.4g}, L_div {:.4g}", last.importance,
                                        last.balance, last.similarity, last.diversity)
                          : "");
    log::event(o.stage + "_epoch", {{"epoch", last.epoch},
                                    {"loss", last.loss},
                                    {"train_error", last.train_error},
                                    {"importance", last.importance},
                                    {"balance", last.balance},
                                    {"diversity", last.diversity},
                                    {"load", last.load},
                                    {"similarity", last.similarity},
                                    {"seconds", last.seconds}});
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
