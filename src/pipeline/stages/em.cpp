// Stage "em" (Royer et al., "An alternative joint training scheme"): after
// Algorithm 1, em.steps rounds of
//
//   E-step  every rank computes, for the rows it owns (batches of
//           eval.batch_size ids, batch b on rank b mod P), the likelihoods
//           e'_k(y|x) of every expert, the gate g(k|x) and the posterior
//           q(k|x) ∝ g(k|x) e'_k(y|x), and writes those rows of q at their
//           offsets in em-R/q.f32 (train/row_cache.h): no rank gathers q,
//           and a row's values do not depend on the rank computing it. One
//           allreduce of [K + 2] exact integer counts (rows, samples whose
//           top expert changed, each expert's mass of q) closes the step —
//           NCCL when the tensors live on a GPU, MPI otherwise. q replaces
//           the gate targets.
//   M-step  experts and ensemblers continue from the previous round with
//           w_k = clip(q(k|x), gamma, 1) (each expert task reads its column
//           of q), handed out dynamically as in the experts stage; the gate
//           is refitted by KL(q || g), reading q by batch.
//
// Each round writes its own checkpoints (em-R/) and records its steps in
// run.json, so a run killed inside a round resumes exactly: q_R is saved
// before any expert of round R changes.
#include <torch/torch.h>

#include <filesystem>

#include "comm/tensor_collectives.h"
#include "core/hash.h"
#include "core/heartbeat.h"
#include "core/log.h"
#include "core/progress.h"
#include "core/rng.h"
#include "models/init_lock.h"
#include "pipeline/run_state.h"
#include "pipeline/stage.h"
#include "pipeline/stages/common.h"
#include "pipeline/stages/evaluation.h"
#include "train/checkpoint.h"
#include "train/expert_trainer.h"
#include "train/losses.h"
#include "train/tensors.h"

using nlohmann::json;

