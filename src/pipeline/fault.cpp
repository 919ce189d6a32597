#include "pipeline/fault.h"

#include <ATen/ATen.h>
#include <signal.h>
#include <sys/types.h>
#include <unistd.h>

#include <chrono>
#include <csignal>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>
#include <thread>
#include <vector>

#include "core/error.h"
#include "core/heartbeat.h"
#include "core/log.h"
#include "core/stop.h"

namespace smoe::pipeline {
namespace {

namespace fs = std::filesystem;

const std::set<std::string>& known_actions() {
  static const std::set<std::string> actions{"stage", "kill", "killjob", "term",  "termjob",
                                             "wait",  "hang", "torch",   "expert"};
  return actions;
}

std::vector<std::string> fault_fields() {
  const char* f = std::getenv("SMOE_FAULT");
  std::vector<std::string> parts;
  if (!f || !*f) return parts;
  std::stringstream ss(f);
  for (std::string p; std::getline(ss, p, ':');) parts.push_back(p);
  SMOE_CHECK(parts.size() >= 2 && parts.size() <= 3 && known_actions().count(parts[0]),
             "SMOE_FAULT={}: expected ACTION:POINT[:RANK] with ACTION one of stage, kill, killjob, term, termjob, "
             "wait, hang, torch (or expert:K)",
             f);
  return parts;
}

// The parent process id and the command name of process `pid` (/proc/PID/stat).
bool read_stat(pid_t pid, pid_t& parent, std::string& command) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string line;
  if (!std::getline(in, line)) return false;
  const auto open = line.find('('), close = line.rfind(')');
  if (open == std::string::npos || close == std::string::npos) return false;
  command = line.substr(open + 1, close - open - 1);
  std::istringstream rest(line.substr(close + 1));
  char state = 0;
  rest >> state >> parent;
  return static_cast<bool>(rest);
}

// Whether our parent is an MPI launcher or Slurm's step daemon (then its
// other children running smoe's executable are this job's ranks on this
// node); a process started by a shell or a test has no job beyond itself.
bool under_launcher(bool& parent_is_mpirun) {
  pid_t grandparent = 0;
  std::string command;
  if (!read_stat(getppid(), grandparent, command)) return false;
  parent_is_mpirun = command == "mpirun" || command == "mpiexec" || command == "orterun" || command == "prterun";
  return parent_is_mpirun || command == "orted" || command == "prted" || command == "slurmstepd";
}

// This job's other ranks on this node: our launcher's children that run
// the executable this process runs.
std::vector<pid_t> sibling_ranks() {
  std::vector<pid_t> out;
  std::error_code ec;
  const fs::path self_exe = fs::read_symlink("/proc/self/exe", ec);
  if (ec) return out;
  const pid_t self = getpid(), parent = getppid();
  for (const auto& entry : fs::directory_iterator("/proc", ec)) {
    const std::string name = entry.path().filename().string();
    if (name.empty() || name.find_first_not_of("0123456789") != std::string::npos) continue;
    const pid_t pid = static_cast<pid_t>(std::stol(name));
    pid_t ppid = 0;
    std::string command;
    if (pid == self || !read_stat(pid, ppid, command) || ppid != parent) continue;
    std::error_code exe_ec;
    if (fs::read_symlink(entry.path() / "exe", exe_ec) == self_exe && !exe_ec) out.push_back(pid);
  }
  return out;
}

[[noreturn]] void kill_job(const std::string& point, int rank) {
  bool parent_is_mpirun = false;
  const bool launched = under_launcher(parent_is_mpirun);
  const std::vector<pid_t> ranks = launched ? sibling_ranks() : std::vector<pid_t>{};
  log::info("SMOE_FAULT: rank {} at {} kills the job ({} other rank{} on this node{})", rank, point, ranks.size(),
            ranks.size() == 1 ? "" : "s", parent_is_mpirun ? " and mpirun" : "");
  // The launcher first, so that it cannot react to a rank's death (and end
  // the job its own way) before it dies too.
  if (parent_is_mpirun) ::kill(getppid(), SIGKILL);
  for (pid_t pid : ranks) ::kill(pid, SIGKILL);
  std::raise(SIGKILL);
  std::abort();  // not reached: SIGKILL cannot be caught
}

void term_job(const std::string& point, int rank) {
  bool parent_is_mpirun = false;
  const std::vector<pid_t> ranks = under_launcher(parent_is_mpirun) ? sibling_ranks() : std::vector<pid_t>{};
  log::info("SMOE_FAULT: rank {} at {} sends SIGTERM to the job's {} rank{} on this node", rank, point,
            ranks.size() + 1, ranks.empty() ? "" : "s");
  for (pid_t pid : ranks) ::kill(pid, SIGTERM);
  std::raise(SIGTERM);
}

// Blocks until a stop signal has arrived (the flag its handler sets). The
// handlers are installed for the wait, so that the signal is not fatal
// here even outside a training loop's StopScope.
void wait_for_stop_signal(const std::string& point, int rank) {
  StopScope scope;
  heartbeat::Waiting waiting("SMOE_FAULT=wait");  // not stuck work of its own
  heartbeat::beat("waiting for a stop signal at " + point + " (SMOE_FAULT=wait)");
  log::info("SMOE_FAULT: rank {} waits at {} for SIGTERM or SIGUSR1", rank, point);
  while (!stop_requested()) std::this_thread::sleep_for(std::chrono::milliseconds(20));
}

}  // namespace

void inject_stage_fault(const std::string& point, int rank) {
  const auto f = fault_fields();
  if (f.empty() || f[0] == "expert" || f[1] != point) return;
  if (f.size() == 3 && f[2] != std::to_string(rank)) return;
  if (f[0] == "kill") std::raise(SIGKILL);
  if (f[0] == "killjob") kill_job(point, rank);
  if (f[0] == "term") std::raise(SIGTERM);  // what Slurm sends at the time limit
  if (f[0] == "termjob") term_job(point, rank);
  if (f[0] == "wait") wait_for_stop_signal(point, rank);
  if (f[0] == "hang")  // stuck without progress, not waiting on anyone: the stall inspector's case
    for (;;) std::this_thread::sleep_for(std::chrono::hours(1));
  if (f[0] == "stage")
    fail("injected fault in stage {} on rank {} (SMOE_FAULT={})", point, rank, std::getenv("SMOE_FAULT"));
  if (f[0] == "torch") {  // a real libtorch error, with its multi-line message and backtrace
    const at::Tensor t = at::zeros({2, 3});
    (void)t.view({4});
  }
}

void inject_expert_fault(int64_t expert) {
  const auto f = fault_fields();
  if (f.size() == 2 && f[0] == "expert" && f[1] == std::to_string(expert))
    fail("injected fault while training expert {} (SMOE_FAULT={})", expert, std::getenv("SMOE_FAULT"));
}

}  // namespace smoe::pipeline
