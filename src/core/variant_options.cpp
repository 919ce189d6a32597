#include "core/variant_options.h"

#include <mutex>
#include <vector>

namespace smoe::options {
namespace {

struct Prototypes {
  std::mutex mu;
  std::map<std::string, std::map<std::string, std::shared_ptr<const VariantOptions>>> by_point;
  std::vector<std::function<void()>> loaders;
  size_t loaded = 0;  // loaders[0, loaded) have run
};

Prototypes& prototypes() {
  static Prototypes p;
  return p;
}

// Runs the loaders not run yet, outside the prototypes' lock (a loader
// fills a registry, which calls add_prototype) but under one of their own,
// so that a thread never returns while another still runs a loader.
void run_loaders() {
  static std::recursive_mutex running;
  std::lock_guard<std::recursive_mutex> hold(running);
  Prototypes& p = prototypes();
  for (;;) {
    std::function<void()> next;
    {
      std::lock_guard<std::mutex> lock(p.mu);
      if (p.loaded == p.loaders.size()) return;
      next = p.loaders[p.loaded++];
    }
    next();
  }
}

// The prototypes of `point`, by variant.
std::map<std::string, std::shared_ptr<const VariantOptions>> snapshot(const std::string& point) {
  run_loaders();
  Prototypes& p = prototypes();
  std::lock_guard<std::mutex> lock(p.mu);
  auto it = p.by_point.find(point);
  return it == p.by_point.end() ? std::map<std::string, std::shared_ptr<const VariantOptions>>{} : it->second;
}

}  // namespace

void add_prototype(const std::string& point, const std::string& variant,
                   std::shared_ptr<const VariantOptions> prototype) {
  Prototypes& p = prototypes();
  std::lock_guard<std::mutex> lock(p.mu);
  p.by_point[point][variant] = std::move(prototype);
}

void remove_prototype(const std::string& point, const std::string& variant) {
  Prototypes& p = prototypes();
  std::lock_guard<std::mutex> lock(p.mu);
  auto it = p.by_point.find(point);
  if (it != p.by_point.end()) it->second.erase(variant);
}

bool add_variant_loader(std::function<void()> load) {
  Prototypes& p = prototypes();
  std::lock_guard<std::mutex> lock(p.mu);
  p.loaders.push_back(std::move(load));
  return true;
}

VariantSections::VariantSections(std::string point) : point_(std::move(point)) { sync(); }

VariantSections::VariantSections(const VariantSections& other) : point_(other.point_) {
  for (const auto& [name, value] : other.values_)
    values_.emplace(name, std::shared_ptr<VariantOptions>(value->clone()));
}

VariantSections& VariantSections::operator=(const VariantSections& other) {
  if (this != &other) *this = VariantSections(other);
  return *this;
}

VariantSections::~VariantSections() = default;

void VariantSections::sync() {
  for (const auto& [name, proto] : snapshot(point_))
    if (values_.count(name) == 0) values_.emplace(name, std::shared_ptr<VariantOptions>(proto->clone()));
}

void VariantSections::describe(Table& t) {
  sync();
  for (auto& [name, value] : values_) t.section(name, *value);
}

std::shared_ptr<const VariantOptions> VariantSections::get(const std::string& variant) const {
  auto it = values_.find(variant);
  if (it != values_.end()) return it->second;
  auto protos = snapshot(point_);
  auto p = protos.find(variant);
  return p == protos.end() ? nullptr : p->second;
}

}  // namespace smoe::options
