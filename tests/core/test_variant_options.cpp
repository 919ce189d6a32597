// A registered variant's options (core/variant_options.h): its registration
// files its defaults under the registry's extension point, and a config
// section of that point holds one copy per variant, under its name.
#include <gtest/gtest.h>

#include "core/error.h"
#include "core/registry.h"
#include "core/variant_options.h"

namespace smoe {
namespace {

struct WidthOptions {
  int64_t width = 3;
  void describe(options::Table& t) { t.key("width", width, "a width").at_least(1); }
};

struct Section {
  options::VariantSections kinds{"test widget"};
  void describe(options::Table& t) { kinds.describe(t); }
};

TEST(VariantOptions, ARegisteredVariantsKeysLiveUnderItsName) {
  Registry<int> widgets("test widget", "widget.kind", {{"plain", 1}, {"wide", 2, options::prototype<WidthOptions>()}});
  Section s;
  options::Table t = options::table_of(s);
  ASSERT_EQ(t.fields().size(), 1u);  // plain declares none
  EXPECT_EQ(t.fields().front().key, "wide.width");
  options::set(t, "wide.width=7", "--set");
  EXPECT_EQ(options::of<WidthOptions>(s.kinds.get("wide")).width, 7);
  EXPECT_EQ(s.kinds.get("plain"), nullptr);
  EXPECT_THROW(options::set(t, "wide.width=0", "--set"), Error);  // its own check

  // A copy is deep: changing it leaves the original.
  Section copy = s;
  options::Table ct = options::table_of(copy);
  options::set(ct, "wide.width=9", "--set");
  EXPECT_EQ(options::of<WidthOptions>(s.kinds.get("wide")).width, 7);
  EXPECT_EQ(options::of<WidthOptions>(copy.kinds.get("wide")).width, 9);

  // A variant registered after the section was made: its defaults, and its keys once described again.
  widgets.add("tall", 3, options::prototype<WidthOptions>());
  EXPECT_EQ(options::of<WidthOptions>(s.kinds.get("tall")).width, 3);
  EXPECT_EQ(options::table_of(s).fields().size(), 2u);
  widgets.remove("tall");
  widgets.remove("wide");
  EXPECT_EQ(Section().kinds.get("wide"), nullptr);  // removed with its entry
}

TEST(VariantOptions, AProbeBuiltWithoutOptionsGetsTheDefaults) {
  EXPECT_EQ(options::of<WidthOptions>(nullptr).width, 3);
}

}  // namespace
}  // namespace smoe
