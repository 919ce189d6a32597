// What anytime inference costs in wall-clock time (issue 29): per-batch
// latency (p50, p99) and images/s of a finished run's base model, top-1 MoE
// and anytime model at several tau, at batch sizes 1, 32 and 256, on the
// run's test images already normalised in memory, with the fraction of early
// exits beside each; every MoE rule twice, as smoe computes it (conditional
// compute: MoeModel::predict_routed runs an expert on its samples only) and
// densely (every expert on every sample, then masked: the same result).
// The MACs ratio to the base model is the report's, for the same tau. One
// process, --threads intra-op threads for both; the clock stops once the
// predictions are read back.
//
//   bench_inference RUN_DIR [--threads 1] [--batches 1,32,256] [--taus 0,0.05,0.1,0.2,0.4]
//                   [--images 512] [--repeats 3]
#include <torch/torch.h>

#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <sstream>
#include <string>
#include <vector>

#include "data/batch.h"
#include "data/dataset.h"
#include "eval/anytime.h"
#include "pipeline/finished_run.h"

using namespace smoe;
using Clock = std::chrono::steady_clock;
using P = models::MoeModel::Predict;

namespace {

std::string text_flag(int argc, char** argv, const std::string& name, const std::string& fallback) {
  for (int i = 1; i + 1 < argc; ++i)
    if (argv[i] == name) return argv[i + 1];
  return fallback;
}

template <typename T>
std::vector<T> list_flag(int argc, char** argv, const std::string& name, const std::string& fallback) {
  std::vector<T> out;
  std::stringstream s(text_flag(argc, argv, name, fallback));
  std::string item;
  while (std::getline(s, item, ',')) out.push_back(static_cast<T>(std::stod(item)));
  return out;
}

// The dense computation of a rule: the base model, the gate, every expert
// and its ensembler on every sample, then the rule's mask (eval/anytime.h,
// what the report scores).
at::Tensor dense(models::MoeModel& moe, const at::Tensor& x, P rule, const std::string& ensembler, double tau,
                 int64_t branch_after) {
  torch::NoGradGuard no_grad;
  auto& base = moe.base();
  at::Tensor trunk = base->blocks(x, 0, branch_after);
  at::Tensor pre = base->prelogits(base->blocks(trunk, branch_after, models::NetworkSpec::kBlocks));
  at::Tensor logits = base->classify(pre);
  at::Tensor gate = moe.gate().probabilities(moe.gate_features(pre, logits));
  std::vector<at::Tensor> ens;
  for (int64_t k = 0; k < moe.num_experts(); ++k)
    ens.push_back(moe.ensembled_probs(k, ensembler, logits, moe.expert(k).forward(trunk)));
  at::Tensor probs = torch::stack(ens, 1);
  return rule == P::top1 ? eval::top1_probs(gate, probs)
                         : eval::anytime_probs(torch::softmax(logits, 1), gate, probs, tau);
}

struct Timing {
  double p50_ms = 0, p99_ms = 0, images_per_s = 0;
};

// Every variant timed on every batch, `repeats` rounds in turn (so that a
// slow moment of the machine falls on all of them), after one warm-up
// batch each; the clock stops after the predictions are read back.
std::vector<Timing> time_in_turn(const std::vector<at::Tensor>& batches, int repeats,
                                 const std::vector<std::function<at::Tensor(const at::Tensor&)>>& variants) {
  std::vector<std::vector<double>> ms(variants.size());
  std::vector<double> total(variants.size(), 0);
  for (const auto& f : variants) f(batches.front()).argmax(1).sum().item<int64_t>();
  for (int r = 0; r < repeats; ++r)
    for (size_t v = 0; v < variants.size(); ++v)
      for (const auto& b : batches) {
        const auto t0 = Clock::now();
        variants[v](b).argmax(1).sum().item<int64_t>();
        const double s = std::chrono::duration<double>(Clock::now() - t0).count();
        ms[v].push_back(1e3 * s);
        total[v] += s;
      }
  std::vector<Timing> out;
  const double images =
      static_cast<double>(repeats) * static_cast<double>(batches.size()) * static_cast<double>(batches.front().size(0));
  for (size_t v = 0; v < variants.size(); ++v) {
    auto& m = ms[v];
    std::sort(m.begin(), m.end());
    auto at = [&](double q) {
      return m[std::min(m.size() - 1, static_cast<size_t>(q * static_cast<double>(m.size())))];
    };
    out.push_back({at(0.5), at(0.99), images / total[v]});
  }
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2 || argv[1][0] == '-') {
    std::fprintf(stderr,
                 "usage: bench_inference RUN_DIR [--threads 1] [--batches 1,32,256] [--taus ...] "
                 "[--images 512] [--repeats 3]\n");
    return 2;
  }
  const std::string run_dir = argv[1];
  const int threads = static_cast<int>(std::stoi(text_flag(argc, argv, "--threads", "1")));
  const auto batch_sizes = list_flag<int64_t>(argc, argv, "--batches", "1,32,256");
  const auto taus = list_flag<double>(argc, argv, "--taus", "0,0.05,0.1,0.2,0.4");
  const int64_t images = std::stoll(text_flag(argc, argv, "--images", "512"));
  const int repeats = std::stoi(text_flag(argc, argv, "--repeats", "3"));
  at::set_num_threads(threads);
  torch::NoGradGuard no_grad;

