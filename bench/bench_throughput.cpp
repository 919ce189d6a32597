// Where a training step's time goes, piece by piece, so that the next
// bottleneck is visible (issue 14): images/s of
//   loader     the batch loader alone (HDF5-backed dataset -> normalised
//              float batches), without and with crop + flip augmentation;
//   base step  forward, backward and optimiser step of the base model on a
//              batch already in memory (no loader, no exchange);
//   exchange   the exact gradient sum alone (fixed-point conversion, the
//              allreduce over every rank, conversion back), as images/s at
//              the step's batch;
//   expert     one expert's step (the base's blocks after branch_after) on
//              trunk features already in memory, and K experts' steps fused
//              into one (experts.fuse: grouped convolutions), both in
//              expert-images/s (images x experts per second);
//   train loop train_base itself: all of the above together.
// Run it under mpirun to see the exchange between ranks:
//
//   mpirun -np 2 --map-by slot:PE=1 --bind-to core bench_throughput DATASET_DIR
//       [--width 16] [--batch 128] [--micro 64] [--steps 40] [--threads 1] [--augment 1] [--epochs 1]
//       [--experts 4]
//
// bench/base_efficiency.sh prints the base stage's parallel efficiency
// T1 / (2 T2) (smoe train --until base) and then these pieces.
//
// On an accelerator (--device cuda, or privateuseone for the tests' fake
// one) it times the pieces a device computes, as smoe's loops run them:
// the base step and the expert step on a batch already on the device, in
// --precision float32 | bfloat16 | float16 (autocast; float16 with dynamic
// loss scaling) and with --channels-last 1 or 0. --json FILE writes those
// rates for launch/gpu-check.sh, which pairs them with the same loop in
// PyTorch (bench/throughput_pytorch.py):
//
//   bench_throughput DATASET_DIR --device cuda [--precision float16] [--channels-last 1] [--json out.json]
#include <torch/torch.h>

#include <fmt/format.h>

#include <chrono>
#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>

#include "comm/mpi_communicator.h"
#include "comm/tensor_collectives.h"
#include "data/batch.h"
#include "data/dataset.h"
#include "data/sampler.h"
#include "models/fused_branch.h"
#include "models/network.h"
#include "train/base_trainer.h"
#include "train/loss_scaler.h"
#include "train/optim.h"
#include "train/precision.h"
#include "train/trainer_options.h"

using namespace smoe;
using Clock = std::chrono::steady_clock;

