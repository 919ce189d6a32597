// The schemes' stage lists and what follows from the stages' declarations:
// which changed key forces which stage, which run.json records a stage owns,
// and the configs a scheme rejects.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <filesystem>
#include <fstream>

#include "common/expect_error.h"
#include "common/temp_dir.h"
#include "data/integrity.h"
#include "pipeline/config.h"
#include "pipeline/quick_run.h"
#include "pipeline/stage.h"
#include "pipeline/stages/epoch_checkpoints.h"

namespace smoe::pipeline {
namespace {

std::vector<std::string> names(const std::vector<StagePlan>& plan) {
  std::vector<std::string> out;
  for (const auto& s : plan) out.push_back(s.name);
  return out;
}

Config with(const std::vector<std::string>& sets) {
  Config c = Config::defaults();
  for (const auto& s : sets) c.set(s);
  return c;
}

TEST(Schemes, AlgorithmOneAndEmAreTwoLists) {
  EXPECT_EQ(names(scheme_plan(with({}))),
            (std::vector<std::string>{"base", "embed", "cluster", "gate", "experts", "eval"}));
  EXPECT_EQ(names(scheme_plan(with({"scheme=em", "em.steps=1"}))),
            (std::vector<std::string>{"base", "embed", "cluster", "gate", "experts", "em", "eval"}));
  EXPECT_FALSE(scheme_plan(with({})).back().recorded);  // eval runs every time
}

// The model a finished run holds (what smoe predict and smoe export load,
// and what the evaluation after its stage evaluates) is the one its last
// training stage declares, whatever the stages are called.
TEST(Schemes, ARunsModelIsItsLastTrainingStages) {
  auto model = [](const std::vector<std::string>& sets) {
    Config c;
    for (const auto& s : sets) c.set(s);
    return pipeline::scheme_model(c).value();
  };
  using Family = pipeline::TrainedModel::Family;
  for (const char* scheme : {"scheme=algorithm1", "scheme=em", "scheme=dfcp"})
    EXPECT_EQ(model({scheme}).family, Family::single_gate) << scheme;
  const auto joint = model({"scheme=joint", "gate.kind=attentive"});
  EXPECT_EQ(joint.family, Family::joint);
  EXPECT_EQ(joint.checkpoint, "joint");
  EXPECT_EQ(joint.gate_kind, "attentive");
  const auto distilled = model({"scheme=joint_distill", "gate.kind=attentive", "distill.gate_kind=noisy"});
  EXPECT_EQ(distilled.checkpoint, "distill");
  EXPECT_EQ(distilled.gate_kind, "noisy");
  EXPECT_FALSE(distilled.around_base);
  const auto finetuned = model({"scheme=algorithm1_finetune"});  // Algorithm 1's MoE, then fine-tuned
  EXPECT_EQ(finetuned.family, Family::joint);
  EXPECT_EQ(finetuned.checkpoint, "finetune");
  EXPECT_TRUE(finetuned.around_base);
}

TEST(Schemes, AChangedKeyForcesTheFirstStageThatDeclaresIt) {
  const auto plan = scheme_plan(with({"scheme=em", "em.steps=1"}));
  auto stage_of = [&](const std::string& key) {
    size_t i = first_stage_using(plan, key);
    return i < plan.size() ? plan[i].name : std::string("(none)");
  };
  EXPECT_EQ(stage_of("seed"), "base");
  EXPECT_EQ(stage_of("base.optim.lr"), "base");
  EXPECT_EQ(stage_of("model.width"), "base");
  EXPECT_EQ(stage_of("experts.count"), "cluster");     // K clusters
  EXPECT_EQ(stage_of("gate.temperature"), "cluster");  // g0's temperature
  EXPECT_EQ(stage_of("gate.epochs"), "gate");
  EXPECT_EQ(stage_of("experts.gamma"), "experts");
  EXPECT_EQ(stage_of("ensembler.kind"), "experts");
  EXPECT_EQ(stage_of("em.expert_epochs"), "em");
  EXPECT_EQ(stage_of("eval.taus"), "(none)");
  EXPECT_EQ(stage_of("runtime.threads"), "(none)");
  EXPECT_EQ(stage_of("data.prefetch"), "(none)");
  // Without the em stage, em.* keys change no recorded result.
  EXPECT_EQ(first_stage_using(scheme_plan(with({})), "em.expert_epochs"), scheme_plan(with({})).size());
  // A key no stage declares is assumed to change everything.
  EXPECT_EQ(first_stage_using(plan, "no.such.key"), 0u);
}

TEST(Schemes, EveryConfigKeyIsDeclaredByAStageOrChangesNoResult) {
  // A key nobody declares would make resume redo everything: each new key
  // must be claimed by the stage that uses it.
  const auto plan = scheme_plan(with({"scheme=em", "em.steps=1"}));
  for (const auto& k : config_keys()) {
    if (key_never_changes_results(k.key)) continue;
    bool declared = false;
    for (const auto& name : stages().names())
      for (const auto& d : stages().get(name)()->keys())
        declared = declared || d == k.key || (d.back() == '.' && k.key.rfind(d, 0) == 0);
    EXPECT_TRUE(declared) << k.key;
  }
}

TEST(Schemes, StagesOwnTheirRecords) {
  const auto plan = scheme_plan(with({"scheme=em", "em.steps=1"}));
  EXPECT_EQ(plan[stage_owning(plan, "expert/003")].name, "experts");
  EXPECT_EQ(plan[stage_owning(plan, "em/2/expert/001")].name, "em");
  EXPECT_EQ(plan[stage_owning(plan, "cluster")].name, "cluster");
  EXPECT_EQ(stage_owning(plan, "something"), plan.size());
}

TEST(Schemes, ConfigsASchemeCannotRunAreRejected) {
  EXPECT_ERROR(check_config(with({"em.steps=2"})),
               "config key 'em.steps' is 2 but scheme 'algorithm1' has no em stage (set scheme: em to run EM rounds)");
  EXPECT_ERROR(check_config(with({"scheme=em"})), "em.steps must be at least 1");
  // The per-class model routes with a fixed gate, which the EM M-step cannot refit.
  EXPECT_ERROR(check_config(with({"scheme=em", "em.steps=1", "cluster.method=per_class"})),
               "'per_class' routes with the fixed gate 'class_routing', which EM cannot refit");
  EXPECT_ERROR(check_config(with({"eval.class_oracle=true"})),
               "config key 'eval.class_oracle': cluster.method 'kmeans' has no class oracle");
  check_config(with({"cluster.method=per_class", "eval.class_oracle=true"}));
  check_config(with({"scheme=em", "em.steps=3"}));
  // Experts read the output of at most every block of the model.
  EXPECT_ERROR(check_config(with({"experts.branch_after=6"})),
               "config key 'experts.branch_after' is 6: model.arch tiny_resnet has 5 blocks (0 to 5");
  check_config(with({"experts.branch_after=5"}));
  // experts.depth sets the depth of branch experts of a tiny-ResNet, nothing else.
  EXPECT_ERROR(check_config(with({"experts.depth=18", "experts.arch=small_cnn"})),
               "config key 'experts.depth' is 18: it sets the depth of branch experts of a tiny_resnet base");
  EXPECT_ERROR(check_config(with({"experts.depth=12"})),
               "config key 'experts.depth': expected 0, 10, 18 or 34, got 12");
  check_config(with({"experts.depth=34"}));
  // experts.fuse stacks branch experts of one optimiser trained on reweighted samples.
  for (const char* other :
       {"experts.weighting=sample", "experts.arch=small_cnn", "experts.grad_clip=1", "experts.optims=['lr=0.1']"})
    EXPECT_ERROR(check_config(with({"experts.fuse=2", other})),
                 "config key 'experts.fuse' is 2: experts trained together need experts.arch: branch");
  check_config(with({"experts.fuse=3", "experts.depth=18"}));
  EXPECT_ERROR(check_config(with({"experts.fuse=2", "experts.channels_last=true"})),
               "config key 'experts.channels_last' with experts.fuse 2");
  EXPECT_ERROR(check_config(with({"experts.precision=fp16"})), "experts.precision");
}

// Every config shipped under configs/ loads and passes its scheme's checks,
// against a manifest shaped like the dataset it names (CIFAR-10 or
// Fashion-MNIST): a broken shipped config is found here, not by a user.
TEST(Schemes, EveryShippedConfigPassesItsSchemesChecks) {
  int checked = 0;
  for (const auto& e : std::filesystem::recursive_directory_iterator(testing::source_dir() + "/configs")) {
    if (e.path().extension() != ".yaml" || e.path().string().find("/sweeps/") != std::string::npos) continue;
    SCOPED_TRACE(e.path().string());
    const Config c = Config::load(e.path().string(), {});
    data::Manifest m;
    const bool cifar = c.data.path.find("cifar") != std::string::npos;
    const bool tiny_imagenet = c.data.path.find("tiny-imagenet") != std::string::npos;
    m.shape = tiny_imagenet ? std::vector<int64_t>{3, 64, 64}
              : cifar       ? std::vector<int64_t>{3, 32, 32}
                            : std::vector<int64_t>{1, 28, 28};
    m.num_classes = tiny_imagenet ? 200 : c.data.path.find("cifar100") != std::string::npos ? 100 : 10;
    for (int64_t k = 0; k < m.num_classes; ++k) m.class_names.push_back(std::to_string(k));
    for (const char* split : {"train", tiny_imagenet ? "val" : "test"}) {
      data::SplitInfo si;
      si.name = split;
      si.count = std::string(split) == "train" ? (tiny_imagenet ? 100000 : cifar ? 50000 : 60000) : 10000;
      m.splits.push_back(si);
    }
    for (const auto& stage : scheme_stages(c)) {
      EXPECT_NO_THROW(stage->check(c)) << stage->name();
      EXPECT_NO_THROW(stage->check_inputs(c, m)) << stage->name();
    }
    ++checked;
  }
  EXPECT_GE(checked, 20);
}

// Ranks that are threads share torch's one generator: a check that builds a
// module to ask it something (EM's "is this gate trainable", the joint
// scheme's expert and gate) must draw nothing from it, or another rank's
// seeded model gets other weights whenever the two interleave (seen as a
// base model that differed from run to run on the fake accelerator).
// Images too small for the network's down-samplings are refused at load,
// naming the dataset and the keys (issue #31: config against data), not when
// the base stage builds the model after the run folder exists.
TEST(StageChecks, ImagesTooSmallForTheModelAreRefusedAtLoad) {
  testing::TempDir tmp;
  testing::SyntheticSpec spec;
  spec.train = 64;
  spec.test = 32;
  spec.shape = {1, 4, 4};
  const std::string data = tmp.path() + "/tiny";
  testing::make_dataset(data, spec);
  data::VerifyCache shards;
  EXPECT_ERROR(
      check_inputs(testing::quick_config(data, {}), shards),
      "dataset " + data + " and config key 'model.*': model input must be [C, H, W] with C >= 1 and H, W >= 8");
}

// Issue #31, config against the machine: a cache that cannot fall back to
// disk must fit runtime.memory_budget_mb, checked at load before the run
// folder exists: the splits read whole (data.storage memory), the trunk
// features (experts.trunk_cache memory) and a torch features file (read
// whole). The same run with the caches in auto mode passes: what does not
// fit goes to disk or is streamed.
TEST(StageChecks, CachesThatMustBeInRamAreCheckedAgainstTheMemoryBudgetAtLoad) {
  testing::TempDir tmp;
  testing::SyntheticSpec spec;
  spec.train = 1024;  // 3 MiB of [3, 32, 32] images
  spec.test = 64;
  spec.shape = {3, 32, 32};
  spec.shard_size = 256;
  const std::string data = tmp.path() + "/d";
  testing::make_dataset(data, spec);
  auto check = [&](const std::vector<std::string>& sets) {
    data::VerifyCache shards;
    std::vector<std::string> all = {"data.limit_train=0", "data.limit_test=0"};
    all.insert(all.end(), sets.begin(), sets.end());
    check_inputs(testing::quick_config(data, all), shards);
  };
  EXPECT_ERROR(check({"data.storage=memory", "runtime.memory_budget_mb=2"}),
               "config key 'data.storage' is memory: the splits 'train' (3.0 MiB) and 'test' (0.2 MiB) read whole "
               "need more than runtime.memory_budget_mb (2)");
  EXPECT_NO_THROW(check({"data.storage=memory", "runtime.memory_budget_mb=4"}));
  EXPECT_NO_THROW(check({"data.storage=auto", "runtime.memory_budget_mb=2"}));

  // Both splits in RAM leave 0.8 MiB of 4; the trunk features take 8 MiB.
  EXPECT_ERROR(check({"experts.trunk_cache=memory", "runtime.memory_budget_mb=4"}),
               "config key 'experts.trunk_cache' is memory, [8, 16, 16] floats a sample at experts.branch_after 3): "
               "8.0 MiB must be in RAM on every rank, but runtime.memory_budget_mb (4) leaves 0.8 MiB after the "
               "data splits (3.2 MiB in RAM, 0.0 MiB of chunk caches): raise runtime.memory_budget_mb or set "
               "experts.trunk_cache auto");
  EXPECT_NO_THROW(check({"experts.trunk_cache=auto", "runtime.memory_budget_mb=4"}));
  EXPECT_NO_THROW(check({"experts.trunk_cache=memory", "runtime.memory_budget_mb=12"}));

  // A torch features file of 1024 x 256 floats (1 MiB) is read whole.
  const std::string features = tmp.path() + "/features.pt";
  const std::vector<char> bytes = torch::pickle_save(torch::ones({1024, 256}));
  std::ofstream(features, std::ios::binary).write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  EXPECT_ERROR(check({"cluster.features=" + features, "runtime.memory_budget_mb=4"}),
               "the features file " + features +
                   " (config key 'cluster.features', a torch file read whole): 1.0 MiB "
                   "must be in RAM on every rank");
  EXPECT_NO_THROW(check({"cluster.features=" + features, "runtime.memory_budget_mb=8"}));
}

TEST(StageChecks, DrawNothingFromTheGlobalGenerator) {
  testing::TempDir tmp;
  const std::string data = testing::quick_dataset(tmp.path());
  const std::vector<std::vector<std::string>> configs = {
      {"scheme=em", "em.steps=1"},
      {"scheme=joint", "experts.arch=small_cnn", "experts.branch_after=0", "gate.kind=cnn", "joint.batch_size=64"},
      {"scheme=joint_distill", "experts.arch=small_cnn", "experts.branch_after=0", "gate.kind=attentive",
       "joint.batch_size=64", "distill.batch_size=64"},
      {}};
  for (const auto& sets : configs) {
    const Config c = testing::quick_config(data, sets);
    auto next_draw = [](const std::function<void()>& between) {
      torch::manual_seed(7);
      between();
      return torch::rand({1}).item<float>();
    };
    data::VerifyCache shards;
    EXPECT_EQ(next_draw([&] { check_inputs(c, shards); }), next_draw([] {})) << c.scheme;
  }
}

// One epoch's checkpoint, as every resumable trainer saves it: the record's
// hashes name both files; a resume takes them only while both are there and
// unchanged, and a refusal names the file.
TEST(EpochFiles, AResumeTakesOnlyTheFilesItsRecordNames) {
  testing::TempDir dir;
  const EpochFiles files{dir / "epoch-3.pt", dir / "epoch-3.optim"};
  torch::manual_seed(1);
  torch::nn::Linear saved(4, 2);
  const nlohmann::json record = files.save(*saved, "optimiser state");
  EXPECT_EQ(files.mismatch(record), "");
  torch::nn::Linear loaded(4, 2);
  EXPECT_EQ(files.load(*loaded), "optimiser state");
  EXPECT_TRUE(torch::equal(loaded->weight, saved->weight));

  std::ofstream(files.optim) << "another run's optimiser state";
  EXPECT_EQ(files.mismatch(record), files.optim + ": not the file its record names (another run's, or damaged)");
  std::filesystem::remove(files.weights);
  EXPECT_EQ(files.mismatch(record), files.weights + ": missing");
  files.remove();
  EXPECT_FALSE(std::filesystem::exists(files.optim));
}

}  // namespace
}  // namespace smoe::pipeline
