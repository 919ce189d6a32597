// Shared by the command-line front ends: one-line errors and exit codes.
#pragma once

#include <functional>
#include <string>

namespace smoe::apps {

// Runs body(); prints "PROGRAM: error: MESSAGE" on one line for any error and
// returns 1 (2 for command-line usage errors), else body's return value.
int run_cli(const char* program, const std::function<int()>& body);

}  // namespace smoe::apps
