// Stage "em" (Royer et al., "An alternative joint training scheme"): after
// Algorithm 1, em.steps rounds of
//
//   E-step  every rank computes, for the rows it owns (batches of
//           eval.batch_size ids, batch b on rank b mod P), the likelihoods
//           e'_k(y|x) of every expert, the gate g(k|x) and the posterior
//           q(k|x) ∝ g(k|x) e'_k(y|x), its rows of the N x K matrix q (zeros
//           elsewhere); an allreduce (sum) in chunks of em.chunk_samples rows
//           gives every rank the whole q — NCCL when the tensors live on a
//           GPU, MPI otherwise. Each entry has exactly one non-zero term, so
//           the sum is exact and q does not depend on the rank count. q
//           replaces the gate targets.
//   M-step  experts and ensemblers continue from the previous round with
//           w_k = clip(q(k|x), gamma, 1), handed out dynamically as in the
//           experts stage; the gate is refitted by KL(q || g).
//
// Each round writes its own checkpoints (em-R/) and records its steps in
// run.json, so a run killed inside a round resumes exactly: q_R is saved
// before any expert of round R changes.
#include <torch/torch.h>

#include <filesystem>

#include "comm/tensor_collectives.h"
#include "core/heartbeat.h"
#include "core/log.h"
#include "core/progress.h"
#include "core/rng.h"
#include "pipeline/run_state.h"
#include "pipeline/stage.h"
#include "pipeline/stages/common.h"
#include "train/checkpoint.h"
#include "train/expert_trainer.h"
#include "train/losses.h"

using nlohmann::json;

namespace smoe::pipeline {
namespace {

// Collective: the posterior q(k|x) ∝ g(k|x) e'_k(y|x) [N, K] of round
// `round`'s gate and experts on every training sample, on every rank.
// Rows are owned, not experts: batch b of eval.batch_size consecutive ids is
// computed by rank b mod P with the gate and every expert (experts are small),
// so all P ranks work whatever K, and a batch's values do not depend on the
// rank computing it. Rows of other ranks stay zero, and one chunked allreduce
// of q assembles it (each entry has exactly one non-zero term: exact, so q
// does not depend on the rank count). Fills `stats`.
at::Tensor row_owned_posterior(RunState& s, int64_t round, json& stats) {
  torch::NoGradGuard no_grad;
  const int64_t N = s.train->size(), K = s.cfg.experts.count, batch = s.cfg.eval.batch_size;
  const int P = s.comm.size();
  Progress eval_clock("e-step", 1, 1);
  at::Tensor labels = s.train_labels().to(s.rt.device);
  at::Tensor q = torch::zeros({N, K});
  models::MoeModel moe = s.store.load_moe(s.base, round);
  models::Gate gate = s.store.load_gate(round, torch::kCPU);
  gate->eval();
  for (int64_t k = 0; k < K; ++k) moe.expert(k).eval();
  int64_t rows = 0;
  for (int64_t start = batch * s.comm.rank(); start < N; start += batch * P) {
    heartbeat::beat("e-step batch");
    std::vector<int64_t> ids;
    for (int64_t i = start; i < std::min(N, start + batch); ++i) ids.push_back(i);
    const int64_t n = static_cast<int64_t>(ids.size());
    const at::Tensor x = s.expert_inputs->plain(ids).to(s.rt.device);
    const at::Tensor base_logits = s.base_logits(ids).to(s.rt.device);
    const at::Tensor y = labels.narrow(0, start, n).unsqueeze(1);
    at::Tensor likelihood = torch::empty({n, K});
    for (int64_t k = 0; k < K; ++k) {
      at::Tensor probs = moe.ensembled_probs(k, s.cfg.ensembler.kind, base_logits, moe.expert(k).forward(x));
      likelihood.select(1, k).copy_(probs.gather(1, y).squeeze(1));
    }
    q.narrow(0, start, n).copy_(train::posterior(gate->probabilities(s.gate_features(ids)), likelihood));
    rows += n;
  }
  const double eval_s = eval_clock.seconds();
  s.comm.barrier();  // the allreduce's time should not include waiting for slower ranks
  Progress reduce_clock("allreduce", 1, 1);
  const int64_t chunk = s.cfg.em.chunk_samples;
  q = q.to(s.rt.device);
  comm::allreduce_in_chunks(s.comm, q, chunk);
  stats["expert_eval_seconds"] = eval_s;
  stats["rows_on_rank_0"] = rows;
  stats["allreduce_seconds"] = reduce_clock.seconds();
  stats["allreduce_bytes"] = N * K * static_cast<int64_t>(sizeof(float));
  stats["allreduce_chunks"] = (N + chunk - 1) / chunk;
  stats["device"] = s.rt.device_name();
  return q.cpu();
}

class EmStage : public Stage {
 public:
  std::string name() const override { return "em"; }
  std::vector<std::string> keys() const override { return {"em.", "scheme"}; }
  void check(const Config& c) const override {
    SMOE_CHECK(c.em.steps >= 1, "config key 'em.steps': scheme '{}' runs EM rounds, so em.steps must be at least 1",
               c.scheme);
    // The M-step refits the gate: a fixed routing cannot follow q.
    const auto& initial = *cluster::initial_gates().get(c.cluster.method);
    const std::string kind = initial.gate_kind(c.gate.kind);
    SMOE_CHECK(
        models::gate_kinds().get(kind)({2, 2, c.experts.count})->trainable(),
        "config key 'cluster.method': '{}' routes with the fixed gate '{}', which EM cannot refit (scheme '{}'); "
        "use cluster.method: kmeans",
        c.cluster.method, kind, c.scheme);
  }
  json run(RunState& s) override {
    s.share_expert_inputs();
    s.prepare_expert_inputs();
    at::Tensor previous = s.g0;
    for (int64_t r = 1; r <= s.cfg.em.steps; ++r) {
      const std::string round_key = fmt::format("em/{}", r);
      if (s.run.done(round_key)) {
        if (s.comm.is_root()) previous = train::load_state(s.store.q_path(r)).at("q");
        log::info("em        round {} already done (run.json): skipped", r);
        continue;
      }
      std::filesystem::create_directories(s.store.round_dir(r));
      json record;
      at::Tensor q = e_step(s, r, previous, record);
      // M-step: experts and ensemblers, then the gate.
      Progress mclock(fmt::format("em {} m-step", r), 1, 1);
      s.targets = q;
      run_expert_round(s, r);
      if (s.comm.is_root() && !s.run.done(round_key + "/gate")) {
        models::Gate gate = s.store.load_gate(r - 1, torch::kCPU);
        const train::GateRowsOf x = [&](const std::vector<int64_t>& ids) { return s.gate_features(ids); };
        train::train_gate(*gate, x, q, s.cfg.gate.optim, derive_seed(s.cfg.seed, "em-gate", {uint64_t(r)}));
        s.run.mark_done(round_key + "/gate", {{"kl_final", train::gate_fit(*gate, x, q, s.cfg.eval.batch_size).kl},
                                              {"sha256", train::save_module(*gate, s.store.gate_path(r))}});
      }
      s.comm.barrier();
      record["mstep_seconds"] = mclock.seconds();
      // Where this round leaves the model.
      json summary = evaluate_test(s, r);
      if (s.comm.is_root()) {
        record["round"] = r;
        for (const char* key : {"moe", "base", "anytime_summary", "specialisation"}) record[key] = summary[key];
        s.run.mark_done(round_key, record);
        log::info("em        round {} done: MoE bagging {:.2f}%, stacking {:.2f}%", r,
                  100 * summary["moe"]["bagging"]["accuracy"].get<double>(),
                  100 * summary["moe"]["stacking"]["accuracy"].get<double>());
      }
      previous = q;
    }
    return {{"rounds", s.cfg.em.steps}};
  }

