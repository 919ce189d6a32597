#include "eval/class_metrics.h"

#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <limits>

#include "core/error.h"

namespace smoe::eval {
namespace {

constexpr double kLogOddsRange = 16.0;

// AP from per-threshold counts, thresholds visited from the highest score.
template <typename Next>
double ap_from_groups(int64_t groups, int64_t total_pos, Next next) {
  if (total_pos == 0) return std::numeric_limits<double>::quiet_NaN();
  double ap = 0;
  int64_t tp = 0, fp = 0;
  for (int64_t g = 0; g < groups; ++g) {
    auto [pos, neg] = next(g);
    tp += pos;
    fp += neg;
    if (pos > 0)
      ap += static_cast<double>(pos) / static_cast<double>(total_pos) * static_cast<double>(tp) /
            static_cast<double>(tp + fp);
  }
  return ap;
}

}  // namespace

int64_t score_bins(int64_t classes) {
  return std::clamp<int64_t>((int64_t{1} << 18) / std::max<int64_t>(classes, 1), 64, 2048);
}

ClassCount ClassCount::zeros(int64_t classes) {
  ClassCount c;
  c.classes = classes;
  c.bins = score_bins(classes);
  c.positives.assign(static_cast<size_t>(classes * c.bins), 0);
  c.negatives = c.positives;
  c.total.assign(static_cast<size_t>(classes), 0);
  c.correct = c.total;
  return c;
}

void ClassCount::add(const ClassCount& o) {
  if (classes == 0) {
    *this = o;
    return;
  }
  SMOE_ASSERT(o.classes == classes && o.bins == bins, "adding class counts of different shapes");
  for (size_t i = 0; i < positives.size(); ++i) positives[i] += o.positives[i], negatives[i] += o.negatives[i];
  for (size_t c = 0; c < total.size(); ++c) total[c] += o.total[c], correct[c] += o.correct[c];
}

ClassCount count_classes(const at::Tensor& probs_in, const at::Tensor& labels_in, int64_t bins) {
  torch::NoGradGuard no_grad;
  at::Tensor p = probs_in.to(torch::kDouble).cpu();
  at::Tensor y = labels_in.to(torch::kLong).cpu();
  const int64_t n = p.size(0), C = p.size(1);
  ClassCount out;
  out.classes = C;
  out.bins = bins;
  at::Tensor z = (p.clamp(1e-300, 1.0).log() - (1.0 - p).clamp(1e-300, 1.0).log()).clamp(-kLogOddsRange, kLogOddsRange);
  at::Tensor bin = ((z + kLogOddsRange) / (2 * kLogOddsRange) * static_cast<double>(bins)).floor().to(torch::kLong);
  bin = bin.clamp(0, bins - 1) + torch::arange(C, torch::kLong).unsqueeze(0) * bins;  // [n, C] flat (c, b) index
  at::Tensor positive = torch::one_hot(y, C).to(torch::kBool);
  at::Tensor pos = torch::bincount(bin.masked_select(positive), {}, C * bins).to(torch::kLong).contiguous();
  at::Tensor neg = torch::bincount(bin.masked_select(~positive), {}, C * bins).to(torch::kLong).contiguous();
  at::Tensor total = torch::bincount(y, {}, C).to(torch::kLong).contiguous();
  at::Tensor hit = torch::bincount(y.masked_select(p.argmax(1) == y), {}, C).to(torch::kLong).contiguous();
  if (n == 0) hit = torch::zeros({C}, torch::kLong);
  auto vec = [](const at::Tensor& t) {
    return std::vector<int64_t>(t.data_ptr<int64_t>(), t.data_ptr<int64_t>() + t.numel());
  };
  out.positives = vec(pos);
  out.negatives = vec(neg);
  out.total = vec(total);
  out.correct = vec(hit);
  return out;
}

ClassMetrics class_metrics(const ClassCount& count) {
  ClassMetrics m;
  double ap_sum = 0, recall_sum = 0;
  int64_t ap_n = 0, recall_n = 0;
  for (int64_t c = 0; c < count.classes; ++c) {
    const int64_t* pos = count.positives.data() + c * count.bins;
    const int64_t* neg = count.negatives.data() + c * count.bins;
    const double ap = ap_from_groups(count.bins, count.total[static_cast<size_t>(c)], [&](int64_t g) {
      const int64_t b = count.bins - 1 - g;  // highest scores first
      return std::pair<int64_t, int64_t>(pos[b], neg[b]);
    });
    m.ap.push_back(ap);
    if (std::isfinite(ap)) ap_sum += ap, ++ap_n;
    if (count.total[static_cast<size_t>(c)] > 0) {
      recall_sum += static_cast<double>(count.correct[static_cast<size_t>(c)]) /
                    static_cast<double>(count.total[static_cast<size_t>(c)]);
      ++recall_n;
    }
  }
  m.map = ap_n ? ap_sum / static_cast<double>(ap_n) : std::numeric_limits<double>::quiet_NaN();
  m.balanced_accuracy =
      recall_n ? recall_sum / static_cast<double>(recall_n) : std::numeric_limits<double>::quiet_NaN();
  return m;
}

double average_precision(const at::Tensor& scores_in, const at::Tensor& positive_in) {
  at::Tensor s = scores_in.to(torch::kDouble).cpu().reshape(-1);
  at::Tensor pos = positive_in.to(torch::kBool).cpu().reshape(-1);
  at::Tensor order = s.argsort(/*stable=*/true, /*dim=*/0, /*descending=*/true);
  s = s.index_select(0, order).contiguous();
  pos = pos.index_select(0, order).contiguous();
  const double* ps = s.data_ptr<double>();
  const bool* pp = pos.data_ptr<bool>();
  // Tie groups of equal scores.
  std::vector<std::pair<int64_t, int64_t>> groups;
  for (int64_t i = 0; i < s.numel(); ++i) {
    if (i == 0 || ps[i] != ps[i - 1]) groups.emplace_back(0, 0);
    (pp[i] ? groups.back().first : groups.back().second) += 1;
  }
  return ap_from_groups(static_cast<int64_t>(groups.size()), pos.sum().item<int64_t>(),
                        [&](int64_t g) { return groups[static_cast<size_t>(g)]; });
}

}  // namespace smoe::eval
