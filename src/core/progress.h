// A progress line per stage with throughput and ETA, printed every `every`
// steps on the console (rank 0) and recorded as an event in the JSON log.
#pragma once

#include <chrono>
#include <nlohmann/json.hpp>
#include <string>

namespace smoe {

class Progress {
 public:
  // `total` steps of `unit`s (e.g. images) make the stage.
  Progress(std::string stage, int64_t total_steps, int64_t every);

  // One step done, having processed `items` units; `fields` are shown as
  // "key value" and logged.
  void step(int64_t items, const nlohmann::json& fields = nlohmann::json::object());
  // Whether the next step() prints a line: compute costly fields (values that
  // need a device sync) only then.
  bool due() const { return (done_ + 1) % every_ == 0 || done_ + 1 == total_; }
  // Forces a line now (e.g. at the end of an epoch).
  void report(const nlohmann::json& fields = nlohmann::json::object());
  double seconds() const;
  int64_t done() const { return done_; }

 private:
  std::string stage_;
  int64_t total_, every_;
  int64_t done_ = 0, items_ = 0;
  std::chrono::steady_clock::time_point start_;
};

// "1h02m03s" / "4m05s" / "12s".
std::string format_duration(double seconds);

}  // namespace smoe
