#include "core/error.h"

#include <cerrno>
#include <cstring>

namespace smoe {

std::string errno_message(const std::string& where) { return where + ": " + std::strerror(errno); }

}  // namespace smoe
