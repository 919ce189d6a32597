// Stage "experts" (Algorithm 1 steps 4-5): expert k starts from the base
// model (its blocks after branch_after), is trained on the frozen trunk's
// features with weights w_k = clip(g0(k|x), gamma, 1), then each trained
// ensembler d_k is fitted on the frozen base and expert logits. The K tasks
// are handed out dynamically over every rank, the coordinator included
// (scheduler.h); each finished task is recorded in run.json, so a resumed
// run trains only the missing experts. EM M-steps run the same tasks as
// later rounds.
#include <torch/torch.h>

#include <cstdlib>
#include <filesystem>

#include "core/atomic_file.h"
#include "core/hash.h"
#include "core/log.h"
#include "core/progress.h"
#include "core/rng.h"
#include "core/stop.h"
#include "pipeline/fault.h"
#include "pipeline/memory_plan.h"
#include "pipeline/model_store.h"
#include "pipeline/rank_use.h"
#include "pipeline/run_state.h"
#include "pipeline/scheduler.h"
#include "pipeline/stage.h"
#include "pipeline/stages/common.h"
#include "pipeline/stages/epoch_checkpoints.h"
#include "train/base_trainer.h"
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
  const double samples = s.cfg.experts.weighting == Weighting::sample ? mass : static_cast<double>(s.train->size());
  const double epochs = static_cast<double>(round == 0 ? s.cfg.expert_optim(k).epochs : s.cfg.em.expert_epochs);
  return macs * samples * std::max(epochs, 1.0);
}

// Experts [t*F, (t+1)*F) are task t (F = experts.fuse, 1 by default): with
// F > 1 they are trained together as one fused network
// (models/fused_branch.h) on the same samples in the same order, drawn from
// the group's own seed. The grouping depends on the expert ids only, never
// on the ranks.
std::vector<int64_t> task_members(const Config& cfg, int64_t task) {
  std::vector<int64_t> out;
  for (int64_t k = task * cfg.experts.fuse; k < std::min(cfg.experts.count, (task + 1) * cfg.experts.fuse); ++k)
    out.push_back(k);
  return out;
}

int64_t task_count(const Config& cfg) { return (cfg.experts.count + cfg.experts.fuse - 1) / cfg.experts.fuse; }

// The seed of task t's sample order and augmentation: expert k's own stream
// when it trains alone (as before experts.fuse existed), the group's when fused.
uint64_t task_seed(const Config& cfg, int64_t task, int64_t round) {
  const int64_t F = cfg.experts.fuse;
  if (F == 1)
    return round == 0 ? derive_seed(cfg.seed, "experts", {uint64_t(task)})
                      : derive_seed(cfg.seed, "em-experts", {uint64_t(round), uint64_t(task)});
  return derive_seed(cfg.seed, "expert-group", {uint64_t(round), uint64_t(F), uint64_t(task)});
}

std::string task_name(const Config& cfg, int64_t task, int64_t round) {
  const auto m = task_members(cfg, task);
  const std::string who =
      m.size() == 1 ? fmt::format("expert {}", m[0]) : fmt::format("experts {}-{}", m.front(), m.back());
  return round == 0 ? who : fmt::format("em {} {}", round, who);
}

// Per-epoch checkpoints of Algorithm 1's expert tasks (round 0): after each
// epoch the rank training task t writes experts/expert-NNN.progress.pt and
// .optim (group-NNN.* for a fused group), then .progress.json {epoch,
// hashes, samples, fingerprint}; a task handed out again (a resumed job, on
// any rank) continues after that epoch when the fingerprint — the config and
// the hashes of the base model, g0 and the pseudo-labels it trains on — is
// the same, and starts over otherwise. The files go once the task's final
// checkpoints are written. (EM M-step tasks are short and kept per task.)
struct TaskProgress {
  std::string json_path;  // the record
  EpochFiles files;
  std::string fingerprint;
};

TaskProgress task_progress(const RunState& s, int64_t task, const std::string& fingerprint) {
  const std::string stem =
      fmt::format("{}/{}-{:03d}.progress", s.store.round_dir(0), s.cfg.experts.fuse == 1 ? "expert" : "group", task);
  return {stem + ".json", {stem + ".pt", stem + ".optim"}, fingerprint};
}

