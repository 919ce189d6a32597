#include "core/stop.h"

#include <signal.h>

#include <atomic>
#include <mutex>

namespace smoe {
namespace {

volatile sig_atomic_t g_signal = 0;
std::mutex g_mu;
int g_scopes = 0;

extern "C" void on_stop_signal(int sig) { g_signal = sig; }

void set_handlers(void (*handler)(int)) {
  struct sigaction sa {};
  sa.sa_handler = handler;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = SA_RESTART;
  sigaction(SIGTERM, &sa, nullptr);
  sigaction(SIGUSR1, &sa, nullptr);
}

}  // namespace

StopScope::StopScope() {
  std::lock_guard<std::mutex> lock(g_mu);
  if (g_scopes++ == 0) set_handlers(on_stop_signal);
}

StopScope::~StopScope() {
  std::lock_guard<std::mutex> lock(g_mu);
  if (--g_scopes == 0) set_handlers(SIG_DFL);
}

bool stop_requested() { return g_signal != 0; }
int stop_signal() { return g_signal; }
void request_stop_for_testing(int signal) { g_signal = signal; }
void clear_stop_for_testing() { g_signal = 0; }

}  // namespace smoe
