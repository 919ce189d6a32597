// The trainers' sections of the configuration: what each training stage
// trains and how (base.*, gate.*, experts.*, ensembler.*, em.*, joint.*,
// distill.*, finetune.*), each with its optimiser section and its own
// defaults. Each key beside its field (core/options.h); the names a kind
// key accepts come from the registries (models/gate.h, models/expert.h,
// models/ensembler.h), listed by `smoe config --keys`.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/options.h"
#include "core/variant_options.h"
#include "train/optim_options.h"
#include "train/regularizer_options.h"

namespace smoe {

// How an expert's loss follows the initial gate (experts.weighting).
enum class Weighting { reweight, sample };
inline const options::Names<Weighting>& option_names(Weighting) {
  static const options::Names<Weighting> n{{Weighting::reweight, "reweight"}, {Weighting::sample, "sample"}};
  return n;
}

// Where the frozen trunk's features are kept (experts.trunk_cache).
enum class TrunkCache { automatic, memory, disk, off };
inline const options::Names<TrunkCache>& option_names(TrunkCache) {
  static const options::Names<TrunkCache> n{{TrunkCache::automatic, "auto"},
                                            {TrunkCache::memory, "memory"},
                                            {TrunkCache::disk, "disk"},
                                            {TrunkCache::off, "off"}};
  return n;
}

struct BaseConfig {
  std::string checkpoint;  // load this state dict instead of training
  bool augment = true;     // crop + flip augmentation of the training batches
  OptimConfig optim = OptimConfig::with(10, 128, 0.1, 5e-4, LrSchedule::cosine);
  int64_t micro_batch = 32;       // rank-count-invariant gradient sums are over micro-batches
  int64_t bn_calibration = 4096;  // samples used to recompute BatchNorm statistics

  void describe(options::Table& t) {
    t.key("checkpoint", checkpoint, "load the base model from this state dict instead of training it");
    t.key("augment", augment, "augment the base model's training batches (random crop and flip)");
    t.inline_section(optim);
    t.key("micro_batch", micro_batch,
          "samples per micro-batch; gradients are summed exactly over micro-batches so results do not depend on the "
          "rank count")
        .at_least(1);
    t.key("bn_calibration", bn_calibration, "training samples used to recompute BatchNorm statistics after training")
        .at_least(1);
  }
};

struct GateConfig {
  std::string kind = "linear";  // gate kind (models/gate.h): linear | ...
  double temperature = 0.1;     // T in g0 = softmax(-d^2 / T)
  bool hard = false;            // one-hot g0 instead of the softmax
  OptimConfig optim = OptimConfig::with(20, 256, 0.05, 0.0, LrSchedule::cosine);
  options::VariantSections kinds{"gate kind"};  // gate.<kind>.*: each gate kind's own options

  void describe(options::Table& t) {
    t.key("kind", kind,
          "gate: linear (on the base model's pre-logits); scheme joint: cnn (a small CNN on the images), attentive "
          "(attends to the experts' last hidden layers), noisy (cnn + learned Gaussian noise in training, Shazeer et "
          "al.) or tempered (cnn / a learned temperature in [0.5, 5] + N(0, 0.1^2) noise in training, LEMUR)");
    t.key("temperature", temperature, "T in g0(k|x) = softmax_k(-|x - c_k|^2 / T)").above(0);
    t.key("hard", hard, "one-hot g0 (nearest centroid) instead of the softmax");
    t.inline_section(optim);
    kinds.describe(t);
  }
};

struct ExpertsConfig {
  int64_t count = 4;                // K
  std::string arch = "branch";      // expert architecture (models/expert.h): branch | ...
  std::vector<std::string> archs;   // per expert (expert k: archs[k mod size]); empty: arch for all
  std::vector<std::string> optims;  // per expert: "key=value ..." over optim's keys (expert k: optims[k mod size])
  double gamma = 0.1;               // clip(g0, gamma, 1)
  int64_t branch_after = 3;         // blocks of the base shared (frozen) by every expert
  int64_t depth = 0;                // branch experts: tiny_resnet depth of their blocks (0: the base's)
  int64_t fuse = 1;                 // experts trained together per task, as grouped convolutions (1: one by one)
  Weighting weighting = Weighting::reweight;
  bool augment = false;  // crop + flip augmentation (disables the trunk cache)
  TrunkCache trunk_cache = TrunkCache::automatic;
  OptimConfig optim = OptimConfig::with(5, 128, 0.02, 5e-4, LrSchedule::cosine);
  options::VariantSections architectures{"expert architecture"};  // experts.<arch>.*: each one's own options

