// EM mode (Royer et al., "An alternative joint training scheme"; DESIGN.md,
// "EM mode"): after Algorithm 1, em.steps rounds of
//
//   E-step  every rank evaluates the experts it holds (expert k on rank
//           k mod P) on the training samples, filling its columns of the
//           N x K matrix of e'_k(y|x) (zeros elsewhere); an allreduce (sum)
//           in chunks of em.chunk_samples rows gives every rank the whole
//           matrix — NCCL when the tensors live on a GPU, MPI otherwise. Each
//           entry has exactly one non-zero term, so the sum is exact and the
//           result does not depend on the rank count. The posterior
//           q(k|x) ∝ g(k|x) e'_k(y|x) replaces the gate targets.
//   M-step  experts and ensemblers continue from the previous round with
//           w_k = clip(q(k|x), gamma, 1), handed out dynamically as in the
//           experts stage; the gate is refitted by KL(q || g).
//
// Algorithm 1 is em.steps = 0. Each round writes its own checkpoints (em-R/)
// and records its steps in run.json, so a run killed inside a round resumes
// exactly: q_R is saved before any expert of round R changes.
#include <torch/torch.h>

#include <filesystem>

#include "comm/tensor_collectives.h"
#include "core/log.h"
#include "core/progress.h"
#include "core/rng.h"
#include "pipeline/pipeline.h"
#include "pipeline/scheduler.h"
#include "train/checkpoint.h"
#include "train/expert_trainer.h"
#include "train/inference.h"
#include "train/losses.h"
#include "train/tensors.h"

using nlohmann::json;