  const pipeline::FinishedRun run = pipeline::open_finished_run(run_dir, "bench_inference");
  models::MoeModel moe = pipeline::load_finished_moe(run, c10::Device(c10::kCPU));
  const std::string ens = run.cfg.ensembler.kind;
  const nlohmann::json report = pipeline::finished_report(run);
  auto macs_ratio = [&](const std::string& rule, double tau) -> std::string {
    if (!report.contains("base")) return "";
    const double base = report["base"]["macs"].get<double>();
    if (rule == "top1") return fmt::format("{:.2f}", report["moe"][ens]["macs"].get<double>() / base);
    for (const auto& p : report["anytime"])
      if (std::abs(p["tau"].get<double>() - tau) < 1e-12) return fmt::format("{:.2f}", p["macs"].get<double>() / base);
    return "";
  };
  data::DatasetOptions o;
  o.limit = images;
  const auto test = data::Dataset::open(run.cfg.data.path, run.cfg.data.test_split, o);
  std::vector<int64_t> ids(static_cast<size_t>(test->size()));
  std::iota(ids.begin(), ids.end(), 0);
  const at::Tensor all = data::make_batch(*test, ids, data::Transform{}).images;

  std::printf("bench_inference: %s, %lld experts, ensembler %s, %lld test images, %d thread%s, libtorch %s\n\n",
              run_dir.c_str(), static_cast<long long>(moe.num_experts()), ens.c_str(),
              static_cast<long long>(all.size(0)), threads, threads == 1 ? "" : "s", TORCH_VERSION);
  std::printf(
      "| batch | model | tau | early exits | MACs / base | p50 ms | p99 ms | images/s | dense images/s | "
      "conditional / dense |\n|---|---|---|---|---|---|---|---|---|---|\n");
  for (int64_t b : batch_sizes) {
    std::vector<at::Tensor> batches;
    for (int64_t s = 0; s + b <= all.size(0); s += b) batches.push_back(all.narrow(0, s, b).contiguous());
    if (batches.empty()) continue;
    struct Row {
      std::string name;
      P rule;
      double tau;
    };
    std::vector<Row> rows = {{"top1", P::top1, 0}};
    for (double t : taus) rows.push_back({"anytime", P::anytime, t});
    // Variant 0 the base model, then per row the conditional and the dense computation.
    std::vector<std::function<at::Tensor(const at::Tensor&)>> variants = {
        [&](const at::Tensor& x) { return moe.predict(x, P::base); }};
    std::vector<double> early;
    for (const auto& row : rows) {
      const at::Tensor tau = torch::tensor(row.tau, torch::kDouble);
      double e = 0;
      for (const auto& x : batches) e += moe.predict_routed(x, row.rule, ens, tau).early.sum().item<double>();
      early.push_back(e / static_cast<double>(batches.size() * static_cast<size_t>(b)));
      variants.push_back(
          [&, row, tau](const at::Tensor& x) { return moe.predict_routed(x, row.rule, ens, tau).probs; });
      variants.push_back([&, row](const at::Tensor& x) {
        return dense(moe, x, row.rule, ens, row.tau, run.cfg.experts.branch_after);
      });
    }
    const std::vector<Timing> t = time_in_turn(batches, repeats, variants);
    std::printf("| %lld | base | | 1.00 | 1.00 | %.2f | %.2f | %.0f | | |\n", static_cast<long long>(b), t[0].p50_ms,
                t[0].p99_ms, t[0].images_per_s);
    for (size_t i = 0; i < rows.size(); ++i) {
      const Timing& sparse = t[1 + 2 * i];
      const Timing& full = t[2 + 2 * i];
      std::printf("| %lld | %s | %s | %.2f | %s | %.2f | %.2f | %.0f | %.0f | %.2f |\n", static_cast<long long>(b),
                  rows[i].name.c_str(), rows[i].rule == P::top1 ? "" : fmt::format("{:g}", rows[i].tau).c_str(),
                  early[i], macs_ratio(rows[i].name, rows[i].tau).c_str(), sparse.p50_ms, sparse.p99_ms,
                  sparse.images_per_s, full.images_per_s, sparse.images_per_s / full.images_per_s);
    }
  }
  return 0;
}
