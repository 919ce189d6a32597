// Stopping on request (Slurm's time limit, preemption, scancel --signal):
// while a StopScope is alive, SIGTERM and SIGUSR1 only set a flag, and the
// training loop that opened the scope polls it (collectively, so that every
// rank stops at the same step), keeps the progress its last checkpoint
// saved and throws Stopped; smoe then exits with kResumableExit, which
// slurm/resubmit.sbatch takes as "requeue me". Outside any scope the signals
// keep their default action (the process ends; finished stages and tasks are
// kept in run.json either way).
#pragma once

#include <stdexcept>
#include <string>

namespace smoe {

// EX_TEMPFAIL: stopped on a signal, resumable with --resume.
constexpr int kResumableExit = 75;

class Stopped : public std::runtime_error {
 public:
  explicit Stopped(const std::string& what) : std::runtime_error(what) {}
};

class StopScope {
 public:
  StopScope();   // installs the handlers (nested scopes share them)
  ~StopScope();  // restores the default actions when the last scope closes
  StopScope(const StopScope&) = delete;
  StopScope& operator=(const StopScope&) = delete;
};

// Whether SIGTERM or SIGUSR1 arrived since the process started, and which.
bool stop_requested();
int stop_signal();

// For tests: raise the flag as a signal would, or clear it.
void request_stop_for_testing(int signal);
void clear_stop_for_testing();

}  // namespace smoe