  void describe(options::Table& t) {
    t.key("count", count, "number of experts K").at_least(1);
    t.key("arch", arch,
          "expert architecture: branch (the base model's blocks after branch_after, started from its weights) or "
          "small_cnn (Krishnamurthy et al.'s one convolution and two hidden layers), alexnet, densenet, bagnet or "
          "mlp (LEMUR's families, models/backbones.h); all but branch start from scratch");
    t.key("archs", archs,
          "heterogeneous experts: expert k's architecture is archs[k mod size] (e.g. [alexnet, densenet, bagnet, "
          "small_cnn]); empty: experts.arch for every expert");
    t.key("optims", optims,
          "per-expert optimiser settings (Algorithm 1's expert tasks): expert k trains with the experts.* optimiser "
          "keys overridden by optims[k mod size], space-separated key=value pairs (e.g. ['lr=0.05', "
          "'optimizer=adamw lr=0.001 weight_decay=0.05']); empty: the same settings for every expert");
    t.key("gamma", gamma, "gamma in w_k = clip(g0(k|x), gamma, 1)").at_least(0).at_most(1);
    t.key("branch_after", branch_after,
          "blocks of the base model shared and frozen by every expert (block 0 is the stem); in the joint scheme, "
          "the shared trunk trained with the gate and experts (0: the experts read the images)")
        .at_least(0);
    t.key("depth", depth,
          "branch experts: the tiny_resnet depth (10, 18 or 34) of their blocks, for Royer et al.'s Table 1 (0: the "
          "base model's). Blocks the base has are started from its weights; blocks it lacks start as the identity "
          "(last BatchNorm scale 0)")
        .at_least(0);
    t.key("fuse", fuse,
          "branch experts trained together: experts [g*fuse, (g+1)*fuse) are one task, one pass over the data "
          "with their convolutions stacked as grouped convolutions (same samples in the same order for the "
          "group; needs weighting: reweight, one architecture and optimiser for all). 1: one task per expert")
        .at_least(1);
    t.key("weighting", weighting,
          "reweight: loss weighted by w_k; sample: batches drawn with probability proportional to w_k");
    t.key("augment", augment, "augment the experts' training batches (turns the trunk cache off)");
    t.key("trunk_cache", trunk_cache,
          "the frozen trunk's features, computed once (not with augmentation): memory (every rank), disk (spilled "
          "to the run folder), auto (memory within runtime.memory_budget_mb, else disk), off (recomputed per batch)");
    t.inline_section(optim);
    architectures.describe(t);
  }
};

struct EnsemblerConfig {
  std::string kind = "bagging";  // ensembler (models/ensembler.h): bagging | stacking | ...
  OptimConfig optim = OptimConfig::with(2, 256, 0.01, 0.0, LrSchedule::cosine);
  options::VariantSections rules{"ensembler"};  // ensembler.<kind>.*: each rule's own options

  void describe(options::Table& t) {
    t.key("kind", kind, "how d_k combines base and expert in the anytime model and the E-step: bagging or stacking");
    t.inline_section(optim);
    rules.describe(t);
  }
};

struct EmConfig {
  int64_t steps = 0;          // N_E; 0 = Algorithm 1
  int64_t expert_epochs = 1;  // M-step epochs per round

  void describe(options::Table& t) {
    t.key("steps", steps, "EM rounds N_E after Algorithm 1 (0 = Algorithm 1 only)").at_least(0);
    t.key("expert_epochs", expert_epochs, "expert epochs in each M-step").at_least(0);
  }
};

// scheme joint: gate and experts trained together, end to end.
struct JointConfig {
  int64_t micro_batch = 64;          // rank-count-invariant gradient sums are over micro-batches
  int64_t top_k = 0;                 // experts each sample is routed to (0 = all: dense soft routing)
  double gate_lr_scale = 1.0;        // the gate's learning rate is this times joint.lr
  double mixup = 0;                  // alpha of mixup's Beta(alpha, alpha) (0 = off)
  bool conditional = false;          // DFCP-MoE's conditional training: expert e learns only from the classes it owns
  std::vector<int64_t> class_owner;  // conditional: the expert owning each class (empty: contiguous blocks)
  RegularizerConfig reg;
  OptimConfig optim = OptimConfig::with(20, 512, 1e-3, 0.0, LrSchedule::constant, OptimizerKind::adam);

  void describe(options::Table& t) {
    t.key("micro_batch", micro_batch,
          "scheme joint: samples per micro-batch; gradients are summed exactly over micro-batches so results do not "
          "depend on the rank count")
        .at_least(1);
    t.key("top_k", top_k,
          "route each sample to its k most probable experts (softmax over those k; an expert computes only its "
          "samples); 0 = every expert (dense soft routing)")
        .at_least(0);
    t.key("gate_lr_scale", gate_lr_scale, "the gate's learning rate is this times joint.lr").above(0);
    t.key("mixup", mixup,
          "mixup's alpha: each micro-batch mixed with a permutation of itself by lambda ~ Beta(alpha, alpha); 0 = off")
        .at_least(0);
    t.key("conditional", conditional,
          "DFCP-MoE's conditional training: each expert's gradient (from the mixture and from its own cross-entropy, "
          "which is added) comes only from samples of the classes it owns (joint.class_owner)");
    t.key("class_owner", class_owner,
          "joint.conditional: the expert that owns each class, one entry per class (empty: class c goes to expert "
          "c * experts / classes)");
    t.inline_section(reg);
    t.inline_section(optim);
  }
};

// The distill stage: experts frozen, a plain gate trained to route alone.
struct DistillConfig {
  std::string gate_kind = "cnn";  // the gate that replaces an attentive one
  RegularizerConfig reg;
  OptimConfig optim = OptimConfig::with(10, 512, 1e-3, 0.0, LrSchedule::constant, OptimizerKind::adam);

  void describe(options::Table& t) {
    t.key("gate_kind", gate_kind,
          "distill stage: the gate kind trained on the frozen experts (started from the trained gate's shared "
          "layers)");
    t.inline_section(reg);
    t.inline_section(optim);
  }
};

// Stage "finetune" (scheme algorithm1_finetune): Algorithm 1's MoE trained
// further as a jointly trained one (its gate and experts, on the mixture loss).
struct FinetuneConfig {
  bool freeze_experts = false;  // train only the gate on the frozen experts (Krishnamurthy et al. Section 4.2)
  RegularizerConfig reg;
  OptimConfig optim = OptimConfig::with(2, 256, 1e-4, 0.0, LrSchedule::constant, OptimizerKind::adam);

  void describe(options::Table& t) {
    t.key("freeze_experts", freeze_experts,
          "finetune stage: train only Algorithm 1's gate on its frozen experts (a gate trained on frozen experts, "
          "Krishnamurthy et al. Section 4.2) instead of gate and experts together");
    t.inline_section(reg);
    t.inline_section(optim);
  }
};

}  // namespace smoe
