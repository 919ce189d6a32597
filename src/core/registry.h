// A registry of named implementations of one extension point (initial
// gates, gates, expert architectures, ensemblers, stages, training schemes).
//
// Each registry is a function-local static filled with the built-in
// implementations on first use (an explicit list in the registry's .cpp:
// no static-initialisation order to depend on, and no object file dropped
// by the linker). A new implementation is one file plus one line in that
// list; tests add throwaway ones with add(). The config names an entry once;
// the name is resolved here, where an unknown one is an error that lists the
// known names, and nowhere else compares it. An entry with options of its
// own names their struct in its registration (core/variant_options.h): its
// keys then appear under its name in the config.
#pragma once

#include <algorithm>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "core/error.h"
#include "core/variant_options.h"

namespace smoe {

// A built-in entry: its name, itself, and its options' defaults
// (options::prototype<S>()) if it has options of its own.
template <typename Entry>
struct RegistryBuiltin {
  RegistryBuiltin(std::string n, Entry e, std::shared_ptr<const options::VariantOptions> o = nullptr)
      : name(std::move(n)), entry(std::move(e)), options(std::move(o)) {}
  std::string name;
  Entry entry;
  std::shared_ptr<const options::VariantOptions> options;
};

template <typename Entry>
class Registry {
 public:
  using Builtin = RegistryBuiltin<Entry>;

  // what: "initial gate" (also the extension point its entries' options
  // are filed under); key: the config key that names an entry
  // ("cluster.method"); builtins: the built-in entries; other_keys: further
  // config keys whose values name entries ("distill.gate_kind"), for the
  // configuration reference.
  Registry(std::string what, std::string key, std::vector<Builtin> builtins = {},
           std::vector<std::string> other_keys = {})
      : what_(std::move(what)), key_(std::move(key)), other_keys_(std::move(other_keys)) {
    for (auto& b : builtins) add(b.name, std::move(b.entry), std::move(b.options));
  }
  Registry(const Registry&) = delete;
  Registry& operator=(const Registry&) = delete;

  // Registers `name`, with its options' defaults if it has options;
  // registering a name twice is a bug.
  void add(const std::string& name, Entry entry, std::shared_ptr<const options::VariantOptions> opts = nullptr) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      SMOE_ASSERT(entries_.count(name) == 0, "{} '{}' registered twice", what_, name);
      entries_.emplace(name, std::move(entry));
    }
    if (opts) options::add_prototype(what_, name, std::move(opts));
  }
  // Removes `name` (tests that register throwaway entries clean up after themselves).
  void remove(const std::string& name) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      entries_.erase(name);
    }
    options::remove_prototype(what_, name);
  }
  bool has(const std::string& name) const {
    std::lock_guard<std::mutex> lock(mu_);
    return entries_.count(name) != 0;
  }
  // The entry called `name`, or an error naming the key (`key`: another
  // key that names this registry's entries) and the known names.
  const Entry& get(const std::string& name, const std::string& key = {}) const {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = entries_.find(name);
    if (it == entries_.end())
      fail("{}: unknown {} '{}' (known: {})", key.empty() ? key_ : key, what_, name, join_names());
    return it->second;  // entries are never moved once added (std::map)
  }
  // Registered names in alphabetical order.
  std::vector<std::string> names() const {
    std::lock_guard<std::mutex> lock(mu_);
    std::vector<std::string> out;
    for (const auto& kv : entries_) out.push_back(kv.first);
    return out;
  }
  const std::string& key() const { return key_; }
  // Every config key whose values name this registry's entries.
  std::vector<std::string> keys() const {
    std::vector<std::string> out{key_};
    out.insert(out.end(), other_keys_.begin(), other_keys_.end());
    return out;
  }

 private:
  std::string join_names() const {
    std::string s;
    for (const auto& kv : entries_) s += (s.empty() ? "" : ", ") + kv.first;
    return s;
  }

  std::string what_, key_;
  std::vector<std::string> other_keys_;
  mutable std::mutex mu_;
  std::map<std::string, Entry> entries_;
};

}  // namespace smoe
