// Stage "embed": the base model's pre-logits (the embeddings K-means
// clusters) and logits of every training sample, computed in fixed batches
// shared out among the ranks and gathered on the coordinator
// (embeddings.pt).
#include "core/log.h"
#include "pipeline/run_state.h"
#include "pipeline/stage.h"
#include "train/checkpoint.h"
#include "train/inference.h"

using nlohmann::json;

namespace smoe::pipeline {
namespace {

class EmbedStage : public Stage {
 public:
  std::string name() const override { return "embed"; }
  std::vector<std::string> keys() const override { return {}; }  // the base model's and the data's keys
  json run(RunState& s) override {
    auto out = train::base_outputs(s.base, *s.train, s.comm, s.cfg.eval.batch_size, 0);
    s.local_ids = out.local_ids;
    s.local_prelogits = out.local_prelogits;
    json record;
    if (s.comm.is_root()) {
      record["sha256"] =
          train::save_state({{"prelogits", out.prelogits}, {"logits", out.logits}}, s.store.embeddings_path());
      record["samples"] = out.prelogits.size(0);
      s.train_prelogits = out.prelogits;
      s.train_logits = out.logits;
    }
    return record;
  }
};

}  // namespace

std::unique_ptr<Stage> make_embed_stage() { return std::make_unique<EmbedStage>(); }

}  // namespace smoe::pipeline