// Rank 0, before the tasks are handed out: what an expert task's checkpoint must match.
std::string task_fingerprint(RunState& s) {
  std::string text = s.cfg.to_yaml(false);
  for (const char* stage : {"base", "cluster", "pseudo_label"})
    if (s.run.done(stage))
      text += std::string(stage) + " " + s.run.record(stage).value("sha256", std::string()) + " " +
              s.run.record(stage).value("g0_sha256", std::string()) + "\n";
  return sha256_hex(text);
}

void remove_progress(const TaskProgress& p) {
  std::error_code ec;
  std::filesystem::remove(p.json_path, ec);
  p.files.remove();
}

// Resumes `module` and the options from task progress that matches, or
// removes progress that does not; then sets the per-epoch hook that writes it.
// Returns the samples seen before.
int64_t resume_and_checkpoint(RunState& s, const TaskProgress& progress, torch::nn::Module& module,
                              train::ExpertTrainOptions& o, const std::string& fault_name) {
  int64_t samples_before = 0;
  if (std::filesystem::exists(progress.json_path)) {
    json p = json::parse(read_file(progress.json_path), nullptr, false);
    const bool usable =
        !p.is_discarded() && p.value("fingerprint", "") == progress.fingerprint && progress.files.mismatch(p).empty();
    if (usable) {
      o.optimizer_state = progress.files.load(module);
      o.start_epoch = p.at("epoch").get<int64_t>();
      o.loss_scale = p.value("loss_scale", 0.0);
      o.loss_scale_good_steps = p.value("loss_scale_good_steps", int64_t{0});
      samples_before = p.value("samples", int64_t{0});
      log::info("{} resuming after epoch {} of {} ({})", o.name, o.start_epoch, o.optim.epochs, progress.files.weights);
    } else {
      log::info("{}: {} is from another run or damaged; starting over", o.name, progress.json_path);
      remove_progress(progress);
    }
  }
  const int64_t epochs = o.optim.epochs;
  o.on_epoch_end = [&s, progress, &module, epochs, samples_before, fault_name](
                       int64_t epoch, torch::optim::Optimizer& opt, const train::LoopStats& st) {
    if (epoch == epochs) return;  // the task's own checkpoints follow
    json record = progress.files.save(module, train::optimizer_state(opt));
    record.update({{"epoch", epoch},
                   {"samples", samples_before + st.samples},
                   {"loss_scale", st.loss_scale},
                   {"loss_scale_good_steps", st.loss_scale_good_steps},
                   {"fingerprint", progress.fingerprint}});
    write_file_atomic(progress.json_path, record.dump() + "\n");
    inject_stage_fault(fmt::format("{}-epoch-{}", fault_name, epoch), s.comm.rank());
  };
  return samples_before;
}

