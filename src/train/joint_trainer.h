// Training of a jointly trained MoE (models/joint_moe.h), data-parallel
// over all ranks with the base stage's rank-count invariance: every global
// batch of B samples is fixed by (seed, epoch) and split into micro-batches
// of fixed composition, handed out round-robin; gradients are summed as
// exact fixed point over micro-batches and ranks, so the weights after each
// step are bit-identical for any rank count (at a fixed number of threads
// per rank).
//
// The loss of a step is mean_i NLL(log(y_hat_i + 1e-7)) + L_imp + L_s, the
// regularisers computed over the whole global batch (train/moe_losses.h),
// not per micro-batch: each rank runs its micro-batches forward, the
// batch's gate probabilities P [B, K] (and, for L_s, its inputs) are summed
// into place over the ranks (each row has one owner, so the sum is exact),
// every rank then has dL/dP for its own rows and backpropagates
// NLL + B * sum_i (dL/dP_i . P_i) through each micro-batch.
//
// With freeze_experts (distillation), only the gate trains; the experts run
// without autograd in eval mode.
//
// Every random draw — a noisy gate's N(0, 1) noise, mixup's lambda and
// partner permutation — is seeded from (seed, epoch, micro-batch index),
// never from the rank, so it too is the same for any rank count.
#pragma once

#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "comm/communicator.h"
#include "data/dataset.h"
#include "models/joint_moe.h"
#include "train/optim_options.h"
#include "train/regularizer_options.h"

namespace torch::optim {
class Optimizer;
}

namespace smoe::train {

struct JointTrainOptions {
  std::string stage = "joint";  // progress lines and seeds
  OptimConfig optim;
  RegularizerConfig reg;
  int64_t micro_batch = 64;
  double gate_lr_scale = 1;  // the gate's learning rate is this times optim.lr
  double mixup = 0;          // alpha of Beta(alpha, alpha); 0 = off
  // Conditional training (DFCP-MoE): the expert owning each class (one entry
  // per class; empty = off). Expert e's gradient then comes only from samples
  // of its classes, from the mixture's loss (its output is held constant in
  // the mixture of the other samples) and from its own cross-entropy, added.
  std::vector<int64_t> class_owner;
  bool freeze_experts = false;
  uint64_t seed = 0;
  int64_t log_every = 50;
  int64_t prefetch = 2;
  int64_t bn_calibration = 4096;  // samples for BatchNorm statistics (experts with BatchNorm)
};

struct JointEpochStats {
  int64_t epoch = 0;         // 1-based, the epoch just finished
  double loss = 0;           // mean NLL of the mixture over the epoch's samples
  double train_error = 0;    // of the mixture, on the epoch's training batches
  double importance = 0;     // mean L_imp over the epoch's steps
  double balance = 0;        // mean L_bal over the epoch's steps
  double diversity = 0;      // mean L_div over the epoch's steps
  double similarity = 0;     // mean L_s over the epoch's steps
  std::vector<double> load;  // [K] share of the epoch's samples whose largest gate value is expert e's
  double seconds = 0;        // this epoch
  int64_t images = 0;        // this rank's, this epoch
};

// The epoch's figures as JSON (for the log's events and the progress
// checkpoints): epoch, loss, train_error, the regularisers, load; not seconds.
nlohmann::json stats_json(const JointEpochStats& stats);

// Called on every rank after each epoch (the stage saves a checkpoint there).
using JointEpochHook = std::function<void(const JointEpochStats&, torch::optim::Optimizer&)>;

// Trains epochs [start_epoch, optim.epochs); optimizer_state (when not empty)
// is the state saved after epoch start_epoch. Returns the last epoch's stats.
JointEpochStats train_joint(models::JointMoeImpl& moe, const std::shared_ptr<const data::Dataset>& train,
                            comm::Communicator& comm, const JointTrainOptions& options, int64_t start_epoch = 0,
                            const std::string& optimizer_state = "", const JointEpochHook& on_epoch_end = {});

}  // namespace smoe::train
