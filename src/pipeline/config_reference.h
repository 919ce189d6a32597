// The configuration reference: every key of the configuration (config.h's
// config_keys(): type, default, doc) and, for a key whose value names an
// entry of a registry (a scheme, an initial gate, a gate kind, an expert
// architecture, an ensembler), the names registered in this build, taken
// from the registries themselves so that the list cannot drift from the
// code. `smoe config --keys` prints it; docs/configuration.md is its
// Markdown, kept equal to it by a test.
#pragma once

#include <string>
#include <vector>

#include "core/options.h"

namespace smoe::pipeline {

struct KeyReference {
  KeyInfo info;
  std::vector<std::string> accepted;  // the registry's names; empty: not a registry key
};

std::vector<KeyReference> config_reference();
// The reference as a Markdown page (docs/configuration.md).
std::string config_reference_markdown();
// The reference as JSON, for tools (tests/pipeline/test_config_fuzz.py): an
// array of {key, type, default, doc, min, max, min_exclusive, accepted}, where
// accepted holds the key's strings or its registry's names.
std::string config_reference_json();
// The config keys whose values name registry entries.
std::vector<std::string> registry_keys();

}  // namespace smoe::pipeline
