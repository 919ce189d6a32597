#include "pipeline/stages/epoch_checkpoints.h"

#include <torch/torch.h>

#include <filesystem>

#include "core/atomic_file.h"
#include "core/error.h"
#include "core/hash.h"
#include "core/log.h"
#include "pipeline/fault.h"
#include "pipeline/run_state.h"
#include "train/checkpoint.h"

using nlohmann::json;

namespace smoe::pipeline {

EpochCheckpoints::EpochCheckpoints(RunState& s, std::string stage, int64_t epochs)
    : s_(s), stage_(std::move(stage)), key_(stage_ + "/progress"), epochs_(epochs) {}

int64_t EpochCheckpoints::resume(torch::nn::Module& module) {
  if (!s_.run.done(key_)) return 0;
  last_ = s_.run.record(key_);
  const int64_t start = last_.at("epoch").get<int64_t>();
  const std::string weights = s_.store.progress_path(stage_, start, "pt");
  const std::string optim = s_.store.progress_path(stage_, start, "optim");
  SMOE_CHECK(std::filesystem::exists(weights) && sha256_file(weights) == last_.at("sha256").get<std::string>(),
             "{}: missing or not the checkpoint run.json records for epoch {} (resume with --redo-from {})", weights,
             start, stage_);
  SMOE_CHECK(std::filesystem::exists(optim), "{}: missing (resume with --redo-from {})", optim, stage_);
  optimizer_bytes_ = read_file(optim);
  SMOE_CHECK(sha256_hex(optimizer_bytes_) == last_.at("optim_sha256").get<std::string>(),
             "{}: not the optimiser state run.json records for epoch {} (resume with --redo-from {})", optim, start,
             stage_);
  train::load_module(module, weights);
  log::info("{:<9} resuming after epoch {} of {} ({})", stage_, start, epochs_, weights);
  return start;
}

void EpochCheckpoints::save(torch::nn::Module& module, torch::optim::Optimizer& opt, int64_t epoch,
                            const json& fields) {
  if (s_.comm.is_root()) {
    std::filesystem::create_directories(s_.store.progress_dir(stage_));
    const std::string bytes = train::optimizer_state(opt);
    write_file_atomic(s_.store.progress_path(stage_, epoch, "optim"), bytes);
    const std::string sha = train::save_module(module, s_.store.progress_path(stage_, epoch, "pt"));
    last_ = fields;
    last_["epoch"] = epoch;
    last_["sha256"] = sha;
    last_["optim_sha256"] = sha256_hex(bytes);
    s_.run.mark_done(key_, last_);
    // The previous epoch's checkpoint is no longer the one to resume from.
    std::error_code ec;
    for (const char* ext : {"pt", "optim"}) std::filesystem::remove(s_.store.progress_path(stage_, epoch - 1, ext), ec);
  } else {
    last_ = fields;
    last_["epoch"] = epoch;
  }
  // Every rank past the checkpoint before a test kills the job here.
  s_.comm.barrier();
  inject_stage_fault(fmt::format("{}-epoch-{}", stage_, epoch), s_.comm.rank());
}

void EpochCheckpoints::finish() {
  if (!s_.comm.is_root()) return;
  std::error_code ec;
  std::filesystem::remove_all(s_.store.progress_dir(stage_), ec);
}

}  // namespace smoe::pipeline
