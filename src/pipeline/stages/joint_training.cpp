#include "pipeline/stages/joint_training.h"

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

json run_joint_training(RunState& s, models::JointMoeImpl& moe, const train::JointTrainOptions& o) {
  const std::string key = o.stage + "/progress";
  int64_t start = 0;
  std::string optimizer_bytes;
  json last = json::object();
  if (s.run.done(key)) {
    last = s.run.record(key);
    start = last.at("epoch").get<int64_t>();
    const std::string weights = s.store.progress_path(o.stage, start, "pt");
    const std::string optim = s.store.progress_path(o.stage, start, "optim");
    SMOE_CHECK(std::filesystem::exists(weights) && sha256_file(weights) == last.at("sha256").get<std::string>(),
               "{}: missing or not the checkpoint run.json records for epoch {} (resume with --redo-from {})", weights,
               start, o.stage);
    optimizer_bytes = read_file(optim);
    SMOE_CHECK(sha256_hex(optimizer_bytes) == last.at("optim_sha256").get<std::string>(),
               "{}: not the optimiser state run.json records for epoch {} (resume with --redo-from {})", optim, start,
               o.stage);
    train::load_module(moe, weights);
    log::info("{:<9} resuming after epoch {} of {} ({})", o.stage, start, o.optim.epochs, weights);
  }

  double seconds = 0;
  int64_t images = 0;
  // Each epoch's per-expert load, kept across a resume (the report plots it).
  json load_history = last.value("load_history", json::array());
  auto on_epoch_end = [&](const train::JointEpochStats& st, torch::optim::Optimizer& opt) {
    seconds += st.seconds;
    images += st.images;
    load_history.push_back(st.load);
    if (s.comm.is_root()) {
      std::filesystem::create_directories(s.store.progress_dir(o.stage));
      const std::string bytes = train::optimizer_state(opt);
      write_file_atomic(s.store.progress_path(o.stage, st.epoch, "optim"), bytes);
      const std::string sha = train::save_module(moe, s.store.progress_path(o.stage, st.epoch, "pt"));
      last = {{"epoch", st.epoch},          {"sha256", sha},           {"optim_sha256", sha256_hex(bytes)},
              {"loss", st.loss},            {"train_error", st.train_error}, {"importance", st.importance},
              {"balance", st.balance}, {"diversity", st.diversity},          {"load", st.load},         {"similarity", st.similarity},
              {"load_history", load_history}};
      s.run.mark_done(key, last);
      // The previous epoch's checkpoint is no longer the one to resume from.
      std::error_code ec;
      for (const char* ext : {"pt", "optim"})
        std::filesystem::remove(s.store.progress_path(o.stage, st.epoch - 1, ext), ec);
    }
    // Every rank past the checkpoint before a test kills the job here.
    s.comm.barrier();
    inject_stage_fault(fmt::format("{}-epoch-{}", o.stage, st.epoch), s.comm.rank());
  };
  train::train_joint(moe, s.train, s.comm, o, start, optimizer_bytes, on_epoch_end);

  const int64_t all_images = s.comm.allreduce_sum(images);
  json record = {{"epochs", o.optim.epochs},
                 {"resumed_after_epoch", start},
                 {"final_loss", last.value("loss", 0.0)},
                 {"train_error", last.value("train_error", 0.0)},
                 {"importance", last.value("importance", 0.0)},
                 {"balance", last.value("balance", 0.0)},
                 {"diversity", last.value("diversity", 0.0)},
                 {"load", last.value("load", json::array())},
                 {"load_history", load_history},
                 {"similarity", last.value("similarity", 0.0)},
                 {"train_seconds", seconds},
                 {"images_per_second", seconds > 0 ? static_cast<double>(all_images) / seconds : 0.0}};
  if (s.comm.is_root()) {
    record["sha256"] = train::save_module(moe, s.store.joint_path(o.stage));
    std::error_code ec;
    std::filesystem::remove_all(s.store.progress_dir(o.stage), ec);
  }
  return record;
}

}  // namespace smoe::pipeline
