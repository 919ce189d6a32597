// Stage "pseudo_label" (DFCP-MoE Section 3.1.4; scheme dfcp): the training
// samples relabelled from a small trusted labelled subset
// (data.trusted_fraction, chosen by a hash of the id; never noisy) with the
// Siamese similarity of cluster/pseudo_label.h, on the base model's
// embeddings (or cluster.features). A sample whose most similar trusted sample is below tau is an
// outlier and keeps its given label. The later stages train on these labels;
// pseudo_labels.pt keeps them for a resume, and run.json how many were right
// against the true labels.
//
// Collective: the trusted rows (a bounded share of the data) go to every
// rank, the projection is trained on rank 0 and broadcast, each rank labels
// its own rows: the labels do not depend on the rank count.
#include <torch/torch.h>

#include <tuple>

#include "cluster/pseudo_label.h"
#include "comm/tensor_collectives.h"
#include "core/error.h"
#include "core/log.h"
#include "core/rng.h"
#include "data/dataset.h"
#include "pipeline/run_state.h"
#include "pipeline/stage.h"
#include "pipeline/stages/common.h"
#include "train/checkpoint.h"
#include "train/tensors.h"

using nlohmann::json;

namespace smoe::pipeline {
namespace {

class PseudoLabelStage : public Stage {
 public:
  std::string name() const override { return "pseudo_label"; }
  std::vector<std::string> keys() const override { return {"pseudo.", "data.trusted_fraction", "cluster.features"}; }
  void check(const Config& c) const override {
    SMOE_CHECK(c.data.trusted_fraction > 0,
               "config key 'data.trusted_fraction' is 0: the pseudo_label stage (scheme dfcp) labels the samples from "
               "a trusted subset");
  }
  void restore(RunState& s) override {
    const auto saved = train::load_state(s.store.pseudo_labels_path());
    relabel(s, saved.at("labels"));
    log::info("pseudo    already done (run.json): training on the pseudo-labels of {}", s.store.pseudo_labels_path());
  }
  json run(RunState& s) override {
    torch::NoGradGuard outer_no_grad;
    const int64_t N = s.train->size();
    auto [ids, embedding] = local_embedding_rows(s);
    const at::Tensor rows = cluster_feature_rows(s, ids, embedding);
    const uint64_t seed = trusted_seed(s.cfg);
    const std::vector<int64_t>& truth = s.train->true_labels();
    const std::vector<int64_t>& given = s.train->labels();

    // The trusted rows, in id order, on every rank.
    std::vector<int64_t> mine_trusted;
    for (int64_t r = 0; r < ids.size(0); ++r)
      if (data::is_trusted(seed, ids[r].item<int64_t>(), s.cfg.data.trusted_fraction)) mine_trusted.push_back(r);
    at::Tensor pick = torch::tensor(mine_trusted, torch::kLong);
    at::Tensor t_ids = comm::gather_rows(s.comm, ids.index_select(0, pick).contiguous(), 0);
    at::Tensor t_rows = comm::gather_rows(s.comm, rows.index_select(0, pick).contiguous(), 0);
    if (s.comm.is_root()) {
      at::Tensor order = t_ids.argsort();
      t_rows = t_rows.index_select(0, order);
      t_ids = t_ids.index_select(0, order);
    }
    t_ids = comm::broadcast_tensor(s.comm, t_ids, 0);
    t_rows = comm::broadcast_tensor(s.comm, t_rows, 0);
    const int64_t T = t_ids.size(0);
    SMOE_CHECK(T >= 4, "data.trusted_fraction {} gives {} trusted samples of {}: too few to learn a similarity",
               s.cfg.data.trusted_fraction, T, N);
    std::vector<int64_t> t_labels_v;
    for (int64_t i = 0; i < T; ++i) t_labels_v.push_back(truth[static_cast<size_t>(t_ids[i].item<int64_t>())]);
    at::Tensor t_labels = torch::tensor(t_labels_v, torch::kLong);
    // Held out (by a hash of the id) to choose tau.
    std::vector<int64_t> fit_v, val_v;
    for (int64_t i = 0; i < T; ++i)
      (data::is_trusted(derive_seed(seed, "pseudo-validation"), t_ids[i].item<int64_t>(), s.cfg.pseudo.validation)
           ? val_v
           : fit_v)
          .push_back(i);
    SMOE_CHECK(fit_v.size() >= 2 && !val_v.empty(),
               "pseudo_label: {} trusted samples are too few to hold out a "
               "validation share",
               T);
    at::Tensor fit = torch::tensor(fit_v, torch::kLong), val = torch::tensor(val_v, torch::kLong);

    cluster::PseudoLabelOptions po = s.cfg.pseudo.labeler;
    po.seed = derive_seed(seed, "pseudo");
    cluster::PseudoLabeler labeler(rows.size(1), po);
    if (s.comm.is_root()) labeler.fit(t_rows.index_select(0, fit), t_labels.index_select(0, fit));
    broadcast_module(s.comm, labeler.module(), 0);
    const cluster::TauChoice tau = labeler.choose_tau(t_rows.index_select(0, fit), t_labels.index_select(0, fit),
                                                      t_rows.index_select(0, val), t_labels.index_select(0, val));

    // Every rank labels its rows from the whole trusted subset; a trusted
    // row keeps its own label.
    at::Tensor label = labeler.label(rows, t_rows, t_labels, tau.tau);
    std::vector<int64_t> out(static_cast<size_t>(ids.size(0)));
    for (int64_t r = 0; r < ids.size(0); ++r) {
      const int64_t id = ids[r].item<int64_t>();
      out[static_cast<size_t>(r)] = data::is_trusted(seed, id, s.cfg.data.trusted_fraction)
                                        ? truth[static_cast<size_t>(id)]
                                        : label[r].item<int64_t>();
    }
    at::Tensor all_ids = comm::gather_rows(s.comm, ids.contiguous(), 0);
    at::Tensor all = comm::gather_rows(s.comm, torch::tensor(out, torch::kLong), 0);
    json record;
    at::Tensor labels;
    if (s.comm.is_root()) {
      at::Tensor pseudo = comm::reorder_by_id(all, all_ids);
      at::Tensor g = torch::tensor(given, torch::kLong), t = torch::tensor(truth, torch::kLong);
      at::Tensor outlier = pseudo < 0;
      labels = torch::where(outlier, g, pseudo);  // an outlier keeps its given label
      at::Tensor trusted = torch::zeros({N}, torch::kBool).index_fill_(0, t_ids, true);
      at::Tensor others = trusted.logical_not();
      at::Tensor assigned = others & outlier.logical_not();
      auto share = [](const at::Tensor& num, const at::Tensor& den) {
        const double d = den.sum().item<double>();
        return d > 0 ? (num & den).sum().item<double>() / d : 0.0;
      };
      record = {{"trusted", T},
                {"held_out", val.size(0)},
                {"tau", tau.tau},
                {"f1", tau.f1},
                {"precision", tau.precision},
                {"recall", tau.recall},
                {"outliers", share(outlier, others)},
                {"pseudo_label_accuracy", share(pseudo == t, assigned)},
                {"given_label_accuracy", share(g == t, others)},
                {"training_label_accuracy", share(labels == t, others)}};
      record["sha256"] = train::save_state({{"labels", labels}, {"pseudo", pseudo}}, s.store.pseudo_labels_path());
      log::info(
          "pseudo    {} trusted samples, tau {:.2f} (F1 {:.3f}): {:.1f}% outliers; labels right {:.2f}% given -> "
          "{:.2f}% pseudo-labelled ({:.2f}% of those labelled)",
          T, tau.tau, tau.f1, 100 * record["outliers"].get<double>(),
          100 * record["given_label_accuracy"].get<double>(), 100 * record["training_label_accuracy"].get<double>(),
          100 * record["pseudo_label_accuracy"].get<double>());
    }
    relabel(s, comm::broadcast_tensor(s.comm, labels, 0));
    return record;
  }

 private:
  static void relabel(RunState& s, const at::Tensor& labels) {
    at::Tensor l = labels.to(torch::kLong).contiguous();
    s.train = s.train->relabelled(std::vector<int64_t>(l.data_ptr<int64_t>(), l.data_ptr<int64_t>() + l.numel()));
  }
};

}  // namespace

std::unique_ptr<Stage> make_pseudo_label_stage() { return std::make_unique<PseudoLabelStage>(); }

}  // namespace smoe::pipeline
