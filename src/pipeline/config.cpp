#include "pipeline/config.h"

#include <fmt/ranges.h>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cctype>
#include <set>

#include "core/atomic_file.h"
#include "core/error.h"

namespace smoe {

void Config::describe(options::Table& t) {
  t.key("seed", seed, "run seed; every random stream derives from it").at_least(0);
  t.key("scheme", scheme,
        "training scheme, an ordered list of stages (each scheme's: docs/configuration.md): algorithm1 (Royer et "
        "al. Algorithm 1), em (Algorithm 1, then em.steps EM rounds), dfcp (DFCP-MoE: labels relabelled from a "
        "trusted subset before clustering), joint (gate and experts trained together, Krishnamurthy et al.), "
        "joint_distill (joint, then the gate distilled with the experts frozen) or algorithm1_finetune (Algorithm 1, "
        "then its MoE trained further as a jointly trained one: stage finetune)");
  t.section("data", data);
  t.section("model", model);
  t.section("base", base);
  t.section("pseudo", pseudo);
  t.section("cluster", cluster);
  t.section("gate", gate);
  t.section("experts", experts);
  t.section("ensembler", ensembler);
  t.section("em", em);
  t.section("joint", joint);
  t.section("distill", distill);
  t.section("finetune", finetune);
  t.section("eval", eval);
  t.section("runtime", runtime);
  stages.describe(t);
}

void Config::merge(const YAML::Node& node, const std::string& origin) {
  options::merge(options::table_of(*this), node, origin);
}

void Config::set(const std::string& assignment, const std::string& origin) {
  options::set(options::table_of(*this), assignment, origin);
}

Config Config::from_yaml_text(const std::string& text, const std::string& origin,
                              const std::vector<std::string>& overrides) {
  Config c = defaults();
  YAML::Node root;
  try {
    root = YAML::Load(text);
  } catch (const YAML::Exception& e) {
    fail("{}: invalid YAML at line {}: {}", origin, e.mark.line + 1, e.msg);
  }
  try {
    c.merge(root, origin);
  } catch (const YAML::Exception& e) {  // a node of a shape the checks above did not foresee
    fail("{}: invalid config at line {}: {}", origin, e.mark.line + 1, e.msg);
  }
  for (const auto& o : overrides) c.set(o);
  c.validate();
  return c;
}

Config Config::load(const std::string& yaml_path, const std::vector<std::string>& overrides) {
  if (yaml_path.empty()) {
    Config c = defaults();
    for (const auto& o : overrides) c.set(o);
    c.validate();
    return c;
  }
  return from_yaml_text(read_file(yaml_path), yaml_path, overrides);
}

namespace {

// "lr=0.1 step_epochs=[3, 4]" -> {"lr=0.1", "step_epochs=[3, 4]"}: split on
// spaces outside brackets.
std::vector<std::string> split_assignments(const std::string& text) {
  std::vector<std::string> out;
  std::string cur;
  int depth = 0;
  for (char ch : text) {
    if (ch == '[' || ch == '{') ++depth;
    if (ch == ']' || ch == '}') --depth;
    if (std::isspace(static_cast<unsigned char>(ch)) && depth == 0) {
      if (!cur.empty()) out.push_back(cur);
      cur.clear();
    } else {
      cur += ch;
    }
  }
  if (!cur.empty()) out.push_back(cur);
  return out;
}

const std::set<std::string>& optim_keys() {
  static const std::set<std::string> keys = [] {
    const auto k = OptimConfig::per_expert_keys();
    return std::set<std::string>(k.begin(), k.end());
  }();
  return keys;
}

}  // namespace

OptimConfig Config::expert_optim(int64_t k) const {
  if (experts.optims.empty()) return experts.optim;
  const std::string& text = experts.optims[static_cast<size_t>(k) % experts.optims.size()];
  Config copy = *this;
  for (const std::string& a : split_assignments(text)) {
    const auto eq = a.find('=');
    const std::string key = eq == std::string::npos ? a : a.substr(0, eq);
    SMOE_CHECK(eq != std::string::npos && optim_keys().count(key),
               "config key 'experts.optims': '{}' in '{}' is not key=value over an optimiser key ({})", a, text,
               fmt::format("{}", fmt::join(optim_keys(), ", ")));
    copy.set("experts." + a, "experts.optims '" + text + "'");
  }
  return copy.experts.optim;
}

void Config::validate() const {
  for (size_t k = 0; k < experts.optims.size(); ++k) {
    const OptimConfig o = expert_optim(static_cast<int64_t>(k));
    SMOE_CHECK(o.warmup_epochs <= std::max<int64_t>(o.epochs, 0) || o.epochs == 0,
               "config key 'experts.optims' ('{}'): warmup_epochs ({}) exceeds epochs ({})", experts.optims[k],
               o.warmup_epochs, o.epochs);
  }
  Config copy = *this;
  options::check(options::table_of(copy));
}

std::string Config::to_yaml(bool with_docs) const {
  Config copy = *this;
  return options::to_yaml(options::table_of(copy), with_docs);
}

std::vector<KeyInfo> config_keys() {
  Config c = Config::defaults();
  return options::key_infos(options::table_of(c));
}

}  // namespace smoe
