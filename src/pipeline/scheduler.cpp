#include "pipeline/scheduler.h"

#include <algorithm>
#include <deque>
#include <exception>
#include <queue>
#include <set>
#include <thread>

#include "core/error.h"

namespace smoe::pipeline {

using nlohmann::json;

namespace {

void serve(comm::Communicator& comm, const std::vector<int64_t>& tasks, const std::vector<int64_t>& after,
           const DoneFn& on_done) {
  std::set<int64_t> waited_for;  // prerequisites not yet done
  for (int64_t a : after)
    if (a >= 0 && std::find(tasks.begin(), tasks.end(), a) != tasks.end()) waited_for.insert(a);
  std::vector<std::pair<int64_t, int64_t>> pending;  // (task, prerequisite), in hand-out order
  for (size_t i = 0; i < tasks.size(); ++i) pending.push_back({tasks[i], after.empty() ? -1 : after[i]});
  std::deque<int> idle;  // workers waiting for a task that is not ready yet
  bool halted = false;
  int stopped = 0;
  // Answers `worker` with the first ready task, STOP when nothing is left;
  // false when it must wait.
  auto answer = [&](int worker) {
    if (halted || pending.empty()) {
      comm.send(worker, kReplyTag, json{{"type", "stop"}}.dump());
      ++stopped;
      return true;
    }
    for (auto it = pending.begin(); it != pending.end(); ++it) {
      if (it->second >= 0 && waited_for.count(it->second)) continue;
      comm.send(worker, kReplyTag, json{{"type", "task"}, {"task", it->first}}.dump());
      pending.erase(it);
      return true;
    }
    return false;
  };
  while (stopped < comm.size()) {
    comm::Message m = comm.recv_idle(comm::kAnySource, kRequestTag);
    json req = json::parse(m.payload);
    if (req["type"] == "shutdown") return;  // this rank's worker failed; the job is ending
    if (!req["result"].is_null()) {
      const int64_t task = req["task"].get<int64_t>();
      on_done(task, m.source, req["result"]);
      waited_for.erase(task);
      if (req["result"].is_object() && req["result"].value("halt", false)) halted = true;
    }
    idle.push_back(m.source);
    while (!idle.empty() && answer(idle.front())) idle.pop_front();
    // Everyone waits and nothing can become ready: a prerequisite that is
    // never handed out (not in `tasks`) was filtered above, so this is a bug.
    SMOE_ASSERT(static_cast<int>(idle.size()) + stopped < comm.size() || idle.empty(),
                "run_tasks: every worker waits for a task that can never be ready");
  }
}

}  // namespace

std::vector<int64_t> longest_first(const std::vector<int64_t>& tasks, const std::vector<double>& expected_cost) {
  std::vector<int64_t> order = tasks;
  std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) {
    return expected_cost[static_cast<size_t>(a)] > expected_cost[static_cast<size_t>(b)];
  });
  return order;
}

double simulate_schedule(const std::vector<int64_t>& order, const std::vector<double>& seconds, int workers,
                         double dispatch) {
  SMOE_CHECK(workers >= 1, "simulate_schedule: at least one worker");
  // Min-heap of the times at which workers become free.
  std::priority_queue<double, std::vector<double>, std::greater<double>> free_at;
  for (int w = 0; w < workers; ++w) free_at.push(0.0);
  double makespan = 0;
  for (int64_t t : order) {
    double start = free_at.top() + dispatch;
    free_at.pop();
    double end = start + seconds[static_cast<size_t>(t)];
    makespan = std::max(makespan, end);
    free_at.push(end);
  }
  return makespan;
}

void run_tasks(comm::Communicator& comm, const std::vector<int64_t>& tasks, const TaskFn& work, const DoneFn& on_done) {
  run_tasks(comm, tasks, {}, work, on_done);
}

void run_tasks(comm::Communicator& comm, const std::vector<int64_t>& tasks, const std::vector<int64_t>& after,
               const TaskFn& work, const DoneFn& on_done) {
  SMOE_CHECK(after.empty() || after.size() == tasks.size(), "run_tasks: {} prerequisites for {} tasks", after.size(),
             tasks.size());
  std::thread scheduler;
  std::exception_ptr scheduler_error;
  if (comm.is_root()) {
    scheduler = std::thread([&] {
      try {
        serve(comm, tasks, after, on_done);
      } catch (...) {
        // Recording a result failed (on_done: run.json cannot be written...):
        // wake rank 0's own worker, which may be waiting for a reply that
        // will never come, so that it rethrows this error and the caller
        // ends the job instead of every rank waiting for ever.
        scheduler_error = std::current_exception();
        try {
          comm.send(0, kReplyTag, json{{"type", "failed"}}.dump());
        } catch (...) {
        }
      }
    });
  }
  try {
    json request = {{"type", "request"}, {"result", nullptr}};
    for (;;) {
      comm.send(0, kRequestTag, request.dump());
      json reply = json::parse(comm.recv_idle(0, kReplyTag).payload);
      if (reply["type"] == "stop" || reply["type"] == "failed") break;
      const int64_t task = reply["task"].get<int64_t>();
      request = {{"type", "request"}, {"task", task}, {"result", work(task)}};
      SMOE_ASSERT(!request["result"].is_null(), "task {} returned no result", task);
    }
  } catch (...) {
    // The job is going down (the caller aborts it): stop our scheduler thread
    // so that nothing outlives this frame.
    if (scheduler.joinable()) {
      try {
        comm.send(0, kRequestTag, json{{"type", "shutdown"}}.dump());
      } catch (...) {
      }
      scheduler.join();
    }
    throw;
  }
  if (scheduler.joinable()) scheduler.join();
  if (scheduler_error) std::rethrow_exception(scheduler_error);
}

}  // namespace smoe::pipeline
