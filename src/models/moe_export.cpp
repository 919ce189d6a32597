#include "models/moe_export.h"

#include <torch/csrc/jit/frontend/tracer.h>
#include <torch/script.h>
#include <torch/torch.h>

#include <algorithm>
#include <nlohmann/json.hpp>
#include <sstream>

#include "core/atomic_file.h"
#include "core/error.h"
#include "models/joint_moe.h"
#include "models/moe.h"

namespace smoe::models {
namespace {

using Stack = torch::jit::Stack;

// The methods written in TorchScript around the traced rules: input checks,
// the pixels' normalisation, and the choice of rule by the attributes. The
// last rule is the fall-through (TorchScript needs a return on every path);
// "anytime" passes tau.
std::string script(const std::vector<std::string>& rules) {
  std::string s = R"(
def normalize(self, images: Tensor) -> Tensor:
    s = self.input_shape
    assert images.dim() == 4 and images.size(1) == s[0] and images.size(2) == s[1] and images.size(3) == s[2], "smoe model: expected images [B, " + str(s[0]) + ", " + str(s[1]) + ", " + str(s[2]) + "] of pixels 0..255, got " + str(images.shape)
    return images.float() * self.pixel_scale + self.pixel_shift

def forward(self, images: Tensor) -> Tensor:
    return self.predict(images)[0]

def predict(self, images: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
    x = self.normalize(images)
)";
  auto call = [](const std::string& rule) {
    return rule == "anytime" ? std::string("self.rule_anytime(x, torch.tensor(self.tau).double())")
                             : "self.rule_" + rule + "(x)";
  };
  for (size_t i = 0; i + 1 < rules.size(); ++i)
    s += fmt::format("    if self.rule == \"{}\":\n        return {}\n", rules[i], call(rules[i]));
  s += fmt::format("    assert self.rule == \"{}\", \"smoe model: rule must be {}, got '\" + self.rule + \"'\"\n",
                   rules.back(), fmt::join(rules, ", "));
  if (rules.back() == "anytime")
    s +=
        "    assert self.tau >= 0.0 and self.tau <= 1.0, \"smoe model: tau must be in [0, 1], got \" + str(self.tau)\n";
  s += fmt::format("    return {}\n", call(rules.back()));
  return s;
}

std::string flat_name(std::string name) {
  std::replace(name.begin(), name.end(), '.', '_');
  return name;
}

// Every parameter and buffer of `m` on `out`, under `prefix`: the traced
// rules read them as the module's attributes, so that they stay named
// tensors of the file (its state_dict) and not constants.
void register_tensors(torch::jit::Module& out, torch::nn::Module& m, const std::string& prefix) {
  for (const auto& p : m.named_parameters()) out.register_parameter(flat_name(prefix + p.key()), p.value(), false);
  for (const auto& b : m.named_buffers()) out.register_buffer(flat_name(prefix + b.key()), b.value());
}

// Adds `name`, the trace of `fn` on `inputs`, as a method of `module`.
void add_traced_method(torch::jit::Module& module, const std::string& name, Stack inputs,
                       const std::function<Stack(Stack)>& fn) {
  auto traced = torch::jit::tracer::trace(
      std::move(inputs), fn, [](const torch::autograd::Variable&) { return std::string(); }, /*strict=*/true,
      /*force_outplace=*/false, &module);
  auto* f = module._ivalue()->compilation_unit()->create_function(c10::QualifiedName(*module.type()->name(), name),
                                                                  traced.first->graph);
  module.type()->addMethod(f);
}

// Turns requires_grad off on every parameter while it lives (a traced
// tensor that requires grad cannot be exported), and back on after.
class FrozenParameters {
 public:
  explicit FrozenParameters(const std::vector<torch::nn::Module*>& modules) {
    for (auto* m : modules)
      for (auto& p : m->parameters())
        if (p.requires_grad()) {
          p.requires_grad_(false);
          frozen_.push_back(p);
        }
  }
  ~FrozenParameters() {
    for (auto& p : frozen_) p.requires_grad_(true);
  }
  FrozenParameters(const FrozenParameters&) = delete;
  FrozenParameters& operator=(const FrozenParameters&) = delete;

