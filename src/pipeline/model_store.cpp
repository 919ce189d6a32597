#include "pipeline/model_store.h"

#include <torch/torch.h>

#include <mutex>

#include "core/error.h"
#include "core/rng.h"
#include "models/base_tail_gate.h"
#include "models/init_lock.h"
#include "train/checkpoint.h"

namespace smoe::pipeline {

// Seeding torch's one global generator and drawing a model's initial
// weights from it must not interleave with another thread doing the same
// (ranks as threads in tests): one model is built at a time.
using models::init_mutex;

models::NetworkSpec network_spec(const Config& c, const data::Manifest& m) {
  models::NetworkSpec s;
  s.arch = c.model.arch;
  s.depth = c.model.depth;
  s.width = c.model.width;
  s.hidden = c.model.hidden;
  s.input = m.shape;
  s.num_classes = m.num_classes;
  return s;
}

models::GateSpec gate_spec(const Config& c, const models::NetworkSpec& spec, const std::string& kind) {
  models::GateSpec g(spec.prelogit_dim(), spec.num_classes, c.experts.count);
  g.options = c.gate.kinds.get(kind);
  return g;
}

models::GateSpec joint_gate_spec(const Config& c, const models::NetworkSpec& spec, const std::string& kind,
                                 int64_t expert_hidden) {
  models::GateSpec g = gate_spec(c, spec, kind);
  // The gate reads the shared trunk's features when there is one.
  g.input = c.experts.branch_after > 0 ? models::input_shape_of(spec, c.experts.branch_after) : spec.input;
  g.width = spec.width;
  g.hidden = spec.hidden;
  g.expert_hidden = expert_hidden;
  return g;
}

std::string expert_arch(const Config& c, int64_t k) {
  const auto& a = c.experts.archs;
  return a.empty() ? c.experts.arch : a[static_cast<size_t>(k) % a.size()];
}

models::ExpertSpec expert_spec(const Config& c, const models::NetworkSpec& spec, int64_t k) {
  return {spec, c.experts.branch_after, k, c.experts.depth, c.experts.architectures.get(expert_arch(c, k))};
}

ModelStore::ModelStore(const RunDir& run, const Config& config, models::NetworkSpec spec, c10::Device device)
    : run_(run),
      cfg_(config),
      spec_(std::move(spec)),
      device_(device),
      initial_(cluster::initial_gates().get(config.cluster.method).get()) {}

std::string ModelStore::base_path() const { return run_.file("base.pt"); }
std::string ModelStore::embeddings_path() const { return run_.file("embeddings.f32"); }
std::string ModelStore::cluster_path() const { return run_.file("cluster.pt"); }
std::string ModelStore::g0_path() const { return run_.file("g0.f32"); }
std::string ModelStore::assign_path() const { return run_.file("assign.f32"); }

std::string ModelStore::round_dir(int64_t round) const {
  return run_.file(round == 0 ? std::string("experts") : fmt::format("em-{}", round));
}

std::string ModelStore::gate_path(int64_t round) const {
  return round == 0 ? run_.file("gate.pt") : round_dir(round) + "/gate.pt";
}

std::string ModelStore::expert_path(int64_t k, int64_t round) const {
  return fmt::format("{}/expert-{:03d}.pt", round_dir(round), k);
}

std::string ModelStore::ensembler_path(const std::string& name, int64_t k, int64_t round) const {
  return fmt::format("{}/{}-{:03d}.pt", round_dir(round), name, k);
}

std::string ModelStore::q_path(int64_t round) const { return round_dir(round) + "/q.f32"; }

models::Backbone ModelStore::build_base() const {
  std::lock_guard<std::recursive_mutex> lock(init_mutex());
  torch::manual_seed(derive_seed(cfg_.seed, "base-init"));
  models::Backbone base(spec_, 0);
  base->to(device_);
  return base;
}

models::Gate ModelStore::build_gate(c10::Device device) const {
  std::lock_guard<std::recursive_mutex> lock(
      init_mutex());  // draws from the global stream: not inside another's seeding
  const std::string kind = initial_->gate_kind(cfg_.gate.kind);
  models::Gate g = models::gate_kinds().get(kind)(gate_spec(cfg_, spec_, kind));
  g->to(device);
  return g;
}

models::Expert ModelStore::build_expert(int64_t k) const {
  // An architecture that does not start from the base model starts from
  // weights drawn from (run seed, k): the same on every rank.
  std::lock_guard<std::recursive_mutex> lock(init_mutex());
  torch::manual_seed(derive_seed(cfg_.seed, "expert-init", {uint64_t(k)}));
  return build_expert_unseeded(k);
}

models::Expert ModelStore::build_expert_unseeded(int64_t k) const {
  models::Expert e = models::expert_architectures().get(expert_arch(cfg_, k))(expert_spec(cfg_, spec_, k));
  e->to(device_);
  return e;
}

std::pair<models::Expert, std::map<std::string, models::EnsemblerNet>> ModelStore::build_expert_task(int64_t k) const {
  std::lock_guard<std::recursive_mutex> lock(init_mutex());
  models::Expert expert = build_expert(k);
  return {expert, build_ensemblers()};
}

models::EnsemblerRules ModelStore::ensembler_rules() const {
  models::EnsemblerRules rules;
  for (const auto& name : models::ensemblers().names())
    rules[name] = models::ensemblers().get(name)(cfg_.ensembler.rules.get(name).get());
  return rules;
}

std::map<std::string, models::EnsemblerNet> ModelStore::build_ensemblers() const {
  // Unseeded (the stream goes on from the caller's seed), but never inside
  // another thread's seeded construction.
  std::lock_guard<std::recursive_mutex> lock(init_mutex());
  std::map<std::string, models::EnsemblerNet> nets;
  for (const auto& [name, rule] : ensembler_rules())
    if (auto net = rule->build(spec_.num_classes)) {
      net->to(device_);
      nets[name] = net;
    }
  return nets;
}

models::Gate ModelStore::load_gate(int64_t round, c10::Device device) const {
  models::Gate g = build_gate(device);
  train::load_module(*g, gate_path(round));
  g->to(device);
  return g;
}

models::Expert ModelStore::load_expert(int64_t k, int64_t round) const {
  models::Expert e = build_expert(k);
  train::load_module(*e, expert_path(k, round));
  e->to(device_);
  return e;
}

std::map<std::string, models::EnsemblerNet> ModelStore::load_ensemblers(int64_t k, int64_t round) const {
  auto nets = build_ensemblers();
  for (auto& [name, net] : nets) {
    train::load_module(*net, ensembler_path(name, k, round));
    net->to(device_);
  }
  return nets;
}

models::MoeModel ModelStore::load_moe(models::Backbone base, int64_t round, std::vector<int64_t> experts) const {
  models::MoeModel moe(std::move(base), cfg_.experts.branch_after, cfg_.cluster.normalize, load_gate(round, device_),
                       cfg_.experts.count);
  moe.set_rules(ensembler_rules());
  if (experts.empty())
    for (int64_t k = 0; k < cfg_.experts.count; ++k) experts.push_back(k);
  for (int64_t k : experts) moe.set_expert(k, load_expert(k, round), load_ensemblers(k, round));
  return moe;
}

std::string ModelStore::joint_path(const std::string& stage) const { return run_.file(stage + ".pt"); }

std::string ModelStore::pseudo_labels_path() const { return run_.file("pseudo_labels.pt"); }

std::string ModelStore::progress_dir(const std::string& stage) const { return run_.file(stage + "-progress"); }

std::string ModelStore::progress_path(const std::string& stage, int64_t epoch, const std::string& ext) const {
  return fmt::format("{}/epoch-{:03d}.{}", progress_dir(stage), epoch, ext);
}

models::Gate ModelStore::build_joint_gate(const std::string& kind, int64_t expert_hidden,
                                          const std::string& init_stream) const {
  std::unique_lock<std::recursive_mutex> lock(init_mutex(), std::defer_lock);
  if (!init_stream.empty()) {
    lock.lock();
    torch::manual_seed(derive_seed(cfg_.seed, init_stream));
  }
  const int64_t hidden = expert_hidden >= 0 ? expert_hidden : build_expert_unseeded(0)->hidden_dim();
  models::Gate gate = models::gate_kinds().get(kind)(joint_gate_spec(cfg_, spec_, kind, hidden));
  gate->to(device_);
  return gate;
}

std::shared_ptr<models::JointMoeImpl> ModelStore::build_joint_moe(const std::string& gate_kind) const {
  std::unique_lock<std::recursive_mutex> lock(init_mutex());
  torch::manual_seed(derive_seed(cfg_.seed, "joint-init"));
  std::vector<models::Expert> experts;
  for (int64_t k = 0; k < cfg_.experts.count; ++k) experts.push_back(build_expert_unseeded(k));
  const int64_t hidden = experts.front()->hidden_dim();
  models::Gate gate = build_joint_gate(gate_kind, hidden);
  for (int64_t k = 1; k < cfg_.experts.count; ++k)
    SMOE_CHECK(!gate->needs_expert_hidden() || experts[static_cast<size_t>(k)]->hidden_dim() == hidden,
               "config key 'gate.kind' is '{}': it attends to one hidden size, but experts 0 ({}) and {} ({}) differ "
               "(experts.archs)",
               gate_kind, expert_arch(cfg_, 0), k, expert_arch(cfg_, k));
  // The shared trunk (experts.branch_after blocks), drawn last: runs without one keep their streams.
  models::Trunk trunk{nullptr};
  if (cfg_.experts.branch_after > 0) trunk = models::Trunk(spec_, cfg_.experts.branch_after);
  lock.unlock();
  auto moe =
      std::make_shared<models::JointMoeImpl>(std::move(gate), std::move(experts), cfg_.joint.top_k, std::move(trunk));
  moe->to(device_);
  return moe;
}

std::shared_ptr<models::JointMoeImpl> ModelStore::build_finetune_moe(models::BackboneImpl& base) const {
  const int64_t n = cfg_.experts.branch_after;
  SMOE_CHECK(n >= 1, "config key 'experts.branch_after' is 0: the finetune stage needs Algorithm 1's shared trunk");
  // Built unseeded (every weight is then copied), but never inside another thread's seeding.
  std::unique_lock<std::recursive_mutex> lock(init_mutex());
  models::Trunk trunk(spec_, n);
  {
    // The trunk's blocks are the base model's, by name.
    torch::NoGradGuard no_grad;
    auto src = base.named_parameters(true);
    auto srcb = base.named_buffers(true);
    for (auto& p : trunk->named_parameters(true)) p.value().copy_(src[p.key()]);
    for (auto& b : trunk->named_buffers(true)) b.value().copy_(srcb[b.key()]);
  }
  models::Backbone tail(spec_, n);
  lock.unlock();
  tail->copy_from(base);
  auto gate = std::make_shared<models::BaseTailGateImpl>(tail, load_gate(0, device_), cfg_.cluster.normalize);
  std::vector<models::Expert> experts;
  for (int64_t k = 0; k < cfg_.experts.count; ++k) experts.push_back(load_expert(k, 0));
  auto moe = std::make_shared<models::JointMoeImpl>(gate, std::move(experts), /*top_k=*/0, trunk);
  moe->freeze_trunk();
  moe->to(device_);
  return moe;
}

std::shared_ptr<models::JointMoeImpl> ModelStore::load_joint_model(const TrainedModel& model,
                                                                   models::BackboneImpl* base) const {
  SMOE_ASSERT(model.joint(), "load_joint_model: the model is Algorithm 1's MoE");
  std::shared_ptr<models::JointMoeImpl> moe;
  if (model.around_base) {  // Algorithm 1's MoE fine-tuned: built around the base model, then loaded
    SMOE_ASSERT(base != nullptr, "load_joint_model: a model built around the base model needs it");
    moe = build_finetune_moe(*base);
    train::load_module(*moe, joint_path(model.checkpoint));
  } else {
    moe = load_joint_moe(joint_path(model.checkpoint), model.gate_kind);
  }
  moe->eval();
  return moe;
}

std::shared_ptr<models::JointMoeImpl> ModelStore::load_joint_moe(const std::string& path,
                                                                 const std::string& gate_kind) const {
  auto moe = build_joint_moe(gate_kind);
  train::load_module(*moe, path);
  moe->to(device_);
  moe->eval();
  return moe;
}

}  // namespace smoe::pipeline
