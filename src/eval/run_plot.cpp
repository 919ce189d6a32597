#include "eval/run_plot.h"

#include <fmt/format.h>

#include <filesystem>
#include <nlohmann/json.hpp>

#include "core/atomic_file.h"
#include "core/error.h"
#include "eval/plots.h"

namespace fs = std::filesystem;
using nlohmann::json;

namespace smoe::eval {
namespace {

// One point (or one point of a curve) over a cell's runs.
struct Samples {
  std::vector<double> macs, accuracy;
};

// Adds report `j`'s point at `path` (an object with accuracy and macs).
void add_point(const json& j, const std::string& path, Samples& s) {
  const json* a = report_value(j, path + ".accuracy");
  const json* m = report_value(j, path + ".macs");
  if (!a || !m || !a->is_number() || !m->is_number()) return;
  s.accuracy.push_back(a->get<double>());
  s.macs.push_back(m->get<double>());
}

// Appends the mean point(s) of `points` to `series` (MMACs, accuracy in %).
void append(Series& series, const std::vector<Samples>& points, size_t runs) {
  for (const auto& p : points) {
    if (p.accuracy.size() != runs || runs == 0) continue;  // not in every run of the cell
    series.x.push_back(mean(p.macs) / 1e6);
    series.y.push_back(100 * mean(p.accuracy));
    series.yerr.push_back(100 * stdev(p.accuracy));
  }
}

}  // namespace

void plot_table(const RunTable& t, const std::string& path, const std::string& title) {
  static const int kColors[] = {1, 9, 3, 13, 8, 10, 4, 14, 11, 5, 12, 6, 2, 7};
  std::vector<Series> series;
  for (size_t c = 0; c < t.cells.size(); ++c) {
    const TableCell& cell = t.cells[c];
    std::string label;
    for (size_t k = 0; k < t.varied.size(); ++k) label += (k ? ", " : "") + t.varied[k] + "=" + cell.values[k];
    if (!label.empty()) label += ": ";
    // A table of one or two cells shows every MoE variant; larger ones the
    // bagged top-1 MoE only, so that the legend stays readable.
    const bool all_variants = t.cells.size() <= 2;
    static const std::vector<std::pair<std::string, std::string>> kVariants = {{"bagging", "MoE, bagging"},
                                                                               {"no_ensembling", "MoE, top-1 alone"},
                                                                               {"stacking", "MoE, stacking"},
                                                                               {"top2", "MoE, top-2"}};
    Samples base;
    std::vector<Samples> moe(kVariants.size());
    std::vector<Samples> anytime;
    for (const auto& dir : cell.dirs) {
      const std::string report = (fs::path(dir) / "report.json").string();
      json j;
      try {
        j = json::parse(read_file(report));
      } catch (const json::exception& e) {
        fail("{}: invalid JSON ({})", report, e.what());
      }
      add_point(j, "base", base);
      if (j.contains("moe")) {
        for (size_t v = 0; v < kVariants.size(); ++v) add_point(j, "moe." + kVariants[v].first, moe[v]);
      } else {
        add_point(j, "mixture", moe[0]);
      }
      if (j.contains("anytime") && j["anytime"].is_array()) {
        const json& a = j["anytime"];
        if (anytime.size() < a.size()) anytime.resize(a.size());
        for (size_t i = 0; i < a.size(); ++i) add_point(a, std::to_string(i), anytime[i]);
      }
    }
    const int color = kColors[c % (sizeof(kColors) / sizeof(kColors[0]))];
    Series curve{label + "anytime", {}, {}, true, color, 1, {}};
    append(curve, anytime, cell.dirs.size());
    if (!curve.x.empty()) series.push_back(std::move(curve));
    static const int kMarkers[] = {17, 5, 2, 3};  // filled circle, x, +, *
    for (size_t v = 0; v < (all_variants ? kVariants.size() : 1); ++v) {
      Series m{
          label + (all_variants ? kVariants[v].second : std::string("MoE")), {}, {}, false, color, kMarkers[v], {}};
      append(m, {moe[v]}, cell.dirs.size());
      if (!m.x.empty()) series.push_back(std::move(m));
    }
    Series b{label + "base", {}, {}, false, color, 6, {}};
    append(b, {base}, cell.dirs.size());
    if (!b.x.empty()) series.push_back(std::move(b));
  }
  SMOE_CHECK(!series.empty(), "plot {}: the runs hold no accuracy with its MACs (base, moe.bagging, mixture, anytime)",
             path);
  plot_series(path, title, "MMACs per image", "test accuracy (%), mean ± std over seeds", series);
}

}  // namespace smoe::eval
