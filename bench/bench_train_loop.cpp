// smoe's data-parallel training loop (train_base on one rank: HDF5-backed
// dataset, batches built and prefetched on the loader thread, exact gradient
// sums) against a bare libtorch loop of the same model on tensors already in
// memory (normalised, indexed per batch). Prints images/s of both and their
// ratio. Like with like: the process is bound to as many cores as compute
// threads, so smoe's loader thread shares those cores instead of taking a
// spare one that the bare loop would not use.
//
//   bench_train_loop DATASET_DIR [threads=1] [epochs=1] [limit=20000] [rounds=3]
#include <torch/torch.h>

#include <sched.h>
#include <algorithm>

#include <chrono>
#include <cstdio>

#include "core/affinity.h"

#include "comm/thread_communicator.h"
#include "data/batch.h"
#include "data/sampler.h"
#include "train/base_trainer.h"
#include "train/optim.h"
#include "train/trainer_options.h"

using namespace smoe;

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: bench_train_loop DATASET_DIR [threads] [epochs] [limit] [rounds]\n");
    return 2;
  }
  const int threads = argc > 2 ? std::atoi(argv[2]) : 1;
  const int64_t epochs = argc > 3 ? std::atoll(argv[3]) : 1;
  const int64_t limit = argc > 4 ? std::atoll(argv[4]) : 20000;
  const int rounds = argc > 5 ? std::atoi(argv[5]) : 3;
  // Bind to the first `threads` cores of the allowed set.
  const std::vector<int> allowed = affinity_cpus();
  if (static_cast<int>(allowed.size()) < threads) {
    std::fprintf(stderr, "bench_train_loop: %d threads but only %zu cores allowed\n", threads, allowed.size());
    return 2;
  }
  cpu_set_t set;
  CPU_ZERO(&set);
  for (int i = 0; i < threads; ++i) CPU_SET(allowed[static_cast<size_t>(i)], &set);
  if (sched_setaffinity(0, sizeof(set), &set) != 0) {
    std::perror("bench_train_loop: sched_setaffinity");
    return 2;
  }
  at::set_num_threads(threads);  // its pool threads start on those cores
  data::DatasetOptions dopt;
  dopt.limit = limit;
  std::shared_ptr<const data::Dataset> ds = data::Dataset::open(argv[1], "train", dopt);
  models::NetworkSpec spec;
  spec.input = ds->shape();
  spec.num_classes = ds->num_classes();
  OptimConfig optim = BaseConfig{}.optim;
  optim.epochs = epochs;
  optim.batch_size = 128;
  optim.lr = 0.05;

  // Bare loop: every image already a normalised float tensor in memory.
  std::vector<int64_t> all(static_cast<size_t>(ds->size()));
  std::iota(all.begin(), all.end(), 0);
  data::Batch whole = data::make_batch(*ds, all, data::Transform{});
  auto bare_run = [&] {
    torch::manual_seed(0);
    models::Backbone bare(spec);
    bare->train();
    auto opt = train::make_optimizer(bare->parameters(), optim);
    auto t0 = std::chrono::steady_clock::now();
    int64_t images = 0;
    for (int64_t e = 0; e < epochs; ++e) {
      for (const auto& b : data::make_batches(data::permutation(ds->size(), e), 128, true)) {
        at::Tensor idx = torch::tensor(b, torch::kLong);
        at::Tensor x = whole.images.index_select(0, idx), y = whole.labels.index_select(0, idx);
        at::Tensor loss = torch::nn::functional::cross_entropy(bare->forward(x), y);
        opt->zero_grad();
        loss.backward();
        opt->step();
        images += static_cast<int64_t>(b.size());
      }
    }
    return images / std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  };
  // smoe's loop, one rank, one micro-batch per step.
  auto smoe_run = [&] {
    double rate = 0;
    comm::run_ranks(1, [&](comm::Communicator& c) {
      torch::manual_seed(0);
      models::Backbone net(spec);
      train::BaseTrainOptions o;
      o.optim = optim;
      o.micro_batch = 128;
      o.bn_calibration = 128;
      o.log_every = 1 << 30;
      auto stats = train::train_base(net, ds, c, o);
      rate = stats.images / stats.seconds;
    });
    return rate;
  };
  // The machine is noisy: interleave the two and compare paired runs.
  std::printf(
      "threads %d on cores %s (loader thread included), %lld images x %lld epoch(s), batch 128, "
      "tiny-ResNet-10 width 16\n",
      threads, cpu_list(affinity_cpus()).c_str(), static_cast<long long>(ds->size()), static_cast<long long>(epochs));
  std::printf("%6s %14s %14s %8s\n", "round", "bare_img/s", "smoe_img/s", "ratio");
  std::vector<double> ratios;
  for (int round = 0; round < rounds; ++round) {
    const double b = bare_run(), s = smoe_run();
    ratios.push_back(s / b);
    std::printf("%6d %14.0f %14.0f %8.3f\n", round + 1, b, s, s / b);
  }
  std::sort(ratios.begin(), ratios.end());
  std::printf("median ratio smoe / bare: %.3f\n", ratios[ratios.size() / 2]);
  return 0;
}
