// N ranks as threads of one process, for unit tests of multi-rank logic
// (XGBoost's test_worker.h idea): collectives meet at a shared rendezvous,
// control messages go through per-rank mailboxes. If one rank throws, the
// group is aborted and every rank blocked in a collective throws too, so a
// failing test never hangs.
#pragma once

#include <functional>
#include <memory>

#include "comm/communicator.h"

namespace smoe::comm {

class ThreadGroup;

// Runs fn(comm) on `ranks` threads, one communicator each, and rethrows the
// first exception any rank threw (after every thread has ended).
void run_ranks(int ranks, const std::function<void(Communicator&)>& fn);

// The shared state of a group; communicator(r) is rank r's endpoint.
class ThreadGroup {
 public:
  explicit ThreadGroup(int size);
  ~ThreadGroup();
  std::unique_ptr<Communicator> communicator(int rank);
  // Makes every blocked and future call of the group throw.
  void abort(const std::string& why);

  struct State;

 private:
  std::shared_ptr<State> state_;
};

}  // namespace smoe::comm
