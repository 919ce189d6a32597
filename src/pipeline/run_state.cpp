#include "pipeline/run_state.h"

#include <torch/torch.h>

#include <cmath>

#include "comm/tensor_collectives.h"
#include "core/error.h"
#include "core/log.h"
#include "core/memory.h"
#include "core/progress.h"
#include "train/checkpoint.h"
#include "train/inference.h"

namespace smoe::pipeline {
namespace {

std::shared_ptr<data::Dataset> open_split(const Config& c, const std::string& split, int64_t limit) {
  SMOE_CHECK(!c.data.path.empty(), "config key 'data.path' is empty: name the dataset folder (smoe-data convert ...)");
  data::DatasetOptions o;
  o.storage = c.data.storage;
  o.memory_budget_mb = c.data.memory_budget_mb;
  o.cache_mb = c.data.cache_mb;
  o.limit = limit;
  return data::Dataset::open(c.data.path, split, o);
}

}  // namespace

RunState::RunState(Config config, comm::Communicator& comm_, RunDir& run_, RuntimeInfo runtime)
    : cfg(std::move(config)),
      comm(comm_),
      run(run_),
      rt(runtime),
      train(open_split(cfg, cfg.data.train_split, cfg.data.limit_train)),
      test(open_split(cfg, cfg.data.test_split, cfg.data.limit_test)),
      store(run, cfg, network_spec(cfg, train->manifest()), rt.device) {
  SMOE_CHECK(train->size() >= cfg.experts.count, "{} training samples for {} experts", train->size(),
             cfg.experts.count);
  base = store.build_base();
}

RunState::~RunState() = default;

void RunState::load_base(const std::string& path) {
  train::load_module(*base, path);
  base->eval();
}

void RunState::root_load_embeddings() {
  if (!comm.is_root() || train_prelogits.defined()) return;
  auto e = train::load_state(store.embeddings_path());
  train_prelogits = e.at("prelogits");
  train_logits = e.at("logits");
}

void RunState::root_load_g0() {
  if (comm.is_root() && !g0.defined()) g0 = train::load_state(store.cluster_path()).at("g0");
}

models::GateFeatures RunState::root_train_gate_features() {
  root_load_embeddings();
  return {cfg.cluster.normalize ? models::normalize_rows(train_prelogits) : train_prelogits, train_logits};
}

void RunState::share_expert_inputs() {
  root_load_embeddings();
  root_load_g0();
  train_logits = comm::broadcast_tensor(comm, train_logits, 0);
  g0 = comm::broadcast_tensor(comm, g0, 0);
}

void RunState::prepare_expert_inputs() {
  if (expert_inputs) return;
  // The frozen trunk's outputs, computed once (shared out among the ranks)
  // and reused by every expert and epoch — unless the experts train on
  // augmented images, which the trunk must see one batch at a time.
  if (cfg.experts.cache_trunk && !cfg.experts.augment) {
    Progress t("trunk", 1, 1);
    at::Tensor f = train::trunk_features(base, *train, cfg.experts.branch_after, cfg.eval.batch_size, comm);
    trunk_cache_seconds = t.seconds();
    log::info("experts   trunk features cached: [{}] in {}", fmt::join(f.sizes(), ", "),
              format_duration(trunk_cache_seconds));
    expert_inputs = std::make_unique<train::ExpertInputs>(f);
  } else {
    data::Transform t;
    t.augment = cfg.experts.augment;
    t.crop_padding = cfg.data.crop_padding;
    t.hflip = cfg.data.hflip;
    expert_inputs = std::make_unique<train::ExpertInputs>(base, train, cfg.experts.branch_after, t);
  }
}

at::Tensor RunState::train_labels() const { return torch::tensor(train->labels(), torch::kLong); }

std::vector<double> ranks_peak_rss_mb(comm::Communicator& comm) {
  std::vector<int64_t> peaks(static_cast<size_t>(comm.size()));
  int64_t mine = memory::peak_resident_bytes();
  comm.allgather(comm::host_buffer(&mine, 1), comm::host_buffer(peaks));
  std::vector<double> mb;
  for (int64_t b : peaks) mb.push_back(std::round(static_cast<double>(b) / 1048576.0 * 10) / 10);
  return mb;
}

}  // namespace smoe::pipeline
