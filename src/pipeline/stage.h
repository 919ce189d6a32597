// Stages and training schemes. A stage is one step of a training scheme
// (base, embed, cluster, gate, experts, em, eval): it declares its name, the
// config keys its results depend on and the run.json records it owns, and
// runs collectively on the shared run state. A training scheme is an ordered
// list of stage names: Algorithm 1 is
//
//   base -> embed -> cluster -> gate -> experts -> eval
//
// and the em scheme inserts em before eval. `smoe train` runs the scheme's
// stages in order, skipping those run.json records as finished; `--resume
// --redo-from S` forgets S and every later stage; a config key that changed
// since the run started forces the first stage that declares it (and so
// every later one) to be redone. New stages and schemes register in
// stages() and schemes() (stage.cpp); a stage with options of its own names
// their struct in its registration (core/variant_options.h): its keys are
// "<stage>.*", it reads them with options<S>(config) and lists "<stage>."
// in keys().
#pragma once

#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "core/registry.h"
#include "data/integrity.h"
#include "data/manifest.h"
#include "pipeline/config.h"
#include "pipeline/trained_model.h"

namespace smoe::pipeline {

struct RunState;

class Stage {
 public:
  virtual ~Stage() = default;
  virtual std::string name() const = 0;
  // Config keys the stage's results depend on: a key ("seed") or a section
  // prefix ending in '.' ("base.").
  virtual std::vector<std::string> keys() const = 0;
  // run.json keys this stage owns besides its name (its tasks): prefixes
  // such as "expert/".
  virtual std::vector<std::string> record_prefixes() const { return {name() + "/"}; }
  // Whether run.json records it once finished (then a resumed run skips it).
  // The evaluation is not recorded: it runs every time.
  virtual bool recorded() const { return true; }
  // Rejects configs this stage cannot run (called before anything is created).
  virtual void check(const Config& config) const {}
  // Rejects inputs this stage cannot use (the dataset's manifest, given
  // checkpoints): found before a run folder is created, so a bad input
  // leaves nothing behind.
  virtual void check_inputs(const Config& config, const data::Manifest& dataset) const {}
  // Collective: the stage's work; returns its run.json record (rank 0's counts).
  virtual nlohmann::json run(RunState& state) = 0;
  // Collective: what later stages need from this stage when it is skipped as
  // finished (the base stage loads base.pt; most stages leave files that
  // later stages read when they need them).
  virtual void restore(RunState& state) {}
  // The model this stage trains, for the stages after it (RunState::model),
  // smoe predict and smoe export; none for a stage that trains no MoE.
  virtual std::optional<TrainedModel> trained_model(const Config& config) const { return std::nullopt; }

 protected:
  // This stage's own options, as registered (options::prototype<S>()).
  template <typename S>
  const S& options(const Config& config) const {
    return options::of<S>(config.stages.get(name()));
  }
};

using StageFactory = std::function<std::unique_ptr<Stage>()>;
// Stage name -> factory. Built in: base, embed, pseudo_label, cluster, gate,
// experts, em, eval, joint, distill, finetune.
Registry<StageFactory>& stages();
// Scheme name -> ordered stage names. Built in: algorithm1, em, dfcp, joint,
// joint_distill, algorithm1_finetune.
Registry<std::vector<std::string>>& schemes();

// The stages of config.scheme, built, in order.
std::vector<std::unique_ptr<Stage>> scheme_stages(const Config& config);
// The model a finished run of config.scheme holds: its last training
// stage's; none when no stage trains a model.
std::optional<TrainedModel> scheme_model(const Config& config);

// What run_dir needs of a scheme: names, keys and records of its stages.
struct StagePlan {
  std::string name;
  std::vector<std::string> keys;
  std::vector<std::string> record_prefixes;
  bool recorded = true;
};
std::vector<StagePlan> scheme_plan(const Config& config);
// Index in `plan` of the first recorded stage whose results depend on `key`;
// plan.size() when none does (keys that never change results, such as
// runtime.*, and keys of stages outside the scheme or of the evaluation).
size_t first_stage_using(const std::vector<StagePlan>& plan, const std::string& key);
// Index of the stage that owns run.json record `record`, or plan.size().
size_t stage_owning(const std::vector<StagePlan>& plan, const std::string& record);

// Keys no stage's results depend on (threads, storage, prefetch, ...).
bool key_never_changes_results(const std::string& key);

// Every registry name the config uses resolves, and every stage of the
// scheme accepts the config; else an error naming the key.
void check_config(const Config& config);
// check_config, then the inputs: the dataset's splits, the shards the run
// will read against the manifest (data.verify, data/integrity.h; `shards`
// is the run folder's cache of earlier checks and gains the files checked),
// and what each stage of the scheme checks (enough training samples for the
// experts, a given base checkpoint that loads into the configured model).
// What `smoe train` runs before it creates the run folder.
void check_inputs(const Config& config, data::VerifyCache& shards);
// The shards of the splits a run reads, checked as check_inputs does.
void check_shards(const Config& config, const data::Manifest& dataset, data::VerifyCache& shards);

}  // namespace smoe::pipeline
