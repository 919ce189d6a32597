// `smoe predict`: a finished run's MoE (of any scheme) on a dataset folder (smoe-data
// convert makes one from .npy pairs, image folders and the usual formats),
// one row per sample in an HDF5 file (data/prediction_file.h): the class,
// the expert that ran (the largest weight; -1 for none), the early-exit flag,
// the label when the input has labels, the probabilities with --probs; the
// accuracy as an attribute when there are labels. Under mpirun each rank
// predicts a contiguous block of the rows and writes it at its offset (no
// gather); 1 and 2 ranks write the same file. The file appears whole or not
// at all (AtomicPath); a bad input is refused in one line before it exists.
#pragma once

#include <optional>
#include <string>
#include <vector>

namespace smoe::comm {
class MpiRuntime;
class DeviceRouter;
}  // namespace smoe::comm

namespace smoe::pipeline {

struct PredictRequest {
  std::string run_dir;
  std::string input;  // a dataset folder (manifest.json and HDF5 shards)
  std::string split;  // default: the run's test split
  std::string out;
  int64_t limit = 0;  // the first `limit` samples (0: all)
  std::string rule;   // default: anytime, or mixture for a jointly trained MoE
  std::optional<double> tau;
  std::string ensembler;
  bool probs = false;
  bool force = false;             // replace an existing --out
  std::vector<std::string> sets;  // runtime.* overrides (device, threads)
};

// Every rank calls it; returns the exit status. Rank 0 throws the errors
// found before anything is written (for main to print once).
int run_predict(comm::MpiRuntime& mpi, comm::DeviceRouter& comm, const PredictRequest& request);

}  // namespace smoe::pipeline
