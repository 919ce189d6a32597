// The config reader: a YAML document, then `--set` overrides (lines of the
// input starting with "--set ").
#include <sstream>
#include <vector>

#include "fuzz_common.h"
#include "pipeline/config.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string text(reinterpret_cast<const char*>(data), size), yaml, line;
  std::vector<std::string> overrides;
  std::istringstream in(text);
  while (std::getline(in, line)) {
    if (line.rfind("--set ", 0) == 0)
      overrides.push_back(line.substr(6));
    else
      yaml += line + "\n";
  }
  smoe::fuzz::expect_clean([&] {
    smoe::Config c = smoe::Config::from_yaml_text(yaml, "fuzz.yaml", overrides);
    // What is accepted prints and reads back to the same config.
    smoe::Config again = smoe::Config::from_yaml_text(c.to_yaml(), "printed", {});
    if (again.to_yaml() != c.to_yaml()) __builtin_trap();
  });
  return 0;
}
