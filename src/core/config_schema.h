// The machinery behind config.h: a Field binds one key to one member of a
// Config, with its default, doc and checks. Private to src/core.
#pragma once

#include <optional>
#include <string>
#include <variant>
#include <vector>

#include "core/config.h"

namespace smoe::detail {

using FieldPtr = std::variant<bool*, int64_t*, double*, std::string*, std::vector<int64_t>*, std::vector<double>*,
                              std::vector<std::string>*>;
using FieldValue = std::variant<bool, int64_t, double, std::string, std::vector<int64_t>, std::vector<double>,
                                std::vector<std::string>>;

struct Field {
  std::string key;
  FieldPtr ptr;
  FieldValue def;
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

class Schema {
 public:
  template <typename T>
  Field& add(std::string key, T& member, T def, std::string doc) {
    Field f;
    f.key = std::move(key);
    f.ptr = &member;
    f.def = std::move(def);
    f.doc = std::move(doc);
    fields_.push_back(std::move(f));
    return fields_.back();
  }
  std::vector<Field>& fields() { return fields_; }

 private:
  std::vector<Field> fields_;
};

// Every key of `config`, in the order `smoe config --print` shows them.
// Defined in config_schema.cpp: the one place where keys are declared.
Schema describe(Config& config);

}  // namespace smoe::detail
