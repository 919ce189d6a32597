#include "pipeline/config_reference.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <map>
#include <nlohmann/json.hpp>

#include "cluster/initial_gate.h"
#include "models/ensembler.h"
#include "models/expert.h"
#include "models/gate.h"
#include "pipeline/config.h"
#include "pipeline/stage.h"

namespace smoe::pipeline {
namespace {

// Key -> the names it accepts, under every key each registry says names
// its entries (Registry::keys()).
template <typename Registry>
void add_names(const Registry& r, std::map<std::string, std::vector<std::string>>& out) {
  for (const std::string& key : r.keys()) out[key] = r.names();
}

std::map<std::string, std::vector<std::string>> accepted_names() {
  std::map<std::string, std::vector<std::string>> out;
  add_names(schemes(), out);
  add_names(cluster::initial_gates(), out);
  add_names(models::gate_kinds(), out);
  add_names(models::expert_architectures(), out);
  add_names(models::ensemblers(), out);
  return out;
}

// A table cell: no line breaks, no unescaped pipes.
std::string cell(const std::string& s) {
  std::string out;
  for (char ch : s) {
    if (ch == '|')
      out += "\\|";
    else if (ch == '\n')
      out += ' ';
    else
      out += ch;
  }
  return out;
}

}  // namespace

std::vector<std::string> registry_keys() {
  std::vector<std::string> out;
  for (const auto& [key, names] : accepted_names()) out.push_back(key);
  return out;
}

std::vector<KeyReference> config_reference() {
  const auto accepted = accepted_names();
  std::vector<KeyReference> out;
  for (KeyInfo& k : config_keys()) {
    KeyReference r{std::move(k), {}};
    if (auto it = accepted.find(r.info.key); it != accepted.end()) r.accepted = it->second;
    out.push_back(std::move(r));
  }
  return out;
}

std::string config_reference_json() {
  nlohmann::json out = nlohmann::json::array();
  for (const KeyReference& r : config_reference()) {
    nlohmann::json k = {{"key", r.info.key},
                        {"type", r.info.type},
                        {"default", r.info.default_value},
                        {"doc", r.info.doc},
                        {"min_exclusive", r.info.min_exclusive},
                        {"accepted", r.accepted.empty() ? r.info.choices : r.accepted}};
    k["min"] = r.info.min ? nlohmann::json(*r.info.min) : nlohmann::json(nullptr);
    k["max"] = r.info.max ? nlohmann::json(*r.info.max) : nlohmann::json(nullptr);
    out.push_back(std::move(k));
  }
  return out.dump(1) + "\n";
}

std::string config_reference_markdown() {
  std::string s =
      "# Configuration reference\n\n"
      "Every key of a smoe config, its type, its default and what it does; for a key that names an\n"
      "implementation, the names this build registers. Generated: `smoe config --keys --markdown >\n"
      "docs/configuration.md` (a test fails when this page and the code differ). A config file is YAML\n"
      "with these keys nested by their dots; `--set key=value` overrides one.\n\n"
      "| key | type | default | accepted names | what |\n"
      "| --- | --- | --- | --- | --- |\n";
  for (const KeyReference& r : config_reference()) {
    std::string names;
    for (const auto& n : r.accepted) names += (names.empty() ? "" : ", ") + fmt::format("`{}`", n);
    s += fmt::format("| `{}` | {} | `{}` | {} | {} |\n", r.info.key, cell(r.info.type), cell(r.info.default_value),
                     names, cell(r.info.doc));
  }
  s += "\n## Schemes\n\nThe stages each `scheme` runs, in order (`--until STAGE` stops after one, `--redo-from STAGE` "
       "redoes from one).\n\n| scheme | stages |\n| --- | --- |\n";
  for (const std::string& name : schemes().names())
    s += fmt::format("| `{}` | {} |\n", name, fmt::join(schemes().get(name), ", "));
  return s;
}

}  // namespace smoe::pipeline