// Algorithm 1 steps 4-5 for the experts of task t: train them (alone or
// fused), save each one's checkpoint, then fit each one's ensemblers on the
// frozen base and expert logits. Returns {"experts": [one record per expert]}.
json train_expert_task(RunState& s, int64_t task, int64_t round, const std::string& fingerprint) {
  const Config& cfg = s.cfg;
  const std::vector<int64_t> members = task_members(cfg, task);
  const bool fused = cfg.experts.fuse > 1;
  const std::string name = task_name(cfg, task, round);
  Progress clock(name, 1, 1);
  for (int64_t k : members) inject_expert_fault(k);  // SMOE_FAULT=expert:K (failure tests)
  const auto& inputs = *s.expert_inputs;
  std::vector<models::Expert> experts;
  std::vector<std::map<std::string, models::EnsemblerNet>> ensemblers;
  std::vector<at::Tensor> gates, weights;
  for (int64_t k : members) {
    if (round == 0) {
      auto [e, ens] = s.store.build_expert_task(k);
      e->init_from_base(*s.base);  // theta_{e_k} <- theta_phi
      experts.push_back(e);
      ensemblers.push_back(ens);
    } else {  // the M-step continues the previous round's expert and ensemblers
      experts.push_back(s.store.load_expert(k, round - 1));
      ensemblers.push_back(s.store.load_ensemblers(k, round - 1));
    }
    gates.push_back(s.targets->column(k, cfg.eval.batch_size));  // one column of g0 or q: [N]
    weights.push_back(train::clip_weights(gates.back(), cfg.experts.gamma));
  }
  at::Tensor labels = s.train_labels();
  train::ExpertTrainOptions o;
  o.optim = cfg.expert_optim(members.front());  // experts.optims: per-expert settings (one expert per task then)
  if (round > 0) {
    o.optim.epochs = cfg.em.expert_epochs;
    o.optim.warmup_epochs = 0;
  }
  o.weighting = cfg.experts.weighting;
  o.seed = task_seed(cfg, task, round);
  o.log_every = cfg.runtime.log_every;
  o.name = name;
  o.stop_on_signal = true;  // run_expert_round holds a StopScope
  const TaskProgress progress = task_progress(s, task, fingerprint);
  // Training: alone, or the group stacked into one network.
  std::vector<std::shared_ptr<models::BackboneImpl>> branches;
  models::FusedBranch net{nullptr};
  if (fused) {
    for (auto& e : experts) {
      branches.push_back(std::dynamic_pointer_cast<models::BackboneImpl>(e));
      SMOE_CHECK(branches.back() != nullptr, "experts.fuse needs branch experts");
    }
    net = models::FusedBranch(branches);
  }
  torch::nn::Module& trained = fused ? static_cast<torch::nn::Module&>(*net) : *experts.front();
  const std::string fault_name = fused ? fmt::format("group-{}", task) : fmt::format("expert-{}", members.front());
  int64_t samples_before = 0;
  if (round == 0 && !fingerprint.empty()) samples_before = resume_and_checkpoint(s, progress, trained, o, fault_name);
  train::LoopStats stats;
  std::vector<double> losses;
  try {
    if (fused) {
      stats = train::train_experts_fused(*net, inputs, labels, torch::stack(weights, 1), o, &losses);
      net->unstack_into(branches);
    } else {
      stats = train::train_expert(*experts.front(), inputs, labels, weights.front(), o);
      losses = {stats.final_loss};
    }
  } catch (const Stopped& e) {
    // The last epoch's progress checkpoint is kept; the hand-out ends
    // (scheduler.h "halt") and run_expert_round stops every rank.
    log::info("{} on rank {}", e.what(), s.comm.rank());
    return {{"halt", true}, {"stopped", e.what()}, {"experts", json::array()}};
  }
  stats.samples += samples_before;
  const double train_seconds = clock.seconds();

  json records = json::array();
  for (size_t i = 0; i < members.size(); ++i) {
    const int64_t k = members[i];
    auto& expert = experts[i];
    const at::Tensor& g = gates[i];
    const at::Tensor& w = weights[i];
    json result = {{"id", k},
                   {"arch", expert_arch(cfg, k)},
                   {"optimizer", options::name(o.optim.optimizer)},
                   {"lr", o.optim.lr},
                   {"epochs", o.optim.epochs},
                   {"macs", expert->forward_macs()},
                   {"predicted_cost",
                    predicted_cost(s, k, static_cast<double>(expert->forward_macs()), round, g.sum().item<double>())},
                   {"gate_mass", g.sum().item<double>() / static_cast<double>(g.size(0))},
                   {"train_samples_effective", w.sum().item<double>()},
                   {"samples_seen", stats.samples},
                   {"final_loss", losses[i]},
                   {"precision", stats.precision},
                   {"rank", s.comm.rank()},
                   {"checkpoint_sha256", train::save_module(*expert, s.store.expert_path(k, round))}};
    if (fused) result["fused_with"] = members;
    const double before = clock.seconds();
    // Step 5: the trained ensemblers on the frozen base and expert logits;
    // the expert's [N, C] logits stay in RAM within the budget, else in a
    // file of the run folder's cache/ (removed afterwards), read by batch.
    const int64_t classes = s.train->num_classes();
    auto expert_logits = train::logits_of(*expert, inputs, classes, cfg.eval.batch_size,
                                          s.reserve_rows(train::RowCache::bytes_of(labels.size(0), {classes})),
                                          s.run.file(fmt::format("cache/expert-logits.rank-{}.f32", s.comm.rank())));
    result["logits_mode"] = train::mode_name(expert_logits->mode());
    for (auto& [kind, ens] : ensemblers[i]) {
      auto estats = train::train_ensembler(
          *ens, [&](const std::vector<int64_t>& ids) { return s.base_logits(ids); },
          [&](const std::vector<int64_t>& ids) { return expert_logits->rows(ids); }, labels, w.cpu(),
          cfg.ensembler.optim, derive_seed(cfg.seed, "ensembler", {uint64_t(round), uint64_t(k)}),
          round == 0 ? fmt::format("{} {}", kind, k) : fmt::format("{} {} expert {}", kind, round, k));
      result[kind + "_loss"] = estats.final_loss;
      result[kind + "_sha256"] = train::save_module(*ens, s.store.ensembler_path(kind, k, round));
    }
    s.drop_rows(expert_logits);
    // A fused group's training time is shared out equally among its experts.
    result["seconds"] = train_seconds / static_cast<double>(members.size()) + (clock.seconds() - before);
    records.push_back(result);
  }
  if (round == 0) remove_progress(progress);
  log::info("{} done on rank {} in {} (loss {:.4f}, {} samples seen)", name, s.comm.rank(),
            format_duration(clock.seconds()), stats.final_loss, stats.samples);
  return {{"experts", records}};
}

