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
#include <torch/torch.h>

#include <fmt/format.h>

#include <chrono>
#include <cstdio>
#include <string>

#include "comm/mpi_communicator.h"
#include "comm/tensor_collectives.h"
#include "core/config.h"
#include "data/batch.h"
#include "data/dataset.h"
#include "data/sampler.h"
#include "models/fused_branch.h"
#include "models/network.h"
#include "train/base_trainer.h"
#include "train/optim.h"

using namespace smoe;
using Clock = std::chrono::steady_clock;

namespace {

double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

int64_t flag(int argc, char** argv, const std::string& name, int64_t fallback) {
  for (int i = 1; i + 1 < argc; ++i)
    if (argv[i] == name) return std::atoll(argv[i + 1]);
  return fallback;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: bench_throughput DATASET_DIR [--width W] [--batch B] [--micro M] [--steps S] "
                         "[--threads T]\n");
    return 2;
  }
  comm::MpiRuntime mpi(&argc, &argv);
  std::unique_ptr<comm::Communicator> comm = mpi.world();
  const int P = comm->size(), rank = comm->rank();
  const int64_t width = flag(argc, argv, "--width", 16), B = flag(argc, argv, "--batch", 128),
                micro = flag(argc, argv, "--micro", 64), steps = flag(argc, argv, "--steps", 40);
  at::set_num_threads(static_cast<int>(flag(argc, argv, "--threads", 1)));
  torch::manual_seed(0);

  data::DatasetOptions dopt;
  dopt.limit = std::max<int64_t>(steps * B, 4096);
  std::shared_ptr<const data::Dataset> ds = data::Dataset::open(argv[1], "train", dopt);
  models::NetworkSpec spec;
  spec.input = ds->shape();
  spec.num_classes = ds->num_classes();
  spec.width = width;
  const int64_t per_rank = std::max<int64_t>(1, B / P);  // images a rank computes per step

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

  // Base step alone, on one batch in memory, micro-batches of `micro`.
  models::Backbone net(spec);
  net->train();
  OptimConfig optim = Config::defaults().base.optim;
  optim.lr = 0.05;
  auto opt = train::make_optimizer(net->parameters(), optim);
  std::vector<int64_t> ids(static_cast<size_t>(per_rank));
  std::iota(ids.begin(), ids.end(), 0);
  data::Batch batch = data::make_batch(*ds, ids, data::Transform{});
  auto step = [&] {
    opt->zero_grad();
    for (int64_t s = 0; s < per_rank; s += micro) {
      const int64_t n = std::min(micro, per_rank - s);
      at::Tensor loss = torch::nn::functional::cross_entropy(net->forward(batch.images.narrow(0, s, n)),
                                                            batch.labels.narrow(0, s, n));
      loss.backward();
    }
    opt->step();
  };
  for (int i = 0; i < 3; ++i) step();
  auto t0 = Clock::now();
  for (int64_t i = 0; i < steps; ++i) step();
  const double base_rate = static_cast<double>(steps * per_rank) / seconds_since(t0);

  // Exchange alone: the exact sum of this model's gradients over every rank.
  std::vector<at::Tensor> params = net->parameters();
  comm::ExactSum sum(params);
  std::vector<at::Tensor> grads;
  for (auto& p : params) grads.push_back(p.grad().defined() ? p.grad() : torch::zeros_like(p));
  comm->barrier();
  t0 = Clock::now();
  for (int64_t i = 0; i < steps; ++i) {
    sum.add(grads);
    sum.allreduce(*comm);
    sum.result_into(grads, static_cast<double>(B));
    sum.zero();
  }
  const double exchange_s = seconds_since(t0) / static_cast<double>(steps);
  int64_t numel = 0;
  for (auto& p : params) numel += p.numel();

  // One expert's step on trunk features in memory.
  const int64_t branch = 3;
  models::Backbone expert(spec, branch);
  expert->train();
  auto eopt = train::make_optimizer(expert->parameters(), optim);
  at::Tensor feats;
  {
    torch::NoGradGuard no_grad;
    net->eval();
    feats = net->blocks(batch.images, 0, branch).contiguous();
  }
  auto estep = [&] {
    eopt->zero_grad();
    torch::nn::functional::cross_entropy(expert->forward(feats), batch.labels).backward();
    eopt->step();
  };
  for (int i = 0; i < 3; ++i) estep();
  t0 = Clock::now();
  for (int64_t i = 0; i < steps; ++i) estep();
  const double expert_rate = static_cast<double>(steps * per_rank) / seconds_since(t0);

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
    std::printf("tiny-ResNet-10 width %lld, %lld x %lldx%lld images, batch %lld (micro %lld), %d rank%s, %d thread%s "
                "each\n",
                static_cast<long long>(width), static_cast<long long>(spec.input[0]),
                static_cast<long long>(spec.input[1]), static_cast<long long>(spec.input[2]),
                static_cast<long long>(B), static_cast<long long>(micro), P, P == 1 ? "" : "s",
                at::get_num_threads(), at::get_num_threads() == 1 ? "" : "s");
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
