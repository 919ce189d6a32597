#include "train/sgd_loop.h"

#include <torch/torch.h>

#include <fmt/format.h>

#include <cmath>

#include "core/progress.h"
#include "core/rng.h"
#include "core/stop.h"
#include "data/sampler.h"
#include "train/checkpoint.h"
#include "train/loss_scaler.h"
#include "train/optim.h"
#include "train/precision.h"

namespace smoe::train {

LoopStats sgd_loop(const std::vector<at::Tensor>& params, const LoopSpec& s,
                   const std::function<at::Tensor(const std::vector<int64_t>&, int64_t)>& batch_loss) {
  LoopStats stats;
  const PrecisionPlan precision = plan_training_precision(s.optim.precision, params.front().device());
  stats.precision = options::name(precision.used);
  if (s.optim.epochs == 0 || s.n == 0) return stats;
  int64_t per_epoch = s.n;
  if (s.sample_weights) {
    double total = 0;
    for (double w : *s.sample_weights) total += w;
    per_epoch = std::max<int64_t>(1, static_cast<int64_t>(std::llround(total)));
  }
  const int64_t B = s.optim.batch_size;
  const int64_t steps_per_epoch = (per_epoch + B - 1) / B;
  Schedule schedule(s.optim, steps_per_epoch);
  ChannelsLastScope channels_last(params, s.optim.channels_last);
  auto opt = make_optimizer(params, s.optim);
  if (!s.optimizer_state.empty()) load_optimizer_state(*opt, s.optimizer_state, s.stage + " progress checkpoint");
  LossScaler scaler(precision.loss_scaling, {});
  if (s.loss_scale > 0) scaler.restore(s.loss_scale, s.loss_scale_good_steps);
  auto note_scaler = [&] {
    stats.loss_scale = scaler.scale();
    stats.loss_scale_good_steps = scaler.good_steps();
    stats.skipped_steps = scaler.skipped_steps();
  };
  Progress progress(s.stage, (s.optim.epochs - s.start_epoch) * steps_per_epoch, s.log_every);
  int64_t step = s.start_epoch * steps_per_epoch;
  for (int64_t epoch = s.start_epoch; epoch < s.optim.epochs; ++epoch) {
    const uint64_t seed = derive_seed(s.seed, "epoch", {uint64_t(epoch)});
    std::vector<int64_t> order =
        s.sample_weights ? data::weighted_sample(*s.sample_weights, per_epoch, seed) : data::permutation(s.n, seed);
    // The running loss stays a tensor; it is read (a device sync) only for
    // progress lines and at the end of the epoch.
    at::Tensor loss_sum;
    int64_t batches = 0;
    const std::vector<std::vector<int64_t>> batches_of_epoch = data::make_batches(order, B, false);
    if (s.on_epoch_batches) s.on_epoch_batches(batches_of_epoch, epoch);
    for (const auto& ids : batches_of_epoch) {
      if (s.stop_on_signal && stop_requested())
        throw Stopped(
            fmt::format("{}: a stop signal (SIGTERM or SIGUSR1) arrived in epoch {}: it resumes after epoch {}",
                        s.stage, epoch + 1, epoch));
      set_lr(*opt, schedule.lr(step++));
      at::Tensor loss;
      {
        AutocastScope autocast(precision.used, params.front().device());
        loss = batch_loss(ids, epoch);
      }
      opt->zero_grad();
      scaler.scaled(loss).backward();
      // A float16 step whose gradients overflowed is skipped (the scaler halves its scale).
      const bool finite = scaler.unscale(params);
      if (finite) {
        clip_gradients(params, s.optim);
        opt->step();
      }
      scaler.update(!finite);
      loss_sum = loss_sum.defined() ? loss_sum + loss.detach() : loss.detach().to(torch::kDouble);
      ++batches;
      stats.samples += static_cast<int64_t>(ids.size());
      nlohmann::json fields = nlohmann::json::object();
      if (progress.due()) fields = {{"epoch", epoch + 1}, {"loss", loss_sum.item<double>() / batches}};
      progress.step(static_cast<int64_t>(ids.size()), fields);
    }
    stats.final_loss = batches ? loss_sum.item<double>() / batches : 0;
    if (s.on_epoch_end) {
      stats.steps = step;
      note_scaler();
      s.on_epoch_end(epoch + 1, *opt, stats);
    }
  }
  stats.steps = step;
  note_scaler();
  stats.seconds = progress.seconds();
  return stats;
}

}  // namespace smoe::train
