// Option tables (core/options.h): a struct's keys declared beside its
// fields, nested as sections or inline, read from YAML and `key=value`,
// printed back, with their defaults taken from the member initialisers.
#include <gtest/gtest.h>
#include <yaml-cpp/yaml.h>

#include "common/expect_error.h"
#include "core/error.h"
#include "core/options.h"

namespace smoe {
namespace {

struct Inner {
  int64_t n = 3;
  std::vector<double> xs{0.5, 1};
  void describe(options::Table& t) {
    t.key("n", n, "a count").at_least(1);
    t.key("xs", xs, "some numbers").at_least(0).at_most(1);
    t.rule([this](const std::string& at) {
      SMOE_CHECK(static_cast<int64_t>(xs.size()) <= n, "config key '{}xs' has {} numbers: more than {}n ({})", at,
                 xs.size(), at, n);
    });
  }
};

struct Flat {
  double tol = 1e-3;
  void describe(options::Table& t) { t.key("tol", tol, "a tolerance").above(0); }
};

struct Outer {
  std::string mode = "fast";
  Flat flat;  // inline: its keys at this level
  Inner inner;
  bool on = true;
  void describe(options::Table& t) {
    t.key("mode", mode, "how").one_of({"fast", "slow"});
    t.inline_section(flat);
    t.section("inner", inner);
    t.key("on", on, "whether");
  }
};

TEST(Options, KeysFollowDeclarationOrderWithSectionPrefixes) {
  Outer o;
  std::vector<std::string> keys;
  for (const auto& k : options::key_infos(options::table_of(o))) keys.push_back(k.key);
  EXPECT_EQ(keys, (std::vector<std::string>{"mode", "tol", "inner.n", "inner.xs", "on"}));
}

TEST(Options, DefaultsAreTheMemberInitialisers) {
  Outer o;
  const auto keys = options::key_infos(options::table_of(o));
  EXPECT_EQ(keys[0].default_value, "\"fast\"");
  EXPECT_EQ(keys[0].doc, "how (fast | slow)");
  EXPECT_EQ(keys[2].default_value, "3");
  EXPECT_EQ(keys[3].default_value, "[0.5, 1]");
  EXPECT_EQ(keys[3].type, "list of float");
}

TEST(Options, YamlAndAssignmentsReachTheOwnersFields) {
  Outer o;
  options::Table t = options::table_of(o);
  options::merge(t, YAML::Load("mode: slow\ninner:\n  n: 7\ntol: 0.5\n"), "f.yaml");
  options::set(t, "inner.xs=[0, 0.25]", "--set");
  EXPECT_EQ(o.mode, "slow");
  EXPECT_EQ(o.inner.n, 7);
  EXPECT_DOUBLE_EQ(o.flat.tol, 0.5);
  EXPECT_EQ(o.inner.xs, (std::vector<double>{0, 0.25}));
  EXPECT_EQ(options::to_yaml(t, false), "mode: \"slow\"\ntol: 0.5\ninner:\n  n: 7\n  xs: [0, 0.25]\non: true\n");
}

TEST(Options, ChecksNameTheFullKey) {
  Outer o;
  options::Table t = options::table_of(o);
  EXPECT_ERROR(options::set(t, "inner.n=0", "--set"), "config key 'inner.n' (--set): must be >= 1, got 0");
  EXPECT_ERROR(options::set(t, "inner.xs=[2]", "--set"), "config key 'inner.xs' (--set): must be <= 1, got 2");
  EXPECT_ERROR(options::set(t, "mode=warp", "--set"),
               "config key 'mode' (--set): expected one of fast | slow, got 'warp'");
  EXPECT_ERROR(options::merge(t, YAML::Load("inner: 3\n"), "f.yaml"),
               "config key 'inner' (f.yaml): expected a mapping of keys, got '3'");
  EXPECT_ERROR(options::merge(t, YAML::Load("flat:\n  tol: 1\n"), "f.yaml"), "config key 'flat' (f.yaml): unknown key");
}

// A rule (a check across a struct's keys) runs when the table is checked,
// after every key is read, and names the keys with the section's prefix.
TEST(Options, RulesCheckAcrossKeysWithTheSectionPrefix) {
  Outer o;
  options::Table t = options::table_of(o);
  options::set(t, "inner.xs=[0, 0.5, 1]", "--set");  // 3 numbers for n = 3: the rule holds
  EXPECT_NO_THROW(options::check(t));
  options::set(t, "inner.n=2", "--set");  // a single key's check passes; the rule does not
  EXPECT_ERROR(options::check(t), "config key 'inner.xs' has 3 numbers: more than inner.n (2)");
}

}  // namespace
}  // namespace smoe
