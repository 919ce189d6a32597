// The run configuration: the tree of the components' option structs. Each
// component declares its keys beside its fields (core/options.h) — the data
// reader its data.* keys, K-means and DFCP their cluster.* keys, every
// trainer its section — and this struct only names the sections. The YAML
// reader, the `--set` overrides, `smoe config --print`/`--keys` and
// docs/configuration.md all follow from that one table. Torch-free.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "cluster/cluster_options.h"
#include "cluster/pseudo_label_options.h"
#include "core/options.h"
#include "core/variant_options.h"
#include "data/data_options.h"
#include "eval/eval_options.h"
#include "models/model_options.h"
#include "pipeline/runtime_options.h"
#include "train/trainer_options.h"

namespace smoe {

struct Config {
  int64_t seed = 0;
  std::string scheme = "algorithm1";  // training scheme (pipeline/stage.h): algorithm1 | em | ...
  DataConfig data;
  ModelConfig model;
  BaseConfig base;
  PseudoConfig pseudo;
  ClusterConfig cluster;
  GateConfig gate;
  ExpertsConfig experts;
  EnsemblerConfig ensembler;
  EmConfig em;
  JointConfig joint;
  DistillConfig distill;
  FinetuneConfig finetune;
  EvalConfig eval;
  RuntimeConfig runtime;
  // <stage>.*: the options a stage declares in its registration (a stage
  // whose section predates this, such as base.*, is a section above).
  options::VariantSections stages{"stage"};

  // Every key, in the order `smoe config --print` shows them.
  void describe(options::Table& t);

  // Every key at its default.
  static Config defaults() { return Config{}; }
  // Defaults, then the YAML file, then each "key=value" override in order.
  static Config load(const std::string& yaml_path, const std::vector<std::string>& overrides);
  static Config from_yaml_text(const std::string& text, const std::string& origin,
                               const std::vector<std::string>& overrides);

  // Applies one YAML mapping (nested or with dotted keys) on top of this config.
  void merge(const YAML::Node& node, const std::string& origin);
  // Applies one "a.b=value" override; the value is parsed as YAML.
  void set(const std::string& assignment, const std::string& origin = "--set");
  // Checks relations between keys (after all merges).
  void validate() const;
  // Expert k's optimiser settings: experts.optim with experts.optims[k mod size] applied.
  OptimConfig expert_optim(int64_t k) const;
  // The fully resolved config as YAML, each key with its doc as a comment.
  std::string to_yaml(bool with_docs = true) const;
};

// Every key of the configuration, at its default, for documentation.
std::vector<KeyInfo> config_keys();

}  // namespace smoe
