// Options a registered variant owns (an initial gate, a gate kind, an expert
// architecture, an ensembler, a stage): its options struct sits in its own file, beside
// its class, and is named in its registration, nothing else:
//
//   struct MlpGateOptions {
//     int64_t hidden = 16;
//     void describe(options::Table& t) { t.key("hidden", hidden, "hidden units").at_least(1); }
//   };
//   ... {"mlp", make_mlp_gate, options::prototype<MlpGateOptions>()} ...   // in the registry's list
//
// Its keys then live under the variant's name in the section of the key
// that chooses it (gate.mlp.hidden; cluster.dfcp.k_max; a stage's at the
// root: toy.repeat), with defaults, docs and checks in `smoe config --keys`,
// --print and docs/configuration.md like every other key. The variant reads
// them from what it is built with: options::of<MlpGateOptions>(spec.options).
//
// How the torch-free config learns the variants: Registry::add records each
// entry's prototype here (add_prototype), and a config section holds a
// VariantSections for its extension point, which copies the prototypes when
// it is built. The registries are function-local statics filled on first
// use; each registers a loader (add_variant_loader, a static in the
// registry's own file) that the config runs first, so the built-in
// variants' keys exist before any registry was used. Torch-free.
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <string>

#include "core/error.h"
#include "core/options.h"

namespace smoe::options {

// One variant's options struct, type-erased.
class VariantOptions {
 public:
  virtual ~VariantOptions() = default;
  virtual std::unique_ptr<VariantOptions> clone() const = 0;
  virtual void describe(Table& t) = 0;
};

template <typename S>
class OptionsOf final : public VariantOptions {
 public:
  explicit OptionsOf(S v = S{}) : value(std::move(v)) {}
  std::unique_ptr<VariantOptions> clone() const override { return std::make_unique<OptionsOf<S>>(value); }
  void describe(Table& t) override { value.describe(t); }
  S value;
};

// The defaults of S, for a registration.
template <typename S>
std::shared_ptr<const VariantOptions> prototype() {
  return std::make_shared<const OptionsOf<S>>();
}

// The options a variant was built with; null (a probe built outside a
// configured run) gives S's defaults. A struct of another type is a bug.
template <typename S>
const S& of(const VariantOptions* options) {
  static const S defaults{};
  if (options == nullptr) return defaults;
  const auto* typed = dynamic_cast<const OptionsOf<S>*>(options);
  SMOE_ASSERT(typed != nullptr, "a variant read options of another type than it registered");
  return typed->value;
}
template <typename S>
const S& of(const std::shared_ptr<const VariantOptions>& options) {
  return of<S>(options.get());
}

// The prototypes, by extension point (a registry's `what`: "gate kind") and
// variant name. Registry::add and remove keep them.
void add_prototype(const std::string& point, const std::string& variant,
                   std::shared_ptr<const VariantOptions> prototype);
void remove_prototype(const std::string& point, const std::string& variant);
// Registers a function that fills one registry (it uses it once); returns
// true, for a namespace-scope static.
bool add_variant_loader(std::function<void()> load);

// A config section's options of the variants of one extension point, each
// under its variant's name ("<section>.<variant>.<key>"). A copy is deep.
class VariantSections {
 public:
  explicit VariantSections(std::string point);
  VariantSections(const VariantSections& other);
  VariantSections& operator=(const VariantSections& other);
  VariantSections(VariantSections&&) noexcept = default;
  VariantSections& operator=(VariantSections&&) noexcept = default;
  ~VariantSections();

  // Adds the variants registered since (a throwaway test variant), then
  // describes each as t.section(name, options), in name order.
  void describe(Table& t);
  // The configured options of `variant` (shared with this config: valid
  // while either lives), or its registered defaults if this config predates
  // its registration; null if it declares none.
  std::shared_ptr<const VariantOptions> get(const std::string& variant) const;

 private:
  void sync();
  std::string point_;
  std::map<std::string, std::shared_ptr<VariantOptions>> values_;
};

}  // namespace smoe::options
