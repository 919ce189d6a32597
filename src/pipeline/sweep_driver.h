// A sweep's runs on the job's ranks (smoe sweep): the ranks form groups of
// ranks_per_run; the groups' first ranks take runs from the dynamic
// scheduler (pipeline/scheduler.h) as they free up, each telling its group's
// other ranks which run to join (kSweepTaskTag); a run that starts from an
// earlier run's folder is handed out once that run has finished
// (pipeline/sweep.h decides which). Each run is an ordinary job
// (pipeline/job.h). Finished runs are skipped, started ones resumed; a
// failed or stopped run ends the hand-out, and every rank returns the worst
// exit status (kSweepExitTag).
#pragma once

#include <string>

#include "comm/communicator.h"
#include "comm/mpi_communicator.h"
#include "pipeline/sweep.h"

namespace smoe::pipeline {

// Every rank: returns the sweep's exit status (0, kResumableExit or 1), the
// same on every rank; rethrows, on the rank that met it, an error a group's
// first rank met before a run started.
int run_sweep(comm::MpiRuntime& mpi, comm::Communicator& world, const Sweep& sweep, const std::string& out,
              int ranks_per_run, bool verbose, bool quiet);

// sweep --dry-run: each run, the earlier run whose finished stages it would
// start from, and its folder's state (no MPI, nothing written).
int print_sweep_plan(const Sweep& sweep, const std::string& out);

}  // namespace smoe::pipeline
