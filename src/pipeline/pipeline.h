// Algorithm 1 of Royer et al. end to end, as DESIGN.md lays it out:
//
//   base      all ranks   train phi data-parallel (or load base.checkpoint)
//   embed     all ranks   pre-logits and logits of every training sample, gathered on rank 0
//   cluster   rank 0      K-means -> frozen initial gate g0, broadcast to every rank
//   gate      rank 0      linear gate g fitted to g0 by KL(g0 || g)
//   experts   all ranks   expert k + its stacking ensembler, handed out dynamically
//   eval      all ranks   one pass over the test split -> report.json, anytime.csv, plots
//
// Each stage and each expert task is recorded in run.json when it finishes;
// a resumed run skips what is recorded and redoes the rest, with the same
// seeds, so it ends with the same results as an uninterrupted run.
#pragma once

#include <ATen/core/Tensor.h>

#include <memory>
#include <nlohmann/json.hpp>

#include "comm/communicator.h"
#include "core/config.h"
#include "data/dataset.h"
#include "models/heads.h"
#include "models/network.h"
#include "pipeline/run_dir.h"
#include "pipeline/runtime.h"

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
  void stage_eval();

  // Collective: the experts' inputs (cached trunk features) on every rank.
  void prepare_expert_inputs();
  nlohmann::json train_expert_task(int64_t k);
  const data::Dataset& train_set();
  std::shared_ptr<const data::Dataset> train_ptr();
  std::shared_ptr<const data::Dataset> test_ptr();
  models::NetworkSpec network_spec();
  at::Tensor gate_inputs(const at::Tensor& prelogits) const;
  // Loads what a finished stage left, on the ranks that need it.
  void load_base();
  // Rank 0 alone: reads embeddings.pt / cluster.pt when not in memory.
  void root_load_embeddings();
  void root_load_g0();
  // Collective: every rank gets the training logits and g0 from rank 0.
  void share_expert_inputs();
  template <typename Fn>
  void timed_stage(const std::string& name, Fn&& fn);

  Config cfg_;
  comm::Communicator& comm_;
  RunDir& run_;
  RuntimeInfo rt_;
  std::shared_ptr<data::Dataset> train_, test_;
  models::Backbone base_{nullptr};
  at::Tensor train_prelogits_;  // [N, D], rank 0
  at::Tensor train_logits_;     // [N, C], every rank
  at::Tensor g0_;               // [N, K], every rank
  std::unique_ptr<class ExpertInputsHolder> inputs_;
  double trunk_cache_seconds_ = 0;
};

}  // namespace smoe::pipeline