namespace {

double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

int64_t flag(int argc, char** argv, const std::string& name, int64_t fallback) {
  for (int i = 1; i + 1 < argc; ++i)
    if (argv[i] == name) return std::atoll(argv[i + 1]);
  return fallback;
}

std::string text_flag(int argc, char** argv, const std::string& name, const std::string& fallback) {
  for (int i = 1; i + 1 < argc; ++i)
    if (argv[i] == name) return argv[i + 1];
  return fallback;
}

// Images/s of `steps` training steps of `net` (after 3 warm-up steps) on
// `images`, `labels` already on the network's device, `micro` images per
// forward pass, in `precision` (autocast to its `used` type, dynamic loss
// scaling when it says so) and, when `channels_last`, with the convolution weights and the
// input in channels-last layout: smoe's training step (train/sgd_loop.cpp,
// train/base_trainer.cpp) without a loader or an exchange. The clock stops
// after a value is read back, so that an accelerator's queue is drained.
double step_rate(models::BackboneImpl& net, at::Tensor images, const at::Tensor& labels, int64_t micro, int64_t steps,
                 const OptimConfig& optim, const train::PrecisionPlan& precision, bool channels_last,
                 const c10::Device& device) {
  net.train();
  const train::ChannelsLastScope layout(net.parameters(), channels_last);
  if (layout.active()) images = images.contiguous(at::MemoryFormat::ChannelsLast);
  auto opt = train::make_optimizer(net.parameters(), optim);
  train::LossScaler scaler(precision.loss_scaling, {});
  const int64_t n = images.size(0);
  auto step = [&] {
    opt->zero_grad();
    for (int64_t s = 0; s < n; s += micro) {
      const int64_t m = std::min(micro, n - s);
      at::Tensor loss;
      {
        const train::AutocastScope autocast(precision.used, device);
        loss = torch::nn::functional::cross_entropy(net.forward(images.narrow(0, s, m)), labels.narrow(0, s, m));
      }
      scaler.scaled(loss).backward();
    }
    const bool finite = scaler.unscale(net.parameters());
    if (finite) opt->step();
    scaler.update(!finite);
  };
  for (int i = 0; i < 3; ++i) step();
  (void)net.parameters().front().sum().item<float>();
  const auto t0 = Clock::now();
  for (int64_t i = 0; i < steps; ++i) step();
  (void)net.parameters().front().sum().item<float>();
  return static_cast<double>(steps * n) / seconds_since(t0);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(
        stderr,
        "usage: bench_throughput DATASET_DIR [--width W] [--batch B] [--micro M] [--steps S] "
        "[--threads T] [--experts K] [--augment 0|1] [--epochs E] [--device D] "
        "[--precision float32|bfloat16|float16] [--channels-last 0|1] [--cudnn-benchmark 0|1] [--json FILE]\n");
    return 2;
  }
  comm::MpiRuntime mpi(&argc, &argv);
  std::unique_ptr<comm::Communicator> comm = mpi.world();
  const int P = comm->size(), rank = comm->rank();
  const int64_t width = flag(argc, argv, "--width", 16), B = flag(argc, argv, "--batch", 128),
                micro = flag(argc, argv, "--micro", 64), steps = flag(argc, argv, "--steps", 40);
  at::set_num_threads(static_cast<int>(flag(argc, argv, "--threads", 1)));
  torch::manual_seed(0);
  const std::string device_name = text_flag(argc, argv, "--device", "cpu");
  const std::string json_path = text_flag(argc, argv, "--json", "");
  const bool channels_last = flag(argc, argv, "--channels-last", 0) != 0;
  std::optional<c10::Device> parsed;
  try {
    parsed = c10::Device(device_name);
  } catch (const c10::Error&) {
    std::fprintf(stderr, "bench_throughput: --device '%s' is no device (cpu, cuda, cuda:N)\n", device_name.c_str());
    return 2;
  }
  const c10::Device device = *parsed;
  const std::string precision = text_flag(argc, argv, "--precision", "float32");
  const std::optional<Precision> requested = options::from_name<Precision>(precision);
  if (!requested) {
    std::fprintf(stderr, "bench_throughput: --precision %s is not float32, bfloat16, float16 or auto\n",
                 precision.c_str());
    return 2;
  }
  const train::PrecisionPlan plan = train::plan_precision(*requested, device);
  // On an accelerator: the pieces it computes (steps), not the host's.
  const bool steps_only = !device.is_cpu();
  // cuDNN's autotuner: off by default, as in smoe's runs (reproducible
  // kernels); --cudnn-benchmark 1 here and in the PyTorch side both.
  const bool cudnn_benchmark = flag(argc, argv, "--cudnn-benchmark", 0) != 0;
  at::globalContext().setBenchmarkCuDNN(cudnn_benchmark);

  data::DatasetOptions dopt;
  dopt.limit = std::max<int64_t>(steps * B, 4096);
  std::shared_ptr<const data::Dataset> ds = data::Dataset::open(argv[1], "train", dopt);
  models::NetworkSpec spec;
  spec.input = ds->shape();
  spec.num_classes = ds->num_classes();
  spec.width = width;
  const int64_t per_rank = std::max<int64_t>(1, B / P);  // images a rank computes per step

  // Base step alone, on one batch in memory (on the device), micro-batches of `micro`.
  models::Backbone net(spec);
  net->to(device);
  OptimConfig optim = BaseConfig{}.optim;
  optim.lr = 0.05;
  std::vector<int64_t> ids(static_cast<size_t>(per_rank));
  std::iota(ids.begin(), ids.end(), 0);
  data::Batch batch = data::make_batch(*ds, ids, data::Transform{});
  const at::Tensor images = batch.images.to(device), labels = batch.labels.to(device);
  const double base_rate = step_rate(*net, images, labels, micro, steps, optim, plan, channels_last, device);

