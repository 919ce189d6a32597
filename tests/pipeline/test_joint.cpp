// Schemes joint and joint_distill (Krishnamurthy et al.) on the quick
// synthetic dataset, ranks as threads: the same checkpoints on 1, 2 and 3
// ranks with both regularisers on, an exact resume from the last finished
// epoch, distillation that leaves the experts' weights bit-identical, and
// the configs the scheme refuses.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cstdlib>
#include <map>

#include "common/expect_error.h"
#include "common/temp_dir.h"
#include "data/integrity.h"
#include "pipeline/stage.h"
#include "quick_run.h"
#include "train/checkpoint.h"

namespace smoe::testing {
namespace {

Config joint_config(const std::string& data, std::vector<std::string> extra = {}) {
  std::vector<std::string> o = {"scheme=joint",
                                "experts.arch=small_cnn",
                                "experts.branch_after=0",
                                "experts.count=3",
                                "gate.kind=cnn",
                                "model.width=3",
                                "model.hidden=[12,8]",
                                "joint.epochs=2",
                                "joint.batch_size=64",
                                "joint.micro_batch=16",
                                "joint.importance=0.2",
                                "joint.similarity_same=0.05",
                                "joint.similarity_diff=0.02"};
  o.insert(o.end(), extra.begin(), extra.end());
  return quick_config(data, o);
}

std::string joint_sha(const std::string& run_dir) { return run_json(run_dir)["done"]["joint"]["sha256"]; }

class JointScheme : public ::testing::Test {
 protected:
  void SetUp() override { torch::set_num_threads(1); }
  TempDir tmp;
};

TEST_F(JointScheme, SameCheckpointOnOneTwoAndThreeRanks) {
  const std::string data = quick_dataset(tmp.path());
  const Config c = joint_config(data);
  std::vector<std::string> shas;
  nlohmann::json first;
  for (int ranks : {1, 2, 3}) {
    const std::string run = tmp.path() + "/r" + std::to_string(ranks);
    nlohmann::json report = train_quick(c, run, ranks);
    shas.push_back(joint_sha(run));
    if (ranks == 1) first = report;
    for (const char* rule : {"mixture", "top1", "top2"}) EXPECT_EQ(report[rule], first[rule]) << ranks << " " << rule;
    EXPECT_EQ(report["specialisation"], first["specialisation"]) << ranks;
    EXPECT_EQ(report["test_samples"], 96);
  }
  EXPECT_EQ(shas[1], shas[0]);
  EXPECT_EQ(shas[2], shas[0]);
  // The regularisers were on, and recorded.
  const auto rec = run_json(tmp.path() + "/r2")["done"]["joint"];
  EXPECT_GT(rec["importance"].get<double>(), 0.0);
  EXPECT_GT(rec["similarity"].get<double>(), 0.0);
}

// LEMUR's pieces on the joint scheme: a noisy top-2 gate (noise drawn from
// the run seed), mixup, the load-balance and diversity losses, AdamW with
// gradient clipping and a faster gate: still the same weights on 1 and 3 ranks.
TEST_F(JointScheme, NoisyTopTwoWithMixupIsRankCountInvariant) {
  const std::string data = quick_dataset(tmp.path());
  const Config c = joint_config(
      data, {"gate.kind=noisy", "joint.top_k=2", "joint.mixup=0.2", "joint.load_balance=0.01", "joint.gate_lr_scale=2",
             "joint.optimizer=adamw", "joint.grad_clip=1", "joint.diversity=0.05"});
  nlohmann::json one = train_quick(c, tmp.path() + "/r1", 1), three = train_quick(c, tmp.path() + "/r3", 3);
  EXPECT_EQ(joint_sha(tmp.path() + "/r1"), joint_sha(tmp.path() + "/r3"));
  EXPECT_EQ(one["mixture"], three["mixture"]);
  EXPECT_EQ(one["top_k"], 2);
  // Top-2 routing runs two of the three experts per sample.
  EXPECT_LT(one["mixture"]["macs"].get<double>(), 3 * one["top1"]["macs"].get<double>());
  const auto rec = run_json(tmp.path() + "/r3")["done"]["joint"];
  EXPECT_GT(rec["balance"].get<double>(), 0.0);
  EXPECT_GT(rec["diversity"].get<double>(), 0.0);
  EXPECT_EQ(rec["load"].size(), 3u);
}

// Heterogeneous experts (experts.archs) in both schemes: the same weights on
// 1 and 2 ranks, each expert's MACs its own, Algorithm 1's scheduler
// ordering by predicted cost (MACs x samples x epochs), and an exact resume.
TEST_F(JointScheme, HeterogeneousExpertsAreRankCountInvariantAndResumeInBothSchemes) {
  const std::string data = quick_dataset(tmp.path());
  const Config joint = joint_config(data, {"experts.archs=[alexnet, densenet, bagnet]", "joint.epochs=1"});
  nlohmann::json j1 = train_quick(joint, tmp.path() + "/j1", 1), j2 = train_quick(joint, tmp.path() + "/j2", 2);
  EXPECT_EQ(joint_sha(tmp.path() + "/j1"), joint_sha(tmp.path() + "/j2"));
  EXPECT_EQ(j1["expert_archs"], nlohmann::json({"alexnet", "densenet", "bagnet"}));

  // Per-expert optimiser settings (experts.optims) too: expert 1 (alexnet)
  // trains two epochs with AdamW.
  const Config alg1 = quick_config(data, {"experts.archs=[branch, alexnet, bagnet]",
                                          "experts.optims=['lr=0.02', 'optimizer=adamw lr=0.002 epochs=2']"});
  nlohmann::json a1 = train_quick(alg1, tmp.path() + "/a1", 1), a2 = train_quick(alg1, tmp.path() + "/a2", 2);
  EXPECT_EQ(a1["experts"][1]["optimizer"], "adamw");
  EXPECT_EQ(a1["experts"][1]["lr"], 0.002);
  EXPECT_EQ(a1["experts"][1]["epochs"], 2);
  EXPECT_EQ(a1["experts"][2]["lr"], 0.02);  // optims[2 mod 2]
  EXPECT_EQ(a1["experts"][2]["epochs"], 1);
  std::vector<double> macs;
  for (size_t k = 0; k < 3; ++k) {
    EXPECT_EQ(a1["experts"][k]["checkpoint_sha256"], a2["experts"][k]["checkpoint_sha256"]) << k;
    macs.push_back(a1["experts"][k]["macs"].get<double>());
  }
  EXPECT_EQ(a1["experts"][1]["arch"], "alexnet");
  EXPECT_NE(macs[0], macs[1]);
  EXPECT_NE(macs[1], macs[2]);
  EXPECT_EQ(a1["moe"], a2["moe"]);
  EXPECT_TRUE(a1.contains("scheduler"));

  // Both resume exactly: Algorithm 1 stopped inside the alexnet expert's
  // task after its first epoch, the joint scheme after its first epoch.
  const std::string stopped = tmp.path() + "/a-stopped";
  setenv("SMOE_FAULT", "stage:expert-1-epoch-1", 1);
  EXPECT_ANY_THROW(train_quick(alg1, stopped, 2));
  unsetenv("SMOE_FAULT");
  EXPECT_TRUE(std::filesystem::exists(stopped + "/experts/expert-001.progress.json"));
  nlohmann::json resumed = train_quick(alg1, stopped, 2, pipeline::OpenMode::resume);
  for (size_t k = 0; k < 3; ++k)
    EXPECT_EQ(resumed["experts"][k]["checkpoint_sha256"], a2["experts"][k]["checkpoint_sha256"]) << k;
  EXPECT_EQ(resumed["moe"], a2["moe"]);

  const Config joint2 = joint_config(data, {"experts.archs=[alexnet, densenet, bagnet]", "joint.epochs=2"});
  train_quick(joint2, tmp.path() + "/j-whole", 2);
  setenv("SMOE_FAULT", "stage:joint-epoch-1", 1);
  EXPECT_ANY_THROW(train_quick(joint2, tmp.path() + "/j-stopped", 2));
  unsetenv("SMOE_FAULT");
  train_quick(joint2, tmp.path() + "/j-stopped", 2, pipeline::OpenMode::resume);
  EXPECT_EQ(run_json(tmp.path() + "/j-stopped")["done"]["joint"]["resumed_after_epoch"], 1);
  EXPECT_EQ(joint_sha(tmp.path() + "/j-stopped"), joint_sha(tmp.path() + "/j-whole"));
}

// LEMUR experiment 1: a shared trunk (two blocks of model.arch) trained with
// a noisy top-2 gate and fully connected experts on its features. Rank-count
// invariant; the trunk's weights move (against a 0-epoch run, the initial
// model); its MACs count once in the mixture's.
TEST_F(JointScheme, ASharedTrunkWithFullyConnectedExpertsTrainsAndIsRankCountInvariant) {
  const std::string data = quick_dataset(tmp.path());
  auto cfg = [&](int epochs) {
    return joint_config(data, {"experts.branch_after=2", "experts.arch=mlp", "gate.kind=noisy", "joint.top_k=2",
                               "joint.load_balance=0.01", "joint.epochs=" + std::to_string(epochs)});
  };
  nlohmann::json one = train_quick(cfg(1), tmp.path() + "/t1", 1);
  nlohmann::json two = train_quick(cfg(1), tmp.path() + "/t2", 2);
  EXPECT_EQ(joint_sha(tmp.path() + "/t1"), joint_sha(tmp.path() + "/t2"));
  EXPECT_EQ(one["mixture"], two["mixture"]);
  EXPECT_EQ(one["trunk_blocks"], 2);
  const double trunk = one["trunk_macs"].get<double>();
  EXPECT_GT(trunk, 0);
  EXPECT_GT(one["mixture"]["macs"].get<double>(), trunk);
  train_quick(cfg(0), tmp.path() + "/t0", 1);
  const auto trained = train::load_state(tmp.path() + "/t1/joint.pt");
  const auto initial = train::load_state(tmp.path() + "/t0/joint.pt");
  ASSERT_TRUE(trained.count("trunk.block0.conv.weight") || trained.count("trunk.block0.weight"))
      << "no trunk in joint.pt";
  int moved = 0, trunk_tensors = 0;
  for (const auto& [name, t] : trained)
    if (name.rfind("trunk.", 0) == 0 && t.is_floating_point()) {
      ++trunk_tensors;
      moved += !torch::equal(t, initial.at(name));
    }
  EXPECT_GT(trunk_tensors, 0);
  EXPECT_GT(moved, trunk_tensors / 2);
}

// Joint fine-tuning of Algorithm 1's MoE (scheme algorithm1_finetune): the
// same checkpoint on 1 and 2 ranks; the trunk and the base model's tail in
// the gate keep the base model's weights and BatchNorm statistics bit for
// bit; the experts move; Algorithm 1's report gains a "finetuned" section.
// With finetune.freeze_experts only the gate moves (the experts stay
// Algorithm 1's, bit for bit).
TEST_F(JointScheme, FineTuningAlgorithmOneKeepsTheTrunkAndMovesTheExpertsOrOnlyTheGate) {
  const std::string data = quick_dataset(tmp.path());
  auto cfg = [&](bool freeze) {
    return quick_config(
        data, {"scheme=algorithm1_finetune", "finetune.epochs=1", "finetune.batch_size=64", "joint.micro_batch=16",
               "finetune.lr=0.001", std::string("finetune.freeze_experts=") + (freeze ? "true" : "false")});
  };
  nlohmann::json one = train_quick(cfg(false), tmp.path() + "/f1", 1);
  nlohmann::json two = train_quick(cfg(false), tmp.path() + "/f2", 2);
  const auto sha = [](const std::string& run) { return run_json(run)["done"]["finetune"]["sha256"]; };
  EXPECT_EQ(sha(tmp.path() + "/f1"), sha(tmp.path() + "/f2"));
  ASSERT_TRUE(one.contains("finetuned"));
  ASSERT_TRUE(one.contains("moe"));  // Algorithm 1's own rows stay
  EXPECT_EQ(one["finetuned"]["mixture"], two["finetuned"]["mixture"]);
  EXPECT_EQ(one["finetuned"]["gate_kind"], "algorithm1");
  EXPECT_TRUE(std::filesystem::exists(tmp.path() + "/f1/finetune-routing.png"));

  const auto base = train::load_state(tmp.path() + "/f1/base.pt");
  for (bool freeze : {false, true}) {
    const std::string run = tmp.path() + (freeze ? "/frozen" : "/f1");
    if (freeze) train_quick(cfg(true), run, 2);
    const auto tuned = train::load_state(run + "/finetune.pt");
    int frozen = 0, experts_moved = 0, gate_moved = 0;
    for (const auto& [name, t] : tuned) {
      for (const char* prefix : {"trunk.", "gate.tail."})
        if (name.rfind(prefix, 0) == 0) {
          const std::string base_name = name.substr(std::string(prefix).size());
          ASSERT_TRUE(base.count(base_name)) << name;
          EXPECT_TRUE(torch::equal(t, base.at(base_name))) << name << " moved";
          ++frozen;
        }
      if (name.rfind("expert000.", 0) == 0) {
        const auto alg1 = train::load_state(run + "/experts/expert-000.pt");
        experts_moved += !torch::equal(t, alg1.at(name.substr(10)));
      }
      if (name.rfind("gate.inner.", 0) == 0) {
        const auto gate = train::load_state(run + "/gate.pt");
        gate_moved += !torch::equal(t, gate.at(name.substr(11)));
      }
    }
    EXPECT_GT(frozen, 10) << freeze;
    EXPECT_GT(gate_moved, 0) << freeze;
    if (freeze)
      EXPECT_EQ(experts_moved, 0);
    else
      EXPECT_GT(experts_moved, 0);
  }
}

TEST_F(JointScheme, ResumesExactlyFromTheLastFinishedEpoch) {
  const std::string data = quick_dataset(tmp.path());
  const Config c = joint_config(data, {"joint.epochs=3"});
  train_quick(c, tmp.path() + "/whole", 2);
  const std::string run = tmp.path() + "/stopped";
  // Every rank fails right after epoch 2's checkpoint.
  setenv("SMOE_FAULT", "stage:joint-epoch-2", 1);
  EXPECT_ANY_THROW(train_quick(c, run, 2));
  unsetenv("SMOE_FAULT");
  const auto done = run_json(run)["done"];
  EXPECT_FALSE(done.contains("joint"));
  EXPECT_EQ(done["joint/progress"]["epoch"], 2);
  train_quick(c, run, 2, pipeline::OpenMode::resume);
  EXPECT_EQ(run_json(run)["done"]["joint"]["resumed_after_epoch"], 2);
  // The load of every epoch, the two before the stop included, and its plot.
  EXPECT_EQ(run_json(run)["done"]["joint"]["load_history"].size(), 3u);
  EXPECT_TRUE(std::filesystem::exists(run + "/load.png"));
  EXPECT_EQ(joint_sha(run), joint_sha(tmp.path() + "/whole"));
  EXPECT_FALSE(std::filesystem::exists(run + "/joint-progress"));  // progress checkpoints removed once done
}

// DFCP-MoE's conditional training: an expert learns only from the classes
// it owns. Expert 1 owns no class here, so no batch holds one of its classes:
// its weights after two epochs are those after one (the second epoch's
// batches moved nothing), while expert 0's moved (no weight decay, which
// would move every weight anyway).
TEST_F(JointScheme, ConditionalTrainingLeavesAnExpertWithoutItsClassesUntouched) {
  const std::string data = quick_dataset(tmp.path());
  std::map<int, train::StateDict> after;
  for (int epochs : {1, 2}) {
    const Config c = joint_config(data, {"experts.count=2", "joint.conditional=true", "joint.class_owner=[0,0,0,0]",
                                         "joint.weight_decay=0", "joint.epochs=" + std::to_string(epochs)});
    const std::string run = tmp.path() + "/e" + std::to_string(epochs);
    train_quick(c, run, 2);
    after[epochs] = train::load_state(run + "/joint.pt");
  }
  int64_t same = 0, moved = 0;
  for (const auto& [name, t] : after[1]) {
    if (name.rfind("expert001.", 0) == 0) {
      EXPECT_TRUE(torch::equal(t, after[2].at(name))) << name << " moved";
      ++same;
    } else if (name.rfind("expert000.", 0) == 0 && t.is_floating_point() && !torch::equal(t, after[2].at(name))) {
      ++moved;
    }
  }
  EXPECT_GT(same, 0);
  EXPECT_GT(moved, 0);
  // An owner list of the wrong length is refused.
  EXPECT_ANY_THROW(
      train_quick(joint_config(data, {"joint.conditional=true", "joint.class_owner=[0,1]"}), tmp.path() + "/bad", 1));
}

TEST_F(JointScheme, DistillationTrainsOnlyTheGate) {
  const std::string data = quick_dataset(tmp.path());
  const Config c = joint_config(data, {"scheme=joint_distill", "gate.kind=attentive", "distill.epochs=2",
                                       "distill.batch_size=64", "distill.importance=0.5"});
  const std::string run = tmp.path() + "/distill";
  nlohmann::json report = train_quick(c, run, 2);
  EXPECT_EQ(report["model"], "distill");
  EXPECT_EQ(report["gate_kind"], "cnn");
  const auto joint = train::load_state(run + "/joint.pt"), distilled = train::load_state(run + "/distill.pt");
  int experts = 0, gates_changed = 0;
  for (const auto& [name, t] : distilled) {
    if (name.rfind("expert", 0) == 0) {
      ASSERT_TRUE(joint.count(name)) << name;
      EXPECT_TRUE(torch::equal(t, joint.at(name))) << name << " changed";
      ++experts;
    } else if (!joint.count(name) || !torch::equal(t, joint.at(name))) {
      ++gates_changed;
    }
  }
  EXPECT_EQ(experts, 3 * 8);  // conv, fc1, fc2, out: weight and bias, per expert
  EXPECT_GT(gates_changed, 0);
  // The attentive MoE ran every expert for every sample; the distilled gate routes.
  EXPECT_LT(report["top1"]["macs"].get<double>(), report["mixture"]["macs"].get<double>());
  // Every rank evaluates the distilled model (the 2-rank evaluation once mixed
  // in rank 1's batches through the attentive one).
  nlohmann::json one = train_quick(c, tmp.path() + "/distill1", 1);
  EXPECT_EQ(one["mixture"], report["mixture"]);
  EXPECT_EQ(one["top1"], report["top1"]);
}

TEST_F(JointScheme, RefusesConfigsItCannotRun) {
  const std::string data = quick_dataset(tmp.path());
  data::VerifyCache cache;
  EXPECT_ERROR(pipeline::check_inputs(joint_config(data, {"experts.branch_after=5"}), cache),
               "config key 'experts.branch_after' is 5: scheme 'joint' shares at most 4 blocks as its trunk");
  EXPECT_ERROR(
      pipeline::check_inputs(quick_config(data, {"scheme=algorithm1_finetune", "experts.branch_after=0"}), cache),
      "config key 'experts.branch_after' is 0: scheme 'algorithm1_finetune' fine-tunes Algorithm 1's MoE");
  EXPECT_ERROR(pipeline::check_inputs(joint_config(data, {"gate.kind=linear"}), cache),
               "config key 'gate.kind' is 'linear': scheme 'joint' needs a gate that reads the images");
  EXPECT_ERROR(pipeline::check_inputs(joint_config(data, {"gate.kind=nope"}), cache), "unknown gate kind 'nope'");
  EXPECT_ERROR(pipeline::check_inputs(joint_config(data, {"scheme=joint_distill", "distill.gate_kind=nope"}), cache),
               "distill.gate_kind: unknown gate kind 'nope'");
  // Keys checked against each other and against the dataset at load (issue
  // #31), not when the joint stage builds its model or starts training.
  const int64_t experts = joint_config(data, {}).experts.count;
  // (found by tests/pipeline/test_config_fuzz.py: the default joint batch of
  // 512 on a run of 300 samples failed when the joint stage started)
  EXPECT_ERROR(pipeline::check_inputs(joint_config(data, {"joint.batch_size=100000"}), cache),
               "config key 'joint.batch_size' is 100000 but the run trains on");
  EXPECT_ERROR(pipeline::check_inputs(joint_config(data, {"joint.top_k=" + std::to_string(experts + 1)}), cache),
               fmt::format("config key 'joint.top_k' is {}: more than experts.count ({}) experts cannot be chosen",
                           experts + 1, experts));
  EXPECT_ERROR(
      pipeline::check_inputs(joint_config(data, {"joint.conditional=true", "joint.class_owner=[0, 1]"}), cache),
      "config key 'joint.class_owner' has 2 entries but the dataset has 4 classes (one owner per class)");
  EXPECT_ERROR(
      pipeline::check_inputs(
          joint_config(data, {"joint.conditional=true", fmt::format("joint.class_owner=[0, 0, 0, {}]", experts)}),
          cache),
      fmt::format("config key 'joint.class_owner' names expert {}: experts are 0 to {}", experts, experts - 1));
}

}  // namespace
}  // namespace smoe::testing
