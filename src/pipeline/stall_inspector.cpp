#include "pipeline/stall_inspector.h"

#include <chrono>
#include <cstdio>
#include <nlohmann/json.hpp>

#include "core/error.h"

using nlohmann::json;

namespace smoe::pipeline {
namespace {

json to_json(const heartbeat::Status& s) {
  return {{"idle", s.idle_seconds}, {"waiting", s.waiting}, {"stage", s.stage}, {"activity", s.activity}};
}

heartbeat::Status from_json(const json& j) {
  return {j.at("idle").get<double>(), j.at("waiting").get<bool>(), j.at("stage").get<std::string>(),
          j.at("activity").get<std::string>()};
}

}  // namespace

StallInspector::StallInspector(comm::Communicator& comm, StallOptions options, StatusFn status, AbortFn abort)
    : comm_(comm), options_(options), status_(std::move(status)), abort_(std::move(abort)) {
  if (!abort_)
    abort_ = [this](const std::string& why) {
      std::fprintf(stderr, "smoe: error on rank %d: %s\n", comm_.rank(), why.c_str());
      std::fflush(stderr);
      comm_.abort(1, why);
    };
  if (options_.timeout_s > 0) thread_ = std::thread([this] { loop(); });
}

StallInspector::~StallInspector() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

std::string StallInspector::verdict(const std::vector<heartbeat::Status>& reports, const std::vector<double>& silence,
                                    double timeout_s) {
  bool all_waiting = true;
  double least_wait = 1e300;
  for (size_t r = 0; r < reports.size(); ++r) {
    const auto& s = reports[r];
    if (silence[r] > timeout_s)
      return fmt::format(
          "stall: rank {} has sent no heartbeat for {:.0f} s (last seen in stage {}: {}); aborting the job", r,
          silence[r], s.stage, s.activity);
    if (!s.waiting && s.idle_seconds > timeout_s)
      return fmt::format(
          "stall: rank {} made no progress for {:.0f} s in stage {} (last: {}); aborting the job "
          "(runtime.stall_timeout_s = {:.0f})",
          r, s.idle_seconds, s.stage, s.activity, timeout_s);
    all_waiting = all_waiting && s.waiting;
    least_wait = std::min(least_wait, s.idle_seconds);
  }
  if (all_waiting && !reports.empty() && least_wait > timeout_s)
    return fmt::format(
        "stall: every rank has waited on the others for {:.0f} s (rank 0 in stage {}: {}); aborting the job",
        least_wait, reports[0].stage, reports[0].activity);
  return "";
}

void StallInspector::loop() {
  using clock = std::chrono::steady_clock;
  const int P = comm_.size();
  std::vector<heartbeat::Status> reports(static_cast<size_t>(P));
  std::vector<clock::time_point> received(static_cast<size_t>(P), clock::now());
  const auto period = std::chrono::duration<double>(options_.period_s);
  std::unique_lock<std::mutex> lock(mu_);
  while (!cv_.wait_for(lock, period, [this] { return stop_; })) {
    try {
      const heartbeat::Status mine = status_();
      if (!comm_.is_root()) {
        comm_.send(0, kHeartbeatTag, to_json(mine).dump());
        continue;
      }
      reports[0] = mine;
      received[0] = clock::now();
      while (auto m = comm_.try_recv(comm::kAnySource, kHeartbeatTag)) {
        reports[static_cast<size_t>(m->source)] = from_json(json::parse(m->payload));
        received[static_cast<size_t>(m->source)] = clock::now();
      }
      std::vector<double> silence;
      for (const auto& t : received) silence.push_back(std::chrono::duration<double>(clock::now() - t).count());
      const std::string why = verdict(reports, silence, options_.timeout_s);
      if (!why.empty()) {
        lock.unlock();
        abort_(why);
        return;
      }
    } catch (const std::exception&) {
      return;  // the job is ending (the communicator was aborted): nothing left to inspect
    }
  }
}

}  // namespace smoe::pipeline
