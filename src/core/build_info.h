// What was built: smoe's version and the git commit of its source tree
// (generated at build time by cmake/BuildInfo.cmake).
#pragma once

namespace smoe::build {

const char* version();  // "0.1.0"
const char* commit();   // "1a2b3c4d5e6f", "...-dirty" or "unknown"

}  // namespace smoe::build