class ExpertsStage : public Stage {
 public:
  std::string name() const override { return "experts"; }
  std::optional<TrainedModel> trained_model(const Config&) const override { return TrainedModel{}; }
  std::vector<std::string> keys() const override { return {"experts.", "ensembler."}; }
  std::vector<std::string> record_prefixes() const override { return {"expert/"}; }
  void check_inputs(const Config& c, const data::Manifest& m) const override { check_trunk_cache_fits(c, m); }
  // Experts trained together (experts.fuse) are branches of one grouped
  // network, stepped by one optimiser.
  void check(const Config& c) const override {
    const bool branch_experts =
        models::expert_architectures().get(c.experts.arch).copies_base_blocks() && c.experts.archs.empty();
    SMOE_CHECK(c.experts.fuse == 1 || (branch_experts && c.experts.optims.empty() &&
                                       c.experts.weighting == Weighting::reweight && c.experts.optim.grad_clip == 0),
               "config key 'experts.fuse' is {}: experts trained together need experts.arch: branch, "
               "experts.weighting: reweight, no experts.archs, no experts.optims and no experts.grad_clip",
               c.experts.fuse);
    SMOE_CHECK(c.experts.fuse == 1 || !c.experts.optim.channels_last,
               "config key 'experts.channels_last' with experts.fuse {}: fused experts' grouped convolutions run in "
               "the usual layout (set one or the other)",
               c.experts.fuse);
  }
  json run(RunState& s) override {
    // More ranks than experts leave ranks idle (pipeline/rank_use.h).
    const std::string idle = experts_idle_warning(s.cfg.experts.count, s.comm.size());
    if (!idle.empty() && s.comm.is_root()) log::warn("{}", idle);
    s.prepare_expert_inputs();
    s.targets = &s.open_g0();
    run_expert_round(s, 0);
    json record = {{"trunk_cache_seconds", s.trunk_cache_seconds},
                   {"trunk_cache_mode", s.trunk_cache_mode()},
                   {"idle_rank_share", experts_rank_use(s.cfg.experts.count, s.comm.size()).idle}};
    if (s.expert_inputs->cached()) {
      record["trunk_cache_bytes"] = s.expert_inputs->cache()->bytes();
      record["trunk_cache_device"] = s.expert_inputs->cache()->device().str();
    }
    return record;
  }
};

}  // namespace