  // One expert's step on trunk features in memory (the blocks after 3).
  const int64_t branch = 3;
  at::Tensor feats;
  {
    torch::NoGradGuard no_grad;
    net->eval();
    feats = net->blocks(images, 0, branch).contiguous();
  }
  models::Backbone expert(spec, branch);
  expert->to(device);
  const double expert_rate = step_rate(*expert, feats, labels, per_rank, steps, optim, plan, channels_last, device);

  if (steps_only || !json_path.empty()) {
    const nlohmann::json rates = {{"device", device.str()},
                                  {"precision", options::name(plan.used)},
                                  {"channels_last", channels_last},
                                  {"width", width},
                                  {"cudnn_benchmark", cudnn_benchmark},
                                  {"loss_scaling", plan.loss_scaling},
                                  {"batch", per_rank},
                                  {"micro", micro},
                                  {"steps", steps},
                                  {"base_step_images_per_s", base_rate},
                                  {"expert_step_images_per_s", expert_rate}};
    if (rank == 0) {
      const std::string why = plan.reason.empty() ? "" : " (" + plan.reason + ")";
      std::printf("tiny-ResNet-10 width %lld, batch %lld (micro %lld) on %s, %s%s%s\n", static_cast<long long>(width),
                  static_cast<long long>(per_rank), static_cast<long long>(micro), device.str().c_str(),
                  options::name(plan.used).c_str(), channels_last ? ", channels-last" : "", why.c_str());
      std::printf("%-44s %12.0f\n", "base step (forward, backward, optimiser)", base_rate);
      std::printf("%-44s %12.0f\n", "expert step (blocks 3-4 on trunk features)", expert_rate);
      if (!json_path.empty()) {
        // The batch itself beside the rates (float32 images, then int64
        // labels), so that the PyTorch side times the same images.
        const std::string batch_file = json_path + ".batch";
        const at::Tensor x = batch.images.contiguous(), y = batch.labels.to(torch::kLong).contiguous();
        std::ofstream raw(batch_file, std::ios::binary);
        raw.write(static_cast<const char*>(x.data_ptr()), static_cast<std::streamsize>(x.nbytes()));
        raw.write(static_cast<const char*>(y.data_ptr()), static_cast<std::streamsize>(y.nbytes()));
        nlohmann::json out = rates;
        out["batch_file"] = batch_file;
        out["image_shape"] = spec.input;
        out["num_classes"] = spec.num_classes;
        std::ofstream(json_path) << out.dump(2) << "\n";
      }
    }
    if (steps_only) return 0;
  }

  // Loader alone: this rank's share of `steps` steps.
  auto loader_rate = [&](bool augment) {
    data::Transform t;
    t.augment = augment;
    t.crop_padding = 2;
    t.hflip = true;
    auto batches = data::make_batches(data::permutation(ds->size(), 1), per_rank, true);
    batches.resize(static_cast<size_t>(std::min<int64_t>(steps, static_cast<int64_t>(batches.size()))));
    int64_t images = 0;
    const auto t0 = Clock::now();
    data::BatchLoader loader(ds, batches, t, 2);
    while (auto b = loader.next()) images += b->images.size(0);
    return static_cast<double>(images) / seconds_since(t0);
  };
  const double load_plain = loader_rate(false), load_aug = loader_rate(true);

  // Exchange alone: the exact sum of this model's gradients over every rank.
  std::vector<at::Tensor> params = net->parameters();
  comm::ExactSum sum(params);
  std::vector<at::Tensor> grads;
  for (auto& p : params) grads.push_back(p.grad().defined() ? p.grad() : torch::zeros_like(p));
  comm->barrier();
  auto t0 = Clock::now();
  for (int64_t i = 0; i < steps; ++i) {
    sum.add(grads);
    sum.allreduce(*comm);
    sum.result_into(grads, static_cast<double>(B));
    sum.zero();
  }
  const double exchange_s = seconds_since(t0) / static_cast<double>(steps);
  int64_t numel = 0;
  for (auto& p : params) numel += p.numel();

