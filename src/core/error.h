// Errors and checks. Every failure smoe reports to a user is an smoe::Error
// whose message is one line naming the culprit (file, key, flag, rank) and
// what was expected; the command-line front ends print it and exit non-zero.
#pragma once

#include <fmt/format.h>
#include <fmt/ranges.h>  // fmt::join, which fmt 11 moved out of format.h

#include <stdexcept>
#include <string>

namespace smoe {

class Error : public std::runtime_error {
 public:
  // Control characters (from echoed user input: a YAML value with a line
  // break, a file name) are escaped, so that the message stays one line.
  explicit Error(const std::string& what) : std::runtime_error(one_line(what)) {}
  static std::string one_line(const std::string& text);
};

// Throws smoe::Error with a formatted message.
template <typename... Args>
[[noreturn]] void fail(fmt::format_string<Args...> format, Args&&... args) {
  throw Error(fmt::format(format, std::forward<Args>(args)...));
}

// "where: strerror(errno)" for failed system calls.
std::string errno_message(const std::string& where);

}  // namespace smoe

// Checks a condition that depends on input (files, configs, flags): the
// message is for the user and names what was wrong.
#define SMOE_CHECK(cond, ...)               \
  do {                                      \
    if (!(cond)) ::smoe::fail(__VA_ARGS__); \
  } while (0)

// Checks an internal invariant: the message carries file and line because
// reaching it is a bug, not a user error.
#define SMOE_ASSERT(cond, ...)                                                                                   \
  do {                                                                                                           \
    if (!(cond))                                                                                                 \
      throw ::smoe::Error(                                                                                       \
          fmt::format("internal error at {}:{}: {} ({})", __FILE__, __LINE__, fmt::format(__VA_ARGS__), #cond)); \
  } while (0)