void check_trunk_cache_fits(const Config& c, const data::Manifest& m) {
  if (c.experts.trunk_cache != TrunkCache::memory || c.experts.augment) return;
  const models::NetworkSpec spec = network_spec(c, m);
  const models::Shape shape = models::input_shape_of(spec, c.experts.branch_after);
  const int64_t bytes = train::RowCache::bytes_of(training_samples(c, m), {shape[0], shape[1], shape[2]});
  check_fits_budget(c, m, bytes,
                    fmt::format("the trunk features of the {} training samples (config key 'experts.trunk_cache' is "
                                "memory, [{}, {}, {}] floats a sample at experts.branch_after {})",
                                training_samples(c, m), shape[0], shape[1], shape[2], c.experts.branch_after),
                    "set experts.trunk_cache auto (on disk when it does not fit)");
}

void run_expert_round(RunState& s, int64_t round) {
  std::filesystem::create_directories(s.store.round_dir(round));
  const Config& cfg = s.cfg;
  // Longest first by predicted cost (MACs x samples x epochs, summed over a fused group).
  const std::vector<double> mass = train::to_doubles(s.targets->sum_rows(cfg.eval.batch_size));
  std::vector<int64_t> pending;
  std::vector<double> cost;
  int64_t experts_pending = 0;
  for (int64_t t = 0; t < task_count(cfg); ++t) {
    double c = 0;
    bool done = true;
    for (int64_t k : task_members(cfg, t)) {
      c += predicted_cost(s, k, static_cast<double>(s.store.build_expert(k)->forward_macs()), round,
                          mass[static_cast<size_t>(k)]);
      done = done && s.run.done(expert_task_key(k, round));
    }
    cost.push_back(c);
    if (!done) {
      pending.push_back(t);
      experts_pending += static_cast<int64_t>(task_members(cfg, t).size());
    }
  }
  pending = longest_first(pending, cost);
  if (s.comm.is_root() && round == 0)
    log::info("experts   {} of {} experts to train on {} rank{}{}", experts_pending, cfg.experts.count, s.comm.size(),
              s.comm.size() == 1 ? "" : "s",
              cfg.experts.fuse > 1 ? fmt::format(", {} at a time ({} tasks)", cfg.experts.fuse, pending.size()) : "");
  if (s.comm.is_root() && round == 0 && cfg.experts.fuse > 1 && task_count(cfg) < s.comm.size())
    log::warn(
        "experts.fuse {} makes {} expert tasks for {} ranks: {} rank{} will have no expert to train "
        "(set experts.fuse to at most experts.count / ranks = {})",
        cfg.experts.fuse, task_count(cfg), s.comm.size(), s.comm.size() - task_count(cfg),
        s.comm.size() - task_count(cfg) == 1 ? "" : "s", std::max<int64_t>(1, cfg.experts.count / s.comm.size()));
  // The fingerprint an expert task's per-epoch checkpoint must match, from rank 0.
  std::string fingerprint = s.comm.is_root() && round == 0 ? task_fingerprint(s) : std::string();
  s.comm.broadcast_bytes(fingerprint, 0);
  // SIGTERM / SIGUSR1 (a Slurm time limit) stop a task at its next batch:
  // no task is handed out after it, the finished ones stay recorded, and
  // every rank ends the stage with Stopped (exit 75, resumable).
  StopScope stop_scope;
  std::string stopped;  // rank 0: why the first stopped task stopped
  run_tasks(
      s.comm, pending, [&](int64_t t) { return train_expert_task(s, t, round, fingerprint); },
      [&](int64_t, int, const json& result) {
        if (result.contains("stopped") && stopped.empty()) stopped = result["stopped"].get<std::string>();
        for (const auto& r : result.at("experts"))
          s.run.mark_done(expert_task_key(r.at("id").get<int64_t>(), round), r);
      });
  s.comm.broadcast_bytes(stopped, 0);
  if (stopped.empty() && train::stop_requested_anywhere(s.comm))
    stopped = "experts: a stop signal (SIGTERM or SIGUSR1) reached the job";
  if (!stopped.empty())
    throw Stopped(fmt::format("{}; the finished expert tasks are kept and --resume continues the others", stopped));
}

std::unique_ptr<Stage> make_experts_stage() { return std::make_unique<ExpertsStage>(); }

}  // namespace smoe::pipeline
