// Shared pieces of the libFuzzer targets: a scratch folder per process, and
// the one kind of exception a reader may throw on bad input (smoe::Error, a
// one-line message). Anything else — another exception, a crash, a
// sanitizer report — is a finding.
#pragma once

#include <unistd.h>

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <string>

#include "core/error.h"

namespace smoe::fuzz {

inline const std::filesystem::path& scratch() {
  static const std::filesystem::path dir = [] {
    auto p = std::filesystem::temp_directory_path() / ("smoe-fuzz-" + std::to_string(::getpid()));
    std::filesystem::create_directories(p);
    return p;
  }();
  return dir;
}

inline std::string write(const std::string& name, const uint8_t* data, size_t size) {
  auto path = scratch() / name;
  std::filesystem::create_directories(path.parent_path());
  std::ofstream(path, std::ios::binary).write(reinterpret_cast<const char*>(data), static_cast<std::streamsize>(size));
  return path.string();
}

// Runs fn; a smoe::Error (a clean one-line rejection) is the expected outcome of bad input.
template <typename Fn>
void expect_clean(Fn&& fn) {
  try {
    fn();
  } catch (const smoe::Error& e) {
    const std::string what = e.what();
    if (what.find('\n') != std::string::npos) __builtin_trap();  // errors are one line
  }
}

}  // namespace smoe::fuzz
