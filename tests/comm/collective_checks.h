// Value-by-value checks of every collective, shared by the in-process tests
// (ranks as threads) and the real multi-process tests under mpirun.
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <numeric>
#include <optional>
#include <thread>

#include "comm/communicator.h"

namespace smoe::testing {

inline void check_collectives(comm::Communicator& c) {
  const int r = c.rank(), P = c.size();

  // broadcast from the last rank
  std::vector<double> b(5, -1.0);
  if (r == P - 1) std::iota(b.begin(), b.end(), 10.0);
  c.broadcast(comm::host_buffer(b), P - 1);
  for (int i = 0; i < 5; ++i) EXPECT_EQ(b[i], 10.0 + i) << "rank " << r;

  // allreduce sum / max / min of int64 and float
  std::vector<int64_t> v = {r, 10 * r, -r, 1};
  c.allreduce(comm::host_buffer(v), comm::ReduceOp::sum);
  const int64_t s = int64_t{P} * (P - 1) / 2;
  EXPECT_EQ(v, (std::vector<int64_t>{s, 10 * s, -s, P}));
  std::vector<float> f = {static_cast<float>(r) + 0.5f, -static_cast<float>(r)};
  c.allreduce(comm::host_buffer(f), comm::ReduceOp::max);
  EXPECT_EQ(f[0], static_cast<float>(P - 1) + 0.5f);
  EXPECT_EQ(f[1], 0.0f);
  std::vector<int32_t> m = {r + 3};
  c.allreduce(comm::host_buffer(m), comm::ReduceOp::min);
  EXPECT_EQ(m[0], 3);

  // allgather: rank k contributes {k, k*k}
  std::vector<int64_t> mine = {r, r * r}, all(2 * static_cast<size_t>(P));
  c.allgather(comm::host_buffer(mine), comm::host_buffer(all));
  for (int k = 0; k < P; ++k) {
    EXPECT_EQ(all[2 * k], k);
    EXPECT_EQ(all[2 * k + 1], k * k);
  }

  // variable-size gather to root 0: rank k sends k+1 copies of 'a'+k
  auto parts = c.gather_bytes(std::string(static_cast<size_t>(r + 1), static_cast<char>('a' + r)), 0);
  if (r == 0) {
    ASSERT_EQ(parts.size(), static_cast<size_t>(P));
    for (int k = 0; k < P; ++k)
      EXPECT_EQ(parts[k], std::string(static_cast<size_t>(k + 1), static_cast<char>('a' + k)));
  } else {
    EXPECT_TRUE(parts.empty());
  }
  auto everyone = c.allgather_bytes("r" + std::to_string(r));
  ASSERT_EQ(everyone.size(), static_cast<size_t>(P));
  for (int k = 0; k < P; ++k) EXPECT_EQ(everyone[k], "r" + std::to_string(k));

  std::string text = r == 0 ? std::string("from the coordinator") : std::string();
  c.broadcast_bytes(text, 0);
  EXPECT_EQ(text, "from the coordinator");

  // point-to-point: every worker sends to 0, 0 answers each
  if (r == 0) {
    std::vector<int> seen;
    for (int k = 1; k < P; ++k) {
      auto msg = c.recv(comm::kAnySource, 7);
      EXPECT_EQ(msg.payload, "hello from " + std::to_string(msg.source));
      seen.push_back(msg.source);
      c.send(msg.source, 8, "ack " + std::to_string(msg.source));
    }
    std::sort(seen.begin(), seen.end());
    for (int k = 1; k < P; ++k) EXPECT_EQ(seen[k - 1], k);
  } else {
    c.send(0, 7, "hello from " + std::to_string(r));
    EXPECT_EQ(c.recv(0, 8).payload, "ack " + std::to_string(r));
  }
  // non-blocking receive: nothing with tag 99 is ever sent; tag 98 goes from the last rank to 0
  EXPECT_FALSE(c.try_recv(comm::kAnySource, 99).has_value());
  c.barrier();
  if (P > 1 && r == P - 1) c.send(0, 98, "polled");
  if (P > 1 && r == 0) {
    std::optional<comm::Message> got;
    while (!(got = c.try_recv(comm::kAnySource, 98))) std::this_thread::yield();
    EXPECT_EQ(got->payload, "polled");
    EXPECT_EQ(got->source, P - 1);
  }
  EXPECT_DOUBLE_EQ(c.allreduce_sum(1.5), 1.5 * P);
  c.barrier();
}

}  // namespace smoe::testing
