// The model a training stage leaves, as the stages after it (the
// evaluation), `smoe predict` and `smoe export` find it: each training
// stage declares it (Stage::trained_model), the pipeline hands the latest
// one on through the run state, and a finished run's is its scheme's last.
// Nothing looks at stage names to tell which model a run holds. Torch-free.
#pragma once

#include <string>

namespace smoe::pipeline {

struct TrainedModel {
  enum class Family {
    single_gate,  // Algorithm 1's MoE (frozen g0, the gate fitted to it, experts and ensemblers): the experts and em
                  // stages
    joint,        // a jointly trained MoE (models/joint_moe.h): joint, distill, finetune
  };
  Family family = Family::single_gate;
  // A jointly trained MoE: the stage whose checkpoint holds it
  // (ModelStore::joint_path), its gate kind, and whether it is built around
  // the trained base model (Algorithm 1's MoE fine-tuned).
  std::string checkpoint;
  std::string gate_kind;
  bool around_base = false;

  bool joint() const { return family == Family::joint; }
};

}  // namespace smoe::pipeline
