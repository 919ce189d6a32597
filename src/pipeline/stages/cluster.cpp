// Stage "cluster" (Algorithm 1 step 2): the initial-gate strategy of
// cluster.method turns the embeddings into the frozen initial gate g0 [N, K],
// every rank clustering its own rows and writing their g0 (and assignment)
// at their offsets in g0.f32 (assign.f32); cluster.pt keeps what the
// strategy fitted (centroids, ...). No rank gathers a per-sample tensor.
#include <torch/torch.h>

#include "cluster/distributed_kmeans.h"
#include "cluster/initial_gate.h"
#include "cluster/quality.h"
#include "comm/tensor_collectives.h"
#include "core/error.h"
#include "core/hash.h"
#include "core/log.h"
#include "core/rng.h"
#include "data/sampler.h"
#include "eval/plots.h"
#include "models/moe.h"
#include "pipeline/run_state.h"
#include "pipeline/stage.h"
#include "pipeline/stages/common.h"
#include "train/checkpoint.h"
#include "train/tensors.h"

using nlohmann::json;

namespace smoe::pipeline {
namespace {

// clusters.png: the cluster x class counts of the training split, each row
// labelled with its size and purity.
void write_cluster_plot(const RunState& s, const json& q) {
  std::vector<std::string> rows, cols;
  const auto& purity = q["cluster_purity"];
  for (size_t k = 0; k < purity.size(); ++k)
    rows.push_back(purity[k].is_null() ? fmt::format("cluster {} (empty)", k)
                                       : fmt::format("{} ({:.2f})", k, purity[k].get<double>()));
  for (const auto& n : s.train->manifest().class_names) cols.push_back(n.size() > 10 ? n.substr(0, 9) + "." : n);
  eval::plot_heatmap(s.run.file("clusters.png"),
                     fmt::format("training samples per cluster (purity) and class: DBI {:.2f}, NMI {:.2f}",
                                 q["davies_bouldin"].get<double>(), q["nmi"].is_null() ? 0.0 : q["nmi"].get<double>()),
                     q["contingency"].get<std::vector<std::vector<int64_t>>>(), rows, cols);
  auto show = [](const json& v) { return v.is_null() ? std::string("n/a") : fmt::format("{:.3f}", v.get<double>()); };
  log::info("cluster   quality: DBI {}, silhouette {}, purity {}, NMI {}, ARI {} ({})", show(q["davies_bouldin"]),
            show(q["silhouette"]), show(q["purity"]), show(q["nmi"]), show(q["ari"]), s.run.file("clusters.png"));
}

class ClusterStage : public Stage {
 public:
  std::string name() const override { return "cluster"; }
  std::vector<std::string> keys() const override {
    return {"cluster.", "experts.count", "gate.temperature", "gate.hard"};
  }
  void check_inputs(const Config& c, const data::Manifest& m) const override {
    const int64_t n = training_samples(c, m);
    SMOE_CHECK(n >= c.experts.count,
               "config key 'experts.count' is {} but the training split '{}' has {} samples: every expert needs at "
               "least one",
               c.experts.count, c.data.train_split, n);
    if (!c.cluster.features.empty()) check_cluster_features(c, m);
  }
  json run(RunState& s) override {
    // Every rank clusters its own rows; any split gives the same centroids
    // and g0 (distributed_kmeans.h); no rank holds all the rows.
    cluster::InitialGateInputs in;
    const auto [ids, embedding] = local_embedding_rows(s);
    in.ids = ids;
    in.embedding = cluster_feature_rows(s, ids, embedding);
    in.labels = s.train_labels().index_select(0, in.ids);
    in.comm = &s.comm;
    in.num_classes = s.train->num_classes();
    in.kmeans = s.cfg.cluster.kmeans;
    in.kmeans.k = s.cfg.experts.count;
    in.kmeans.seed = derive_seed(s.cfg.seed, "cluster");
    in.temperature = s.cfg.gate.temperature;
    in.hard = s.cfg.gate.hard;
    in.options = s.cfg.cluster.methods.get(s.cfg.cluster.method);
    cluster::InitialGateFit fit = s.store.initial_gate().fit(in);
    json features = "embeddings";
    if (!s.cfg.cluster.features.empty()) {
      features = {{"file", s.cfg.cluster.features}, {"dim", in.embedding.size(1)}};
      if (s.comm.is_root()) features["sha256"] = sha256_file(s.cfg.cluster.features);
      // The gate routes from the base model's embeddings, not from the file's
      // features: it starts from each cluster's mean embedding.
      if (fit.saved.count("centroids")) {
        auto [sums, counts] = cluster::group_sums(embedding, fit.g0.argmax(1), fit.g0.size(1), s.comm);
        fit.saved["feature_centroids"] = fit.saved["centroids"];
        fit.saved["centroids"] = (sums / counts.clamp_min(1).unsqueeze(1).to(sums.dtype())).to(torch::kFloat);
      }
    }
    // The clusters' quality, whatever the strategy (a strategy without an
    // assignment is scored by its g0's argmax); every rank scores its rows.
    cluster::QualityOptions qo;
    qo.silhouette_sample = s.cfg.cluster.silhouette_sample;
    qo.seed = derive_seed(s.cfg.seed, "cluster-quality");
    const at::Tensor scored = fit.assign.defined() ? fit.assign : fit.g0.argmax(1);
    // Scored against the true labels (the training labels may be noisy or pseudo-labels).
    const at::Tensor truth = torch::tensor(s.train->true_labels(), torch::kLong).index_select(0, in.ids);
    const json quality =
        cluster::cluster_quality(in.embedding, in.ids, scored, truth, in.kmeans.k, in.num_classes, s.comm, qo);
    // g0 (and the assignment) of every row, written by the rank that has it.
    const int64_t N = s.train->size(), K = s.cfg.experts.count;
    s.drop_rows(s.g0);
    s.g0 = train::RowCache::write(s.store.g0_path(), N, {K}, in.ids, fit.g0, s.comm,
                                  s.reserve_rows(train::RowCache::bytes_of(N, {K})));
    if (fit.assign.defined())
      train::RowCache::write(s.store.assign_path(), N, {}, in.ids, fit.assign, s.comm, train::RowCacheMode::disk);
    json record;
    if (s.comm.is_root()) {
      record = fit.record;
      record["features"] = features;
      record["quality"] = quality;
      write_cluster_plot(s, quality);
      train::StateDict saved(fit.saved.begin(), fit.saved.end());
      saved["temperature"] = torch::tensor(s.cfg.gate.temperature, torch::kDouble);
      record["sha256"] = train::save_state(saved, s.store.cluster_path());
      record["g0_sha256"] = sha256_file(s.store.g0_path());
      record["g0_mode"] = train::mode_name(s.g0->mode());  // rank 0's: in RAM or read from g0.f32
      record["gate_mass"] = train::to_doubles(s.g0->sum_rows(s.cfg.eval.batch_size) / static_cast<double>(N));
    }
    return record;
  }
};

}  // namespace

std::unique_ptr<Stage> make_cluster_stage() { return std::make_unique<ClusterStage>(); }

}  // namespace smoe::pipeline
