#include <gtest/gtest.h>
#include <torch/torch.h>
#include <torch/version.h>

#include <algorithm>
#include <filesystem>
#include <numeric>

#include "comm/tensor_collectives.h"
#include "comm/thread_communicator.h"
#include "common/expect_error.h"
#include "common/make_dataset.h"
#include "common/temp_dir.h"
#include "core/atomic_file.h"
#include "core/hash.h"
#include "train/base_trainer.h"
#include "train/checkpoint.h"
#include "train/expert_trainer.h"
#include "train/losses.h"
#include "train/optim.h"
#include "train/trainer_options.h"

namespace smoe::train {
namespace {

TEST(Losses, ClipWeightedCrossEntropyAndKl) {
  at::Tensor g = torch::tensor({0.0, 0.05, 0.3, 1.0});
  EXPECT_TRUE(torch::allclose(clip_weights(g, 0.1), torch::tensor({0.1, 0.1, 0.3, 1.0})));
  at::Tensor logits = torch::tensor({{2.0, 0.0}, {0.0, 1.0}});
  at::Tensor y = torch::tensor({0, 0}, torch::kLong);
  at::Tensor ce = cross_entropy(logits, y, 0.0);
  EXPECT_NEAR(ce[0].item<double>(), -std::log(std::exp(2.0) / (std::exp(2.0) + 1)), 1e-6);
  EXPECT_NEAR(ce[1].item<double>(), -std::log(1 / (1 + std::exp(1.0))), 1e-6);
  // label smoothing eps: (1 - eps) nll + eps * mean_c(-log p_c)
  at::Tensor smooth = cross_entropy(logits, y, 0.2);
  at::Tensor logp = torch::log_softmax(logits, 1);
  EXPECT_NEAR(smooth[0].item<double>(), 0.8 * ce[0].item<double>() - 0.2 * logp[0].mean().item<double>(), 1e-6);
  at::Tensor p = torch::softmax(logits, 1);
  EXPECT_NEAR(kl_to_logits(p, logits).abs().max().item<double>(), 0.0, 1e-6);
  at::Tensor onehot = torch::tensor({{1.0, 0.0}, {1.0, 0.0}});
  EXPECT_TRUE(torch::allclose(kl_to_logits(onehot, logits), ce, 1e-5));
}

TEST(Schedule, WarmupCosineAndSteps) {
  OptimConfig o = BaseConfig{}.optim;
  o.lr = 1.0;
  o.epochs = 10;
  o.warmup_epochs = 1;
  o.schedule = LrSchedule::cosine;
  Schedule s(o, 10);
  EXPECT_NEAR(s.lr(0), 0.1, 1e-12);
  EXPECT_NEAR(s.lr(9), 1.0, 1e-12);
  EXPECT_NEAR(s.lr(10), 1.0, 1e-12);
  EXPECT_NEAR(s.lr(55), 0.5, 1e-12);  // half-way through the cosine
  EXPECT_NEAR(s.lr(100), 0.0, 1e-12);
  o.schedule = LrSchedule::step;
  o.warmup_epochs = 0;
  o.step_epochs = {3, 6};
  o.step_gamma = 0.1;
  Schedule st(o, 10);
  EXPECT_NEAR(st.lr(29), 1.0, 1e-12);
  EXPECT_NEAR(st.lr(30), 0.1, 1e-12);
  EXPECT_NEAR(st.lr(65), 0.01, 1e-12);
}

TEST(Checkpoint, RoundTripIsExactAndBytesAreDeterministic) {
  testing::TempDir tmp;
  torch::manual_seed(1);
  models::NetworkSpec spec;
  spec.width = 4;
  spec.input = {1, 8, 8};
  models::Backbone a(spec), b(spec);
  std::string h1 = save_module(*a, tmp / "a.pt");
  std::string h2 = save_module(*a, tmp / "a2.pt");
  EXPECT_EQ(h1, h2);
  EXPECT_EQ(h1, sha256_file(tmp / "a.pt"));
  load_module(*b, tmp / "a.pt");
  for (const auto& p : a->named_parameters()) EXPECT_TRUE(torch::equal(p.value(), b->named_parameters()[p.key()]));
  EXPECT_EQ(save_module(*b, tmp / "b.pt"), h1);
}

// An optimiser state round-trips within one libtorch release; one written by
// another release is refused with both versions named, never applied to the
// wrong parameters (libtorch's archives key states differently across releases).
TEST(Checkpoint, OptimizerStateNamesTheLibtorchThatWroteIt) {
  torch::manual_seed(0);
  torch::nn::Linear net(3, 2);
  torch::optim::SGD opt(net->parameters(), torch::optim::SGDOptions(0.1).momentum(0.9));
  net(torch::randn({4, 3})).sum().backward();
  opt.step();
  const std::string bytes = optimizer_state(opt);
  ASSERT_EQ(bytes.rfind("smoe-optimizer-state libtorch " TORCH_VERSION "\n", 0), 0u);

  torch::optim::SGD fresh(net->parameters(), torch::optim::SGDOptions(0.1).momentum(0.9));
  load_optimizer_state(fresh, bytes, "epoch-001.pt");
  EXPECT_EQ(optimizer_state(fresh), bytes);

  std::string other = bytes;
  other.replace(other.find(TORCH_VERSION), std::string(TORCH_VERSION).size(), "0.9.0");
  EXPECT_ERROR(
      load_optimizer_state(fresh, other, "epoch-001.pt"),
      "epoch-001.pt: the optimiser state was written by libtorch 0.9.0 and this smoe runs libtorch " TORCH_VERSION);
}

TEST(Checkpoint, BadFilesAreNamed) {
  testing::TempDir tmp;
  models::NetworkSpec spec;
  spec.width = 4;
  spec.input = {1, 8, 8};
  models::Backbone net(spec);
  EXPECT_ERROR(load_module(*net, tmp / "none.pt"), "checkpoint " + (tmp / "none.pt") + " does not exist");
  write_file_atomic(tmp / "junk.pt", "this is not a checkpoint");
  EXPECT_ERROR(load_module(*net, tmp / "junk.pt"), (tmp / "junk.pt") + ": not a readable checkpoint");
  save_state({{"fc.weight", torch::zeros({10, 32})}}, tmp / "partial.pt");
  EXPECT_ERROR(load_module(*net, tmp / "partial.pt"), (tmp / "partial.pt") + ": checkpoint has no entry");
  spec.width = 8;
  models::Backbone wider(spec);
  save_module(*wider, tmp / "wide.pt");
  EXPECT_ERROR(load_module(*net, tmp / "wide.pt"), "has shape");
}

TEST(ExactSum, SameBitsWhateverTheSplitAcrossRanks) {
  torch::manual_seed(7);
  std::vector<at::Tensor> terms;
  for (int i = 0; i < 12; ++i) terms.push_back(torch::randn({257}) * std::pow(10.0, i % 5 - 2));
  auto sum_with = [&](int ranks) {
    at::Tensor out = torch::zeros({257});
    comm::run_ranks(ranks, [&](comm::Communicator& c) {
      comm::ExactSum s({terms[0]});
      for (size_t i = static_cast<size_t>(c.rank()); i < terms.size(); i += static_cast<size_t>(ranks))
        s.add({terms[i]});
      s.allreduce(c);
      at::Tensor r = torch::zeros({257});
      s.result_into({r}, 1.0);
      if (c.rank() == 0) out.copy_(r);
    });
    return out;
  };
  at::Tensor one = sum_with(1);
  EXPECT_TRUE(torch::equal(one, sum_with(2)));
  EXPECT_TRUE(torch::equal(one, sum_with(3)));
  at::Tensor naive = torch::zeros({257}, torch::kDouble);
  for (auto& t : terms) naive += t.to(torch::kDouble);
  EXPECT_TRUE(torch::allclose(one.to(torch::kDouble), naive, 1e-6, 1e-9));
  comm::ExactSum s({terms[0]});
  EXPECT_ERROR(s.add({torch::full({257}, NAN)}, "gradient of parameter"),
               "gradient of parameter 0 is not finite (nan or inf): training diverged");
  EXPECT_ERROR(s.add({torch::full({257}, 3e6)}, "gradient of parameter"),
               "gradient of parameter 0 reaches 3000000 (above 1048576)");
}

// Eight terms of 2^20 reach 2^60 x 8 = 2^63 in fixed point: the int64 sums
// would wrap around. Seven still fit; the eighth is refused, on one rank or
// (at the allreduce) when the ranks' shares only overflow together.
TEST(ExactSum, AnOverflowingSumIsAnErrorNotAWrappedNumber) {
  const at::Tensor big = torch::full({3}, 1 << 20);
  comm::ExactSum s({big});
  for (int i = 0; i < 7; ++i) s.add({big}, "gradient of parameter");
  at::Tensor r = torch::zeros({3});
  s.result_into({r}, 1.0);
  EXPECT_TRUE(torch::equal(r, torch::full({3}, 7 << 20)));
  EXPECT_ERROR(s.add({big}, "gradient of parameter"),
               "exact sum of gradient of parameters: their magnitudes add up to 8388608 (2^23 or more), so the 64-bit "
               "fixed-point sum would overflow");
  EXPECT_ERROR(comm::run_ranks(2,
                               [&](comm::Communicator& c) {
                                 comm::ExactSum part({big});
                                 for (int i = 0; i < 4; ++i)
                                   part.add({big}, "gradient of parameter");  // 2^22 each: fine
                                 part.allreduce(c);
                               }),
               "exact sum of gradient of parameters over 2 ranks: their magnitudes add up to 8388608");
}

models::NetworkSpec tiny() {
  models::NetworkSpec spec;
  spec.width = 4;
  spec.input = {1, 8, 8};
  spec.num_classes = 4;
  return spec;
}

// Weights of a base model trained on `ranks` ranks-as-threads.
std::map<std::string, at::Tensor> train_on(int ranks, const std::string& dir, bool channels_last = false,
                                           int64_t width = 4) {
  models::NetworkSpec spec = tiny();
  spec.width = width;
  std::map<std::string, at::Tensor> weights;
  std::mutex mu;
  std::shared_ptr<const data::Dataset> ds = data::Dataset::open(dir, "train");
  at::set_num_threads(1);
  // The ranks are threads of one process sharing torch's generator: draw the
  // initial weights once (each process of a real run draws the same ones).
  torch::manual_seed(5);
  models::Backbone init(spec);
  comm::run_ranks(ranks, [&](comm::Communicator& c) {
    models::Backbone net(spec);
    net->copy_from(*init);
    BaseTrainOptions o;
    o.optim = BaseConfig{}.optim;
    o.optim.epochs = 2;
    o.optim.batch_size = 24;
    o.optim.lr = 0.05;
    o.optim.channels_last = channels_last;
    o.micro_batch = 8;
    o.bn_calibration = 40;
    o.augment = true;
    o.crop_padding = 1;
    o.hflip = true;
    o.seed = 9;
    o.log_every = 1000;
    train_base(net, ds, c, o);
    if (c.rank() == ranks - 1) {
      std::lock_guard<std::mutex> lock(mu);
      weights = state_dict(*net);
    }
  });
  return weights;
}

TEST(BaseTrainer, WeightsAreBitIdenticalForOneTwoAndThreeRanks) {
  testing::TempDir tmp;
  testing::make_dataset(tmp / "ds");
  auto one = train_on(1, tmp / "ds");
  auto two = train_on(2, tmp / "ds");
  auto three = train_on(3, tmp / "ds");
  ASSERT_FALSE(one.empty());
  torch::manual_seed(5);
  models::Backbone init(tiny());
  bool moved = false;
  for (const auto& [name, w] : one) {
    EXPECT_TRUE(torch::equal(w, two.at(name))) << name;
    EXPECT_TRUE(torch::equal(w, three.at(name))) << name;
    if (init->named_parameters().contains(name)) moved |= !torch::equal(w, init->named_parameters()[name]);
  }
  EXPECT_TRUE(moved) << "training changed nothing";
}

// base.channels_last: still bit-identical across rank counts, within float
// summation order of the usual layout, and handed back in the usual layout.
TEST(BaseTrainer, ChannelsLastIsRankCountInvariantToo) {
  testing::TempDir tmp;
  testing::make_dataset(tmp / "ds");
  auto one = train_on(1, tmp / "ds", true, 8);
  auto three = train_on(3, tmp / "ds", true, 8);
  auto usual = train_on(1, tmp / "ds", false, 8);
  ASSERT_FALSE(one.empty());
  for (const auto& [name, w] : one) {
    EXPECT_TRUE(torch::equal(w, three.at(name))) << name;
    EXPECT_TRUE(w.is_contiguous()) << name;
    if (w.is_floating_point()) {
      EXPECT_LT((w - usual.at(name)).abs().max().item<double>(), 1e-3) << name;
    }
  }
}

// The trunk cache in RAM and spilled to disk, on 1 and 3 ranks: every rank
// reads the same rows, bit for bit, as one rank's cache in RAM, in any order;
// the disk mode's files go when the cache does.
TEST(TrunkCache, MemoryAndDiskOnAnyRankCountGiveTheSameRows) {
  testing::TempDir tmp;
  testing::make_dataset(tmp / "ds");
  auto ds = data::Dataset::open(tmp / "ds", "train");
  torch::manual_seed(2);
  models::Backbone net(tiny());
  std::vector<int64_t> ids(static_cast<size_t>(ds->size()));
  std::iota(ids.begin(), ids.end(), 0);
  std::vector<int64_t> shuffled = ids;
  std::reverse(shuffled.begin(), shuffled.end());
  at::Tensor reference;
  for (RowCacheMode mode : {RowCacheMode::memory, RowCacheMode::disk}) {
    for (int ranks : {1, 3}) {
      comm::run_ranks(ranks, [&](comm::Communicator& c) {
        models::Backbone local(tiny());
        local->copy_from(*net);
        auto cache = build_trunk_cache(local, *ds, 2, 16, c, mode, tmp / "cache");
        EXPECT_EQ(cache->mode(), mode);
        EXPECT_EQ(cache->size(), 100);
        EXPECT_EQ(cache->bytes(), trunk_cache_bytes(local, 100, 2));
        at::Tensor all = cache->rows(ids);
        at::Tensor backwards = cache->rows(shuffled);
        EXPECT_TRUE(torch::equal(backwards, all.flip(0)));
        c.barrier();
        if (c.rank() == 0) {
          if (!reference.defined())
            reference = all;
          else
            EXPECT_TRUE(torch::equal(all, reference)) << mode_name(mode) << " on " << ranks << " ranks";
        }
        c.barrier();  // no rank drops its file while another still reads
      });
      EXPECT_TRUE(!std::filesystem::exists(tmp / "cache") || std::filesystem::is_empty(tmp / "cache"));
    }
  }
  EXPECT_EQ(reference.sizes(), (at::IntArrayRef{100, 4, 8, 8}));
}

// Per-sample rows written by whichever rank has them (g0 of the rows a rank
// clustered, in its own order): on 1 and 3 ranks, with each rank's ids
// scattered and out of order, the file holds every row in id order, the
// same bytes, published whole (no .part left); every rank reads them back in
// either mode, and a column and the row sums equal the tensor's.
TEST(RowCache, RowsWrittenByAnyRanksInAnyOrderMakeOneFileInIdOrder) {
  testing::TempDir tmp;
  const int64_t n = 103, k = 4;
  torch::manual_seed(5);
  const at::Tensor all = torch::softmax(torch::randn({n, k}), 1);
  const std::string file = tmp / "g0.f32";
  std::string reference;
  for (int ranks : {1, 3}) {
    for (RowCacheMode mode : {RowCacheMode::memory, RowCacheMode::disk}) {
      comm::run_ranks(ranks, [&](comm::Communicator& c) {
        // Rank r has ids r, r + P, ... (no two consecutive on 3 ranks), backwards.
        at::Tensor ids = torch::arange(c.rank(), n, ranks, torch::kLong).flip(0);
        auto cache = RowCache::write(file, n, {k}, ids, all.index_select(0, ids), c, mode);
        EXPECT_EQ(cache->mode(), mode);
        std::vector<int64_t> every(static_cast<size_t>(n));
        std::iota(every.begin(), every.end(), 0);
        EXPECT_TRUE(torch::equal(cache->rows(every), all));
        EXPECT_TRUE(torch::equal(cache->column(2, 10), all.select(1, 2)));
        EXPECT_TRUE(torch::allclose(cache->sum_rows(7), all.to(torch::kDouble).sum(0)));
        c.barrier();
      });
      EXPECT_FALSE(std::filesystem::exists(file + ".part"));
      const std::string bytes = read_file(file);
      if (reference.empty()) reference = bytes;
      EXPECT_EQ(bytes, reference) << ranks << " ranks";
    }
  }
  EXPECT_EQ(reference.size(), static_cast<size_t>(n * k * 4));
  // One float per row (the clusters' assignment) and an id out of range.
  comm::run_ranks(1, [&](comm::Communicator& c) {
    auto assign = RowCache::write(tmp / "assign.f32", 3, {}, torch::tensor({2, 0, 1}), torch::tensor({7, 5, 6}), c,
                                  RowCacheMode::disk);
    EXPECT_TRUE(torch::equal(assign->rows({0, 1, 2}), torch::tensor({5.f, 6.f, 7.f})));
    EXPECT_ERROR(
        RowCache::write(tmp / "bad.f32", 3, {}, torch::tensor({0, 3}), torch::zeros({2}), c, RowCacheMode::disk),
        "id 3 outside [0, 3)");
  });
}

TEST(Gate, KlFitMatchesTheTargets) {
  torch::manual_seed(4);
  at::Tensor x = torch::randn({400, 6});
  at::Tensor w = torch::randn({6, 3});
  at::Tensor target = torch::softmax(x.mm(w) * 2, 1);
  models::LinearGateImpl gate(6, 3);
  models::GateFeatures f{x, torch::zeros({400, 2})};
  OptimConfig o = GateConfig{}.optim;
  o.epochs = 40;
  o.lr = 0.5;
  o.batch_size = 50;
  double before = kl_to_logits(target, gate.forward(f)).mean().item<double>();
  train_gate(gate, f, target, o, 1);
  double after = kl_to_logits(target, gate.forward(f)).mean().item<double>();
  EXPECT_LT(after, 0.1 * before);
  EXPECT_GT((gate.forward(f).argmax(1) == target.argmax(1)).to(torch::kDouble).mean().item<double>(), 0.9);
  // A fixed routing has nothing to fit.
  models::ClassRoutingGateImpl routing(2, 3);
  EXPECT_ERROR(train_gate(routing, f, target, o, 1), "this gate kind has no weights to train");
}

// experts.augment without a trunk cache: the host's part of each batch
// (reading, cropping, flipping) is built ahead on a loader thread. What the
// expert sees, and so what it learns, must not change: the same trained
// weights with prefetch 2 as with batches built in place (prefetch 0), and a
// get() of a batch that was not announced is built in place, correctly.
TEST(Experts, LiveInputsBuiltAheadTrainTheSameExpert) {
  testing::TempDir tmp;
  testing::make_dataset(tmp / "ds");
  std::shared_ptr<const data::Dataset> ds = data::Dataset::open(tmp / "ds", "train");
  torch::manual_seed(3);
  models::Backbone base(tiny());
  data::Transform augment;
  augment.augment = true;
  augment.crop_padding = 2;
  augment.hflip = true;
  const int64_t branch = 2;
  const at::Tensor labels = data::make_batch(
                                *ds,
                                [&] {
                                  std::vector<int64_t> all(static_cast<size_t>(ds->size()));
                                  std::iota(all.begin(), all.end(), 0);
                                  return all;
                                }(),
                                data::Transform{})
                                .labels;
  const at::Tensor weights = torch::ones({ds->size()});
  auto trained = [&](int64_t prefetch) {
    const ExpertInputs inputs(base, ds, branch, augment, prefetch);
    models::Backbone expert(tiny(), branch);
    expert->copy_from(*base);
    ExpertTrainOptions o;
    o.optim = ExpertsConfig{}.optim;
    o.optim.epochs = 2;
    o.optim.batch_size = 16;
    o.seed = 11;
    o.log_every = 1000;
    train_expert(*expert, inputs, labels, weights, o);
    return expert->parameters();
  };
  const auto ahead = trained(2), in_place = trained(0);
  ASSERT_EQ(ahead.size(), in_place.size());
  for (size_t i = 0; i < ahead.size(); ++i) EXPECT_TRUE(torch::equal(ahead[i], in_place[i])) << "parameter " << i;

  const ExpertInputs inputs(base, ds, branch, augment, 2);
  inputs.prefetch({{0, 1, 2}, {3, 4}}, 5);
  EXPECT_TRUE(torch::equal(inputs.get({0, 1, 2}, 5), ExpertInputs(base, ds, branch, augment, 0).get({0, 1, 2}, 5)));
  EXPECT_TRUE(torch::equal(inputs.get({7, 8}, 5), ExpertInputs(base, ds, branch, augment, 0).get({7, 8}, 5)));
}

TEST(Experts, WeightsSteerWhatAnExpertLearns) {
  // Two classes fully determined by the sign of feature 0; an expert trained
  // only on class-0 samples (weights 1 / 0) learns to predict class 0 everywhere.
  torch::manual_seed(8);
  models::NetworkSpec spec = tiny();
  spec.num_classes = 2;
  const int64_t branch = 4;
  models::Backbone base(spec);
  models::Shape in = base->input_shape_of(branch);
  at::Tensor features = torch::randn({200, in[0], in[1], in[2]});
  at::Tensor labels = (torch::arange(200) % 2).to(torch::kLong);
  at::Tensor w = (labels == 0).to(torch::kFloat);
  for (const Weighting mode : {Weighting::reweight, Weighting::sample}) {
    models::Backbone expert(spec, branch);
    expert->copy_from(*base);
    ExpertTrainOptions o;
    o.optim = ExpertsConfig{}.optim;
    o.optim.epochs = 15;
    o.optim.lr = 0.1;
    o.optim.batch_size = 20;
    o.weighting = mode;
    o.log_every = 1000;
    auto stats = train_expert(*expert, ExpertInputs(RowCache::from_rows(features)), labels, w, o);
    EXPECT_EQ(stats.samples, mode == Weighting::sample ? 15 * 100 : 15 * 200) << options::name(mode);
    expert->eval();
    torch::NoGradGuard no_grad;
    double frac0 = (expert->forward(features).argmax(1) == 0).to(torch::kDouble).mean().item<double>();
    EXPECT_GT(frac0, 0.95) << options::name(mode);
  }
}

// experts.fuse: three experts trained together (one pass, grouped
// convolutions) end where each trained alone with the same options ends —
// same sample order, each its own weights — up to float summation order;
// and each expert's reported loss is its own.
TEST(Experts, TrainedTogetherEqualTrainedOneByOne) {
  torch::manual_seed(9);
  models::NetworkSpec spec = tiny();
  const int64_t branch = 3, K = 3, N = 120;
  models::Backbone base(spec);
  models::Shape in = base->input_shape_of(branch);
  at::Tensor features = torch::randn({N, in[0], in[1], in[2]});
  at::Tensor labels = torch::randint(0, spec.num_classes, {N}, torch::kLong);
  at::Tensor weights = torch::rand({N, K}).clamp_min(0.1);
  ExpertTrainOptions o;
  o.optim = ExpertsConfig{}.optim;
  o.optim.epochs = 3;
  o.optim.lr = 0.05;
  o.optim.batch_size = 16;
  o.optim.weight_decay = 5e-4;
  o.seed = 77;
  o.log_every = 1000;
  const ExpertInputs inputs(RowCache::from_rows(features));
  std::vector<std::shared_ptr<models::BackboneImpl>> alone, together;
  std::vector<double> losses_alone;
  for (int64_t k = 0; k < K; ++k) {
    for (auto* v : {&alone, &together}) {
      v->push_back(std::make_shared<models::BackboneImpl>(spec, branch));
      v->back()->copy_from(*base);
    }
    losses_alone.push_back(
        train_expert(*alone.back(), inputs, labels, weights.select(1, k).contiguous(), o).final_loss);
  }
  models::FusedBranch fused(together);
  std::vector<double> losses;
  auto stats = train_experts_fused(*fused, inputs, labels, weights, o, &losses);
  fused->unstack_into(together);
  EXPECT_EQ(stats.samples, 3 * N);
  ASSERT_EQ(losses.size(), size_t(K));
  for (int64_t k = 0; k < K; ++k) {
    EXPECT_NEAR(losses[k], losses_alone[k], 1e-4) << "expert " << k;
    auto want = alone[k]->named_parameters();
    for (auto& p : together[k]->named_parameters()) {
      const double diff = (p.value() - want[p.key()]).abs().max().item<double>();
      EXPECT_LT(diff, 1e-4) << "expert " << k << " " << p.key();
    }
    auto want_b = alone[k]->named_buffers();
    for (auto& b : together[k]->named_buffers())
      EXPECT_TRUE(torch::allclose(b.value().to(torch::kDouble), want_b[b.key()].to(torch::kDouble), 1e-4, 1e-5))
          << "expert " << k << " " << b.key();
  }
  // The experts did learn different things (their weights differ).
  EXPECT_GT((together[0]->named_parameters()["fc.weight"] - together[1]->named_parameters()["fc.weight"])
                .abs()
                .max()
                .item<double>(),
            1e-3);
  o.weighting = Weighting::sample;
  EXPECT_ERROR(train_experts_fused(*fused, inputs, labels, weights, o), "need weighting: reweight");
}

}  // namespace
}  // namespace smoe::train

