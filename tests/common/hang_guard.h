// within_hang_bound(fn): runs fn (which may throw) and returns or rethrows
// what it does; if fn has not returned after kHangBound, the test binary
// fails with a message and exits, since the threads of a hung fn cannot be
// joined. The bound is hang detection only: the work guarded takes
// milliseconds, so no machine's speed or load reaches it, and no test
// asserts how fast anything was.
#pragma once

#include <gtest/gtest.h>

#include <chrono>
#include <cstdlib>
#include <future>
#include <iostream>

namespace smoe::testing {

inline constexpr std::chrono::seconds kHangBound{300};

template <typename Fn>
auto within_hang_bound(const char* what, Fn&& fn) {
  auto done = std::async(std::launch::async, std::forward<Fn>(fn));
  if (done.wait_for(kHangBound) != std::future_status::ready) {
    std::cerr << "hang: " << what << " has not returned after " << kHangBound.count() << " s\n";
    std::_Exit(1);  // the hung threads cannot be joined
  }
  return done.get();
}

}  // namespace smoe::testing
