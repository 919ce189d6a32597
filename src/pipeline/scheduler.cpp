#include "pipeline/scheduler.h"

#include <algorithm>
#include <chrono>
#include <deque>
#include <exception>
#include <queue>
#include <thread>

#include "core/error.h"

namespace smoe::pipeline {

using nlohmann::json;

namespace {

// Waits for a request without spinning: MPI's blocking receive busy-polls,
// which would take the core that rank 0's own worker trains on.
comm::Message next_request(comm::Communicator& comm) {
  auto pause = std::chrono::microseconds(200);
  for (;;) {
    if (auto m = comm.try_recv(comm::kAnySource, kRequestTag)) return *m;
    std::this_thread::sleep_for(pause);
    pause = std::min(pause * 2, std::chrono::microseconds(20000));
  }
}

void serve(comm::Communicator& comm, std::deque<int64_t> pending, const DoneFn& on_done) {
  int stopped = 0;
  while (stopped < comm.size()) {
    comm::Message m = next_request(comm);
    json req = json::parse(m.payload);
    if (req["type"] == "shutdown") return;  // this rank's worker failed; the job is ending
    if (!req["result"].is_null()) on_done(req["task"].get<int64_t>(), m.source, req["result"]);
    if (pending.empty()) {
      comm.send(m.source, kReplyTag, json{{"type", "stop"}}.dump());
      ++stopped;
    } else {
      comm.send(m.source, kReplyTag, json{{"type", "task"}, {"task", pending.front()}}.dump());
      pending.pop_front();
    }
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
  std::thread scheduler;
  std::exception_ptr scheduler_error;
  if (comm.is_root()) {
    scheduler = std::thread([&] {
      try {
        serve(comm, std::deque<int64_t>(tasks.begin(), tasks.end()), on_done);
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
      json reply = json::parse(comm.recv(0, kReplyTag).payload);
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
