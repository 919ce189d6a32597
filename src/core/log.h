// Logging: human-readable progress on the console (rank 0; other ranks print
// warnings and errors only, prefixed with their rank) through spdlog, and a
// JSON-lines file per rank with every message and every structured event.
#pragma once

#include <spdlog/spdlog.h>

#include <nlohmann/json.hpp>
#include <string>

namespace smoe::log {

struct Options {
  int rank = 0;
  int world = 1;
  std::string jsonl_path;  // empty: no file
  bool verbose = false;    // debug messages on the console
  bool quiet = false;      // warnings and errors only
};

void init(const Options& options);
// Closes the JSON-lines file (called at exit by the front ends).
void shutdown();

template <typename... Args>
void info(fmt::format_string<Args...> f, Args&&... args) {
  spdlog::info(f, std::forward<Args>(args)...);
}
template <typename... Args>
void warn(fmt::format_string<Args...> f, Args&&... args) {
  spdlog::warn(f, std::forward<Args>(args)...);
}
template <typename... Args>
void error(fmt::format_string<Args...> f, Args&&... args) {
  spdlog::error(f, std::forward<Args>(args)...);
}
template <typename... Args>
void debug(fmt::format_string<Args...> f, Args&&... args) {
  spdlog::debug(f, std::forward<Args>(args)...);
}

// A structured record {"time", "rank", "event": name, ...fields} in the
// JSON-lines file; nothing on the console.
void event(const std::string& name, nlohmann::json fields = nlohmann::json::object());

}  // namespace smoe::log