 private:
  // The E-step of round r (or its saved result when run.json records it).
  static at::Tensor e_step(RunState& s, int64_t r, const at::Tensor& previous, json& record) {
    const std::string key = fmt::format("em/{}/estep", r);
    at::Tensor q;
    if (s.run.done(key)) {
      if (s.comm.is_root()) q = train::load_state(s.store.q_path(r)).at("q");
      record["estep"] = s.run.record(key);
      return comm::broadcast_tensor(s.comm, q, 0);
    }
    Progress clock(fmt::format("em {} e-step", r), 1, 1);
    json stats;
    q = row_owned_posterior(s, r - 1, stats);
    stats["seconds"] = clock.seconds();
    stats["changed_top_expert"] = (q.argmax(1) != previous.argmax(1)).sum().item<int64_t>();
    if (s.comm.is_root()) {
      train::save_state({{"q", q}}, s.store.q_path(r));
      s.run.mark_done(key, stats);
    }
    record["estep"] = stats;
    log::info(
        "em        round {} E-step: experts {:.1f} s, allreduce {:.3f} s ({} bytes in {} chunk(s) on {}), "
        "{} samples changed their top expert",
        r, stats["expert_eval_seconds"].get<double>(), stats["allreduce_seconds"].get<double>(),
        stats["allreduce_bytes"].get<int64_t>(), stats["allreduce_chunks"].get<int64_t>(), s.rt.device_name(),
        stats["changed_top_expert"].get<int64_t>());
    return q;
  }
};

}  // namespace

std::unique_ptr<Stage> make_em_stage() { return std::make_unique<EmStage>(); }

}  // namespace smoe::pipeline
