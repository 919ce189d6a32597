// Stage "experts" (Algorithm 1 steps 4-5): expert k starts from the base
// model (its blocks after branch_after), is trained on the frozen trunk's
// features with weights w_k = clip(g0(k|x), gamma, 1), then each trained
// ensembler d_k is fitted on the frozen base and expert logits. The K tasks
// are handed out dynamically over every rank, the coordinator included
// (scheduler.h); each finished task is recorded in run.json, so a resumed
// run trains only the missing experts. EM M-steps run the same tasks as
// later rounds.
#include <tuple>
#include <torch/torch.h>

#include <cstdlib>
#include <filesystem>

#include "core/atomic_file.h"
#include "core/hash.h"
#include "core/log.h"
#include "core/progress.h"
#include "core/rng.h"
#include "pipeline/fault.h"
#include "pipeline/run_state.h"
#include "pipeline/scheduler.h"
#include "pipeline/stage.h"
#include "pipeline/stages/common.h"
#include "train/checkpoint.h"
#include "train/expert_trainer.h"
#include "train/losses.h"
#include "train/tensors.h"

using nlohmann::json;

namespace smoe::pipeline {
namespace {

// Predicted cost of expert k's task, what the scheduler hands out longest
// first: forward MACs per sample x samples per epoch x epochs (the backward
// pass and the ensemblers scale with the same product). With reweighting
// every expert sees every sample; with weighted sampling an expert sees
// about its gate mass. Heterogeneous experts (experts.archs) differ in MACs,
// and experts.optims may give them different epochs.
double predicted_cost(const RunState& s, int64_t k, double macs, int64_t round, double mass) {
  const double samples = s.cfg.experts.weighting == "sample" ? mass : static_cast<double>(s.train->size());
  const double epochs = static_cast<double>(round == 0 ? s.cfg.expert_optim(k).epochs : s.cfg.em.expert_epochs);
  return macs * samples * std::max(epochs, 1.0);
}

// Per-epoch checkpoints of Algorithm 1's expert tasks (round 0): after each
// epoch the rank training expert k writes experts/expert-NNN.progress.pt and
// .optim, then .progress.json {epoch, hashes, samples, fingerprint}; a task
// handed out again (a resumed job, on any rank) continues after that epoch
// when the fingerprint — the config and the hashes of the base model, g0 and
// the pseudo-labels it trains on — is the same, and starts over otherwise.
// The files go once the task's final checkpoint is written. (EM M-step tasks
// are short and kept per task.)
struct TaskProgress {
  std::string json_path, weights_path, optim_path;
  std::string fingerprint;
};

TaskProgress task_progress(const RunState& s, int64_t k, const std::string& fingerprint) {
  const std::string stem = fmt::format("{}/expert-{:03d}.progress", s.store.round_dir(0), k);
  return {stem + ".json", stem + ".pt", stem + ".optim", fingerprint};
}

// Rank 0, before the tasks are handed out: what an expert task's checkpoint must match.
std::string task_fingerprint(RunState& s) {
  std::string text = s.cfg.to_yaml(false);
  for (const char* stage : {"base", "cluster", "pseudo_label"})
    if (s.run.done(stage)) text += std::string(stage) + " " + s.run.record(stage).value("sha256", std::string()) + "\n";
  return sha256_hex(text);
}

void remove_progress(const TaskProgress& p) {
  std::error_code ec;
  for (const auto& f : {p.json_path, p.weights_path, p.optim_path}) std::filesystem::remove(f, ec);
}

json train_expert_task(RunState& s, int64_t k, int64_t round, const std::string& fingerprint) {
  const std::string name = round == 0 ? fmt::format("expert {}", k) : fmt::format("em {} expert {}", round, k);
  Progress clock(name, 1, 1);
  inject_expert_fault(k);  // SMOE_FAULT=expert:K (failure tests)
  const Config& cfg = s.cfg;
  const auto& inputs = *s.expert_inputs;
  models::Expert expert;
  std::map<std::string, models::EnsemblerNet> ensemblers;
  if (round == 0) {
    std::tie(expert, ensemblers) = s.store.build_expert_task(k);
    expert->init_from_base(*s.base);  // theta_{e_k} <- theta_phi
  } else {  // the M-step continues the previous round's expert and ensemblers
    expert = s.store.load_expert(k, round - 1);
    ensemblers = s.store.load_ensemblers(k, round - 1);
  }

  at::Tensor labels = s.train_labels();
  at::Tensor g = s.targets.select(1, k).contiguous();
  at::Tensor w = train::clip_weights(g, cfg.experts.gamma);
  train::ExpertTrainOptions o;
  o.optim = cfg.expert_optim(k);  // experts.optims: per-expert settings
  if (round > 0) {
    o.optim.epochs = cfg.em.expert_epochs;
    o.optim.warmup_epochs = 0;
  }
  o.weighting = cfg.experts.weighting;
  o.seed = round == 0 ? derive_seed(cfg.seed, "experts", {uint64_t(k)})
                      : derive_seed(cfg.seed, "em-experts", {uint64_t(round), uint64_t(k)});
  o.log_every = cfg.runtime.log_every;
  o.name = name;
  int64_t samples_before = 0;
  const TaskProgress progress = task_progress(s, k, fingerprint);
  if (round == 0 && !fingerprint.empty()) {
    if (std::filesystem::exists(progress.json_path)) {
      json p = json::parse(read_file(progress.json_path), nullptr, false);
      const bool usable = !p.is_discarded() && p.value("fingerprint", "") == fingerprint &&
                          std::filesystem::exists(progress.weights_path) &&
                          sha256_file(progress.weights_path) == p.value("sha256", "") &&
                          std::filesystem::exists(progress.optim_path) &&
                          sha256_file(progress.optim_path) == p.value("optim_sha256", "");
      if (usable) {
        train::load_module(*expert, progress.weights_path);
        o.start_epoch = p.at("epoch").get<int64_t>();
        o.optimizer_state = read_file(progress.optim_path);
        samples_before = p.value("samples", int64_t{0});
        log::info("{} resuming after epoch {} of {} ({})", name, o.start_epoch, o.optim.epochs, progress.weights_path);
      } else {
        log::info("{}: {} is from another run or damaged; starting over", name, progress.json_path);
        remove_progress(progress);
      }
    }
    o.on_epoch_end = [&](int64_t epoch, torch::optim::Optimizer& opt, const train::LoopStats& st) {
      if (epoch == o.optim.epochs) return;  // the task's own checkpoint follows
      const std::string bytes = train::optimizer_state(opt);
      write_file_atomic(progress.optim_path, bytes);
      const std::string sha = train::save_module(*expert, progress.weights_path);
      write_file_atomic(progress.json_path, json{{"epoch", epoch},
                                                 {"sha256", sha},
                                                 {"optim_sha256", sha256_hex(bytes)},
                                                 {"samples", samples_before + st.samples},
                                                 {"fingerprint", fingerprint}}
                                                .dump() +
                                            "\n");
      inject_stage_fault(fmt::format("expert-{}-epoch-{}", k, epoch), s.comm.rank());
    };
  }
  auto stats = train::train_expert(*expert, inputs, labels, w, o);
  stats.samples += samples_before;
  json result = {{"id", k},
                 {"arch", expert_arch(cfg, k)},
                 {"optimizer", o.optim.optimizer},
                 {"lr", o.optim.lr},
                 {"epochs", o.optim.epochs},
                 {"macs", expert->forward_macs()},
                 {"predicted_cost",
                  predicted_cost(s, k, static_cast<double>(expert->forward_macs()), round, g.sum().item<double>())},
                 {"gate_mass", g.sum().item<double>() / static_cast<double>(g.size(0))},
                 {"train_samples_effective", w.sum().item<double>()},
                 {"samples_seen", stats.samples},
                 {"final_loss", stats.final_loss},
                 {"rank", s.comm.rank()},
                 {"checkpoint_sha256", train::save_module(*expert, s.store.expert_path(k, round))}};

  // Step 5: the trained ensemblers on the frozen base and expert logits.
  at::Tensor expert_logits = train::logits_of(*expert, inputs, cfg.eval.batch_size);
  for (auto& [kind, net] : ensemblers) {
    auto estats = train::train_ensembler(*net, [&](const std::vector<int64_t>& ids) { return s.base_logits(ids); },
                                         expert_logits, labels, w.cpu(), cfg.ensembler.optim,
                                         derive_seed(cfg.seed, "ensembler", {uint64_t(round), uint64_t(k)}),
                                         kind + " " + name.substr(name.find(' ') + 1));
    result[kind + "_loss"] = estats.final_loss;
    result[kind + "_sha256"] = train::save_module(*net, s.store.ensembler_path(kind, k, round));
  }
  result["seconds"] = clock.seconds();
  if (round == 0) remove_progress(progress);
  log::info("{} done on rank {} in {} (loss {:.4f}, {} samples seen)", name, s.comm.rank(),
            format_duration(clock.seconds()), stats.final_loss, stats.samples);
  return result;
}

class ExpertsStage : public Stage {
 public:
  std::string name() const override { return "experts"; }
  std::vector<std::string> keys() const override { return {"experts.", "ensembler."}; }
  std::vector<std::string> record_prefixes() const override { return {"expert/"}; }
  json run(RunState& s) override {
    s.share_expert_inputs();
    s.prepare_expert_inputs();
    s.targets = s.g0;
    run_expert_round(s, 0);
    json record = {{"trunk_cache_seconds", s.trunk_cache_seconds}, {"trunk_cache_mode", s.trunk_cache_mode()}};
    if (s.expert_inputs->cached()) record["trunk_cache_bytes"] = s.expert_inputs->cache()->bytes();
    return record;
  }
};

}  // namespace

void run_expert_round(RunState& s, int64_t round) {
  std::filesystem::create_directories(s.store.round_dir(round));
  std::vector<int64_t> pending;
  for (int64_t k = 0; k < s.cfg.experts.count; ++k)
    if (!s.run.done(expert_task_key(k, round))) pending.push_back(k);
  // Longest first by predicted cost (MACs x samples x epochs).
  const std::vector<double> mass = train::to_doubles(s.targets.sum(0));
  std::vector<double> cost;
  for (int64_t k = 0; k < s.cfg.experts.count; ++k)
    cost.push_back(predicted_cost(s, k, static_cast<double>(s.store.build_expert(k)->forward_macs()), round,
                                  mass[static_cast<size_t>(k)]));
  pending = longest_first(pending, cost);
  if (s.comm.is_root() && round == 0)
    log::info("experts   {} of {} expert tasks to train on {} rank{}", pending.size(), s.cfg.experts.count,
              s.comm.size(), s.comm.size() == 1 ? "" : "s");
  // The fingerprint an expert task's per-epoch checkpoint must match, from rank 0.
  std::string fingerprint = s.comm.is_root() && round == 0 ? task_fingerprint(s) : std::string();
  s.comm.broadcast_bytes(fingerprint, 0);
  run_tasks(
      s.comm, pending, [&](int64_t k) { return train_expert_task(s, k, round, fingerprint); },
      [&](int64_t k, int rank, const json& result) { s.run.mark_done(expert_task_key(k, round), result); });
}

std::unique_ptr<Stage> make_experts_stage() { return std::make_unique<ExpertsStage>(); }

}  // namespace smoe::pipeline
