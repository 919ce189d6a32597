// The run folder's models: where each checkpoint lives and how each model is
// built and loaded. The only place that knows the layout
//
//   base.pt, embeddings.f32, cluster.pt, g0.f32, assign.f32, gate.pt
//   experts/expert-NNN.pt, experts/<ensembler>-NNN.pt      (Algorithm 1: round 0)
//   em-R/expert-NNN.pt, em-R/<ensembler>-NNN.pt, em-R/gate.pt, em-R/q.f32  (EM round R)
//   joint.pt, distill.pt                     (scheme joint: the whole MoE, gate and experts)
//   <stage>-progress/epoch-NNN.pt|.optim      (a joint or distill stage between epochs)
//
// and the only place that builds a gate, an expert or an ensembler (from the
// registries, by the config's names).
#pragma once

#include <c10/core/Device.h>

#include <map>
#include <string>
#include <vector>

#include "cluster/initial_gate.h"
#include "data/manifest.h"
#include "models/ensembler.h"
#include "models/expert.h"
#include "models/gate.h"
#include "models/joint_moe.h"
#include "models/moe.h"
#include "models/network.h"
#include "pipeline/config.h"
#include "pipeline/run_dir.h"
#include "pipeline/trained_model.h"

namespace smoe::pipeline {

// The base model's architecture: the config's model.* keys on the dataset's
// image shape and classes.
models::NetworkSpec network_spec(const Config& config, const data::Manifest& dataset);

// What a gate of `kind` in Algorithm 1's MoE is built for: the base
// model's pre-logits, K, the kind's own options (gate.<kind>.*).
models::GateSpec gate_spec(const Config& config, const models::NetworkSpec& spec, const std::string& kind);
// What a gate of `kind` in a jointly trained MoE is built for: the images
// of `spec`, the config's K, width and hidden sizes, the experts' hidden
// size, the kind's own options.
models::GateSpec joint_gate_spec(const Config& config, const models::NetworkSpec& spec, const std::string& kind,
                                 int64_t expert_hidden);

// Expert k's architecture: experts.archs[k mod size], else experts.arch.
std::string expert_arch(const Config& config, int64_t k);
// What expert k is built for: the base model, the shared blocks, the
// depth, its architecture's own options (experts.<arch>.*).
models::ExpertSpec expert_spec(const Config& config, const models::NetworkSpec& spec, int64_t k);

class ModelStore {
 public:
  ModelStore(const RunDir& run, const Config& config, models::NetworkSpec spec, c10::Device device);

  const models::NetworkSpec& spec() const { return spec_; }
  const cluster::InitialGate& initial_gate() const { return *initial_; }

  // Files.
  std::string base_path() const;
  std::string embeddings_path() const;
  std::string cluster_path() const;
  // Per-sample rows in id order, float32 (train/row_cache.h): g0 [N, K], the
  // clusters' assignment [N] (-1: a dfcp outlier), an EM round's q [N, K].
  std::string g0_path() const;
  std::string assign_path() const;
  std::string round_dir(int64_t round) const;  // experts/ or em-R/
  std::string gate_path(int64_t round) const;
  std::string expert_path(int64_t k, int64_t round) const;
  std::string ensembler_path(const std::string& name, int64_t k, int64_t round) const;
  std::string q_path(int64_t round) const;

  // Fresh models (on the run's device). The base model's initial weights
  // come from the run seed, so every rank builds the same one.
  models::Backbone build_base() const;
  // A gate of the kind the initial gate routes with (gate.kind unless the
  // strategy fixes its own), on `device` (the coordinator fits gates on the CPU).
  models::Gate build_gate(c10::Device device) const;
  // Expert k (its architecture: expert_arch), with initial weights from (run seed, k).
  models::Expert build_expert(int64_t k) const;
  // A fresh d_k of every registered ensembler that trains one, by name.
  std::map<std::string, models::EnsemblerNet> build_ensemblers() const;
  // Every registered ensembler rule, made with its options (ensembler.<kind>.*).
  models::EnsemblerRules ensembler_rules() const;
  // Expert k and its fresh ensemblers, drawn in one go from the stream of
  // (run seed, k): nothing another thread draws (thread ranks in tests) can
  // fall between the seeding and the last draw.
  std::pair<models::Expert, std::map<std::string, models::EnsemblerNet>> build_expert_task(int64_t k) const;

  // Saved models of a round (0 = Algorithm 1, r = after EM round r).
  models::Gate load_gate(int64_t round, c10::Device device) const;
  models::Expert load_expert(int64_t k, int64_t round) const;
  std::map<std::string, models::EnsemblerNet> load_ensemblers(int64_t k, int64_t round) const;
  // The MoE of a round with the experts in `experts` loaded (all when empty).
  models::MoeModel load_moe(models::Backbone base, int64_t round, std::vector<int64_t> experts = {}) const;

  // Jointly trained MoEs (scheme joint): the stage's final model, and the
  // checkpoint of a stage after `epoch` epochs (ext: "pt" weights, "optim"
  // the optimiser's state).
  std::string joint_path(const std::string& stage) const;  // joint.pt, distill.pt
  std::string pseudo_labels_path() const;                  // pseudo_labels.pt (scheme dfcp)
  std::string progress_dir(const std::string& stage) const;
  std::string progress_path(const std::string& stage, int64_t epoch, const std::string& ext) const;
  // A gate of `kind` for a jointly trained MoE (reads the images).
  // expert_hidden: the experts' hidden size when known (else one is built to
  // find it); init_stream: when set, the initial weights come from the run
  // seed and this stream name.
  models::Gate build_joint_gate(const std::string& kind, int64_t expert_hidden = -1,
                                const std::string& init_stream = "") const;
  // A fresh MoE with a gate of `gate_kind` (initial weights from the run
  // seed: the same on every rank), or one loaded from `path`.
  std::shared_ptr<models::JointMoeImpl> build_joint_moe(const std::string& gate_kind) const;
  std::shared_ptr<models::JointMoeImpl> load_joint_moe(const std::string& path, const std::string& gate_kind) const;
  // Algorithm 1's MoE (round 0) as a jointly trained one: the base model's
  // blocks [0, branch_after) as a frozen trunk, the gate reading the base
  // model's embedding of the trunk's features (models/base_tail_gate.h), the
  // trained experts; no top-k (the mixture of every expert). Stage finetune.
  std::shared_ptr<models::JointMoeImpl> build_finetune_moe(models::BackboneImpl& base) const;
  // The jointly trained MoE `model` names, loaded from its stage's
  // checkpoint, in eval mode; `base` (the trained base model) for one built
  // around it.
  std::shared_ptr<models::JointMoeImpl> load_joint_model(const TrainedModel& model, models::BackboneImpl* base) const;

 private:
  const RunDir& run_;
  const Config& cfg_;
  models::NetworkSpec spec_;
  c10::Device device_;
  const cluster::InitialGate* initial_;
  // From the torch generator's current state (the caller seeds).
  models::Expert build_expert_unseeded(int64_t k) const;
};

}  // namespace smoe::pipeline
