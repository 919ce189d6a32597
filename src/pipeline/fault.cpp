#include "pipeline/fault.h"

#include <chrono>
#include <csignal>
#include <cstdlib>
#include <sstream>
#include <thread>
#include <vector>

#include "core/error.h"

namespace smoe::pipeline {
namespace {

std::vector<std::string> fault_fields() {
  const char* f = std::getenv("SMOE_FAULT");
  std::vector<std::string> parts;
  if (!f) return parts;
  std::stringstream ss(f);
  for (std::string p; std::getline(ss, p, ':');) parts.push_back(p);
  return parts;
}

}  // namespace

void inject_stage_fault(const std::string& stage, int rank) {
  const auto f = fault_fields();
  if (f.size() < 2 || f.size() > 3 || f[1] != stage) return;
  if (f.size() == 3 && f[2] != std::to_string(rank)) return;
  if (f[0] == "kill") std::raise(SIGKILL);
  if (f[0] == "term") std::raise(SIGTERM);  // what Slurm sends at the time limit
  if (f[0] == "hang")  // stuck without progress, not waiting on anyone: the stall inspector's case
    for (;;) std::this_thread::sleep_for(std::chrono::hours(1));
  if (f[0] == "stage")
    fail("injected fault in stage {} on rank {} (SMOE_FAULT={})", stage, rank, std::getenv("SMOE_FAULT"));
}

void inject_expert_fault(int64_t expert) {
  const auto f = fault_fields();
  if (f.size() == 2 && f[0] == "expert" && f[1] == std::to_string(expert))
    fail("injected fault while training expert {} (SMOE_FAULT={})", expert, std::getenv("SMOE_FAULT"));
}

}  // namespace smoe::pipeline
