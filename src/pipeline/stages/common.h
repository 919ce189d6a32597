// What several stages share: an expert round (Algorithm 1's experts stage is
// round 0, each EM M-step a later round), the embedding rows the clustering
// reads, the checks of what a stage trains on, a module's broadcast. (The
// evaluation on the test split: evaluation.h.)
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <utility>
#include <vector>

namespace torch::nn {
class Module;
}
namespace smoe::comm {
class Communicator;
}

namespace smoe::pipeline {

struct RunState;

// Collective: trains, handed out dynamically over the ranks, every expert of
// `round` (and its ensemblers) that run.json does not record as finished,
// towards state.targets (0: from the base model and g0; r >= 1: continuing
// round r-1 on q_r).
void run_expert_round(RunState& state, int64_t round);

// The keys that decide a scheme's first training stage's data and model:
// the seed, the splits and their limits, the label noise and trusted subset,
// and the model section (the base and joint stages add their own).
std::vector<std::string> first_stage_keys();

// This rank's share of the training samples' pre-logit embeddings: the rows
// it embedded in this process, or after a resume the same rows read back
// from embeddings.f32 (ids [n_r], rows [n_r, D]; L2-normalised with
// cluster.normalize). Any split gives the same results downstream.
std::pair<at::Tensor, at::Tensor> local_embedding_rows(RunState& state);

// What the clustering and the pseudo-labelling use for rows `ids` (this
// rank's, from local_embedding_rows): the rows of the cluster.features file
// when one is set (L2-normalised with cluster.normalize), else
// `embedding_rows` themselves (cluster_features.cpp).
at::Tensor cluster_feature_rows(RunState& state, const at::Tensor& ids, const at::Tensor& embedding_rows);
// Checks the cluster.features file (readable, a float [N, D] with a finite
// row for every training sample; a torch file, read whole, within the
// memory budget) and returns D; fails naming the file.
int64_t check_cluster_features(const Config& c, const data::Manifest& m);

// The training samples a run uses: the training split, cut to data.limit_train.
int64_t training_samples(const Config& c, const data::Manifest& m);
// A trainer that steps on whole batches (the base model's, the jointly
// trained MoE's) needs at least one: `section`.batch_size against the
// training samples, checked at load.
void check_batch_fits(const Config& c, const data::Manifest& m, const std::string& section, int64_t batch_size);
// experts.trunk_cache memory: the frozen trunk's features of every training
// sample must fit what the data splits leave of runtime.memory_budget_mb
// (memory_plan.h), checked at load by the stages that train experts.
void check_trunk_cache_fits(const Config& c, const data::Manifest& m);

// Collective: every rank takes rank `root`'s parameters and buffers of `m`
// (a model built on each rank starts as the root's, whatever each rank's
// random generator did).
void broadcast_module(comm::Communicator& comm, torch::nn::Module& m, int root);

}  // namespace smoe::pipeline
