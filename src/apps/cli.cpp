#include "apps/cli.h"

#include <boost/program_options/errors.hpp>
#include <cstdio>
#include <exception>

#include "core/error.h"

namespace smoe::apps {

int run_cli(const char* program, const std::function<int()>& body) {
  try {
    return body();
  } catch (const boost::program_options::error& e) {
    std::fprintf(stderr, "%s: error: %s (see %s --help)\n", program, e.what(), program);
    return 2;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "%s: error: %s\n", program, e.what());
    return 1;
  }
}

}  // namespace smoe::apps
