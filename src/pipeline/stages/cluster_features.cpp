// What the clustering and the pseudo-labelling run on: the base model's
// embeddings (embed stage), or per-sample features made elsewhere
// (cluster.features; DFCP-MoE clusters an ImageNet network's features).
// HDF5 files are read by rows, so that a rank reads only its own; a torch
// file is read whole and must fit the rank's memory budget.
#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <memory>
#include <numeric>

#include "core/error.h"
#include "data/feature_file.h"
#include "models/moe.h"
#include "pipeline/memory_plan.h"
#include "pipeline/run_state.h"
#include "pipeline/stages/common.h"
#include "train/checkpoint.h"

namespace smoe::pipeline {
namespace {

bool is_torch_file(const std::string& path) {
  const std::string ext = std::filesystem::path(path).extension().string();
  return ext == ".pt" || ext == ".pth";
}

// The whole tensor of a torch file: a tensor, or a dict with "features".
at::Tensor load_torch_features(const std::string& path) {
  const c10::IValue v = train::load_pickle(path, "features file");
  at::Tensor t;
  if (v.isTensor()) {
    t = v.toTensor();
  } else if (v.isGenericDict()) {
    for (const auto& item : v.toGenericDict())
      if (item.key().isString() && item.key().toStringRef() == "features" && item.value().isTensor())
        t = item.value().toTensor();
  }
  SMOE_CHECK(t.defined(), "features file {}: expected a tensor [N, D] or a dict with a tensor 'features'", path);
  SMOE_CHECK(t.dim() == 2 && t.is_floating_point(),
             "features file {}: expected a float tensor [N, D], got a {}-d {} one", path, t.dim(),
             c10::toString(t.scalar_type()));
  return t.to(torch::kFloat).contiguous();
}

}  // namespace

int64_t check_cluster_features(const Config& c, const data::Manifest& m) {
  const std::string& path = c.cluster.features;
  const int64_t samples = training_samples(c, m);
  auto check_rows = [&](int64_t rows) {
    SMOE_CHECK(rows >= samples,
               "features file {} (config key 'cluster.features') has {} rows but the training split has {} samples: "
               "row i must be training sample i",
               path, rows, samples);
  };
  // A row of the run's that holds NaN or inf is refused before any stage
  // runs (not when the cluster stage reads it, after the base model has
  // trained). The HDF5 file is scanned in blocks: memory stays bounded.
  auto refuse_row = [&](int64_t row) {
    fail("features file {} (config key 'cluster.features'): row {} holds NaN or inf", path, row);
  };
  if (is_torch_file(path)) {
    std::error_code ec;
    const auto bytes = std::filesystem::file_size(path, ec);
    SMOE_CHECK(!ec, "features file {} (config key 'cluster.features'): {}", path, ec.message());
    check_fits_budget(
        c, m, static_cast<int64_t>(bytes),
        fmt::format("the features file {} (config key 'cluster.features', a torch file read whole)", path),
        "write the features as HDF5 (dataset /features), which is read by rows");
    const at::Tensor t = load_torch_features(path);
    check_rows(t.size(0));
    const at::Tensor bad = (~torch::isfinite(t.narrow(0, 0, samples))).any(1).nonzero();
    if (bad.numel() > 0) refuse_row(bad[0][0].item<int64_t>());
    return t.size(1);
  }
  data::FeatureFile f(path);
  check_rows(f.rows());
  const int64_t block = std::max<int64_t>(1, (int64_t{16} << 20) / (4 * std::max<int64_t>(f.dim(), 1)));
  for (int64_t first = 0; first < samples; first += block) {
    std::vector<int64_t> ids(static_cast<size_t>(std::min(block, samples - first)));
    std::iota(ids.begin(), ids.end(), first);
    const std::vector<float> values = f.read_rows(ids);
    const auto it = std::find_if(values.begin(), values.end(), [](float v) { return !std::isfinite(v); });
    if (it != values.end()) refuse_row(first + (it - values.begin()) / f.dim());
  }
  return f.dim();
}

int64_t training_samples(const Config& c, const data::Manifest& m) {
  const int64_t count = m.split(c.data.train_split).count;
  return c.data.limit_train > 0 ? std::min(c.data.limit_train, count) : count;
}

void check_batch_fits(const Config& c, const data::Manifest& m, const std::string& section, int64_t batch_size) {
  const int64_t n = training_samples(c, m);
  SMOE_CHECK(batch_size <= n,
             "config key '{}.batch_size' is {} but the run trains on {} samples (the training split '{}'{}): a "
             "step needs a whole batch",
             section, batch_size, n, c.data.train_split,
             c.data.limit_train > 0 ? fmt::format(", data.limit_train {}", c.data.limit_train) : "");
}

at::Tensor cluster_feature_rows(RunState& s, const at::Tensor& ids, const at::Tensor& embedding_rows) {
  const std::string& path = s.cfg.cluster.features;
  if (path.empty()) return embedding_rows;
  const std::vector<int64_t> want(ids.data_ptr<int64_t>(), ids.data_ptr<int64_t>() + ids.numel());
  at::Tensor features;
  if (is_torch_file(path)) {
    SMOE_CHECK(s.take_budget(static_cast<int64_t>(std::filesystem::file_size(path))),
               "features file {} is larger than what is left of runtime.memory_budget_mb on a rank: a torch file is "
               "read whole; write the features as HDF5 (dataset /features), which is read by rows",
               path);
    const at::Tensor all = load_torch_features(path);
    SMOE_CHECK(all.size(0) >= s.train->size(), "features file {} has {} rows for {} training samples", path,
               all.size(0), s.train->size());
    features = all.index_select(0, ids).clone();
  } else {
    data::FeatureFile f(path);
    std::vector<float> values = f.read_rows(want);
    features = torch::from_blob(values.data(), {static_cast<int64_t>(want.size()), f.dim()}, torch::kFloat).clone();
  }
  SMOE_CHECK(torch::isfinite(features).all().item<bool>(), "features file {}: rows of this run hold NaN or inf", path);
  return s.cfg.cluster.normalize ? models::normalize_rows(features) : features;
}

}  // namespace smoe::pipeline
