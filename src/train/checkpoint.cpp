#include "train/checkpoint.h"

#include <caffe2/serialize/inline_container.h>
#include <torch/csrc/jit/serialization/export.h>
#include <torch/csrc/jit/serialization/pickler.h>
#include <torch/torch.h>
#include <torch/version.h>

#include <filesystem>
#include <sstream>

#include "core/atomic_file.h"
#include "core/error.h"
#include "core/hash.h"

namespace smoe::train {

StateDict state_dict(const torch::nn::Module& m) {
  StateDict out;
  for (const auto& p : m.named_parameters(true)) out[p.key()] = p.value().detach();
  for (const auto& b : m.named_buffers(true)) out[b.key()] = b.value().detach();
  return out;
}

namespace {

// torch::pickle_save's format (a zip archive with data.pkl and one record per
// storage) without TorchScript's type tags: pickle_save wraps every dict in
// torch.jit._pickle.restore_type_tag, a global that PyTorch's torch.load
// refuses by default since 2.6 (weights_only=True). Untagged, a checkpoint is
// a plain dict of tensors that any torch.load reads, and libtorch's own
// unpickler still reads it as a dict of tensors.
std::vector<char> pickle_untagged(const c10::IValue& value) {
  std::vector<char> data;
  torch::jit::Pickler pickler([&](const char* bytes, size_t n) { data.insert(data.end(), bytes, bytes + n); },
                              /*tensor_table=*/nullptr, /*type_renamer=*/nullptr, /*memoized_class_types=*/nullptr,
                              /*get_tensor_id=*/nullptr, /*tag_aggregates=*/false);
  pickler.protocol();
  pickler.pushIValue(value);
  pickler.stop();
  std::vector<char> out;
  caffe2::serialize::PyTorchStreamWriter writer([&](const void* bytes, size_t n) {
    const char* p = static_cast<const char*>(bytes);
    out.insert(out.end(), p, p + n);
    return n;
  });
  torch::jit::writeArchiveAndTensors("data", data.data(), data.size(), pickler.tensorData(), writer);
  writer.writeEndOfFile();
  return out;
}

}  // namespace

std::string save_state(const StateDict& state, const std::string& path) {
  c10::Dict<std::string, at::Tensor> dict;
  // Each tensor in a storage of its own on the host: the same bytes whichever
  // device the model is on, and whether or not its tensors share storage.
  for (const auto& [k, v] : state)
    dict.insert(k, v.detach().to(at::kCPU, /*non_blocking=*/false, /*copy=*/true).contiguous());
  std::vector<char> bytes = pickle_untagged(c10::IValue(dict));
  std::string_view view(bytes.data(), bytes.size());
  write_file_atomic(path, view);
  return sha256_hex(view);
}

std::string save_module(const torch::nn::Module& m, const std::string& path) { return save_state(state_dict(m), path); }

c10::IValue load_pickle(const std::string& path, const std::string& what) {
  SMOE_CHECK(std::filesystem::is_regular_file(path), "{} {} does not exist", what, path);
  const std::string bytes = read_file(path);
  try {
    return torch::pickle_load(std::vector<char>(bytes.begin(), bytes.end()));
  } catch (const std::exception& e) {
    const std::string message = e.what();
    SMOE_CHECK(message.find("opcode for unpickling at 0x73") == std::string::npos,
               "{} {}: libtorch cannot read a dict of one entry; save the tensor itself, or a dict of several entries",
               what, path);
    fail("{}: not a readable {} ({})", path, what, message.substr(0, message.find('\n')));
  }
}

StateDict load_state(const std::string& path) {
  const c10::IValue v = load_pickle(path, "checkpoint");
  SMOE_CHECK(v.isGenericDict(), "{}: not a state dict (expected a dict of tensors)", path);
  StateDict out;
  for (const auto& item : v.toGenericDict()) {
    SMOE_CHECK(item.key().isString() && item.value().isTensor(), "{}: not a state dict (expected a dict of tensors)",
               path);
    out[item.key().toStringRef()] = item.value().toTensor();
  }
  return out;
}

void load_module(torch::nn::Module& m, const std::string& path) {
  StateDict state = load_state(path);
  torch::NoGradGuard no_grad;
  auto assign = [&](const std::string& name, at::Tensor& dst) {
    auto it = state.find(name);
    SMOE_CHECK(it != state.end(), "{}: checkpoint has no entry '{}'", path, name);
    SMOE_CHECK(it->second.sizes() == dst.sizes(), "{}: '{}' has shape {} but the model expects {}", path, name,
               fmt::format("{}", fmt::join(it->second.sizes(), "x")), fmt::format("{}", fmt::join(dst.sizes(), "x")));
    dst.copy_(it->second);
  };
  for (auto& p : m.named_parameters(true)) assign(p.key(), p.value());
  for (auto& b : m.named_buffers(true)) assign(b.key(), b.value());
}

namespace {

// An optimiser state starts with the libtorch that wrote it: libtorch's own
// archive keys each parameter's state in a way that differs between
// releases (a 1.13 state loaded by 2.14 lands on other parameters), so a
// state from another release is refused, not misread.
constexpr const char* kOptimizerHeader = "smoe-optimizer-state libtorch ";

std::string major_minor(const std::string& version) {
  const auto first = version.find('.');
  const auto second = first == std::string::npos ? std::string::npos : version.find('.', first + 1);
  return version.substr(0, second);
}

// The optimiser's state (SGD's momentum, Adam's and AdamW's moments) onto
// the device of its parameters (smoe's optimisers have all theirs on one).
void move_state_to_parameters(torch::optim::Optimizer& opt) {
  if (opt.param_groups().empty() || opt.param_groups().front().params().empty()) return;
  const c10::Device d = opt.param_groups().front().params().front().device();
  auto placed = [&](const at::Tensor& t) { return t.defined() && t.device() != d ? t.to(d) : t; };
  for (auto& entry : opt.state()) {
    torch::optim::OptimizerParamState* state = entry.second.get();
    if (auto* sgd = dynamic_cast<torch::optim::SGDParamState*>(state)) {
      sgd->momentum_buffer(placed(sgd->momentum_buffer()));
    } else if (auto* adam = dynamic_cast<torch::optim::AdamParamState*>(state)) {
      adam->exp_avg(placed(adam->exp_avg()));
      adam->exp_avg_sq(placed(adam->exp_avg_sq()));
      adam->max_exp_avg_sq(placed(adam->max_exp_avg_sq()));
    } else if (auto* adamw = dynamic_cast<torch::optim::AdamWParamState*>(state)) {
      adamw->exp_avg(placed(adamw->exp_avg()));
      adamw->exp_avg_sq(placed(adamw->exp_avg_sq()));
      adamw->max_exp_avg_sq(placed(adamw->max_exp_avg_sq()));
    } else {
      fail("optimiser state: cannot place the state of an optimiser other than SGD, Adam and AdamW");
    }
  }
}

}  // namespace

std::string optimizer_state(torch::optim::Optimizer& opt) {
  torch::serialize::OutputArchive archive;
  opt.save(archive);
  std::ostringstream out;
  out << kOptimizerHeader << TORCH_VERSION << "\n";
  archive.save_to(out);
  return out.str();
}

void load_optimizer_state(torch::optim::Optimizer& opt, const std::string& bytes, const std::string& origin) {
  std::string archive_bytes = bytes;
  const std::string header = kOptimizerHeader;
  if (bytes.compare(0, header.size(), header) == 0) {  // states written before the header carry none
    const auto end = bytes.find('\n');
    SMOE_CHECK(end != std::string::npos, "{}: not an optimiser state of this model (a truncated header)", origin);
    const std::string written_by = bytes.substr(header.size(), end - header.size());
    SMOE_CHECK(major_minor(written_by) == major_minor(TORCH_VERSION),
               "{}: the optimiser state was written by libtorch {} and this smoe runs libtorch {}, whose optimiser "
               "states do not match: resume with libtorch {}, or redo the stage (--redo-from)",
               origin, written_by, TORCH_VERSION, written_by);
    archive_bytes = bytes.substr(end + 1);
  }
  try {
    std::istringstream in(archive_bytes);
    // Read onto the host (libtorch 1.13's archives map only to the CPU, CUDA
    // and HPU), then moved to the device of this rank's parameters,
    // whichever device wrote it.
    torch::serialize::InputArchive archive;
    archive.load_from(in, c10::Device(c10::kCPU));
    opt.load(archive);
    move_state_to_parameters(opt);
  } catch (const std::exception& e) {
    const std::string what = e.what();
    fail("{}: not an optimiser state of this model ({})", origin, what.substr(0, what.find('\n')));
  }
}

}  // namespace smoe::train
