// The run configuration: plain structs with one field per key. Every key's
// name, default, allowed values and one-line doc are declared once, in
// config_schema.cpp (LightGBM's config.h idea); the YAML reader, the
// `--set key=value` overrides, `smoe config --print` and the key reference in
// README are all driven by that one list.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <variant>
#include <vector>

namespace YAML {
class Node;
}

namespace smoe {

struct DataConfig {
  std::string path;         // dataset folder (manifest.json + shards)
  std::string train_split;  //
  std::string test_split;   //
  int64_t limit_train;      // 0 = every sample
  int64_t limit_test;       // 0 = every sample
  std::string storage;      // auto | memory | stream
  int64_t cache_mb;         // HDF5 chunk cache per shard when streaming
  std::string verify;       // hash | size | off: shards checked against the manifest
  int64_t prefetch;         // batches prepared ahead on the loader thread
  int64_t crop_padding;     // augmentation: random crop after zero padding
  bool hflip;               // augmentation: random horizontal flip
  double label_noise;       // share of training labels flipped to another class (symmetric noise)
  double trusted_fraction;  // share of training samples in the trusted labelled subset (never noisy)
};

struct ModelConfig {
  std::string arch;             // tiny_resnet | plain_cnn
  int64_t depth;                // tiny_resnet depth: 10 | 18 | 34
  int64_t width;                // channels of the first stage (small_cnn: of its convolution)
  std::vector<int64_t> hidden;  // small_cnn experts and gates: the two hidden layers
};

// Options shared by every SGD training loop (base, experts, ensemblers, gate).
struct OptimConfig {
  std::string optimizer;  // sgd | adam | adamw
  int64_t epochs;
  int64_t batch_size;
  double lr;
  double momentum;  // SGD momentum (adam: beta1 stays 0.9)
  double weight_decay;
  bool nesterov;
  std::string schedule;              // cosine | step | constant
  std::vector<int64_t> step_epochs;  // epochs at which 'step' multiplies lr by step_gamma
  double step_gamma;
  int64_t warmup_epochs;
  double label_smoothing;
  double grad_clip;       // largest global L2 norm of the gradient (0 = no clipping)
  std::string precision;  // float32 | bfloat16 | float16 | auto (autocast of the forward pass, train/precision.h)
  bool channels_last;     // convolution weights in channels-last memory format while training
};

struct BaseConfig {
  std::string checkpoint;  // load this state dict instead of training
  bool augment;            // crop + flip augmentation of the training batches
  OptimConfig optim;
  int64_t micro_batch;     // rank-count-invariant gradient sums are over micro-batches
  int64_t bn_calibration;  // samples used to recompute BatchNorm statistics
};

struct ClusterConfig {
  std::string method;    // initial-gate strategy (cluster/initial_gate.h): kmeans | per_class | ...
  std::string features;  // a file of per-sample features to cluster instead of the embeddings ("" = embeddings)
  int64_t restarts;
  int64_t max_iter;
  double tol;
  bool normalize;             // L2-normalise embeddings before clustering
  int64_t silhouette_sample;  // rows the cluster-quality report's silhouette is computed on
  // DFCP-MoE's double-stage clustering (cluster.method dfcp; docs/dfcp.md).
  int64_t dfcp_k_max;               // stage 1: K-means for K = experts.count .. k_max, lowest DBI wins (0: 2 x experts)
  int64_t dfcp_neighbours;          // stage 2: a reference cluster is a nearest neighbour of at least this many
  std::vector<double> dfcp_thetas;  // stage 2: thresholds swept, in units of the references' mean radius
  double dfcp_min_coverage;         // stage 2: the share of rows a threshold must keep
};

struct GateConfig {
  std::string kind;    // gate kind (models/gate.h): linear | ...
  double temperature;  // T in g0 = softmax(-d^2 / T)
  bool hard;           // one-hot g0 instead of the softmax
  OptimConfig optim;
};

struct ExpertsConfig {
  int64_t count;                    // K
  std::string arch;                 // expert architecture (models/expert.h): branch | ...
  std::vector<std::string> archs;   // per expert (expert k: archs[k mod size]); empty: arch for all
  std::vector<std::string> optims;  // per expert: "key=value ..." over optim's keys (expert k: optims[k mod size])
  double gamma;                     // clip(g0, gamma, 1)
  int64_t branch_after;             // blocks of the base shared (frozen) by every expert
  int64_t depth;                    // branch experts: tiny_resnet depth of their blocks (0: the base's)
  int64_t fuse;                     // experts trained together per task, as grouped convolutions (1: one by one)
  std::string weighting;            // reweight | sample
  bool augment;                     // crop + flip augmentation (disables the trunk cache)
  std::string trunk_cache;          // auto | memory | disk | off: where the frozen trunk's features are kept
  OptimConfig optim;
};

struct EnsemblerConfig {
  std::string kind;  // ensembler (models/ensembler.h): bagging | stacking | ...
  OptimConfig optim;
};

struct EmConfig {
  int64_t steps;          // N_E; 0 = Algorithm 1
  int64_t expert_epochs;  // M-step epochs per round
};

// The batch-level regularisers of a jointly trained MoE (Krishnamurthy et
// al. Section 6; train/moe_losses.h).
struct RegularizerConfig {
  double importance;       // w in L_imp = w * CV(sum over the batch of g)^2
  double load_balance;     // lambda in L_bal = lambda * mean_e (u_e - mean u)^2, u = sum over the batch of g (LEMUR)
  double similarity_same;  // beta_s: same-expert pairs close
  double similarity_diff;  // beta_d: different-expert pairs far
  double diversity;        // lambda of the mean pairwise cosine similarity of the experts' mean outputs (LEMUR)
};

// scheme joint: gate and experts trained together, end to end.
struct JointConfig {
  int64_t micro_batch;               // rank-count-invariant gradient sums are over micro-batches
  int64_t top_k;                     // experts each sample is routed to (0 = all: dense soft routing)
  double gate_lr_scale;              // the gate's learning rate is this times joint.lr
  double mixup;                      // alpha of mixup's Beta(alpha, alpha) (0 = off)
  bool conditional;                  // DFCP-MoE's conditional training: expert e learns only from the classes it owns
  std::vector<int64_t> class_owner;  // conditional: the expert owning each class (empty: contiguous blocks)
  RegularizerConfig reg;
  OptimConfig optim;
};

// The distill stage: experts frozen, a plain gate trained to route alone.
struct DistillConfig {
  std::string gate_kind;  // the gate that replaces an attentive one
  RegularizerConfig reg;
  OptimConfig optim;
};

// Stage "finetune" (scheme algorithm1_finetune): Algorithm 1's MoE trained
// further as a jointly trained one (its gate and experts, on the mixture loss).
struct FinetuneConfig {
  bool freeze_experts;  // train only the gate on the frozen experts (Krishnamurthy et al. Section 4.2)
  RegularizerConfig reg;
  OptimConfig optim;
};

struct EvalConfig {
  std::vector<double> taus;
  int64_t batch_size;
  bool class_oracle;       // per_class only: route by the true class too
  int64_t timing_samples;  // test samples the report's inference times are measured on (0: not measured)
};

struct RuntimeConfig {
  int64_t threads;                  // intra-op threads per rank; 0 = cores / ranks on the node
  std::string device;               // auto | cpu | cuda | privateuseone
  int64_t log_every;                // steps between progress lines
  double stall_timeout_s;           // abort the job when a rank makes no progress this long (0 = never)
  int64_t memory_budget_mb;         // per rank, for smoe's caches: data splits and trunk features
  int64_t device_memory_budget_mb;  // per rank, for caches on a GPU: the experts' trunk features
};

// The pseudo-labelling stage (DFCP-MoE Section 3.1.4; scheme dfcp).
struct PseudoConfig {
  int64_t dim;         // the Siamese projection's output dimension
  int64_t steps;       // training steps of the projection on pairs of trusted samples
  int64_t batch_size;  // pairs per step
  double lr;           // Adam
  double margin;       // contrastive margin on the distance of normalised projections
  double validation;   // share of the trusted subset held out to choose tau by F1
};

struct Config {
  int64_t seed;
  std::string scheme;  // training scheme (pipeline/stage.h): algorithm1 | em | ...
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

  // Every key at its default.
  static Config defaults();
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

// One key of the schema, for documentation (`smoe config --keys`).
struct KeyInfo {
  std::string key;
  std::string type;
  std::string default_value;
  std::string doc;
};
std::vector<KeyInfo> config_keys();

// A config's YAML text flattened to dotted keys -> each value's YAML text
// (flow style): how run folders compare and tabulate configs. Throws
// YAML::Exception on invalid YAML.
std::map<std::string, std::string> flat_yaml(const std::string& yaml_text);

}  // namespace smoe
