// Stage "pseudo_label" (DFCP-MoE Section 3.1.4; scheme dfcp): the training
// samples relabelled from a small trusted labelled subset.
//
// A Siamese projection (two layers on the base model's embeddings, outputs
// L2-normalised; the two branches share it) is trained with the pairwise
// contrastive loss y d^2 + (1 - y) max(0, m - d)^2 on pairs of trusted
// samples (half same-class, half not). Each sample then takes the label of
// its most similar trusted sample (similarity 1 - d/2) when the similarity
// is at least tau, else it is an outlier and keeps its given label. tau is
// the threshold of the grid 0, 0.01, ..., 1 with the best F1 on a held-out
// part of the trusted subset (precision: correct among those labelled;
// recall: correct among all). The later stages train on the pseudo-labels
// (report.json and run.json say how many were right against the true
// labels); pseudo_labels.pt keeps them for a resume.
//
// Collective: the trusted rows (a bounded share of the data) and the
// projection go to every rank, each rank labels its own rows; the projection
// is trained on rank 0 and broadcast, so the labels do not depend on the
// rank count.
#include <torch/torch.h>

#include <random>
#include <tuple>

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

struct ProjectionImpl : torch::nn::Module {
  ProjectionImpl(int64_t in, int64_t dim)
      : fc1(register_module("fc1", torch::nn::Linear(in, 2 * dim))),
        fc2(register_module("fc2", torch::nn::Linear(2 * dim, dim))) {}
  at::Tensor forward(const at::Tensor& x) {
    return torch::nn::functional::normalize(fc2(torch::relu(fc1(x))),
                                            torch::nn::functional::NormalizeFuncOptions().dim(1).eps(1e-8));
  }
  torch::nn::Linear fc1, fc2;
};
TORCH_MODULE(Projection);

// Nearest reference row (by distance of projections) of each row: (distance, index).
std::pair<at::Tensor, at::Tensor> nearest(const at::Tensor& z, const at::Tensor& ref) {
  if (z.size(0) == 0) return {torch::zeros({0}), torch::zeros({0}, torch::kLong)};
  auto [d, i] = torch::cdist(z, ref).min(1);
  return {d, i};
}

// Trains the projection on pairs of the trusted rows x [t, D] with labels y.
void train_projection(Projection& net, const at::Tensor& x, const at::Tensor& y, const PseudoConfig& c,
                      uint64_t seed) {
  torch::optim::Adam opt(net->parameters(), torch::optim::AdamOptions(c.lr));
  const int64_t n = x.size(0);
  std::vector<std::vector<int64_t>> by_class;
  const int64_t C = y.max().item<int64_t>() + 1;
  by_class.resize(static_cast<size_t>(C));
  for (int64_t i = 0; i < n; ++i) by_class[static_cast<size_t>(y[i].item<int64_t>())].push_back(i);
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<int64_t> any(0, n - 1);
  for (int64_t step = 0; step < c.steps; ++step) {
    std::vector<int64_t> a, b;
    std::vector<float> same;
    for (int64_t p = 0; p < c.batch_size; ++p) {
      const int64_t i = any(rng);
      const auto& mates = by_class[static_cast<size_t>(y[i].item<int64_t>())];
      int64_t j = any(rng);
      if (p % 2 == 0 && mates.size() > 1) j = mates[std::uniform_int_distribution<size_t>(0, mates.size() - 1)(rng)];
      a.push_back(i);
      b.push_back(j);
      same.push_back(y[i].item<int64_t>() == y[j].item<int64_t>() ? 1.0f : 0.0f);
    }
    at::Tensor za = net->forward(x.index_select(0, torch::tensor(a))), zb = net->forward(x.index_select(0, torch::tensor(b)));
    at::Tensor d = (za - zb).pow(2).sum(1).clamp_min(1e-12).sqrt();
    at::Tensor s = torch::tensor(same);
    at::Tensor loss = (s * d.pow(2) + (1 - s) * (c.margin - d).clamp_min(0).pow(2)).mean();
    opt.zero_grad();
    loss.backward();
    opt.step();
  }
}

