// Stage "embed": the base model's pre-logits (the embeddings K-means
// clusters) and logits of every training sample, computed in fixed batches
// shared out among the ranks and written by each rank at their rows'
// offsets in embeddings.f32 (float32 [N, D + C], id order): no rank gathers
// them (train/row_cache.h). Each rank keeps its own pre-logits for the
// cluster stage.
#include <torch/torch.h>

#include "core/hash.h"
#include "data/batch.h"
#include "data/sampler.h"
#include "models/moe.h"
#include "pipeline/run_state.h"
#include "pipeline/stage.h"
#include "pipeline/stages/common.h"
#include "train/row_cache.h"

using nlohmann::json;

namespace smoe::pipeline {
namespace {

class EmbedStage : public Stage {
 public:
  std::string name() const override { return "embed"; }
  std::vector<std::string> keys() const override { return {}; }  // the base model's and the data's keys
  json run(RunState& s) override {
    torch::NoGradGuard no_grad;
    models::Backbone& base = s.base;
    base->eval();
    const auto device = base->parameters().front().device();
    const int64_t N = s.train->size(), W = s.embedding_width();
    std::vector<at::Tensor> ids, pre;
    s.embeddings = train::RowCache::build(
        N, {W}, s.cfg.eval.batch_size, s.comm, s.reserve_rows(train::RowCache::bytes_of(N, {W})),
        s.store.embeddings_path(),
        [&](const std::vector<int64_t>& batch) {
          data::Batch x = data::make_batch(*s.train, batch, data::Transform{});
          at::Tensor h = base->prelogits(base->blocks(x.images.to(device), 0, models::NetworkSpec::kBlocks));
          ids.push_back(x.ids);
          pre.push_back(h.cpu());
          return torch::cat({h, base->classify(h)}, 1);
        },
        /*keep_file=*/true);
    // This rank's own rows, which it clusters next.
    s.local_ids = ids.empty() ? torch::empty({0}, torch::kLong) : torch::cat(ids);
    s.local_prelogits = pre.empty() ? torch::empty({0, base->spec().prelogit_dim()}) : torch::cat(pre);
    json record = {{"samples", N}, {"width", W}, {"mode", train::mode_name(s.embeddings->mode())}};
    if (s.comm.is_root()) record["sha256"] = sha256_file(s.store.embeddings_path());
    return record;
  }
};

}  // namespace

std::unique_ptr<Stage> make_embed_stage() { return std::make_unique<EmbedStage>(); }

std::pair<at::Tensor, at::Tensor> local_embedding_rows(RunState& s) {
  at::Tensor ids, rows;
  if (s.local_prelogits.defined()) {
    ids = s.local_ids;
    rows = s.local_prelogits;
  } else {
    const int64_t batch = s.cfg.eval.batch_size, N = s.train->size();
    std::vector<int64_t> mine;
    for (int64_t b : data::round_robin((N + batch - 1) / batch, s.comm.rank(), s.comm.size()))
      for (int64_t i = b * batch; i < std::min(N, (b + 1) * batch); ++i) mine.push_back(i);
    ids = torch::tensor(mine, torch::kLong);
    rows = s.open_embeddings().rows(mine).narrow(1, 0, s.base->spec().prelogit_dim());
  }
  return {ids, s.cfg.cluster.normalize ? models::normalize_rows(rows) : rows};
}

}  // namespace smoe::pipeline
