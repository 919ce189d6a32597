#include "pipeline/predict.h"

#include <torch/torch.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <functional>
#include <memory>
#include <numeric>

#include "comm/mpi_communicator.h"
#include "comm/router.h"
#include "core/atomic_file.h"
#include "core/error.h"
#include "data/batch.h"
#include "data/prediction_file.h"
#include "models/moe_export.h"
#include "pipeline/finished_run.h"
#include "pipeline/job.h"
#include "pipeline/run_dir.h"
#include "pipeline/runtime.h"

namespace smoe::pipeline {
namespace {

constexpr const char* kCommand = "smoe predict";

// What rank 0 checked and every rank needs.
struct Plan {
  std::string split;
  int64_t rows = 0;
};

Plan check_request(const PredictRequest& r, const FinishedRun& f) {
  SMOE_CHECK(!r.out.empty(), "{}: give --out FILE", kCommand);
  SMOE_CHECK(r.force || !std::filesystem::exists(r.out), "{}: {} exists (--force replaces it)", kCommand, r.out);
  SMOE_CHECK(r.limit >= 0, "{}: --limit must be >= 0, got {}", kCommand, r.limit);
  choose_rule(f, kCommand, r.rule, r.tau, r.ensembler);
  SMOE_CHECK(std::filesystem::exists(std::filesystem::path(r.input) / data::Manifest::kFileName),
             "{}: --input {} is not a dataset folder (no {}; smoe-data convert makes one from .npy pairs, image "
             "folders and the usual formats)",
             kCommand, r.input, data::Manifest::kFileName);
  const data::Manifest in = data::Manifest::load(r.input);
  Plan p;
  p.split = r.split.empty() ? f.cfg.data.test_split : r.split;
  const data::SplitInfo& split = in.split(p.split);
  SMOE_CHECK(in.shape == f.manifest.shape,
             "{}: --input {} holds images [{}] but the run's model takes [{}] (the images of {})", kCommand, r.input,
             fmt::join(in.shape, ", "), fmt::join(f.manifest.shape, ", "), f.cfg.data.path);
  SMOE_CHECK(in.num_classes == f.manifest.num_classes,
             "{}: --input {} has {} classes but the run's model predicts {} (the classes of {})", kCommand, r.input,
             in.num_classes, f.manifest.num_classes, f.cfg.data.path);
  p.rows = r.limit > 0 ? std::min(r.limit, split.count) : split.count;
  SMOE_CHECK(p.rows > 0, "{}: split '{}' of --input {} holds no samples", kCommand, p.split, r.input);
  return p;
}

// This rank's rows [first, last): the expert that ran for each (largest
// weight, -1 for none), the class, the early exit, the label.
using Rule = std::function<models::Prediction(const at::Tensor&)>;

data::PredictionRows predict_rows(const Rule& predict, const data::Dataset& ds, int64_t first, int64_t last,
                                  int64_t batch, c10::Device device, bool probs, int64_t& correct) {
  data::PredictionRows out;
  out.first = first;
  for (int64_t start = first; start < last; start += batch) {
    std::vector<int64_t> ids(static_cast<size_t>(std::min(batch, last - start)));
    std::iota(ids.begin(), ids.end(), start);
    const data::Batch b = data::make_batch(ds, ids, data::Transform{});
    const models::Prediction r = predict(b.images.to(device));
    const at::Tensor prediction = r.probs.argmax(1).cpu().contiguous();
    const auto top = r.weight.max(1);
    const at::Tensor expert =
        torch::where(std::get<0>(top) > 0, std::get<1>(top), torch::full_like(std::get<1>(top), -1)).cpu().contiguous();
    const at::Tensor early = r.early.to(torch::kUInt8).cpu().contiguous();
    auto append = [](auto& v, const at::Tensor& t, auto tag) {
      using T = decltype(tag);
      const T* p = t.data_ptr<T>();
      v.insert(v.end(), p, p + t.numel());
    };
    append(out.prediction, prediction, int64_t{});
    append(out.expert, expert, int64_t{});
    append(out.early_exit, early, uint8_t{});
    append(out.label, b.labels.contiguous(), int64_t{});
    if (probs) append(out.probs, r.probs.to(torch::kFloat).cpu().contiguous(), float{});
    correct += (prediction == b.labels).sum().item<int64_t>();
  }
  return out;
}

}  // namespace

int run_predict(comm::MpiRuntime& mpi, comm::DeviceRouter& comm, const PredictRequest& r) {
  // Phase 1: rank 0 checks everything before anything is written.
  std::string error;
  Plan plan;
  if (comm.is_root()) {
    try {
      plan = check_request(r, open_finished_run(r.run_dir, kCommand, /*allow_joint=*/true));
    } catch (const std::exception& e) {
      error = e.what();
    }
  }
  if (root_error_ends_job(comm, error)) return 1;
  std::string shared = fmt::format("{} {}", plan.rows, plan.split);
  comm.broadcast_bytes(shared, 0);
  plan.rows = std::stoll(shared.substr(0, shared.find(' ')));
  plan.split = shared.substr(shared.find(' ') + 1);

  // Every rank: the run, its runtime settings (with --set runtime.*), its device.
  FinishedRun f = open_finished_run(r.run_dir, kCommand, /*allow_joint=*/true);
  f.cfg = Config::from_yaml_text(f.run.saved_config_yaml(), f.run.file("config.yaml"), r.sets);
  if (comm.is_root()) {
    const auto diffs = config_differences(f.run.saved_config_yaml(), f.cfg);
    if (!diffs.empty())
      error = fmt::format("{}: only eval.* and runtime.* keys may change ({})", kCommand, fmt::join(diffs, "; "));
  }
  if (root_error_ends_job(comm, error)) return 1;
  const RuleChoice choice = choose_rule(f, kCommand, r.rule, r.tau, r.ensembler);
  RuntimeInfo rt;
  try {
    rt = setup_runtime(f.cfg.runtime, comm, mpi.local_rank(), mpi.local_size());
  } catch (const std::exception&) {
    if (comm.is_root()) throw;
    return 1;
  }

  // Phase 2: rank 0 creates the file (a temporary name until every row is
  // in); each rank writes its block of rows at their offsets.
  data::PredictionLayout layout{plan.rows, f.manifest.num_classes, true, r.probs};
  std::unique_ptr<AtomicPath> out;
  std::string where;
  if (comm.is_root()) {
    try {
      out = std::make_unique<AtomicPath>(r.out);
      where = out->temp() + "\n" + data::offsets_text(data::create_prediction_file(out->temp(), layout));
    } catch (const std::exception& e) {
      error = e.what();
    }
  }
  if (root_error_ends_job(comm, error)) return 1;
  comm.broadcast_bytes(where, 0);
  const std::string temp = where.substr(0, where.find('\n'));
  const data::DatasetOffsets offsets = data::offsets_from_text(where.substr(where.find('\n') + 1));
  int64_t correct = 0;
  try {
    // The rule of the run's model family (finished_run.h checked its name).
    const auto& rules = f.model.joint() ? models::joint_export_rules() : models::export_rules();
    const auto index = std::find(rules.begin(), rules.end(), choice.rule) - rules.begin();
    std::unique_ptr<models::MoeModel> single;
    std::shared_ptr<models::JointMoeImpl> joint;
    Rule predict;
    if (f.model.joint()) {
      joint = load_finished_joint_moe(f, rt.device);
      predict = [&, rule = static_cast<models::JointMoeImpl::Rule>(index)](const at::Tensor& x) {
        return joint->predict(x, rule);
      };
    } else {
      single = std::make_unique<models::MoeModel>(load_finished_moe(f, rt.device));
      predict = [&, rule = static_cast<models::MoeModel::Predict>(index),
                 tau = torch::tensor(choice.tau, torch::kDouble)](const at::Tensor& x) {
        return single->predict_routed(x, rule, choice.ensembler, tau);
      };
    }
    data::DatasetOptions o;
    o.limit = plan.rows;
    o.memory_budget_mb = f.cfg.runtime.memory_budget_mb;
    const auto ds = data::Dataset::open(r.input, plan.split, o);
    const int64_t P = comm.size(), me = comm.rank();
    const int64_t first = plan.rows * me / P, last = plan.rows * (me + 1) / P;
    const data::PredictionRows rows =
        predict_rows(predict, *ds, first, last, f.cfg.eval.batch_size, rt.device, r.probs, correct);
    data::write_prediction_rows(temp, layout, offsets, rows);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "smoe: error%s: %s\n", comm.size() > 1 ? fmt::format(" on rank {}", comm.rank()).c_str() : "",
                 e.what());
    std::fflush(stderr);
    if (comm.size() > 1) comm.abort(1, e.what());
    return 1;
  }
  const int64_t total = comm.allreduce_sum(correct);
  comm.barrier();  // every rank's rows are on disk
  if (comm.is_root()) {
    const double accuracy = static_cast<double>(total) / static_cast<double>(plan.rows);
    data::set_prediction_attributes(
        out->temp(),
        {{"run", std::filesystem::absolute(r.run_dir).lexically_normal().string()},
         {"input", std::filesystem::absolute(r.input).lexically_normal().string()},
         {"split", plan.split},
         {"rule", choice.rule},
         {"ensembler", choice.ensembler}},
        {{"tau", choice.tau}, {"samples", static_cast<double>(plan.rows)}, {"accuracy", accuracy}});
    out->commit();
    std::printf("smoe predict: %lld samples of %s/%s -> %s (rule %s, tau %g, ensembler %s): accuracy %.4f\n",
                static_cast<long long>(plan.rows), r.input.c_str(), plan.split.c_str(), r.out.c_str(),
                choice.rule.c_str(), choice.tau, choice.ensembler.c_str(), accuracy);
  }
  return 0;
}

}  // namespace smoe::pipeline
