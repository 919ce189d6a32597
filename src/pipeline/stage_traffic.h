// A stage's communication, for its record in run.json (and the evaluation's,
// in report.json): what each rank moved through the job's communicator
// between the stage's start and its end (comm/traffic.h). `smoe scaling`
// tabulates it and predicts from it.
#pragma once

#include <nlohmann/json.hpp>

#include "comm/communicator.h"
#include "comm/traffic.h"

namespace smoe::pipeline {

class StageTraffic {
 public:
  // Starts counting (a snapshot of the communicator's counts).
  explicit StageTraffic(const comm::Communicator& comm);
  // Collective: on rank 0 {"ops": rank 0's counts by kind (comm::to_json),
  // "sent_bytes", "recv_bytes", "seconds": one value per rank}; null on the
  // other ranks, and where the communicator does not count.
  nlohmann::json finish(comm::Communicator& comm) const;

 private:
  comm::TrafficCounts start_;
};

// {stage: record[field]} for the scheme's recorded stages that run.json
// records as done and whose record has `field` (seconds, peak_rss_mb, comm).
struct RunState;
nlohmann::json recorded_stage_field(const RunState& s, const char* field);

}  // namespace smoe::pipeline
