// Algorithm 1 of Royer et al. end to end, as DESIGN.md lays it out:
//
//   base      all ranks   train phi data-parallel (or load base.checkpoint)
//   embed     all ranks   pre-logits and logits of every training sample, gathered on rank 0
//   cluster   rank 0      K-means -> frozen initial gate g0, broadcast to every rank
//   gate      rank 0      linear gate g fitted to g0 by KL(g0 || g)
//   experts   all ranks   expert k + its stacking ensembler, handed out dynamically
//   em        all ranks   em.steps rounds: E-step (allreduced expert likelihoods -> posterior q),
//                         M-step (experts, ensemblers and gate continue on q)
//   eval      all ranks   one pass over the test split -> report.json, anytime.csv, plots
//
// Each stage and each expert task is recorded in run.json when it finishes;
// a resumed run skips what is recorded and redoes the rest, with the same
// seeds, so it ends with the same results as an uninterrupted run.
#pragma once

#include <ATen/core/Tensor.h>

#include <functional>
#include <memory>
#include <nlohmann/json.hpp>

#include "comm/communicator.h"
#include "core/config.h"
#include "data/dataset.h"
#include "models/heads.h"
#include "models/network.h"
#include "pipeline/run_dir.h"
#include "pipeline/runtime.h"
#include "train/expert_trainer.h"

namespace smoe::pipeline {

class Pipeline {
 public:
  Pipeline(Config config, comm::Communicator& comm, RunDir& run, RuntimeInfo runtime);
  ~Pipeline();

  // Every stage not yet recorded as finished, then the evaluation.
  void train();
  // The evaluation alone, from a finished run's checkpoints.
  void evaluate();

 private:
  void stage_base();
  void stage_embed();
  void stage_cluster();
  void stage_gate();
  void stage_experts();
  void stage_em();
  void stage_eval();

  // Collective: the experts' inputs (cached trunk features) on every rank.
  void prepare_expert_inputs();
  // Expert k and its stacking ensembler for round `round` (0: Algorithm 1,
  // from the base model and g0; r >= 1: EM M-step, from round r-1 and q_r),
  // trained towards targets_.
  nlohmann::json train_expert_task(int64_t k, int64_t round);
  // Collective (EM E-step): e'_k(y|x) for every training sample and expert of
  // `round`, each rank filling the columns of the experts it holds, summed by
  // chunked allreduce. Fills `stats` (seconds, bytes) on every rank.
  at::Tensor expert_likelihoods(int64_t round, nlohmann::json& stats);
  // Collective: evaluates round `round`'s model on the test split; the
  // report (without run bookkeeping) on rank 0, null elsewhere.
  nlohmann::json evaluate_test(int64_t round);

  // Checkpoint files of a round (0 = Algorithm 1, r = after EM round r).
  std::string expert_path(int64_t k, int64_t round) const;
  std::string stacking_path(int64_t k, int64_t round) const;
  std::string gate_path(int64_t round) const;
  int64_t final_round() const;
  models::NetworkSpec network_spec();
  at::Tensor gate_inputs(const at::Tensor& prelogits) const;
  // Loads what a finished stage left, on the ranks that need it.
  void load_base(const std::string& path);
  // Rank 0 alone: reads embeddings.pt / cluster.pt when not in memory.
  void root_load_embeddings();
  void root_load_g0();
  // Collective: every rank gets the training logits and g0 from rank 0.
  void share_expert_inputs();
  // Runs fn unless `name` is recorded as done, then records it with its duration.
  void timed_stage(const std::string& name, const std::function<nlohmann::json()>& fn);

  Config cfg_;
  comm::Communicator& comm_;
  RunDir& run_;
  RuntimeInfo rt_;
  std::shared_ptr<data::Dataset> train_, test_;
  models::Backbone base_{nullptr};
  at::Tensor train_prelogits_;                   // [N, D], rank 0
  at::Tensor train_logits_;                      // [N, C], every rank
  at::Tensor g0_;                                // [N, K], every rank
  at::Tensor targets_;                           // [N, K] what the experts fit: g0, or q of the current EM round
  std::unique_ptr<train::ExpertInputs> inputs_;  // the frozen trunk's outputs for the experts
  double trunk_cache_seconds_ = 0;
};

}  // namespace smoe::pipeline
