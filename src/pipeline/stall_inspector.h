// The stall inspector (Horovod's idea): no failure may leave the job waiting
// for ever. Every rank's inspector thread sends rank 0 its heartbeat status
// (core/heartbeat.h) every period; rank 0's inspector aborts the whole job,
// with one line naming the rank, its stage and what it last did, when
//
//   a) a rank made no progress for timeout seconds while not waiting on
//      other ranks (stuck in its own work: a hung read, an endless loop);
//   b) a rank sent no heartbeat for timeout seconds (its process froze);
//   c) every rank has been waiting on the others for timeout seconds (a
//      deadlock: a collective some rank will never join).
//
// Waiting inside a collective while another rank works is not a stall. The
// timeout is runtime.stall_timeout_s (0 turns the inspector off); it must
// exceed the longest step without a heartbeat (training steps, inference
// batches and K-means iterations all beat).
#pragma once

#include <atomic>
#include <condition_variable>
#include <functional>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "comm/communicator.h"
#include "core/heartbeat.h"
#include "pipeline/protocol.h"

namespace smoe::pipeline {

struct StallOptions {
  double timeout_s = 1800;  // 0: off
  double period_s = 5;      // between heartbeats
};

class StallInspector {
 public:
  using StatusFn = std::function<heartbeat::Status()>;
  // Called once on rank 0 with the verdict; by default prints it and aborts the job.
  using AbortFn = std::function<void(const std::string& why)>;

  StallInspector(comm::Communicator& comm, StallOptions options, StatusFn status = heartbeat::status,
                 AbortFn abort = nullptr);
  ~StallInspector();  // stops the thread
  StallInspector(const StallInspector&) = delete;
  StallInspector& operator=(const StallInspector&) = delete;

  // Rank 0's verdict on the latest statuses: empty when nothing is stalled.
  // `reports[r]`: rank r's last status, `silence[r]`: seconds since it came.
  static std::string verdict(const std::vector<heartbeat::Status>& reports, const std::vector<double>& silence,
                             double timeout_s);

 private:
  void loop();

  comm::Communicator& comm_;
  StallOptions options_;
  StatusFn status_;
  AbortFn abort_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false;
  std::thread thread_;
};

}  // namespace smoe::pipeline
