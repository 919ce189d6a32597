// Option tables: how a component declares its configuration keys beside its
// fields (LightGBM's config.h idea, without the code generator). An options
// struct gives each field its default as a member initialiser and, in a
// describe() method written right under the fields, the field's key, doc and
// checks:
//
//   struct KMeansOptions {
//     int64_t restarts = 4;
//     double tol = 1e-4;
//     void describe(options::Table& t) {
//       t.key("restarts", restarts, "K-means restarts").at_least(1);
//       t.key("tol", tol, "relative tolerance").at_least(0);
//     }
//   };
//
// A struct that holds others describes them as sections (t.section("dfcp",
// dfcp): keys "dfcp.*") or inline (t.inline_section(kmeans): its keys at
// this level). The run configuration (pipeline/config.h) is the tree of
// these structs; the YAML reader, the `--set` overrides, `smoe config
// --print`/`--keys` and docs/configuration.md all follow from its table.
// Torch-free and YAML-free: yaml-cpp stays in options.cpp.
#pragma once

#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <variant>
#include <vector>

namespace YAML {
class Node;
}

namespace smoe {

// One key, for documentation (`smoe config --keys`).
struct KeyInfo {
  std::string key;
  std::string type;
  std::string default_value;         // the value in the table's struct, as YAML
  std::string doc;                   // with the accepted strings appended, if any
  std::optional<double> min, max;    // the range (numbers, and each element of a list of numbers)
  bool min_exclusive = false;        // min itself is refused
  std::vector<std::string> choices;  // the accepted strings, if the key lists them
};

namespace options {

// An enum-like option is an enum class with its names declared once, beside
// it, by an overload of option_names found by argument-dependent lookup:
//
//   enum class Weighting { reweight, sample };
//   inline const options::Names<Weighting>& option_names(Weighting) {
//     static const options::Names<Weighting> n{{Weighting::reweight, "reweight"}, {Weighting::sample, "sample"}};
//     return n;
//   }
//
// The config reads and prints the names; past the config, code compares
// enumerators, never strings. name(v) gives a value's name (logs, reports).
template <typename E>
using Names = std::vector<std::pair<E, std::string_view>>;

template <typename E>
std::string name(E value) {
  for (const auto& [v, n] : option_names(E{}))
    if (v == value) return std::string(n);
  return "?";
}

// The enumerator called `text`, if any.
template <typename E>
std::optional<E> from_name(std::string_view text) {
  for (const auto& [v, n] : option_names(E{}))
    if (n == text) return v;
  return std::nullopt;
}

// The type-erased view of an enum member the table keeps.
struct EnumRef {
  std::function<std::string()> get;
  std::function<bool(const std::string&)> set;  // false: not one of the names
  std::vector<std::string> names;
};

using FieldPtr = std::variant<bool*, int64_t*, double*, std::string*, std::vector<int64_t>*, std::vector<double>*,
                              std::vector<std::string>*, EnumRef>;

// One key bound to one member, with its doc and checks.
struct Field {
  std::string key;  // dotted, from the root of the table
  FieldPtr ptr;
  std::string doc;
  std::optional<double> min;  // inclusive lower bound (numbers, and each list element)
  std::optional<double> max;  // inclusive upper bound
  bool min_exclusive = false;
  std::vector<std::string> choices;  // allowed strings; empty = any

  Field& at_least(double v) {
    min = v;
    return *this;
  }
  Field& above(double v) {
    min = v;
    min_exclusive = true;
    return *this;
  }
  Field& at_most(double v) {
    max = v;
    return *this;
  }
  Field& one_of(std::vector<std::string> c) {
    choices = std::move(c);
    return *this;
  }
};

// The keys of one struct tree, in declaration order. Fields point into the
// struct described: a table is used while that struct lives and is not moved.
class Table {
 public:
  template <typename T>
  Field& key(const std::string& name, T& member, std::string doc) {
    Field f;
    f.key = prefix_ + name;
    f.doc = std::move(doc);
    if constexpr (std::is_enum_v<T>) {
      EnumRef ref;
      for (const auto& [value, text] : option_names(T{})) ref.names.emplace_back(text);
      ref.get = [&member] { return options::name(member); };
      ref.set = [&member](const std::string& text) {
        for (const auto& [value, n] : option_names(T{}))
          if (n == text) {
            member = value;
            return true;
          }
        return false;
      };
      f.choices = ref.names;
      f.ptr = std::move(ref);
    } else {
      f.ptr = &member;
    }
    fields_.push_back(std::move(f));
    return fields_.back();  // a deque: earlier references stay valid
  }
  // The keys of `s` under "name.".
  template <typename S>
  void section(const std::string& name, S& s) {
    const std::string saved = prefix_;
    prefix_ += name + ".";
    s.describe(*this);
    prefix_ = saved;
  }
  // The keys of `s` at this level (a component whose keys predate its struct).
  template <typename S>
  void inline_section(S& s) {
    s.describe(*this);
  }

  // A constraint between this struct's keys (or on one key beyond its
  // range), declared in describe() beside the fields it reads and checked
  // when a config is loaded (options::check). It gets the struct's key
  // prefix ("" or "base.", ...) to name its keys, and fails (smoe::fail) with
  // one line naming the keys, their values and what was expected:
  //
  //   t.rule([this](const std::string& at) {
  //     SMOE_CHECK(warmup_epochs <= epochs, "config key '{}warmup_epochs' is {}: more than {}epochs ({})", ...);
  //   });
  void rule(std::function<void(const std::string& prefix)> check) { rules_.push_back({prefix_, std::move(check)}); }

  const std::deque<Field>& fields() const { return fields_; }
  const Field* find(const std::string& key) const;
  // Whether some key lies under "prefix.".
  bool is_section(const std::string& prefix) const;

 private:
  friend void check(const Table& table);
  struct Rule {
    std::string prefix;
    std::function<void(const std::string&)> check;
  };
  std::string prefix_;
  std::deque<Field> fields_;
  std::vector<Rule> rules_;
};

// The table of a struct (its describe()).
template <typename S>
Table table_of(S& s) {
  Table t;
  s.describe(t);
  return t;
}

// Applies a YAML mapping (nested, or with dotted keys) to the fields,
// checking names, types and ranges; a key given twice is an error.
void merge(const Table& table, const YAML::Node& node, const std::string& origin);
// Applies one "a.b=value" assignment; the value is parsed as YAML.
void set(const Table& table, const std::string& assignment, const std::string& origin);
// Runs the table's rules, in declaration order: the first that fails throws.
void check(const Table& table);
// The fields' values as nested YAML, each with its doc as a comment.
std::string to_yaml(const Table& table, bool with_docs);
// The keys, their types, current values and docs.
std::vector<KeyInfo> key_infos(const Table& table);

}  // namespace options

// A config's YAML text flattened to dotted keys -> each value's YAML text
// (flow style): how run folders compare and tabulate configs. Throws
// YAML::Exception on invalid YAML.
std::map<std::string, std::string> flat_yaml(const std::string& yaml_text);

}  // namespace smoe