namespace smoe::pipeline {
namespace {

// Collective: the posterior q(k|x) ∝ g(k|x) e'_k(y|x) [N, K] of round
// `round`'s gate and experts on every training sample, written to `file`.
// Rows are owned, not experts: batch b of eval.batch_size consecutive ids is
// computed by rank b mod P with the gate and every expert (experts are small)
// and written by that rank at its offset, so all P ranks work whatever K.
// The counts (rows, top expert changed from `previous`, the mass of q in
// units of 2^-32) are integers, so their allreduce is exact and q's
// statistics do not depend on the rank count either. Fills `stats`.
std::unique_ptr<train::RowCache> row_owned_posterior(RunState& s, int64_t round, const train::RowCache& previous,
                                                     const std::string& file, json& stats) {
  torch::NoGradGuard no_grad;
  const int64_t N = s.train->size(), K = s.cfg.experts.count, batch = s.cfg.eval.batch_size;
  constexpr double kUnit = 4294967296.0;  // 2^32: N < 2^31 rows of mass <= 1 fit an int64
  Progress eval_clock("e-step", 1, 1);
  const at::Tensor labels = s.train_labels();
  models::MoeModel moe = s.store.load_moe(s.base, round);
  models::Gate gate = s.store.load_gate(round, torch::kCPU);
  gate->eval();
  for (int64_t k = 0; k < K; ++k) moe.expert(k).eval();
  int64_t rows = 0, changed = 0;
  at::Tensor mass = torch::zeros({K}, torch::kLong);
  auto posterior_rows = [&](const std::vector<int64_t>& ids) {
    heartbeat::beat("e-step batch");
    const int64_t n = static_cast<int64_t>(ids.size());
    const at::Tensor x = s.expert_inputs->plain(ids).to(s.rt.device);
    const at::Tensor base_logits = s.base_logits(ids).to(s.rt.device);
    const at::Tensor y = labels.narrow(0, ids.front(), n).unsqueeze(1).to(s.rt.device);
    at::Tensor likelihood = torch::empty({n, K});
    for (int64_t k = 0; k < K; ++k) {
      at::Tensor probs = moe.ensembled_probs(k, s.cfg.ensembler.kind, base_logits, moe.expert(k).forward(x));
      likelihood.select(1, k).copy_(probs.gather(1, y).squeeze(1));
    }
    at::Tensor q = train::posterior(gate->probabilities(s.gate_features(ids)), likelihood);
    changed += (q.argmax(1) != previous.rows(ids).argmax(1)).sum().item<int64_t>();
    mass += (q.to(torch::kDouble) * kUnit).round().to(torch::kLong).sum(0);
    rows += n;
    return q;
  };
  auto q = train::RowCache::build(N, {K}, batch, s.comm, s.reserve_rows(train::RowCache::bytes_of(N, {K})), file,
                                  posterior_rows, /*keep_file=*/true);
  const double eval_s = eval_clock.seconds();
  s.comm.barrier();  // the allreduce's time should not include waiting for slower ranks
  Progress reduce_clock("allreduce", 1, 1);
  at::Tensor counts = torch::cat({torch::tensor({rows, changed}, torch::kLong), mass}).to(s.rt.device);
  comm::allreduce(s.comm, counts);
  counts = counts.cpu();
  SMOE_ASSERT(counts[0].item<int64_t>() == N, "e-step: {} rows of {}", counts[0].item<int64_t>(), N);
  stats["expert_eval_seconds"] = eval_s;
  stats["rows_on_rank_0"] = rows;
  stats["allreduce_seconds"] = reduce_clock.seconds();
  stats["allreduce_bytes"] = counts.numel() * static_cast<int64_t>(sizeof(int64_t));
  stats["q_file_bytes"] = q->bytes();
  stats["q_mode"] = train::mode_name(q->mode());
  stats["changed_top_expert"] = counts[1].item<int64_t>();
  stats["q_mass"] = train::to_doubles(counts.narrow(0, 2, K).to(torch::kDouble) / (kUnit * static_cast<double>(N)));
  stats["device"] = s.rt.device_name();
  return q;
}

class EmStage : public Stage {
 public:
  std::string name() const override { return "em"; }
  std::optional<TrainedModel> trained_model(const Config&) const override { return TrainedModel{}; }
  std::vector<std::string> keys() const override { return {"em.", "scheme"}; }
  void check_inputs(const Config& c, const data::Manifest& m) const override { check_trunk_cache_fits(c, m); }
  void check(const Config& c) const override {
    SMOE_CHECK(c.em.steps >= 1, "config key 'em.steps': scheme '{}' runs EM rounds, so em.steps must be at least 1",
               c.scheme);
    // The M-step refits the gate: a fixed routing cannot follow q.
    const auto& initial = *cluster::initial_gates().get(c.cluster.method);
    const std::string kind = initial.gate_kind(c.gate.kind);
    const models::ProbeScope probe;  // a gate built to be asked: no draw from the ranks' generator
    models::GateSpec g(2, 2, c.experts.count);
    g.options = c.gate.kinds.get(kind);
    SMOE_CHECK(
        models::gate_kinds().get(kind)(g)->trainable(),
        "config key 'cluster.method': '{}' routes with the fixed gate '{}', which EM cannot refit (scheme '{}'); "
        "use cluster.method: kmeans",
        c.cluster.method, kind, c.scheme);
  }
  json run(RunState& s) override {
    s.prepare_expert_inputs();
    const train::RowCache* previous = &s.open_g0();
    for (int64_t r = 1; r <= s.cfg.em.steps; ++r) {
      const std::string round_key = fmt::format("em/{}", r);
      if (s.run.done(round_key)) {
        previous = &s.open_q(r);
        log::info("em        round {} already done (run.json): skipped", r);
        continue;
      }
      std::filesystem::create_directories(s.store.round_dir(r));
      json record;
      const train::RowCache& q = e_step(s, r, *previous, record);
      // M-step: experts and ensemblers, then the gate.
      Progress mclock(fmt::format("em {} m-step", r), 1, 1);
      s.targets = &q;
      run_expert_round(s, r);
      if (s.comm.is_root() && !s.run.done(round_key + "/gate")) {
        models::Gate gate = s.store.load_gate(r - 1, torch::kCPU);
        const train::GateRowsOf x = [&](const std::vector<int64_t>& ids) { return s.gate_features(ids); };
        const train::RowsOf targets = [&](const std::vector<int64_t>& ids) { return q.rows(ids); };
        train::train_gate(*gate, x, targets, q.size(), s.cfg.gate.optim,
                          derive_seed(s.cfg.seed, "em-gate", {uint64_t(r)}));
        s.run.mark_done(round_key + "/gate",
                        {{"kl_final", train::gate_fit(*gate, x, targets, q.size(), s.cfg.eval.batch_size).kl},
                         {"sha256", train::save_module(*gate, s.store.gate_path(r))}});
      }
      s.comm.barrier();
      record["mstep_seconds"] = mclock.seconds();
      // Where this round leaves the model.
      json summary = evaluate_test(s, *make_single_gate_evaluation(s, r));
      if (s.comm.is_root()) {
        record["round"] = r;
        for (const char* key : {"moe", "base", "anytime_summary", "specialisation"}) record[key] = summary[key];
        s.run.mark_done(round_key, record);
        log::info("em        round {} done: MoE bagging {:.2f}%, stacking {:.2f}%", r,
                  100 * summary["moe"]["bagging"]["accuracy"].get<double>(),
                  100 * summary["moe"]["stacking"]["accuracy"].get<double>());
      }
      previous = &q;
    }
    return {{"rounds", s.cfg.em.steps}};
  }

 private:
  // The E-step of round r (or its saved result when run.json records it):
  // q_r, now state.q.
  static const train::RowCache& e_step(RunState& s, int64_t r, const train::RowCache& previous, json& record) {
    const std::string key = fmt::format("em/{}/estep", r);
    if (s.run.done(key)) {
      record["estep"] = s.run.record(key);
      return s.open_q(r);
    }
    Progress clock(fmt::format("em {} e-step", r), 1, 1);
    json stats;
    auto q = row_owned_posterior(s, r - 1, previous, s.store.q_path(r), stats);
    stats["seconds"] = clock.seconds();
    if (s.comm.is_root()) {
      stats["q_sha256"] = sha256_file(s.store.q_path(r));
      s.run.mark_done(key, stats);
    }
    record["estep"] = stats;
    log::info(
        "em        round {} E-step: experts {:.1f} s, allreduce {:.3f} s ({} bytes on {}; q {} MiB in {}), "
        "{} samples changed their top expert",
        r, stats["expert_eval_seconds"].get<double>(), stats["allreduce_seconds"].get<double>(),
        stats["allreduce_bytes"].get<int64_t>(), s.rt.device_name(), static_cast<double>(q->bytes()) / 1048576.0,
        train::mode_name(q->mode()), stats["changed_top_expert"].get<int64_t>());
    // q replaces the previous round's (which `previous` may be: it is no longer read).
    s.drop_rows(s.q);
    s.q = std::move(q);
    return *s.q;
  }
};

}  // namespace

std::unique_ptr<Stage> make_em_stage() { return std::make_unique<EmStage>(); }

}  // namespace smoe::pipeline
