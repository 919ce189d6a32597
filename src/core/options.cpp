#include "core/options.h"

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <yaml-cpp/yaml.h>

#include <set>
#include <sstream>

#include "core/error.h"

namespace smoe {
namespace options {
namespace {

using options::Field;

std::string describe_node(const YAML::Node& n) {
  if (n.IsScalar()) return "'" + n.Scalar() + "'";
  if (n.IsSequence()) return "a list";
  if (n.IsMap()) return "a mapping";
  return "nothing";
}

[[noreturn]] void key_error(const Field& f, const std::string& origin, const std::string& what) {
  fail("config key '{}' ({}): {}", f.key, origin, what);
}

std::string number_text(double v) { return fmt::format("{}", v); }

template <typename T>
T scalar_as(const Field& f, const YAML::Node& n, const std::string& origin, const char* expected) {
  if (!n.IsScalar()) key_error(f, origin, fmt::format("expected {}, got {}", expected, describe_node(n)));
  T value{};
  if (!YAML::convert<T>::decode(n, value))
    key_error(f, origin, fmt::format("expected {}, got {}", expected, describe_node(n)));
  return value;
}

void check_range(const Field& f, double v, const std::string& origin) {
  if (f.min && (f.min_exclusive ? !(v > *f.min) : !(v >= *f.min)))
    key_error(f, origin,
              fmt::format("must be {} {}, got {}", f.min_exclusive ? ">" : ">=", number_text(*f.min), number_text(v)));
  if (f.max && !(v <= *f.max))
    key_error(f, origin, fmt::format("must be <= {}, got {}", number_text(*f.max), number_text(v)));
}

template <typename T>
std::vector<T> list_as(const Field& f, const YAML::Node& n, const std::string& origin, const char* expected) {
  if (!n.IsSequence()) key_error(f, origin, fmt::format("expected a list of {}, got {}", expected, describe_node(n)));
  std::vector<T> out;
  for (const auto& item : n) {
    T v = scalar_as<T>(f, item, origin, expected);
    if constexpr (std::is_arithmetic_v<T>) check_range(f, static_cast<double>(v), origin);
    out.push_back(v);
  }
  return out;
}

// Assigns a YAML value to a member of type T, checking type and range.
template <typename T>
void assign_to(const Field& f, T* ptr, const YAML::Node& n, const std::string& origin) {
  if constexpr (std::is_same_v<T, bool>) {
    *ptr = scalar_as<bool>(f, n, origin, "true or false");
  } else if constexpr (std::is_same_v<T, int64_t>) {
    int64_t v = scalar_as<int64_t>(f, n, origin, "an integer");
    check_range(f, static_cast<double>(v), origin);
    *ptr = v;
  } else if constexpr (std::is_same_v<T, double>) {
    double v = scalar_as<double>(f, n, origin, "a number");
    check_range(f, v, origin);
    *ptr = v;
  } else if constexpr (std::is_same_v<T, std::string>) {
    if (n.IsNull()) {
      *ptr = "";
      return;
    }
    std::string v = scalar_as<std::string>(f, n, origin, "a string");
    if (!f.choices.empty() && std::find(f.choices.begin(), f.choices.end(), v) == f.choices.end())
      key_error(f, origin, fmt::format("expected one of {}, got '{}'", fmt::join(f.choices, " | "), v));
    *ptr = v;
  } else if constexpr (std::is_same_v<T, std::vector<int64_t>>) {
    *ptr = list_as<int64_t>(f, n, origin, "integers");
  } else if constexpr (std::is_same_v<T, std::vector<std::string>>) {
    *ptr = list_as<std::string>(f, n, origin, "strings");
  } else {
    *ptr = list_as<double>(f, n, origin, "numbers");
  }
}

// Assigns a YAML value to the field it names.
void assign(const Field& f, const YAML::Node& n, const std::string& origin) {
  std::visit(
      [&](const auto& held) {
        using P = std::decay_t<decltype(held)>;
        if constexpr (std::is_same_v<P, EnumRef>) {
          const std::string v = n.IsNull() ? std::string() : scalar_as<std::string>(f, n, origin, "a string");
          if (!held.set(v))
            key_error(f, origin, fmt::format("expected one of {}, got '{}'", fmt::join(held.names, " | "), v));
        } else {
          assign_to(f, held, n, origin);
        }
      },
      f.ptr);
}

std::string scalar_yaml(const std::string& s) {
  YAML::Emitter e;
  e << YAML::DoubleQuoted << s;
  return e.c_str();
}

template <typename T>
std::string pointee_yaml(const T* p) {
  if constexpr (std::is_same_v<T, bool>) {
    return *p ? "true" : "false";
  } else if constexpr (std::is_same_v<T, int64_t>) {
    return std::to_string(*p);
  } else if constexpr (std::is_same_v<T, double>) {
    return number_text(*p);
  } else if constexpr (std::is_same_v<T, std::string>) {
    return scalar_yaml(*p);
  } else if constexpr (std::is_same_v<T, std::vector<std::string>>) {
    std::vector<std::string> items;
    for (const auto& v : *p) items.push_back(scalar_yaml(v));
    return "[" + fmt::format("{}", fmt::join(items, ", ")) + "]";
  } else {
    std::vector<std::string> items;
    for (auto v : *p) items.push_back(fmt::format("{}", v));
    return "[" + fmt::format("{}", fmt::join(items, ", ")) + "]";
  }
}

std::string value_yaml(const options::FieldPtr& ptr) {
  return std::visit(
      [](const auto& held) -> std::string {
        if constexpr (std::is_same_v<std::decay_t<decltype(held)>, EnumRef>) {
          return scalar_yaml(held.get());
        } else {
          return pointee_yaml(held);
        }
      },
      ptr);
}

std::string type_name(const options::FieldPtr& ptr) {
  static const char* names[] = {"bool",        "int",           "float",          "string",
                                "list of int", "list of float", "list of string", "string"};
  return names[ptr.index()];
}

// `seen`: every key (and section) met so far in this file; YAML itself
// accepts a key twice and keeps the last, which would hide a typo'd config.
void merge_node(const Table& table, const YAML::Node& node, const std::string& prefix, const std::string& origin,
                std::set<std::string>& seen) {
  for (const auto& kv : node) {
    SMOE_CHECK(kv.first.IsScalar(), "{}: a config key must be a plain name{}, got {}", origin,
               prefix.empty() ? "" : " (under '" + prefix + "')", describe_node(kv.first));
    std::string name = kv.first.as<std::string>();
    std::string key = prefix.empty() ? name : prefix + "." + name;
    SMOE_CHECK(seen.insert(key).second, "config key '{}' ({}): given twice", key, origin);
    if (const Field* f = table.find(key)) {
      assign(*f, kv.second, origin);
    } else if (table.is_section(key)) {
      if (!kv.second.IsMap())
        fail("config key '{}' ({}): expected a mapping of keys, got {}", key, origin, describe_node(kv.second));
      merge_node(table, kv.second, key, origin, seen);
    } else {
      fail("config key '{}' ({}): unknown key", key, origin);
    }
  }
}

}  // namespace

const Field* Table::find(const std::string& key) const {
  for (const Field& f : fields_)
    if (f.key == key) return &f;
  return nullptr;
}

void check(const Table& table) {
  for (const auto& r : table.rules_) r.check(r.prefix);
}

bool Table::is_section(const std::string& prefix) const {
  for (const Field& f : fields_)
    if (f.key.size() > prefix.size() && f.key.compare(0, prefix.size(), prefix) == 0 && f.key[prefix.size()] == '.')
      return true;
  return false;
}

void merge(const Table& table, const YAML::Node& node, const std::string& origin) {
  if (node.IsNull()) return;
  SMOE_CHECK(node.IsMap(), "{}: expected a YAML mapping of config keys at the top level", origin);
  std::set<std::string> seen;
  merge_node(table, node, "", origin, seen);
}

void set(const Table& table, const std::string& assignment, const std::string& origin) {
  auto eq = assignment.find('=');
  SMOE_CHECK(eq != std::string::npos && eq > 0, "{} '{}': expected key=value", origin, assignment);
  std::string key = assignment.substr(0, eq);
  std::string text = assignment.substr(eq + 1);
  const Field* f = table.find(key);
  SMOE_CHECK(f != nullptr, "config key '{}' ({}): unknown key", key, origin);
  YAML::Node value;
  try {
    value = text.empty() ? YAML::Node(YAML::NodeType::Null) : YAML::Load(text);
  } catch (const YAML::Exception& e) {
    fail("config key '{}' ({}): cannot parse value '{}': {}", key, origin, text, e.msg);
  }
  assign(*f, value, origin);
}

std::string to_yaml(const Table& table, bool with_docs) {
  std::ostringstream out;
  std::vector<std::string> open;  // current section path
  for (const Field& f : table.fields()) {
    std::vector<std::string> parts;
    std::stringstream ss(f.key);
    for (std::string p; std::getline(ss, p, '.');) parts.push_back(p);
    size_t common = 0;
    while (common < open.size() && common + 1 < parts.size() && open[common] == parts[common]) ++common;
    open.resize(common);
    while (open.size() + 1 < parts.size()) {
      out << std::string(2 * open.size(), ' ') << parts[open.size()] << ":\n";
      open.push_back(parts[open.size()]);
    }
    out << std::string(2 * open.size(), ' ') << parts.back() << ": " << value_yaml(f.ptr);
    if (with_docs) out << "  # " << f.doc;
    out << "\n";
  }
  return out.str();
}

std::vector<KeyInfo> key_infos(const Table& table) {
  std::vector<KeyInfo> keys;
  for (const Field& f : table.fields()) {
    std::string doc = f.doc;
    if (!f.choices.empty()) doc += fmt::format(" ({})", fmt::join(f.choices, " | "));
    keys.push_back({f.key, type_name(f.ptr), value_yaml(f.ptr), doc, f.min, f.max, f.min_exclusive, f.choices});
  }
  return keys;
}

}  // namespace options

namespace {

void flatten(const YAML::Node& n, const std::string& prefix, std::map<std::string, std::string>& out) {
  if (n.IsMap()) {
    for (const auto& kv : n)
      flatten(kv.second, prefix.empty() ? kv.first.as<std::string>() : prefix + "." + kv.first.as<std::string>(), out);
    return;
  }
  YAML::Emitter e;
  e << YAML::Flow << n;
  out[prefix] = e.c_str();
}

}  // namespace

std::map<std::string, std::string> flat_yaml(const std::string& yaml_text) {
  std::map<std::string, std::string> out;
  flatten(YAML::Load(yaml_text), "", out);
  return out;
}

}  // namespace smoe
