#include "pipeline/pipeline.h"

#include <torch/torch.h>

#include <cstdlib>
#include <filesystem>

#include "cluster/gate_init.h"
#include "cluster/kmeans.h"
#include "comm/tensor_collectives.h"
#include "core/error.h"
#include "core/log.h"
#include "core/progress.h"
#include "core/rng.h"
#include "pipeline/scheduler.h"
#include "train/base_trainer.h"
#include "train/checkpoint.h"
#include "train/expert_trainer.h"
#include "train/inference.h"
#include "train/losses.h"
#include "train/tensors.h"

using nlohmann::json;

namespace smoe::pipeline {

namespace {

void broadcast_module(comm::Communicator& comm, torch::nn::Module& m, int root) {
  torch::NoGradGuard no_grad;
  for (auto& p : m.parameters(true)) comm::broadcast(comm, p.data(), root);
  for (auto& b : m.buffers(true)) comm::broadcast(comm, b, root);
}

}  // namespace

Pipeline::Pipeline(Config config, comm::Communicator& comm, RunDir& run, RuntimeInfo runtime)
    : cfg_(std::move(config)), comm_(comm), run_(run), rt_(runtime) {
  SMOE_CHECK(!cfg_.data.path.empty(),
             "config key 'data.path' is empty: name the dataset folder (smoe-data convert ...)");
  data::DatasetOptions o;
  o.storage = cfg_.data.storage;
  o.memory_budget_mb = cfg_.data.memory_budget_mb;
  o.cache_mb = cfg_.data.cache_mb;
  o.limit = cfg_.data.limit_train;
  train_ = data::Dataset::open(cfg_.data.path, cfg_.data.train_split, o);
  o.limit = cfg_.data.limit_test;
  test_ = data::Dataset::open(cfg_.data.path, cfg_.data.test_split, o);
  SMOE_CHECK(train_->size() >= cfg_.experts.count, "{} training samples for {} experts", train_->size(),
             cfg_.experts.count);
  // Every rank builds the same base model: its initial weights come from the run seed.
  torch::manual_seed(derive_seed(cfg_.seed, "base-init"));
  base_ = models::Backbone(network_spec(), 0);
  base_->to(rt_.device);
}

Pipeline::~Pipeline() = default;

std::string Pipeline::expert_path(int64_t k, int64_t round) const {
  return run_.file(round == 0 ? fmt::format("experts/expert-{:03d}.pt", k)
                              : fmt::format("em-{}/expert-{:03d}.pt", round, k));
}

std::string Pipeline::stacking_path(int64_t k, int64_t round) const {
  return run_.file(round == 0 ? fmt::format("experts/stacking-{:03d}.pt", k)
                              : fmt::format("em-{}/stacking-{:03d}.pt", round, k));
}

std::string Pipeline::gate_path(int64_t round) const {
  return run_.file(round == 0 ? std::string("gate.pt") : fmt::format("em-{}/gate.pt", round));
}

int64_t Pipeline::final_round() const { return cfg_.em.steps; }

models::NetworkSpec Pipeline::network_spec() {
  models::NetworkSpec s;
  s.arch = cfg_.model.arch;
  s.depth = cfg_.model.depth;
  s.width = cfg_.model.width;
  s.input = train_->shape();
  s.num_classes = train_->num_classes();
  return s;
}

at::Tensor Pipeline::gate_inputs(const at::Tensor& prelogits) const {
  return cfg_.cluster.normalize ? cluster::normalize_rows(prelogits) : prelogits;
}

void Pipeline::timed_stage(const std::string& name, const std::function<json()>& fn) {
  if (run_.done(name)) {
    log::info("{:<9} already done (run.json): skipped", name);
    return;
  }
  log::info("{:<9} starting", name);
  Progress clock(name, 1, 1);
  json record = fn();
  record["seconds"] = clock.seconds();
  comm_.barrier();
  if (comm_.is_root()) run_.mark_done(name, record);
  log::info("{:<9} done in {}", name, format_duration(clock.seconds()));
  log::event("stage_done", {{"stage", name}, {"seconds", clock.seconds()}});
}

void Pipeline::train() {
  stage_base();
  stage_embed();
  stage_cluster();
  stage_gate();
  stage_experts();
  stage_em();
  stage_eval();
}

void Pipeline::evaluate() {
  for (const auto& s : stage_names())
    SMOE_CHECK(run_.done(s), "{}: stage '{}' has not finished; run smoe train --resume first", run_.root(), s);
  load_base(run_.file("base.pt"));
  stage_eval();
}

// ---------------------------------------------------------------- base

void Pipeline::load_base(const std::string& path) {
  train::load_module(*base_, path);
  base_->eval();
}

void Pipeline::stage_base() {
  if (run_.done("base")) {
    load_base(run_.file("base.pt"));
    log::info("base      already done (run.json): loaded {}", run_.file("base.pt"));
    return;
  }
  timed_stage("base", [&]() -> json {
    if (!cfg_.base.checkpoint.empty()) {
      // A given base model: the run keeps its own copy (what resume and eval load).
      load_base(cfg_.base.checkpoint);
      json record = {{"source", cfg_.base.checkpoint}};
      if (comm_.is_root()) record["sha256"] = train::save_module(*base_, run_.file("base.pt"));
      return record;
    }
    train::BaseTrainOptions o;
    o.optim = cfg_.base.optim;
    o.micro_batch = cfg_.base.micro_batch;
    o.bn_calibration = cfg_.base.bn_calibration;
    o.augment = cfg_.base.augment;
    o.crop_padding = cfg_.data.crop_padding;
    o.hflip = cfg_.data.hflip;
    o.seed = derive_seed(cfg_.seed, "base");
    o.log_every = cfg_.runtime.log_every;
    o.prefetch = cfg_.data.prefetch;
    auto stats = train::train_base(base_, train_, comm_, o);
    // Identical on every rank by construction; rank 0's copy is made authoritative anyway.
    broadcast_module(comm_, *base_, 0);
    json record = {{"final_loss", stats.final_loss}, {"train_accuracy", stats.final_train_accuracy}};
    if (comm_.is_root()) record["sha256"] = train::save_module(*base_, run_.file("base.pt"));
    return record;
  });
}

// ---------------------------------------------------------------- embed

void Pipeline::stage_embed() {
  timed_stage("embed", [&]() -> json {
    auto out = train::base_outputs(base_, *train_, comm_, cfg_.eval.batch_size, 0);
    json record;
    if (comm_.is_root()) {
      record["sha256"] =
          train::save_state({{"prelogits", out.prelogits}, {"logits", out.logits}}, run_.file("embeddings.pt"));
      record["samples"] = out.prelogits.size(0);
    }
    return record;
  });
}

void Pipeline::root_load_embeddings() {
  if (!comm_.is_root() || train_prelogits_.defined()) return;
  auto e = train::load_state(run_.file("embeddings.pt"));
  train_prelogits_ = e.at("prelogits");
  train_logits_ = e.at("logits");
}

void Pipeline::root_load_g0() {
  if (comm_.is_root() && !g0_.defined()) g0_ = train::load_state(run_.file("cluster.pt")).at("g0");
}

void Pipeline::share_expert_inputs() {
  root_load_embeddings();
  root_load_g0();
  train_logits_ = comm::broadcast_tensor(comm_, train_logits_, 0);
  g0_ = comm::broadcast_tensor(comm_, g0_, 0);
}

// ---------------------------------------------------------------- cluster

void Pipeline::stage_cluster() {
  timed_stage("cluster", [&]() -> json {
    json record;
    if (comm_.is_root()) {
      root_load_embeddings();
      at::Tensor x = gate_inputs(train_prelogits_);
      cluster::KMeansOptions ko;
      ko.k = cfg_.experts.count;
      ko.restarts = cfg_.cluster.restarts;
      ko.max_iter = cfg_.cluster.max_iter;
      ko.tol = cfg_.cluster.tol;
      ko.seed = derive_seed(cfg_.seed, "cluster");
      train::StateDict saved;
      at::Tensor g0;
      if (cfg_.cluster.method == "per_class") {
        at::Tensor labels = torch::tensor(train_->labels(), torch::kLong);
        auto pc = cluster::cluster_classes(x, labels, train_->num_classes(), ko);
        g0 = cluster::class_assignment(labels, pc.class_to_expert, cfg_.experts.count);
        saved["class_to_expert"] = pc.class_to_expert;
        saved["centroids"] = pc.centroids;
        record["class_to_expert"] = train::to_int64s(pc.class_to_expert);
      } else {
        auto km = cluster::kmeans(x, ko);
        g0 = cluster::soft_assignment(x, km.centroids, cfg_.gate.temperature, cfg_.gate.hard);
        saved["centroids"] = km.centroids;
        saved["assign"] = km.assign;
        record["inertia"] = km.inertia;
        record["best_restart"] = km.best_restart;
        std::vector<int64_t> sizes = train::to_int64s(torch::bincount(km.assign, {}, ko.k));
        record["cluster_sizes"] = sizes;
        log::info("cluster   k-means: inertia {:.4g} (restart {}), cluster sizes [{}]", km.inertia, km.best_restart,
                  fmt::join(sizes, ", "));
      }
      saved["g0"] = g0;
      saved["temperature"] = torch::tensor(cfg_.gate.temperature, torch::kDouble);
      record["sha256"] = train::save_state(saved, run_.file("cluster.pt"));
      at::Tensor mass = g0.sum(0) / g0.size(0);
      record["gate_mass"] = train::to_doubles(mass);
      g0_ = g0;
    }
    // The frozen initial gate goes to every rank.
    g0_ = comm::broadcast_tensor(comm_, g0_, 0);
    return record;
  });
}

// ---------------------------------------------------------------- gate

void Pipeline::stage_gate() {
  timed_stage("gate", [&]() -> json {
    json record;
    if (comm_.is_root()) {
      root_load_embeddings();
      root_load_g0();
      models::Gate gate(network_spec().prelogit_dim(), cfg_.experts.count);
      if (cfg_.cluster.method == "per_class") {
        // The per-class model routes by the base model's class probabilities (no trained gate).
        record["kind"] = "class_routing";
      } else {
        at::Tensor x = gate_inputs(train_prelogits_);
        auto centroids = train::load_state(run_.file("cluster.pt")).at("centroids");
        {
          // Start from the closed form of g0: softmax(-|x - c|^2 / T) is linear in x
          // up to the per-sample |x|^2 term, which softmax ignores.
          torch::NoGradGuard no_grad;
          gate->linear->weight.copy_(2.0 * centroids / cfg_.gate.temperature);
          gate->linear->bias.copy_(-centroids.pow(2).sum(1) / cfg_.gate.temperature);
        }
        at::Tensor before = train::kl_to_logits(g0_, gate->forward(x)).mean();
        train::train_gate(gate, x, g0_, cfg_.gate.optim, derive_seed(cfg_.seed, "gate"));
        torch::NoGradGuard no_grad;
        at::Tensor after = train::kl_to_logits(g0_, gate->forward(x)).mean();
        record["kl_initial"] = before.item<double>();
        record["kl_final"] = after.item<double>();
        record["top1_agreement"] =
            (gate->forward(x).argmax(1) == g0_.argmax(1)).to(torch::kDouble).mean().item<double>();
        log::info("gate      KL(g0 || g) {:.4g} -> {:.4g}; top-1 agreement with g0 {:.2f}%",
                  record["kl_initial"].get<double>(), record["kl_final"].get<double>(),
                  100 * record["top1_agreement"].get<double>());
      }
      record["sha256"] = train::save_module(*gate, gate_path(0));
    }
    return record;
  });
}

// ---------------------------------------------------------------- experts

void Pipeline::prepare_expert_inputs() {
  if (inputs_) return;
  // The frozen trunk's outputs, computed once (shared out among the ranks)
  // and reused by every expert and epoch — unless the experts train on
  // augmented images, which the trunk must see one batch at a time.
  if (cfg_.experts.cache_trunk && !cfg_.experts.augment) {
    Progress t("trunk", 1, 1);
    at::Tensor f = train::trunk_features(base_, *train_, cfg_.experts.branch_after, cfg_.eval.batch_size, comm_);
    trunk_cache_seconds_ = t.seconds();
    log::info("experts   trunk features cached: [{}] in {}", fmt::join(f.sizes(), ", "),
              format_duration(trunk_cache_seconds_));
    inputs_ = std::make_unique<train::ExpertInputs>(f);
  } else {
    data::Transform t;
    t.augment = cfg_.experts.augment;
    t.crop_padding = cfg_.data.crop_padding;
    t.hflip = cfg_.data.hflip;
    inputs_ = std::make_unique<train::ExpertInputs>(base_, train_, cfg_.experts.branch_after, t);
  }
}

json Pipeline::train_expert_task(int64_t k, int64_t round) {
  const std::string name = round == 0 ? fmt::format("expert {}", k) : fmt::format("em {} expert {}", round, k);
  Progress clock(name, 1, 1);
  // Fault injection for the failure tests: SMOE_FAULT=expert:K makes the
  // rank that trains expert K fail.
  if (const char* fault = std::getenv("SMOE_FAULT"); fault && fmt::format("expert:{}", k) == fault)
    fail("injected fault while training expert {} (SMOE_FAULT={})", k, fault);
  const auto& inputs = *inputs_;
  models::Backbone expert(network_spec(), cfg_.experts.branch_after);
  expert->to(rt_.device);
  models::Stacking stacking(train_->num_classes());
  if (round == 0) {
    expert->copy_from(*base_);  // theta_{e_k} <- theta_phi
  } else {
    train::load_module(*expert, expert_path(k, round - 1));  // the M-step continues the expert
    train::load_module(*stacking, stacking_path(k, round - 1));
  }

  at::Tensor labels = torch::tensor(train_->labels(), torch::kLong);
  at::Tensor g = targets_.select(1, k).contiguous();
  at::Tensor w = train::clip_weights(g, cfg_.experts.gamma);
  train::ExpertTrainOptions o;
  o.optim = cfg_.experts.optim;
  if (round > 0) {
    o.optim.epochs = cfg_.em.expert_epochs;
    o.optim.warmup_epochs = 0;
  }
  o.weighting = cfg_.experts.weighting;
  o.seed = round == 0 ? derive_seed(cfg_.seed, "experts", {uint64_t(k)})
                      : derive_seed(cfg_.seed, "em-experts", {uint64_t(round), uint64_t(k)});
  o.log_every = cfg_.runtime.log_every;
  o.name = name;
  auto stats = train::train_expert(expert, inputs, labels, w, o);
  const std::string sha = train::save_module(*expert, expert_path(k, round));

  // Step 5: the stacking ensembler on the frozen base and expert logits.
  at::Tensor expert_logits = train::logits_of(expert, inputs.all(cfg_.eval.batch_size), cfg_.eval.batch_size).cpu();
  auto sstats = train::train_stacking(stacking, train_logits_, expert_logits, labels, w.cpu(), cfg_.ensembler.optim,
                                      derive_seed(cfg_.seed, "ensembler", {uint64_t(round), uint64_t(k)}),
                                      "stacking " + name.substr(name.find(' ') + 1));
  const std::string stacking_sha = train::save_module(*stacking, stacking_path(k, round));
  const double seconds = clock.seconds();
  log::info("{} done on rank {} in {} (loss {:.4f}, {} samples seen)", name, comm_.rank(), format_duration(seconds),
            stats.final_loss, stats.samples);
  return {{"id", k},
          {"gate_mass", g.sum().item<double>() / static_cast<double>(g.size(0))},
          {"train_samples_effective", w.sum().item<double>()},
          {"samples_seen", stats.samples},
          {"final_loss", stats.final_loss},
          {"stacking_loss", sstats.final_loss},
          {"seconds", seconds},
          {"rank", comm_.rank()},
          {"checkpoint_sha256", sha},
          {"stacking_sha256", stacking_sha}};
}

void Pipeline::stage_experts() {
  timed_stage("experts", [&]() -> json {
    share_expert_inputs();
    prepare_expert_inputs();
    targets_ = g0_;
    std::vector<int64_t> pending;
    for (int64_t k = 0; k < cfg_.experts.count; ++k)
      if (!run_.done(expert_task_key(k, 0))) pending.push_back(k);
    // Longest first: with weighted sampling an expert's cost follows its gate mass.
    pending = longest_first(pending, train::to_doubles(g0_.sum(0)));
    if (comm_.is_root())
      log::info("experts   {} of {} expert tasks to train on {} rank{}", pending.size(), cfg_.experts.count,
                comm_.size(), comm_.size() == 1 ? "" : "s");
    run_tasks(
        comm_, pending, [&](int64_t k) { return train_expert_task(k, 0); },
        [&](int64_t k, int rank, const json& result) { run_.mark_done(expert_task_key(k, 0), result); });
    return {{"trunk_cache_seconds", trunk_cache_seconds_}};
  });
}

}  // namespace smoe::pipeline
