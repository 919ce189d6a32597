// Per-epoch checkpoints, so that a killed, preempted or time-limited job
// resumes from its last finished epoch and ends with the same weights as an
// uninterrupted run. One epoch's files (EpochFiles: the weights and the
// optimiser's state, with their hashes in the record that names them) are
// the same for every trainer; where the record lives differs:
//  - a training stage run by every rank (base, joint, distill, finetune):
//    EpochCheckpoints below, the record in run.json;
//  - an expert task, run by whichever rank takes it (experts.cpp): the
//    record in a file beside the task's checkpoint, since only rank 0
//    writes run.json.
//
// After epoch E rank 0 writes <stage>-progress/epoch-E.pt (weights) and
// epoch-E.optim (the optimiser's state), then records "<stage>/progress"
// = {epoch, hashes, the stage's own fields} in run.json and removes epoch
// E - 1's files. A resumed run checks both files against the recorded hashes
// and continues with epoch E + 1; `--redo-from STAGE` forgets the record, so
// the stage starts over. finish() removes the folder once the stage's final
// model is written.
#pragma once

#include <nlohmann/json.hpp>
#include <string>

namespace torch::nn {
class Module;
}
namespace torch::optim {
class Optimizer;
}

namespace smoe::pipeline {

struct RunState;

// One epoch's checkpoint: the module's weights (`weights`, .pt) and its
// optimiser's state (`optim`), each written atomically.
struct EpochFiles {
  std::string weights, optim;

  // Writes both; returns their hashes as a record's fields {sha256, optim_sha256}.
  nlohmann::json save(torch::nn::Module& module, const std::string& optimizer_bytes) const;
  // Empty when both files exist and match `record`'s hashes; else what is
  // wrong, naming the file.
  std::string mismatch(const nlohmann::json& record) const;
  // Loads the weights into `module` and returns the optimiser's state (after
  // mismatch() found nothing wrong).
  std::string load(torch::nn::Module& module) const;
  void remove() const;
};

class EpochCheckpoints {
 public:
  EpochCheckpoints(RunState& state, std::string stage, int64_t epochs);

  // The epoch training resumes after (0 without a checkpoint); with one,
  // loads its weights into `module` and its optimiser state into
  // optimizer_bytes(), after checking both against run.json.
  int64_t resume(torch::nn::Module& module);
  const std::string& optimizer_bytes() const { return optimizer_bytes_; }
  // The last saved epoch's record (empty before the first).
  const nlohmann::json& last() const { return last_; }

  // Collective: rank 0 saves epoch `epoch` (1-based) with `fields` added to
  // its record; every rank then passes a barrier and the fault point
  // "<stage>-epoch-E" (pipeline/fault.h).
  void save(torch::nn::Module& module, torch::optim::Optimizer& opt, int64_t epoch, const nlohmann::json& fields);
  // Rank 0: removes the progress folder.
  void finish();

 private:
  EpochFiles files(int64_t epoch) const;

  RunState& s_;
  std::string stage_, key_;
  int64_t epochs_;
  std::string optimizer_bytes_;
  nlohmann::json last_ = nlohmann::json::object();
};

}  // namespace smoe::pipeline