namespace smoe::train {
namespace {

// The E-step's reduction: each rank fills the columns of the experts it holds
// (k mod P), the chunked allreduce assembles the matrix; it and the posterior
// equal a single-process computation value for value.
TEST(EStep, ReducedMatrixAndPosteriorEqualASingleProcessComputation) {
  torch::manual_seed(12);
  const int64_t N = 1003, K = 5;
  at::Tensor likelihood = torch::rand({N, K});
  at::Tensor gate = torch::softmax(torch::randn({N, K}), 1);
  at::Tensor expected = posterior(gate, likelihood);
  EXPECT_TRUE(torch::allclose(expected.sum(1), torch::ones({N}), 1e-5));
  for (int ranks : {1, 2, 3}) {
    comm::run_ranks(ranks, [&](comm::Communicator& c) {
      at::Tensor local = torch::zeros({N, K});
      for (int64_t k = c.rank(); k < K; k += c.size()) local.select(1, k).copy_(likelihood.select(1, k));
      comm::allreduce_in_chunks(c, local, 100);  // 11 chunks, the last one short
      EXPECT_TRUE(torch::equal(local, likelihood)) << ranks << " ranks, rank " << c.rank();
      EXPECT_TRUE(torch::equal(posterior(gate, local), expected));
    });
  }
  // q follows the likelihood where the gate is flat.
  at::Tensor flat = torch::full({1, 2}, 0.5);
  EXPECT_TRUE(torch::allclose(posterior(flat, torch::tensor({{0.9, 0.3}})), torch::tensor({{0.75, 0.25}})));
}

}  // namespace
}  // namespace smoe::train
