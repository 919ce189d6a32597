// One training or evaluation job, as every rank runs it (smoe train, smoe
// eval, and each run of a sweep):
//
//   phase 1  rank 0 loads the config and checks it, the dataset, the shards
//            and given checkpoints; every rank takes its device (collective);
//            rank 0 then creates or opens the run folder. An error in any of
//            these is printed once, by rank 0, and every rank returns 1 with
//            nothing written. The config and the folder's manifest reach the
//            other ranks by broadcast; each checks that it sees the folder.
//   phase 2  logging, the stall inspector, the pipeline. A failure on any
//            rank ends the job (MPI abort); a stop signal that every rank
//            agreed on returns kResumableExit.
#pragma once

#include <string>
#include <vector>

#include "comm/mpi_communicator.h"
#include "comm/router.h"

namespace smoe::pipeline {

struct JobRequest {
  std::string command = "train";  // train | eval
  std::string config;             // train: the config file (empty: the defaults)
  std::vector<std::string> sets;  // key=value overrides
  std::string run_dir;
  bool resume = false, force = false;  // train: continue the folder, or replace it
  std::string redo_from;               // train --resume: redo from this stage on
  std::string until;                   // train: stop after this stage
  bool verbose = false, quiet = false;
};

// Rank 0's error (empty: none) reaches every rank: rank 0 throws it (it is
// printed once), the others return true and end quietly. Collective.
bool root_error_ends_job(comm::Communicator& comm, std::string error);

// Every rank of `comm` calls it; returns the exit status (0, kResumableExit
// or 1). Errors of phase 1 are thrown on rank 0 (for main to print).
int run_job(comm::MpiRuntime& mpi, comm::DeviceRouter& comm, const JobRequest& job);

}  // namespace smoe::pipeline
