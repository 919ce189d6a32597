#include "train/base_trainer.h"

#include <torch/torch.h>

#include "comm/tensor_collectives.h"
#include "core/error.h"
#include "core/log.h"
#include "core/progress.h"
#include "core/rng.h"
#include "core/stop.h"
#include "data/batch.h"
#include "data/sampler.h"
#include "train/checkpoint.h"
#include "train/loss_scaler.h"
#include "train/losses.h"
#include "train/optim.h"
#include "train/precision.h"
#include "train/tensors.h"

namespace smoe::train {

namespace {

std::vector<torch::nn::BatchNorm2dImpl*> batchnorms(torch::nn::Module& net) {
  std::vector<torch::nn::BatchNorm2dImpl*> bns;
  for (auto& m : net.modules(false))
    if (auto* bn = dynamic_cast<torch::nn::BatchNorm2dImpl*>(m.get())) bns.push_back(bn);
  return bns;
}

}  // namespace

std::vector<at::Tensor> gradients_of(const std::vector<at::Tensor>& params) {
  std::vector<at::Tensor> g;
  for (const auto& p : params) g.push_back(p.grad().defined() ? p.grad() : torch::zeros_like(p));
  return g;
}

void apply_exact_sum(comm::ExactSum& grad_sum, const std::vector<at::Tensor>& params, comm::Communicator& comm,
                     int64_t batch_size, const OptimConfig& optim, torch::optim::Optimizer& opt) {
  // Exact sum over every micro-batch of every rank, then the mean over the batch.
  grad_sum.allreduce(comm);
  std::vector<at::Tensor> grads;
  for (const auto& p : params) {
    if (!p.grad().defined()) p.mutable_grad() = torch::zeros_like(p);
    grads.push_back(p.mutable_grad());
  }
  grad_sum.result_into(grads, static_cast<double>(batch_size));
  grad_sum.zero();
  clip_gradients(params, optim);
  opt.step();
}

bool has_batchnorm(torch::nn::Module& net) { return !batchnorms(net).empty(); }

void calibrate_batchnorm(torch::nn::Module& net, const std::function<void(const at::Tensor&)>& forward,
                         const std::shared_ptr<const data::Dataset>& train, const std::vector<int64_t>& ids,
                         int64_t micro_batch) {
  torch::NoGradGuard no_grad;
  net.train();
  // Parts that stay in eval mode (a frozen trunk) keep their statistics.
  std::vector<torch::nn::BatchNorm2dImpl*> bns;
  for (auto* bn : batchnorms(net))
    if (bn->is_training()) bns.push_back(bn);
  for (auto* bn : bns) {
    bn->reset_running_stats();
    bn->options.momentum({});  // cumulative average over the calibration batches
  }
  const auto device = net.parameters().front().device();
  for (const auto& b : data::make_batches(ids, micro_batch, false)) {
    data::Batch batch = data::make_batch(*train, b, data::Transform{});
    forward(batch.images.to(device));
  }
  for (auto* bn : bns) bn->options.momentum(0.1);
  net.eval();
}

void calibrate_batchnorm(models::Backbone& net, const std::shared_ptr<const data::Dataset>& train,
                         const std::vector<int64_t>& ids, int64_t micro_batch) {
  calibrate_batchnorm(
      *net, [&](const at::Tensor& x) { net->forward(x); }, train, ids, micro_batch);
}

bool stop_requested_anywhere(comm::Communicator& comm) {
  int64_t flag = stop_requested() ? 1 : 0;
  comm.allreduce(comm::host_buffer(&flag, 1), comm::ReduceOp::max);
  return flag != 0;
}

BaseTrainStats train_base(models::Backbone& net, const std::shared_ptr<const data::Dataset>& train,
                          comm::Communicator& comm, const BaseTrainOptions& o, int64_t start_epoch,
                          const std::string& optimizer_state, const BaseEpochHook& on_epoch_end) {
  const int64_t N = train->size(), B = o.optim.batch_size;
  const int rank = comm.rank(), P = comm.size();
  SMOE_CHECK(N >= B, "base.batch_size ({}) exceeds the {} training samples", B, N);
  const auto device = net->parameters().front().device();
  std::vector<at::Tensor> params = net->parameters();
  ChannelsLastScope channels_last(params, o.optim.channels_last);
  auto opt = make_optimizer(params, o.optim);
  if (!optimizer_state.empty()) load_optimizer_state(*opt, optimizer_state, "base progress checkpoint");
  const int64_t steps_per_epoch = N / B;
  Schedule schedule(o.optim, steps_per_epoch);
  comm::ExactSum grad_sum(params);

  BaseTrainStats stats;
  const PrecisionPlan precision = plan_training_precision(o.optim.precision, device);
  stats.precision = options::name(precision.used);
  LossScaler scaler(precision.loss_scaling, {});
  if (o.loss_scale > 0) scaler.restore(o.loss_scale, o.loss_scale_good_steps);
  Progress progress("base", (o.optim.epochs - start_epoch) * steps_per_epoch, o.log_every);
  int64_t global_step = start_epoch * steps_per_epoch;
  StopScope stop_scope;  // SIGTERM / SIGUSR1 stop at the next step boundary
  net->train();
  for (int64_t epoch = start_epoch; epoch < o.optim.epochs; ++epoch) {
    auto batches = data::make_batches(data::permutation(N, derive_seed(o.seed, "base", {uint64_t(epoch)})), B, true);
    // This rank's micro-batches, in step order; micro-batch g of the epoch goes to rank g % P.
    std::vector<std::vector<int64_t>> mine;
    std::vector<int64_t> mine_step;
    int64_t g = 0;
    for (size_t s = 0; s < batches.size(); ++s)
      for (auto& mb : data::make_batches(batches[s], o.micro_batch, false))
        if (g++ % P == rank) {
          mine.push_back(std::move(mb));
          mine_step.push_back(static_cast<int64_t>(s));
        }
    data::Transform t;
    t.augment = o.augment;
    t.crop_padding = o.crop_padding;
    t.hflip = o.hflip;
    t.seed = derive_seed(o.seed, "base-augment", {uint64_t(epoch)});
    data::BatchLoader loader(train, mine, t, o.prefetch, /*pin_memory=*/device.is_cuda());

    // Running sums stay tensors: reading them forces a device sync, so that
    // happens only for progress lines and at the end of the epoch.
    at::Tensor loss_sum = torch::zeros({}, torch::TensorOptions().dtype(torch::kDouble).device(device));
    at::Tensor correct = torch::zeros({}, torch::TensorOptions().dtype(torch::kDouble).device(device));
    double seen = 0;
    size_t next = 0;
    for (size_t s = 0; s < batches.size(); ++s, ++global_step) {
      if (stop_requested_anywhere(comm))
        throw Stopped(fmt::format(
            "base: a stop signal (SIGTERM or SIGUSR1) reached the job in epoch {}: it resumes after epoch {}",
            epoch + 1, epoch));
      set_lr(*opt, schedule.lr(global_step));
      int64_t local = 0;
      int overflowed = 0;  // a float16 micro-batch of this rank whose gradients overflowed
      while (next < mine.size() && mine_step[next] == static_cast<int64_t>(s)) {
        data::Batch b = *loader.next();
        ++next;
        at::Tensor x = to_device(b.images, device), y = to_device(b.labels, device);
        at::Tensor logits, loss;
        {
          AutocastScope autocast(precision.used, device);
          logits = net->forward(x);
          loss = cross_entropy(logits, y, o.optim.label_smoothing).sum();
        }
        opt->zero_grad();
        scaler.scaled(loss).backward();
        if (scaler.unscale(params))
          grad_sum.add(gradients_of(params), "gradient of parameter");
        else
          overflowed = 1;
        loss_sum += loss.detach();
        correct += (logits.argmax(1) == y).sum();
        seen += static_cast<double>(x.size(0));
        local += x.size(0);
      }
      // With loss scaling, every rank skips the step when one rank's
      // gradients overflowed (the ranks agree, so their weights stay equal).
      if (scaler.enabled()) comm.allreduce(comm::host_buffer(&overflowed, 1), comm::ReduceOp::max);
      if (overflowed)
        grad_sum.zero();
      else
        apply_exact_sum(grad_sum, params, comm, static_cast<int64_t>(batches[s].size()), o.optim, *opt);
      scaler.update(overflowed != 0);
      stats.images += local;
      nlohmann::json fields = nlohmann::json::object();
      if (progress.due())
        fields = {{"epoch", epoch + 1},
                  {"loss", seen > 0 ? loss_sum.item<double>() / seen : 0.0},
                  {"lr", schedule.lr(global_step)}};
      progress.step(local * P, fields);
    }
    // Epoch statistics over every rank (logging only).
    std::vector<double> tot = {loss_sum.item<double>(), correct.item<double>(), seen};
    comm.allreduce(comm::host_buffer(tot), comm::ReduceOp::sum);
    stats.final_loss = tot[2] > 0 ? tot[0] / tot[2] : 0;
    stats.final_train_accuracy = tot[2] > 0 ? tot[1] / tot[2] : 0;
    log::info("base      epoch {}/{}: loss {:.4f}, train accuracy {:.2f}%", epoch + 1, o.optim.epochs, stats.final_loss,
              100 * stats.final_train_accuracy);
    log::event("base_epoch",
               {{"epoch", epoch + 1}, {"loss", stats.final_loss}, {"train_accuracy", stats.final_train_accuracy}});
    stats.loss_scale = scaler.scale();
    stats.loss_scale_good_steps = scaler.good_steps();
    stats.skipped_steps = scaler.skipped_steps();
    if (on_epoch_end) on_epoch_end(epoch + 1, stats, *opt);
  }
  stats.seconds = progress.seconds();  // the training loop alone
  auto calib = data::permutation(N, derive_seed(o.seed, "bn-calibration"));
  calib.resize(static_cast<size_t>(std::min(N, o.bn_calibration)));
  calibrate_batchnorm(net, train, calib, o.micro_batch);
  return stats;
}

}  // namespace smoe::train
