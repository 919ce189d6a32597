// Algorithm 1, step 1: the base model phi, trained data-parallel over all
// ranks. Rank-count invariance: every global batch of B samples is fixed by
// (seed, epoch), split into micro-batches of fixed composition handed out
// round-robin to the ranks; each micro-batch's gradient of the summed loss is
// accumulated as exact 64-bit fixed point and allreduced, so the summed
// gradient — and every weight after it — is bit-identical for any rank count
// (at a fixed number of threads per rank). BatchNorm statistics are
// recomputed after training on a fixed calibration set.
#pragma once

#include <functional>
#include <memory>
#include <string>

#include "comm/communicator.h"
#include "comm/tensor_collectives.h"
#include "data/dataset.h"
#include "models/network.h"
#include "train/optim_options.h"

namespace torch::optim {
class Optimizer;
}

namespace smoe::train {

struct BaseTrainOptions {
  OptimConfig optim;
  int64_t micro_batch = 32;
  int64_t bn_calibration = 4096;
  bool augment = false;
  int64_t crop_padding = 0;
  bool hflip = false;
  uint64_t seed = 0;
  int64_t log_every = 50;
  int64_t prefetch = 2;
  // Resuming: the loss scaler's state after start_epoch (float16; 0: fresh).
  double loss_scale = 0;
  int64_t loss_scale_good_steps = 0;
};

struct BaseTrainStats {
  double seconds = 0;                 // the training loop, without BatchNorm calibration
  double final_loss = 0;              // mean training loss of the last epoch
  double final_train_accuracy = 0;    // on the (augmented) training batches of the last epoch
  int64_t images = 0;                 // processed by this rank
  std::string precision = "float32";  // what the forward passes ran in (train/precision.h)
  double loss_scale = 1;              // float16's loss scaler after the last step (train/loss_scaler.h)
  int64_t loss_scale_good_steps = 0;
  int64_t skipped_steps = 0;  // steps skipped for gradients that overflowed
};

// Called on every rank after each epoch (1-based; the stage saves a checkpoint there).
using BaseEpochHook = std::function<void(int64_t epoch, const BaseTrainStats&, torch::optim::Optimizer&)>;

// Trains epochs [start_epoch, optim.epochs); optimizer_state (when not empty)
// is the state saved after epoch start_epoch, and `net` holds that epoch's
// weights. Throws Stopped (core/stop.h) at the first step boundary after a
// stop signal reached any rank (the last epoch's checkpoint is the progress
// kept). Then recomputes the BatchNorm statistics.
BaseTrainStats train_base(models::Backbone& net, const std::shared_ptr<const data::Dataset>& train,
                          comm::Communicator& comm, const BaseTrainOptions& options, int64_t start_epoch = 0,
                          const std::string& optimizer_state = "", const BaseEpochHook& on_epoch_end = {});

// Collective: whether a stop signal (core/stop.h) reached any rank.
bool stop_requested_anywhere(comm::Communicator& comm);

// Recomputes every BatchNorm's running statistics of `net` as the plain
// average over micro-batches of the calibration samples (identical on every
// rank); `forward` runs the model on a micro-batch of images.
void calibrate_batchnorm(torch::nn::Module& net, const std::function<void(const at::Tensor&)>& forward,
                         const std::shared_ptr<const data::Dataset>& train, const std::vector<int64_t>& ids,
                         int64_t micro_batch);
void calibrate_batchnorm(models::Backbone& net, const std::shared_ptr<const data::Dataset>& train,
                         const std::vector<int64_t>& ids, int64_t micro_batch);
// Each parameter's gradient (zeros where autograd left none), to add into an ExactSum.
std::vector<at::Tensor> gradients_of(const std::vector<at::Tensor>& params);
// The end of a data-parallel step: sums `grad_sum` exactly over every rank,
// writes sum / batch_size into each parameter's gradient, clears the sum,
// clips (optim.grad_clip) and steps the optimiser.
void apply_exact_sum(comm::ExactSum& grad_sum, const std::vector<at::Tensor>& params, comm::Communicator& comm,
                     int64_t batch_size, const OptimConfig& optim, torch::optim::Optimizer& opt);

// Whether a module holds any BatchNorm layer.
bool has_batchnorm(torch::nn::Module& net);

}  // namespace smoe::train
