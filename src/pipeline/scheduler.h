// Dynamic scheduling of independent tasks (one expert and its ensembler per
// task) over all ranks, the coordinator included. The protocol, in full:
//
//   a) Rank 0 starts a scheduler thread. Every rank's main thread — rank 0's
//      too — is a worker that sends REQUEST {"result": null} to rank 0
//      (tag kRequestTag).
//   b) For each REQUEST, the scheduler first records the result it carries,
//      if any (on_done, called on the scheduler thread, in arrival order),
//      then answers TASK {"task": id} with the next pending task, or STOP
//      when none is left (tag kReplyTag).
//   c) A worker runs its task and sends REQUEST {"result": {...}} with what
//      the task returned; it leaves after STOP.
//   d) The scheduler thread ends once every rank has been sent STOP, so all
//      results are recorded before run_tasks() returns on rank 0.
//   e) If rank 0's own worker fails, it sends its scheduler SHUTDOWN so that
//      the thread ends before the error propagates (the caller then aborts).
//   f) If the scheduler itself fails (on_done throws), it sends rank 0's
//      worker FAILED (tag kReplyTag) so that the worker stops waiting and
//      rethrows the scheduler's error (the caller then aborts the job).
//
//   g) Optionally a task waits for another (`after`): it is handed out only
//      once that task's result is recorded. A worker that asks while every
//      pending task waits is answered when one becomes ready.
//   h) A result holding "halt": true ends the hand-out: every later request
//      is answered STOP (a failed or stopped sweep run).
//
// Tasks are handed out in the order given (put the longest first), so K
// tasks on P ranks finish in about ceil(K/P) task-times even when task costs
// differ. A worker that throws ends the job through the caller's abort; the
// scheduler thread never outlives run().
#pragma once

#include <functional>
#include <nlohmann/json.hpp>
#include <vector>

#include "comm/communicator.h"
#include "pipeline/protocol.h"

namespace smoe::pipeline {

using TaskFn = std::function<nlohmann::json(int64_t task)>;
using DoneFn = std::function<void(int64_t task, int rank, const nlohmann::json& result)>;

// Task ids ordered by decreasing expected cost (ties keep id order): the
// order run_tasks should hand them out in.
std::vector<int64_t> longest_first(const std::vector<int64_t>& tasks, const std::vector<double>& expected_cost);

// What run_tasks does, simulated: P workers each take the next task in
// `order` when they become free; `dispatch` seconds per hand-out (the
// request/reply round trip). Returns the makespan.
double simulate_schedule(const std::vector<int64_t>& order, const std::vector<double>& seconds, int workers,
                         double dispatch);

// Collective: every rank calls it. `tasks` and `on_done` matter on rank 0 only.
void run_tasks(comm::Communicator& comm, const std::vector<int64_t>& tasks, const TaskFn& work, const DoneFn& on_done);
// The same, where tasks[i] is handed out only after task after[i] is done
// (-1: no wait; a task outside `tasks` counts as done).
void run_tasks(comm::Communicator& comm, const std::vector<int64_t>& tasks, const std::vector<int64_t>& after,
               const TaskFn& work, const DoneFn& on_done);

}  // namespace smoe::pipeline
