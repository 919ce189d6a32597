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

json EpochFiles::save(torch::nn::Module& module, const std::string& optimizer_bytes) const {
  write_file_atomic(optim, optimizer_bytes);
  const std::string sha = train::save_module(module, weights);
  return {{"sha256", sha}, {"optim_sha256", sha256_hex(optimizer_bytes)}};
}

std::string EpochFiles::mismatch(const json& record) const {
  for (const auto& [path, key] : {std::pair{&weights, "sha256"}, std::pair{&optim, "optim_sha256"}}) {
    if (!std::filesystem::exists(*path)) return fmt::format("{}: missing", *path);
    if (sha256_file(*path) != record.value(key, std::string()))
      return fmt::format("{}: not the file its record names (another run's, or damaged)", *path);
  }
  return "";
}

std::string EpochFiles::load(torch::nn::Module& module) const {
  train::load_module(module, weights);
  return read_file(optim);
}

void EpochFiles::remove() const {
  std::error_code ec;
  for (const auto& f : {weights, optim}) std::filesystem::remove(f, ec);
}

EpochCheckpoints::EpochCheckpoints(RunState& s, std::string stage, int64_t epochs)
    : s_(s), stage_(std::move(stage)), key_(stage_ + "/progress"), epochs_(epochs) {}

EpochFiles EpochCheckpoints::files(int64_t epoch) const {
  return {s_.store.progress_path(stage_, epoch, "pt"), s_.store.progress_path(stage_, epoch, "optim")};
}

int64_t EpochCheckpoints::resume(torch::nn::Module& module) {
  if (!s_.run.done(key_)) return 0;
  last_ = s_.run.record(key_);
  const int64_t start = last_.at("epoch").get<int64_t>();
  const EpochFiles f = files(start);
  const std::string wrong = f.mismatch(last_);
  SMOE_CHECK(wrong.empty(), "{}, for epoch {} as run.json records it (resume with --redo-from {})", wrong, start,
             stage_);
  optimizer_bytes_ = f.load(module);
  log::info("{:<9} resuming after epoch {} of {} ({})", stage_, start, epochs_, f.weights);
  return start;
}

void EpochCheckpoints::save(torch::nn::Module& module, torch::optim::Optimizer& opt, int64_t epoch,
                            const json& fields) {
  last_ = fields;
  last_["epoch"] = epoch;
  if (s_.comm.is_root()) {
    std::filesystem::create_directories(s_.store.progress_dir(stage_));
    last_.update(files(epoch).save(module, train::optimizer_state(opt)));
    s_.run.mark_done(key_, last_);
    // The previous epoch's checkpoint is no longer the one to resume from.
    files(epoch - 1).remove();
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
