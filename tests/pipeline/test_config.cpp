#include <gtest/gtest.h>
#include <yaml-cpp/yaml.h>

#include "common/expect_error.h"
#include "pipeline/config.h"

namespace smoe {
namespace {

TEST(Config, DefaultsAreDeclaredForEveryKey) {
  Config c = Config::defaults();
  EXPECT_EQ(c.experts.count, 4);
  EXPECT_EQ(c.experts.weighting, Weighting::reweight);
  EXPECT_EQ(c.ensembler.kind, "bagging");
  EXPECT_EQ(c.em.steps, 0);
  EXPECT_FALSE(c.eval.taus.empty());
  auto keys = config_keys();
  EXPECT_GT(keys.size(), 50u);
  for (const auto& k : keys) EXPECT_FALSE(k.doc.empty()) << k.key;
}

TEST(Config, NestedAndDottedYamlAndOverrides) {
  Config c = Config::from_yaml_text(
      "seed: 7\n"
      "experts:\n  count: 10\n  gamma: 0.25\n"
      "gate.temperature: 0.5\n"
      "eval:\n  taus: [0, 0.5, 1]\n",
      "test.yaml", {"experts.count=6", "data.path=/tmp/x", "base.step_epochs=[3, 5]"});
  EXPECT_EQ(c.seed, 7);
  EXPECT_EQ(c.experts.count, 6);  // the override wins over the file
  EXPECT_DOUBLE_EQ(c.experts.gamma, 0.25);
  EXPECT_DOUBLE_EQ(c.gate.temperature, 0.5);
  EXPECT_EQ(c.eval.taus, (std::vector<double>{0, 0.5, 1}));
  EXPECT_EQ(c.data.path, "/tmp/x");
  EXPECT_EQ(c.base.optim.step_epochs, (std::vector<int64_t>{3, 5}));
}

TEST(Config, PrintedYamlLoadsBackToTheSameConfig) {
  Config c = Config::from_yaml_text("experts: {count: 3, weighting: sample}\ndata: {path: \"a b: c\"}\n", "t", {});
  std::string printed = c.to_yaml();
  Config again = Config::from_yaml_text(printed, "printed", {});
  EXPECT_EQ(again.to_yaml(), printed);
  EXPECT_EQ(again.data.path, "a b: c");
  EXPECT_NE(printed.find("count: 3  # number of experts K"), std::string::npos) << printed;
}

TEST(Config, UnknownKeyIsNamed) {
  EXPECT_ERROR(Config::from_yaml_text("experts:\n  cuont: 3\n", "f.yaml", {}),
               "config key 'experts.cuont' (f.yaml): unknown key");
  EXPECT_ERROR(Config::from_yaml_text("nosuch: 1\n", "f.yaml", {}), "config key 'nosuch' (f.yaml): unknown key");
  EXPECT_ERROR(Config::from_yaml_text("", "f.yaml", {"experts.nope=1"}),
               "config key 'experts.nope' (--set): unknown key");
}

// YAML keeps the last of two equal keys; a config that sets a key twice is
// almost always a mistake, so it is refused (dotted and nested spellings too).
TEST(Config, AKeyGivenTwiceIsRefused) {
  EXPECT_ERROR(Config::from_yaml_text("seed: 1\nseed: 2\n", "f.yaml", {}), "config key 'seed' (f.yaml): given twice");
  EXPECT_ERROR(Config::from_yaml_text("experts:\n  count: 2\nexperts.count: 3\n", "f.yaml", {}),
               "config key 'experts.count' (f.yaml): given twice");
  EXPECT_ERROR(Config::from_yaml_text("experts:\n  count: 2\nexperts:\n  gamma: 0.2\n", "f.yaml", {}),
               "config key 'experts' (f.yaml): given twice");
  // A --set after the file is an override, not a duplicate.
  EXPECT_EQ(Config::from_yaml_text("seed: 1\n", "f.yaml", {"seed=2"}).seed, 2);
}

// An error echoes what the user wrote; a value with a line break must not
// break the one-line message (found by fuzz_config).
TEST(Config, ErrorsStayOneLineWhateverTheValue) {
  EXPECT_ERROR(Config::from_yaml_text("seed: \"1\\n2\"\n", "f.yaml", {}),
               "config key 'seed' (f.yaml): expected an integer, got '1\\n2'");
  EXPECT_EQ(std::string(Error("tab\there\x01").what()), "tab\\there\\x01");
}

TEST(Config, WrongTypeNamesKeyValueAndExpectation) {
  EXPECT_ERROR(Config::from_yaml_text("experts:\n  count: many\n", "f.yaml", {}),
               "config key 'experts.count' (f.yaml): expected an integer, got 'many'");
  EXPECT_ERROR(Config::from_yaml_text("experts:\n  count: 2.5\n", "f.yaml", {}),
               "config key 'experts.count' (f.yaml): expected an integer, got '2.5'");
  EXPECT_ERROR(Config::from_yaml_text("base:\n  augment: maybe\n", "f.yaml", {}),
               "config key 'base.augment' (f.yaml): expected true or false, got 'maybe'");
  EXPECT_ERROR(Config::from_yaml_text("eval:\n  taus: 0.5\n", "f.yaml", {}),
               "config key 'eval.taus' (f.yaml): expected a list of numbers, got '0.5'");
  EXPECT_ERROR(Config::from_yaml_text("experts: 4\n", "f.yaml", {}),
               "config key 'experts' (f.yaml): expected a mapping of keys, got '4'");
  EXPECT_ERROR(Config::from_yaml_text("data:\n  storage: tape\n", "f.yaml", {}),
               "config key 'data.storage' (f.yaml): expected one of auto | memory | stream, got 'tape'");
  EXPECT_ERROR(Config::from_yaml_text("", "f.yaml", {"model.arch=vgg"}),
               "config key 'model.arch' (--set): expected one of tiny_resnet | plain_cnn, got 'vgg'");
  // Registry names (ensembler.kind, cluster.method, ...) are checked against
  // their registries: tests/pipeline/test_registries.cpp.
}

TEST(Config, OutOfRangeValues) {
  EXPECT_ERROR(Config::from_yaml_text("experts:\n  count: -3\n", "f.yaml", {}),
               "config key 'experts.count' (f.yaml): must be >= 1, got -3");
  EXPECT_ERROR(Config::from_yaml_text("", "f.yaml", {"gate.temperature=0"}),
               "config key 'gate.temperature' (--set): must be > 0, got 0");
  EXPECT_ERROR(Config::from_yaml_text("", "f.yaml", {"eval.taus=[0.5, 1.5]"}),
               "config key 'eval.taus' (--set): must be <= 1, got 1.5");
  EXPECT_ERROR(Config::from_yaml_text("", "f.yaml", {"model.depth=12"}),
               "'model.depth': expected 10, 18 or 34, got 12");
}

// The anytime curve is a list of increasing thresholds: a repeat or an
// unsorted list is refused naming the entry (issue #31, the taus).
TEST(Config, AnytimeThresholdsIncreaseWithoutRepeats) {
  EXPECT_NO_THROW(Config::from_yaml_text("", "f.yaml", {"eval.taus=[0, 0.5, 1]"}));
  EXPECT_ERROR(Config::from_yaml_text("", "f.yaml", {"eval.taus=[0, 0.5, 0.2]"}),
               "config key 'eval.taus': expected increasing thresholds without repeats, got 0.2 after 0.5 (entry 2)");
  EXPECT_ERROR(Config::from_yaml_text("eval:\n  taus: [0.1, 0.1]\n", "f.yaml", {}),
               "config key 'eval.taus': expected increasing thresholds without repeats, got 0.1 after 0.1 (entry 1)");
  EXPECT_ERROR(Config::from_yaml_text("", "f.yaml", {"eval.taus=[]"}),
               "config key 'eval.taus' is empty: the anytime curve needs at least one threshold");
}

// experts.optims: expert k's optimiser settings are experts.* with
// optims[k mod size] applied; a bad entry is named with its key.
TEST(Config, PerExpertOptimiserSettings) {
  Config c = Config::from_yaml_text(
      "experts:\n  lr: 0.02\n  epochs: 4\n  optims: ['lr=0.05', 'optimizer=adamw lr=0.001 step_epochs=[1, 2] "
      "epochs=2']\n",
      "f.yaml", {});
  EXPECT_EQ(c.expert_optim(0).lr, 0.05);
  EXPECT_EQ(c.expert_optim(0).epochs, 4);
  EXPECT_EQ(c.expert_optim(0).optimizer, OptimizerKind::sgd);
  EXPECT_EQ(c.expert_optim(1).optimizer, OptimizerKind::adamw);
  EXPECT_EQ(c.expert_optim(1).lr, 0.001);
  EXPECT_EQ(c.expert_optim(1).epochs, 2);
  EXPECT_EQ(c.expert_optim(1).step_epochs, (std::vector<int64_t>{1, 2}));
  EXPECT_EQ(c.expert_optim(2).lr, 0.05);  // k mod size
  EXPECT_EQ(c.experts.optim.lr, 0.02);    // the shared settings are untouched
  EXPECT_EQ(Config::defaults().expert_optim(3).lr, Config::defaults().experts.optim.lr);
  EXPECT_ERROR(Config::from_yaml_text("", "f.yaml", {"experts.optims=['lr=-1']"}),
               "config key 'experts.lr' (experts.optims 'lr=-1'): must be > 0, got -1");
  EXPECT_ERROR(Config::from_yaml_text("", "f.yaml", {"experts.optims=['count=3']"}),
               "config key 'experts.optims': 'count=3' in 'count=3' is not key=value over an optimiser key");
  EXPECT_ERROR(Config::from_yaml_text("", "f.yaml", {"experts.optims=['epochs=1 warmup_epochs=2']"}),
               "config key 'experts.optims' ('epochs=1 warmup_epochs=2'): warmup_epochs (2) exceeds epochs (1)");
}

// A warm-up longer than the training it warms is refused naming the
// trainer's section (it used to say only "config: warmup_epochs ...").
TEST(Config, WarmupLongerThanTheTrainingNamesItsSection) {
  EXPECT_ERROR(Config::from_yaml_text("", "f.yaml", {"distill.epochs=1", "distill.warmup_epochs=2"}),
               "config key 'distill.warmup_epochs' is 2: more than distill.epochs (1)");
}

TEST(Config, MalformedInputs) {
  EXPECT_ERROR(Config::from_yaml_text("experts: [1, 2\n", "bad.yaml", {}), "bad.yaml: invalid YAML at line");
  EXPECT_ERROR(Config::from_yaml_text("", "f", {"experts.count"}), "--set 'experts.count': expected key=value");
  EXPECT_ERROR(Config::from_yaml_text("- 1\n- 2\n", "list.yaml", {}), "list.yaml: expected a YAML mapping");
  EXPECT_ERROR(Config::load("/nonexistent/x.yaml", {}), "/nonexistent/x.yaml");
}

}  // namespace
}  // namespace smoe
