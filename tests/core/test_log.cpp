#include <gtest/gtest.h>

#include <fstream>
#include <nlohmann/json.hpp>

#include "common/temp_dir.h"
#include "core/log.h"

namespace smoe {
namespace {

TEST(Log, JsonLinesCarryMessagesAndEvents) {
  testing::TempDir tmp;
  log::init({0, 1, tmp / "log.jsonl"});
  log::info("hello {}", 42);
  log::event("epoch", {{"stage", "base"}, {"loss", 0.5}});
  log::shutdown();
  std::ifstream in(tmp / "log.jsonl");
  std::vector<nlohmann::json> lines;
  for (std::string line; std::getline(in, line);) lines.push_back(nlohmann::json::parse(line));
  ASSERT_EQ(lines.size(), 2u);
  EXPECT_EQ(lines[0]["msg"], "hello 42");
  EXPECT_EQ(lines[0]["level"], "info");
  EXPECT_EQ(lines[1]["event"], "epoch");
  EXPECT_EQ(lines[1]["stage"], "base");
  EXPECT_DOUBLE_EQ(lines[1]["loss"].get<double>(), 0.5);
  EXPECT_EQ(lines[1]["rank"], 0);
  EXPECT_TRUE(lines[1].contains("time"));
  log::init({});
}

}  // namespace
}  // namespace smoe
