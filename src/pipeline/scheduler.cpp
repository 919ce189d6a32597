#include "pipeline/scheduler.h"

#include <deque>
#include <exception>
#include <thread>

#include "core/error.h"

namespace smoe::pipeline {

using nlohmann::json;

namespace {

void serve(comm::Communicator& comm, std::deque<int64_t> pending, const DoneFn& on_done) {
  int stopped = 0;
  while (stopped < comm.size()) {
    comm::Message m = comm.recv(comm::kAnySource, kRequestTag);
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

void run_tasks(comm::Communicator& comm, const std::vector<int64_t>& tasks, const TaskFn& work,
               const DoneFn& on_done) {
  std::thread scheduler;
  std::exception_ptr scheduler_error;
  if (comm.is_root()) {
    scheduler = std::thread([&] {
      try {
        serve(comm, std::deque<int64_t>(tasks.begin(), tasks.end()), on_done);
      } catch (...) {
        scheduler_error = std::current_exception();
      }
    });
  }
  try {
    json request = {{"type", "request"}, {"result", nullptr}};
    for (;;) {
      comm.send(0, kRequestTag, request.dump());
      json reply = json::parse(comm.recv(0, kReplyTag).payload);
      if (reply["type"] == "stop") break;
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
