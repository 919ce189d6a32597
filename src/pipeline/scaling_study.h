// `smoe scaling`: a scaling study as one command, inside one allocation.
//
//   mpirun -np PMAX smoe scaling --config FILE --ranks 1,2,4 [--mode strong|weak]
//                                [--stages experts,eval] --out DIR [--set key=value ...]
//
// For each rank count P, in increasing order, the job's first P ranks run the
// config as an ordinary job (pipeline/job.h) in DIR/P<P> while the other
// ranks wait without taking a core; one P at a time, so that no two runs
// share the machine. The stages the study times (default: every stage of the
// scheme) run at each P. The stages before the first of them do not depend on
// P (rank-count invariance): a strong study runs them once, with every rank,
// in DIR/prefix and starts each P from a copy of that folder; a weak study,
// whose training set grows with P (data.limit_train = N0 * P, N0 the
// config's data.limit_train), runs them for each P with every rank. Threads
// per rank are fixed (runtime.threads, 1 when the config leaves it to the
// machine), so that P ranks use P times the cores of one.
//
// Then rank 0 writes the study (pipeline/scaling_table.h): the table per
// stage, scaling.csv, scaling.png, the checks that a strong study's runs
// computed the same thing, the warnings where P exceeds what a stage can use,
// and the model's predictions (pipeline/scaling_model.h), with the collective
// constants measured on this job's ranks unless given.
//
// DIR/study.json records the study; a study run again with the same
// --out skips the rank counts whose run finished and redoes the others from
// the first timed stage (a stage resumed half-way would time half its work).
#pragma once

#include <string>
#include <vector>

#include "comm/communicator.h"
#include "comm/mpi_communicator.h"
#include "pipeline/scaling_model.h"
#include "pipeline/scaling_table.h"

namespace smoe::pipeline {

struct ScalingRequest {
  std::string config;             // the experiment's YAML file
  std::vector<std::string> sets;  // key=value overrides for every run
  std::vector<int> ranks;         // rank counts, each at most the job's ranks
  ScalingMode mode = ScalingMode::strong;
  std::vector<std::string> stages;
  std::string out;
  CollectiveModel collectives;  // latency or seconds_per_byte < 0: measured
  std::vector<int> predict_at = {64, 256, 1024};
  bool verbose = false, quiet = false;
};

// Every rank of the job calls it; returns the exit status (0, kResumableExit
// or 1), the same on every rank. Errors found before any run starts are
// thrown on rank 0 (for main to print) with nothing written.
int run_scaling(comm::MpiRuntime& mpi, comm::Communicator& world, const ScalingRequest& request);

}  // namespace smoe::pipeline