  // K experts' steps as one (experts.fuse = K).
  const int64_t K = flag(argc, argv, "--experts", 4);
  std::vector<std::shared_ptr<models::BackboneImpl>> group;
  for (int64_t k = 0; k < K; ++k) group.push_back(std::make_shared<models::BackboneImpl>(spec, branch));
  models::FusedBranch fused(group);
  fused->train();
  auto fopt = train::make_optimizer(fused->parameters(), optim);
  const at::Tensor fused_labels = batch.labels.repeat_interleave(K);
  auto fstep = [&] {
    fopt->zero_grad();
    at::Tensor logits = fused->forward(feats);
    torch::nn::functional::cross_entropy(logits.reshape({-1, logits.size(2)}), fused_labels).backward();
    fopt->step();
  };
  for (int i = 0; i < 3; ++i) fstep();
  t0 = Clock::now();
  for (int64_t i = 0; i < steps; ++i) fstep();
  const double fused_rate = static_cast<double>(steps * per_rank * K) / seconds_since(t0);

  // The training loop itself (loader, steps, exchange), one epoch of steps * B images.
  data::DatasetOptions lopt;
  lopt.limit = steps * B;
  std::shared_ptr<const data::Dataset> part = data::Dataset::open(argv[1], "train", lopt);
  models::Backbone loop_net(spec);
  train::BaseTrainOptions o;
  o.optim = optim;
  o.optim.epochs = 1;
  o.optim.batch_size = B;
  o.micro_batch = micro;
  o.bn_calibration = micro;
  o.log_every = 1 << 30;
  o.augment = flag(argc, argv, "--augment", 0) != 0;
  o.crop_padding = 2;
  o.hflip = true;
  o.optim.epochs = flag(argc, argv, "--epochs", 1);
  o.optim.warmup_epochs = 0;
  const train::BaseTrainStats st = train::train_base(loop_net, part, *comm, o);
  const double loop_rate = static_cast<double>(steps * B * o.optim.epochs) / st.seconds;

  if (rank == 0) {
    std::printf(
        "tiny-ResNet-10 width %lld, %lld x %lldx%lld images, batch %lld (micro %lld), %d rank%s, %d thread%s "
        "each\n",
        static_cast<long long>(width), static_cast<long long>(spec.input[0]), static_cast<long long>(spec.input[1]),
        static_cast<long long>(spec.input[2]), static_cast<long long>(B), static_cast<long long>(micro), P,
        P == 1 ? "" : "s", at::get_num_threads(), at::get_num_threads() == 1 ? "" : "s");
    std::printf("%-44s %12s\n", "piece (per rank unless said)", "images/s");
    std::printf("%-44s %12.0f\n", "loader, no augmentation", load_plain);
    std::printf("%-44s %12.0f\n", "loader, crop + flip", load_aug);
    std::printf("%-44s %12.0f\n", "base step (forward, backward, optimiser)", base_rate);
    std::printf("%-44s %12.0f   (%.2f ms per step, %lld gradients)\n", "exchange (exact gradient sum, all ranks)",
                static_cast<double>(B) / exchange_s, 1e3 * exchange_s, static_cast<long long>(numel));
    std::printf("%-44s %12.0f\n", "expert step (blocks 3-4 on trunk features)", expert_rate);
    std::printf("%-44s %12.0f   (%.2fx one expert's)\n", fmt::format("{} experts fused (expert-images/s)", K).c_str(),
                fused_rate, fused_rate / expert_rate);
    std::printf("%-44s %12.0f   (all ranks together%s)\n", "train loop (train_base)", loop_rate,
                o.augment ? ", crop + flip" : "");
    std::printf("the loop's ideal from its pieces: %.0f images/s; it reaches %.2f of it\n",
                1.0 / (1.0 / (base_rate * P) + exchange_s / static_cast<double>(B)),
                loop_rate * (1.0 / (base_rate * P) + exchange_s / static_cast<double>(B)));
  }
  return 0;
}