namespace smoe::pipeline {

at::Tensor Pipeline::expert_likelihoods(int64_t round, json& stats) {
  torch::NoGradGuard no_grad;
  const int64_t N = train_->size(), K = cfg_.experts.count;
  const bool stacking = cfg_.ensembler.kind == "stacking";
  Progress eval_clock("e-step", 1, 1);
  at::Tensor labels = torch::tensor(train_->labels(), torch::kLong).to(rt_.device);
  at::Tensor local = torch::zeros({N, K}, torch::TensorOptions().device(rt_.device));
  const auto& inputs = *inputs_;
  at::Tensor all_inputs;
  for (int64_t k = comm_.rank(); k < K; k += comm_.size()) {
    if (!all_inputs.defined()) all_inputs = inputs.all(cfg_.eval.batch_size);
    models::Backbone expert(network_spec(), cfg_.experts.branch_after);
    train::load_module(*expert, expert_path(k, round));
    expert->to(rt_.device);
    at::Tensor logits = train::logits_of(expert, all_inputs, cfg_.eval.batch_size);
    at::Tensor probs;
    if (stacking) {
      models::Stacking st(train_->num_classes());
      train::load_module(*st, stacking_path(k, round));
      st->to(rt_.device);
      probs = torch::softmax(st->forward(train_logits_.to(rt_.device), logits), 1);
    } else {
      probs = models::bagging_probs(train_logits_.to(rt_.device), logits);
    }
    local.select(1, k).copy_(probs.gather(1, labels.unsqueeze(1)).squeeze(1));
  }
  const double eval_s = eval_clock.seconds();
  comm_.barrier();  // the allreduce's time should not include waiting for slower ranks
  Progress reduce_clock("allreduce", 1, 1);
  const int64_t chunk = cfg_.em.chunk_samples;
  comm::allreduce_in_chunks(comm_, local, chunk);
  stats["expert_eval_seconds"] = eval_s;
  stats["allreduce_seconds"] = reduce_clock.seconds();
  stats["allreduce_bytes"] = N * K * static_cast<int64_t>(sizeof(float));
  stats["allreduce_chunks"] = (N + chunk - 1) / chunk;
  stats["device"] = rt_.device_name();
  return local.cpu();
}

void Pipeline::stage_em() {
  if (cfg_.em.steps == 0) {  // Algorithm 1: nothing to do, but record it
    if (comm_.is_root() && !run_.done("em")) run_.mark_done("em", {{"rounds", 0}, {"seconds", 0.0}});
    return;
  }
  timed_stage("em", [&]() -> json {
    share_expert_inputs();
    prepare_expert_inputs();
    at::Tensor labels = torch::tensor(train_->labels(), torch::kLong);
    at::Tensor previous = g0_;
    for (int64_t r = 1; r <= cfg_.em.steps; ++r) {
      const std::string round_key = fmt::format("em/{}", r);
      const std::string q_file = run_.file(fmt::format("em-{}/q.pt", r));
      if (run_.done(round_key)) {
        if (comm_.is_root()) previous = train::load_state(q_file).at("q");
        log::info("em        round {} already done (run.json): skipped", r);
        continue;
      }
      std::filesystem::create_directories(run_.file(fmt::format("em-{}", r)));
      json record;
      // E-step.
      at::Tensor q;
      if (run_.done(round_key + "/estep")) {
        if (comm_.is_root()) q = train::load_state(q_file).at("q");
        q = comm::broadcast_tensor(comm_, q, 0);
        record["estep"] = run_.record(round_key + "/estep");
      } else {
        Progress clock(fmt::format("em {} e-step", r), 1, 1);
        json stats;
        at::Tensor likelihood = expert_likelihoods(r - 1, stats);
        // The current gate g on every training sample (rank 0 computes, all receive).
        at::Tensor g;
        if (comm_.is_root()) {
          root_load_embeddings();
          models::Gate gate(network_spec().prelogit_dim(), cfg_.experts.count);
          train::load_module(*gate, gate_path(r - 1));
          torch::NoGradGuard no_grad;
          g = torch::softmax(gate->forward(gate_inputs(train_prelogits_)), 1);
        }
        g = comm::broadcast_tensor(comm_, g, 0);
        q = train::posterior(g, likelihood);
        stats["seconds"] = clock.seconds();
        stats["changed_top_expert"] = (q.argmax(1) != previous.argmax(1)).sum().item<int64_t>();
        if (comm_.is_root()) {
          train::save_state({{"q", q}}, q_file);
          run_.mark_done(round_key + "/estep", stats);
        }
        record["estep"] = stats;
        log::info(
            "em        round {} E-step: experts {:.1f} s, allreduce {:.3f} s ({} bytes in {} chunk(s) on {}), "
            "{} samples changed their top expert",
            r, stats["expert_eval_seconds"].get<double>(), stats["allreduce_seconds"].get<double>(),
            stats["allreduce_bytes"].get<int64_t>(), stats["allreduce_chunks"].get<int64_t>(), rt_.device_name(),
            stats["changed_top_expert"].get<int64_t>());
      }
      // M-step: experts and ensemblers, then the gate.
      Progress mclock(fmt::format("em {} m-step", r), 1, 1);
      targets_ = q;
      std::vector<int64_t> pending;
      for (int64_t k = 0; k < cfg_.experts.count; ++k)
        if (!run_.done(expert_task_key(k, r))) pending.push_back(k);
      run_tasks(
          comm_, longest_first(pending, train::to_doubles(q.sum(0))),
          [&](int64_t k) { return train_expert_task(k, r); },
          [&](int64_t k, int rank, const json& result) { run_.mark_done(expert_task_key(k, r), result); });
      if (comm_.is_root() && !run_.done(round_key + "/gate")) {
        root_load_embeddings();
        models::Gate gate(network_spec().prelogit_dim(), cfg_.experts.count);
        train::load_module(*gate, gate_path(r - 1));
        at::Tensor x = gate_inputs(train_prelogits_);
        train::train_gate(gate, x, q, cfg_.gate.optim, derive_seed(cfg_.seed, "em-gate", {uint64_t(r)}));
        torch::NoGradGuard no_grad;
        run_.mark_done(round_key + "/gate",
                       {{"kl_final", train::kl_to_logits(q, gate->forward(x)).mean().item<double>()},
                        {"sha256", train::save_module(*gate, gate_path(r))}});
      }
      comm_.barrier();
      record["mstep_seconds"] = mclock.seconds();
      // Where this round leaves the model.
      json summary = evaluate_test(r);
      if (comm_.is_root()) {
        record["round"] = r;
        record["moe"] = summary["moe"];
        record["base"] = summary["base"];
        record["anytime_summary"] = summary["anytime_summary"];
        record["specialisation"] = summary["specialisation"];
        run_.mark_done(round_key, record);
        log::info("em        round {} done: MoE bagging {:.2f}%, stacking {:.2f}%", r,
                  100 * summary["moe"]["bagging"]["accuracy"].get<double>(),
                  100 * summary["moe"]["stacking"]["accuracy"].get<double>());
      }
      previous = q;
    }
    return {{"rounds", cfg_.em.steps}};
  });
}

}  // namespace smoe::pipeline
