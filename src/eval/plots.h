// PNG plots of a run, drawn with PLplot's cairo driver and written
// atomically. Torch-free.
#pragma once

#include <string>
#include <vector>

namespace smoe::eval {

struct Series {
  std::string label;
  std::vector<double> x, y;
  bool line = false;         // polyline through the points, else markers only
  int color = 1;             // PLplot colour-map-0 index
  int marker = 17;           // PLplot symbol code
  std::vector<double> yerr;  // error bars: y ± yerr (empty: none)
};

// Accuracy (%) against MACs: one series per method.
void plot_series(const std::string& path, const std::string& title, const std::string& xlabel,
                 const std::string& ylabel, const std::vector<Series>& series);

// Expert x class routing counts as a heat map with the counts written in.
void plot_heatmap(const std::string& path, const std::string& title, const std::vector<std::vector<int64_t>>& counts,
                  const std::vector<std::string>& row_labels, const std::vector<std::string>& column_labels);

}  // namespace smoe::eval
