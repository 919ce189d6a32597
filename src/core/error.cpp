#include "core/error.h"

#include <cerrno>
#include <cstring>

namespace smoe {

std::string Error::one_line(const std::string& text) {
  std::string out;
  out.reserve(text.size());
  for (unsigned char c : text) {
    if (c == '\n')
      out += "\\n";
    else if (c == '\r')
      out += "\\r";
    else if (c == '\t')
      out += "\\t";
    else if (c < 0x20 || c == 0x7f)
      out += fmt::format("\\x{:02x}", c);
    else
      out += static_cast<char>(c);
  }
  return out;
}

std::string errno_message(const std::string& where) { return where + ": " + std::strerror(errno); }

}  // namespace smoe
