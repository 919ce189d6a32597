#include "core/heartbeat.h"

#include <chrono>
#include <mutex>

namespace smoe::heartbeat {
namespace {

struct State {
  std::mutex mu;
  std::chrono::steady_clock::time_point last = std::chrono::steady_clock::now();
  int waiting = 0;
  std::string stage = "start", activity = "starting";
};

State& state() {
  static State s;
  return s;
}

}  // namespace

void stage(std::string_view name) {
  State& s = state();
  std::lock_guard<std::mutex> lock(s.mu);
  s.stage = name;
  s.activity = "stage " + std::string(name) + " started";
  s.last = std::chrono::steady_clock::now();
}

void beat(std::string_view activity) {
  State& s = state();
  std::lock_guard<std::mutex> lock(s.mu);
  s.activity = activity;
  s.last = std::chrono::steady_clock::now();
}

Waiting::Waiting(std::string_view what) {
  State& s = state();
  std::lock_guard<std::mutex> lock(s.mu);
  if (s.waiting++ == 0) s.activity = "waiting for other ranks in " + std::string(what);
  s.last = std::chrono::steady_clock::now();
}

Waiting::~Waiting() {
  State& s = state();
  std::lock_guard<std::mutex> lock(s.mu);
  --s.waiting;
  s.last = std::chrono::steady_clock::now();
}

Status status() {
  State& s = state();
  std::lock_guard<std::mutex> lock(s.mu);
  return {std::chrono::duration<double>(std::chrono::steady_clock::now() - s.last).count(), s.waiting > 0, s.stage,
          s.activity};
}

}  // namespace smoe::heartbeat
