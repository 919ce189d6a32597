// The outputs of a scaling study (`smoe scaling`, pipeline/scaling_study.h)
// from its folder: DIR/study.json and one finished run per rank count,
// DIR/P<P>. Written by rank 0 at the end of the study, and again by `smoe
// scaling --table DIR` (no MPI; e.g. with a cluster's collective constants):
//
//   scaling.md    per stage and rank count: seconds, speedup, efficiency,
//                 the bytes the busiest rank sent and received in collectives
//                 and its seconds inside them; the model's prediction from
//                 the smallest run beside each measurement (and its error),
//                 then its predictions beyond; for the experts stage, the
//                 scheduler's simulation replayed with each run's own task
//                 seconds; the checks and warnings
//   scaling.csv   the same rows (source: measured | predicted)
//   scaling_time.png, scaling_efficiency.png   against log2 P, one line per stage
//
// Speedup and efficiency are relative to the smallest rank count measured,
// P0 (the baseline, normally 1). Strong (the same work at every P):
// speedup T(P0) / T(P), efficiency speedup P0 / P. Weak (work N0 P): the
// efficiency is T(P0) / T(P) (ideal: a constant time) and the speedup is the
// scaled speedup, efficiency P / P0 (for the stages whose work grows: the
// evaluation's test split does not, and is measured as in a strong study).
#pragma once

#include <map>
#include <string>
#include <vector>

#include "pipeline/scaling_model.h"

namespace smoe::pipeline {

// What the predictions beyond are for, when not for the measured runs
// themselves: per stage (or "" for every stage) the work of the run to
// predict over the work measured (`smoe scaling --table DIR --work-scale
// STAGE=F`; e.g. the full config's samples x epochs over a short run's).
// The predicted rows then include P0, their speedup and efficiency relative
// to it.
using WorkScale = std::map<std::string, double>;

struct ScalingRow {
  std::string stage;
  int ranks = 0;
  bool measured = true;  // else predicted
  bool weak = false;     // the stage's work grew with P (weak study, training-set stages)
  double seconds = 0, speedup = 0, efficiency = 0;
  double sent_bytes = 0, recv_bytes = 0, comm_seconds = 0;  // the busiest rank's (measured rows)
  double predicted = 0;                                     // the model's seconds (every row)
  double replayed = -1;                                     // tasks stages, measured rows: StageModel::replay (else -1)
};

struct ScalingResult {
  ScalingMode mode = ScalingMode::strong;
  std::vector<ScalingRow> rows;       // stage by stage, rank counts in order
  std::vector<std::string> checks;    // what was found equal across P
  std::vector<std::string> problems;  // what differed (a strong study's runs must not)
  std::vector<std::string> warnings;  // rank counts a stage cannot fill
  CollectiveModel collectives;
  WorkScale work;
};

// The run folder of rank count P in study folder `out`: OUT/P<P>.
std::string study_run_dir(const std::string& out, int P);

// Reads the study in `out` and computes its rows (no file written).
ScalingResult scaling_result(const std::string& out, const CollectiveModel& collectives,
                             const std::vector<int>& predict_at, const WorkScale& work = {});

std::string scaling_markdown(const ScalingResult& r);
std::string scaling_csv(const ScalingResult& r);

// Writes scaling.md, scaling.csv and the plots into `out` and prints the
// Markdown; returns 0, or 1 when a strong study's runs differ.
// `collectives`: constants to use instead of study.json's (unknown: those).
int write_scaling_study(const std::string& out, const CollectiveModel& collectives, const std::vector<int>& predict_at,
                        const WorkScale& work = {});

}  // namespace smoe::pipeline
