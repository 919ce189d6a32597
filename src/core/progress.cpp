#include "core/progress.h"

#include "core/heartbeat.h"
#include "core/log.h"

namespace smoe {

std::string format_duration(double s) {
  const int64_t t = static_cast<int64_t>(s + 0.5);
  if (t >= 3600) return fmt::format("{}h{:02d}m{:02d}s", t / 3600, (t / 60) % 60, t % 60);
  if (t >= 60) return fmt::format("{}m{:02d}s", t / 60, t % 60);
  return fmt::format("{}s", t);
}

Progress::Progress(std::string stage, int64_t total_steps, int64_t every)
    : stage_(std::move(stage)),
      total_(total_steps),
      every_(std::max<int64_t>(every, 1)),
      start_(std::chrono::steady_clock::now()) {}

double Progress::seconds() const {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
}

void Progress::step(int64_t items, const nlohmann::json& fields) {
  ++done_;
  items_ += items;
  heartbeat::beat(stage_);
  if (done_ % every_ == 0 || done_ == total_) report(fields);
}

void Progress::report(const nlohmann::json& fields) {
  const double s = seconds();
  const double rate = s > 0 ? items_ / s : 0.0;
  const double eta = done_ > 0 ? s * static_cast<double>(total_ - done_) / static_cast<double>(done_) : 0.0;
  std::string extra;
  for (const auto& [k, v] : fields.items())
    extra += v.is_number_float() ? fmt::format("  {} {:.4g}", k, v.get<double>()) : fmt::format("  {} {}", k, v.dump());
  log::info("{:<9} {:>6}/{:<6} {:>8.0f}/s  elapsed {}  ETA {}{}", stage_, done_, total_, rate, format_duration(s),
            format_duration(eta), extra);
  nlohmann::json ev = fields;
  ev["stage"] = stage_;
  ev["step"] = done_;
  ev["total"] = total_;
  ev["rate"] = rate;
  ev["elapsed"] = s;
  log::event("progress", ev);
}

}  // namespace smoe
