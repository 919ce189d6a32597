#include "core/log.h"

#include <spdlog/sinks/base_sink.h>
#include <spdlog/sinks/stdout_color_sinks.h>

#include <chrono>
#include <cstdio>
#include <mutex>

#include "core/error.h"

namespace smoe::log {
namespace {

std::string now_iso() {
  using namespace std::chrono;
  auto now = system_clock::now();
  auto ms = duration_cast<milliseconds>(now.time_since_epoch()).count() % 1000;
  std::time_t t = system_clock::to_time_t(now);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%S", &tm);
  return fmt::format("{}.{:03d}Z", buf, ms);
}

// One JSON object per line; flushed per line so a killed run keeps its log.
class JsonLines {
 public:
  void open(const std::string& path, int rank) {
    std::lock_guard<std::mutex> lock(mu_);
    close_locked();
    file_ = std::fopen(path.c_str(), "a");
    if (!file_) throw Error(errno_message("cannot open log file " + path));
    rank_ = rank;
  }
  void write(nlohmann::json record) {
    std::lock_guard<std::mutex> lock(mu_);
    if (!file_) return;
    record["time"] = now_iso();
    record["rank"] = rank_;
    std::string line = record.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
    line += '\n';
    std::fwrite(line.data(), 1, line.size(), file_);
    std::fflush(file_);
  }
  void close() {
    std::lock_guard<std::mutex> lock(mu_);
    close_locked();
  }

 private:
  void close_locked() {
    if (file_) std::fclose(file_);
    file_ = nullptr;
  }
  std::mutex mu_;
  FILE* file_ = nullptr;
  int rank_ = 0;
};

JsonLines& json_file() {
  static JsonLines f;
  return f;
}

class JsonSink : public spdlog::sinks::base_sink<std::mutex> {
 protected:
  void sink_it_(const spdlog::details::log_msg& msg) override {
    json_file().write({{"level", std::string(spdlog::level::to_string_view(msg.level).data(),
                                             spdlog::level::to_string_view(msg.level).size())},
                       {"msg", std::string(msg.payload.data(), msg.payload.size())}});
  }
  void flush_() override {}
};

}  // namespace

void init(const Options& o) {
  auto console = std::make_shared<spdlog::sinks::stderr_color_sink_mt>();
  if (o.world > 1)
    console->set_pattern(fmt::format("%Y-%m-%d %H:%M:%S [rank {}] %^%l%$ %v", o.rank));
  else
    console->set_pattern("%Y-%m-%d %H:%M:%S %^%l%$ %v");
  spdlog::level::level_enum level = spdlog::level::info;
  if (o.verbose) level = spdlog::level::debug;
  if (o.quiet || o.rank != 0) level = spdlog::level::warn;
  console->set_level(level);

  std::vector<spdlog::sink_ptr> sinks{console};
  if (!o.jsonl_path.empty()) {
    json_file().open(o.jsonl_path, o.rank);
    auto js = std::make_shared<JsonSink>();
    js->set_level(spdlog::level::debug);
    sinks.push_back(js);
  }
  auto logger = std::make_shared<spdlog::logger>("smoe", sinks.begin(), sinks.end());
  logger->set_level(spdlog::level::debug);
  logger->flush_on(spdlog::level::warn);
  spdlog::set_default_logger(logger);
}

void shutdown() {
  spdlog::default_logger()->flush();
  json_file().close();
}

void event(const std::string& name, nlohmann::json fields) {
  if (!fields.is_object()) fields = nlohmann::json{{"value", fields}};
  fields["event"] = name;
  json_file().write(std::move(fields));
}

}  // namespace smoe::log
