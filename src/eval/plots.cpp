#include "eval/plots.h"

#include <plplot.h>

#include <algorithm>
#include <mutex>

#include "core/atomic_file.h"
#include "core/error.h"

namespace smoe::eval {
namespace {

std::mutex g_plplot;  // PLplot keeps global state

// Opens a PNG stream onto a temporary file; close() renames it into place.
class PngStream {
 public:
  explicit PngStream(const std::string& path, int width = 900, int height = 650) : out_(path), lock_(g_plplot) {
    plsdev("pngcairo");
    plsfnam(out_.temp().c_str());
    plspage(0, 0, width, height, 0, 0);
    plscolbg(255, 255, 255);
    plscol0(15, 0, 0, 0);
    plinit();
    plfontld(1);
  }
  void close() {
    plend();
    closed_ = true;
    out_.commit();
  }
  ~PngStream() {
    if (!closed_) plend();
  }

 private:
  AtomicPath out_;
  std::lock_guard<std::mutex> lock_;
  bool closed_ = false;
};

// The legend's Hershey glyph for a plpoin marker code.
const char* legend_symbol(int marker) {
  switch (marker) {
    case 2:
      return "+";
    case 3:
      return "*";
    case 5:
      return "x";
    case 6:
      return "#(841)";  // square
    default:
      return "#(850)";  // filled circle
  }
}

}  // namespace

void plot_series(const std::string& path, const std::string& title, const std::string& xlabel,
                 const std::string& ylabel, const std::vector<Series>& series) {
  double x0 = 1e300, x1 = -1e300, y0 = 1e300, y1 = -1e300;
  for (const auto& s : series)
    for (size_t i = 0; i < s.x.size(); ++i) {
      const double e = i < s.yerr.size() ? s.yerr[i] : 0.0;
      x0 = std::min(x0, s.x[i]);
      x1 = std::max(x1, s.x[i]);
      y0 = std::min(y0, s.y[i] - e);
      y1 = std::max(y1, s.y[i] + e);
    }
  SMOE_CHECK(x0 <= x1, "plot {}: no points", path);
  const double dx = std::max(1e-9, (x1 - x0) * 0.06), dy = std::max(0.05, (y1 - y0) * 0.08);
  // Many series: the legend goes right of the plot, outside the data.
  const bool outside = series.size() > 4;
  PngStream png(path, outside ? 1300 : 900, 650);
  plcol0(15);
  if (outside) {
    pladv(0);
    plvpor(0.1, 0.55, 0.13, 0.9);
    plwind(x0 - dx, x1 + dx, y0 - dy, y1 + dy);
    plbox("bcnst", 0.0, 0, "bcnstv", 0.0, 0);
  } else {
    plenv(x0 - dx, x1 + dx, y0 - dy, y1 + dy, 0, 0);
  }
  pllab(xlabel.c_str(), ylabel.c_str(), title.c_str());
  std::vector<const char*> text;
  std::vector<PLINT> opt, colors, markers, line_styles;
  std::vector<PLFLT> widths, scales;
  std::vector<PLINT> symbol_numbers;
  std::vector<const char*> symbols;
  for (const auto& s : series) {
    plcol0(s.color);
    plssym(0, 1.3);
    if (s.line && s.x.size() > 1) plline(static_cast<PLINT>(s.x.size()), s.x.data(), s.y.data());
    plpoin(static_cast<PLINT>(s.x.size()), s.x.data(), s.y.data(), s.marker);
    if (s.yerr.size() == s.y.size() && !s.y.empty()) {
      std::vector<double> lo(s.y.size()), hi(s.y.size());
      for (size_t i = 0; i < s.y.size(); ++i) {
        lo[i] = s.y[i] - s.yerr[i];
        hi[i] = s.y[i] + s.yerr[i];
      }
      plerry(static_cast<PLINT>(s.y.size()), s.x.data(), lo.data(), hi.data());
    }
    text.push_back(s.label.c_str());
    opt.push_back(s.line ? (PL_LEGEND_LINE | PL_LEGEND_SYMBOL) : PL_LEGEND_SYMBOL);
    colors.push_back(s.color);
    line_styles.push_back(1);
    widths.push_back(1.0);
    scales.push_back(1.0);
    symbol_numbers.push_back(1);
    symbols.push_back(legend_symbol(s.marker));
  }
  PLFLT lw, lh;
  std::vector<PLINT> zero(series.size(), 0);
  std::vector<PLFLT> zerof(series.size(), 0.0);
  const PLINT where = outside ? (PL_POSITION_RIGHT | PL_POSITION_OUTSIDE) : (PL_POSITION_BOTTOM | PL_POSITION_RIGHT);
  pllegend(&lw, &lh, PL_LEGEND_BACKGROUND | PL_LEGEND_BOUNDING_BOX, where, outside ? 0.01 : 0.02, outside ? 0.0 : 0.02,
           0.1, 0, 1, 1, 0, 0, static_cast<PLINT>(series.size()), opt.data(), 1.0, series.size() > 8 ? 0.7 : 1.0, 2.0,
           outside ? 0.0 : 1.0, colors.data(), text.data(), zero.data(), zero.data(), zerof.data(), zerof.data(),
           colors.data(), line_styles.data(), widths.data(), colors.data(), scales.data(), symbol_numbers.data(),
           symbols.data());
  png.close();
}

void plot_heatmap(const std::string& path, const std::string& title, const std::vector<std::vector<int64_t>>& counts,
                  const std::vector<std::string>& rows, const std::vector<std::string>& columns) {
  const int R = static_cast<int>(counts.size());
  SMOE_CHECK(R > 0 && !counts[0].empty(), "plot {}: empty table", path);
  const int C = static_cast<int>(counts[0].size());
  int64_t most = 1;
  for (const auto& r : counts)
    for (auto v : r) most = std::max(most, v);
  PngStream png(path, 120 + 70 * C, 140 + 45 * R);
  plcol0(15);
  plenv(0, C, R, 0, 0, -2);
  pllab("", "", title.c_str());
  // white -> dark blue colour map for the cells
  PLFLT pos[2] = {0, 1}, red[2] = {1, 0.05}, green[2] = {1, 0.2}, blue[2] = {1, 0.55};
  plscmap1n(256);
  plscmap1l(1, 2, pos, red, green, blue, nullptr);
  for (int r = 0; r < R; ++r)
    for (int c = 0; c < C; ++c) {
      const double v = static_cast<double>(counts[r][c]) / static_cast<double>(most);
      PLFLT x[4] = {double(c), double(c + 1), double(c + 1), double(c)};
      PLFLT y[4] = {double(r), double(r), double(r + 1), double(r + 1)};
      plcol1(v);
      plfill(4, x, y);
      plcol0(v > 0.55 ? 0 : 15);
      if (v > 0.55) plscol0(0, 255, 255, 255);
      plschr(0, 0.7);
      plptex(c + 0.5, r + 0.62, 1, 0, 0.5, std::to_string(counts[r][c]).c_str());
    }
  plscol0(0, 255, 255, 255);
  plcol0(15);
  plschr(0, 0.8);
  for (int c = 0; c < C; ++c) plmtex("b", 1.2, (c + 0.5) / C, 0.5, columns[static_cast<size_t>(c)].c_str());
  for (int r = 0; r < R; ++r) plmtex("lv", 0.8, 1.0 - (r + 0.5) / R, 1.0, rows[static_cast<size_t>(r)].c_str());
  png.close();
}

}  // namespace smoe::eval