class PseudoLabelStage : public Stage {
 public:
  std::string name() const override { return "pseudo_label"; }
  std::vector<std::string> keys() const override { return {"pseudo.", "data.trusted_fraction"}; }
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
    auto [ids, rows] = local_embedding_rows(s);
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
    if (s.comm.is_root()) t_rows = comm::reorder_by_id(t_rows, t_ids), t_ids = std::get<0>(t_ids.sort());
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
    SMOE_CHECK(fit_v.size() >= 2 && !val_v.empty(), "pseudo_label: {} trusted samples are too few to hold out a "
               "validation share", T);
    at::Tensor fit = torch::tensor(fit_v, torch::kLong), val = torch::tensor(val_v, torch::kLong);

    Projection net(rows.size(1), s.cfg.pseudo.dim);
    if (s.comm.is_root()) {
      torch::manual_seed(derive_seed(seed, "pseudo-init"));
      net = Projection(rows.size(1), s.cfg.pseudo.dim);
      torch::AutoGradMode with_grad(true);
      train_projection(net, t_rows.index_select(0, fit), t_labels.index_select(0, fit), s.cfg.pseudo,
                       derive_seed(seed, "pseudo-pairs"));
    }
    broadcast_module(s.comm, *net, 0);

    // tau: the best F1 on the held-out trusted rows, labelled from the others.
    at::Tensor z_fit = net->forward(t_rows.index_select(0, fit));
    auto [d_val, i_val] = nearest(net->forward(t_rows.index_select(0, val)), z_fit);
    at::Tensor sim_val = 1 - d_val / 2;
    at::Tensor right = t_labels.index_select(0, fit).index_select(0, i_val) == t_labels.index_select(0, val);
    double tau = 0, best_f1 = -1, best_p = 0, best_r = 0;
    for (int k = 0; k <= 100; ++k) {
      const double t = k / 100.0;
      at::Tensor labelled = sim_val >= t;
      const double tp = (labelled & right).sum().item<double>(), n_lab = labelled.sum().item<double>();
      const double precision = n_lab > 0 ? tp / n_lab : 0, recall = tp / static_cast<double>(val.size(0));
      const double f1 = precision + recall > 0 ? 2 * precision * recall / (precision + recall) : 0;
      if (f1 > best_f1) best_f1 = f1, tau = t, best_p = precision, best_r = recall;
    }

    // Every rank labels its rows from the whole trusted subset.
    at::Tensor z_all = net->forward(t_rows);
    auto [d, nn] = nearest(net->forward(rows), z_all);
    at::Tensor label = t_labels.index_select(0, nn);
    at::Tensor inlier = (1 - d / 2) >= tau;
    std::vector<int64_t> out(static_cast<size_t>(ids.size(0)));
    for (int64_t r = 0; r < ids.size(0); ++r) {
      const int64_t id = ids[r].item<int64_t>();
      out[static_cast<size_t>(r)] = data::is_trusted(seed, id, s.cfg.data.trusted_fraction) ? truth[static_cast<size_t>(id)]
                                    : inlier[r].item<bool>()                             ? label[r].item<int64_t>()
                                                                                         : -1;
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
                {"tau", tau},
                {"f1", best_f1},
                {"precision", best_p},
                {"recall", best_r},
                {"outliers", share(outlier, others)},
                {"pseudo_label_accuracy", share(pseudo == t, assigned)},
                {"given_label_accuracy", share(g == t, others)},
                {"training_label_accuracy", share(labels == t, others)}};
      record["sha256"] = train::save_state({{"labels", labels}, {"pseudo", pseudo}}, s.store.pseudo_labels_path());
      log::info("pseudo    {} trusted samples, tau {:.2f} (F1 {:.3f}): {:.1f}% outliers; labels right {:.2f}% given -> "
                "{:.2f}% pseudo-labelled ({:.2f}% of those labelled)",
                T, tau, best_f1, 100 * record["outliers"].get<double>(), 100 * record["given_label_accuracy"].get<double>(),
                100 * record["training_label_accuracy"].get<double>(), 100 * record["pseudo_label_accuracy"].get<double>());
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