 private:
  std::vector<at::Tensor> frozen_;
};

}  // namespace

const std::vector<std::string>& export_rules() {
  static const std::vector<std::string> rules = {"base", "top1", "top2", "anytime"};
  return rules;
}

namespace {

void check_options(const ExportOptions& o, const std::vector<std::string>& rules) {
  SMOE_CHECK(std::find(rules.begin(), rules.end(), o.rule) != rules.end(), "export: rule '{}' is not one of {}", o.rule,
             fmt::join(rules, ", "));
  SMOE_CHECK(o.tau >= 0 && o.tau <= 1, "export: tau must be in [0, 1], got {}", o.tau);
  SMOE_CHECK(o.input_shape.size() == 3 && o.pixel_scale.size() == static_cast<size_t>(o.input_shape[0]) &&
                 o.pixel_shift.size() == o.pixel_scale.size(),
             "export: the input shape [C, H, W] and a scale and shift per channel are needed");
}

// The attributes and buffers every exported file has.
void add_common(torch::jit::Module& out, const ExportOptions& o, int64_t experts) {
  const int64_t C = o.input_shape[0];
  out.register_buffer("pixel_scale", torch::tensor(o.pixel_scale).reshape({1, C, 1, 1}));
  out.register_buffer("pixel_shift", torch::tensor(o.pixel_shift).reshape({1, C, 1, 1}));
  out.register_attribute("rule", c10::StringType::get(), o.rule);
  out.register_attribute("tau", c10::FloatType::get(), o.tau);
  out.register_attribute("ensembler", c10::StringType::get(), o.ensembler);
  out.register_attribute("num_experts", c10::IntType::get(), experts);
  out.register_attribute("format_version", c10::IntType::get(), int64_t{1});
  c10::List<int64_t> shape(o.input_shape);
  out.register_attribute("input_shape", c10::ListType::ofInts(), shape);
  c10::List<std::string> classes;
  for (const auto& c : o.classes) classes.push_back(c);
  out.register_attribute("classes", c10::ListType::ofStrings(), classes);
  for (const auto& [key, value] : o.provenance) out.register_attribute("smoe_" + key, c10::StringType::get(), value);
}

// The script around the traced rules, then the file with its smoe.json.
void finish(torch::jit::Module& out, const ExportOptions& o, const std::vector<std::string>& rules, int64_t experts,
            const std::string& path) {
  out.define(script(rules));
  nlohmann::json meta = {{"format_version", 1},
                         {"rule", o.rule},
                         {"tau", o.tau},
                         {"rules", rules},
                         {"ensembler", o.ensembler},
                         {"num_experts", experts},
                         {"input_shape", o.input_shape},
                         {"classes", o.classes},
                         {"provenance", o.provenance}};
  torch::jit::ExtraFilesMap extra = {{"smoe.json", meta.dump(2)}};
  std::ostringstream bytes;
  out.save(bytes, extra);
  write_file_atomic(path, bytes.str());
}

at::Tensor example_input(const ExportOptions& o) {
  return torch::zeros({2, o.input_shape[0], o.input_shape[1], o.input_shape[2]});
}

}  // namespace

void export_moe(MoeModel& moe, const ExportOptions& o, const std::string& path) {
  check_options(o, export_rules());
  const int64_t K = moe.num_experts();
  std::vector<torch::nn::Module*> parts = {moe.base().get(), &moe.gate()};
  for (int64_t k = 0; k < K; ++k) {
    SMOE_CHECK(moe.has_expert(k), "export: expert {} is not loaded", k);
    parts.push_back(&moe.expert(k));
    for (const auto& [name, net] : moe.ensembler_nets(k))
      if (net) parts.push_back(net.get());
  }
  for (auto* m : parts) m->eval();
  const FrozenParameters frozen(parts);
  torch::NoGradGuard no_grad;

  torch::jit::Module out("SmoeMoe");
  register_tensors(out, *moe.base(), "base_");
  register_tensors(out, moe.gate(), "gate_");
  for (int64_t k = 0; k < K; ++k) {
    register_tensors(out, moe.expert(k), fmt::format("expert{}_", k));
    for (const auto& [name, net] : moe.ensembler_nets(k))
      if (net) register_tensors(out, *net, fmt::format("{}{}_", name, k));
  }
  add_common(out, o, K);
  // Each rule traced on a batch of two (any batch size and tau follow: the
  // rules read no size and branch on no value, MoeModel::predict_routed).
  const at::Tensor example = example_input(o);
  using P = MoeModel::Predict;
  const std::pair<const char*, P> rules[] = {{"rule_base", P::base}, {"rule_top1", P::top1}, {"rule_top2", P::top2}};
  for (const auto& [name, rule] : rules)
    add_traced_method(out, name, {example}, [&, rule = rule](Stack in) -> Stack {
      auto r = moe.predict_routed(in.at(0).toTensor(), rule, o.ensembler, torch::tensor(0.0, torch::kDouble),
                                  /*traceable=*/true);
      return {c10::ivalue::Tuple::create({r.probs, r.weight, r.early})};
    });
  add_traced_method(out, "rule_anytime", {example, torch::tensor(0.5, torch::kDouble)}, [&](Stack in) -> Stack {
    auto r = moe.predict_routed(in.at(0).toTensor(), P::anytime, o.ensembler, in.at(1).toTensor(), true);
    return {c10::ivalue::Tuple::create({r.probs, r.weight, r.early})};
  });
  finish(out, o, export_rules(), K, path);
}

const std::vector<std::string>& joint_export_rules() {
  static const std::vector<std::string> rules = {"mixture", "top1", "top2"};  // in the order of JointMoeImpl::Rule
  return rules;
}

void export_joint_moe(JointMoeImpl& moe, const ExportOptions& o, const std::string& path) {
  check_options(o, joint_export_rules());
  const int64_t K = moe.num_experts();
  moe.eval();
  const FrozenParameters frozen({&moe});
  torch::NoGradGuard no_grad;
  torch::jit::Module out("SmoeJointMoe");
  register_tensors(out, moe, "");
  add_common(out, o, K);
  // The evaluation's dense path (every expert on every sample): for a top-k
  // gate the unrouted experts have g = 0 exactly, so the mixture is the
  // routed one. Each rule as the report scores it (eval/joint_report.h).
  const at::Tensor example = example_input(o);
  const auto& rules = joint_export_rules();
  for (size_t i = 0; i < rules.size(); ++i)
    add_traced_method(out, "rule_" + rules[i], {example}, [&, i](Stack in) -> Stack {
      const Prediction p = moe.predict(in.at(0).toTensor(), static_cast<JointMoeImpl::Rule>(i));
      return {c10::ivalue::Tuple::create({p.probs, p.weight, p.early})};
    });
  finish(out, o, joint_export_rules(), K, path);
}

}  // namespace smoe::models
