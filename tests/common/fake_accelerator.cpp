// The fake accelerator: a libtorch backend on the PrivateUse1 device type
// ("privateuseone") whose memory is host memory and whose operators are the
// CPU's, so that smoe's GPU path runs on machines without a GPU.
//
// What it simulates of a GPU is what breaks GPU runs: a tensor has a device
// other than the CPU, and an operator that mixes it with a CPU tensor fails
// ("Expected all tensors to be on the same device"), as CUDA's do — a 0-dim
// CPU tensor excepted, which CUDA also accepts as a scalar. Copies between
// the CPU and the device are explicit (.to, copy_), as for CUDA. The kernels
// are the CPU's, so results are bit-identical to a CPU run.
//
// How: a device guard and an allocator for PrivateUse1; native kernels for
// what creates, copies or views device tensors (views must share storage,
// which a fallback cannot do); every other operator goes through one boxed
// fallback that checks the devices of its arguments and then runs the CPU
// kernel on CPU aliases of their memory.
//
// Built as libsmoe_fake_accelerator.so. Linking it (tests) or preloading it
// (LD_PRELOAD, for the smoe binary in the end-to-end tests) registers the
// backend; SMOE_FAKE_DEVICES sets how many devices it reports (default 1).
#include <ATen/ATen.h>
#include <ATen/EmptyTensor.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <ATen/ops/as_strided_native.h>
#include <ATen/ops/resize_native.h>
#include <ATen/ops/set_native.h>
#include <ATen/ops/view_native.h>
#include <c10/core/Allocator.h>
#include <c10/core/impl/DeviceGuardImplInterface.h>
#include <torch/library.h>
#include <torch/version.h>

#if __has_include(<ATen/detail/PrivateUse1HooksInterface.h>)
#include <ATen/CPUGeneratorImpl.h>
#include <ATen/detail/PrivateUse1HooksInterface.h>
#define SMOE_FAKE_HAS_HOOKS 1
#endif

#if __has_include(<ATen/ops/_reshape_alias_native.h>)
#include <ATen/ops/_reshape_alias_native.h>
#define SMOE_FAKE_HAS_RESHAPE_ALIAS 1
#endif

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <string>

#define SMOE_FAKE_TORCH_AT_LEAST(major, minor) \
  (TORCH_VERSION_MAJOR > (major) || (TORCH_VERSION_MAJOR == (major) && TORCH_VERSION_MINOR >= (minor)))

namespace {

constexpr c10::DeviceType kFake = c10::DeviceType::PrivateUse1;

c10::DeviceIndex device_count() {
  static const c10::DeviceIndex n = [] {
    const char* v = std::getenv("SMOE_FAKE_DEVICES");
    const int n = v ? std::atoi(v) : 1;
    return static_cast<c10::DeviceIndex>(n < 0 ? 0 : n > 64 ? 64 : n);
  }();
  return n;
}

thread_local c10::DeviceIndex current_device = 0;

// Counts what the tests want to see: operators that ran on the device, and
// host reads of device values (a copy to the CPU, .item()): where a GPU
// would make the host wait.
std::atomic<long> fallback_calls{0};
std::atomic<long> host_reads{0};

struct Guard final : c10::impl::DeviceGuardImplInterface {
  c10::DeviceType type() const override { return kFake; }
  c10::Device exchangeDevice(c10::Device d) const override {
    const c10::Device old = getDevice();
    setDevice(d);
    return old;
  }
  c10::Device getDevice() const override { return c10::Device(kFake, current_device); }
  void setDevice(c10::Device d) const override {
    TORCH_CHECK(d.type() == kFake, "fake accelerator: not a privateuseone device: ", d);
    TORCH_CHECK(d.index() < device_count(), "fake accelerator: device ", static_cast<int>(d.index()), " of ",
                static_cast<int>(device_count()));
    if (d.index() >= 0) current_device = d.index();
  }
  void uncheckedSetDevice(c10::Device d) const noexcept override {
    if (d.index() >= 0) current_device = d.index();
  }
  c10::Stream getStream(c10::Device d) const noexcept override { return c10::Stream(c10::Stream::DEFAULT, d); }
  c10::Stream exchangeStream(c10::Stream s) const noexcept override {
    return c10::Stream(c10::Stream::DEFAULT, s.device());
  }
  c10::DeviceIndex deviceCount() const noexcept override { return device_count(); }
};

C10_REGISTER_GUARD_IMPL(PrivateUse1, Guard);

void release(void* p) { std::free(p); }

struct Allocator final : c10::Allocator {
#if SMOE_FAKE_TORCH_AT_LEAST(2, 3)
  c10::DataPtr allocate(size_t n) override {
#else
  c10::DataPtr allocate(size_t n) const override {
#endif
    void* p = n ? std::aligned_alloc(64, (n + 63) / 64 * 64) : nullptr;
    TORCH_CHECK(n == 0 || p, "fake accelerator: out of memory allocating ", n, " bytes");
    return {p, p, &release, c10::Device(kFake, current_device)};
  }
  c10::DeleterFnPtr raw_deleter() const override { return &release; }
#if SMOE_FAKE_TORCH_AT_LEAST(2, 3)
  void copy_data(void* dest, const void* src, std::size_t count) const override { std::memcpy(dest, src, count); }
#endif
};

Allocator allocator;

#ifdef SMOE_FAKE_HAS_HOOKS
// libtorch 2.x asks a PrivateUse1 backend, through these hooks, whether it
// is there (isAvailable, from 2.7 on) and for its random generator.
struct Hooks final : at::PrivateUse1HooksInterface {
  bool isBuilt() const { return true; }      // overrides where the base declares it
  bool isAvailable() const { return true; }  // (2.7 and later), is unused before
  const at::Generator& getDefaultGenerator(c10::DeviceIndex) const override {
    static at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(c10::default_rng_seed_val);
    return gen;
  }
  at::Device getDeviceFromPtr(void*) const override { return c10::Device(kFake, current_device); }
  bool hasPrimaryContext(c10::DeviceIndex) const override { return true; }
};
struct RegisterHooks {
  RegisterHooks() {
    // Named as libtorch 1.13 names the device type, so that
    // runtime.device=privateuseone means the same on every release; a
    // registered backend is also what 2.x's accelerator queries look for.
    c10::register_privateuse1_backend("privateuseone");
    at::RegisterPrivateUse1HooksInterface(new Hooks);
  }
} register_hooks;
#endif
struct RegisterAllocator {
  RegisterAllocator() { c10::SetAllocator(kFake, &allocator); }
} register_allocator;

bool on_fake(const at::Tensor& t) { return t.defined() && t.device().type() == kFake; }

// A CPU tensor over the same memory: what the CPU kernels read and write.
at::Tensor host_alias(const at::Tensor& t) {
  if (!t.defined() || !on_fake(t)) return t;
  return at::from_blob(t.data_ptr(), t.sizes(), t.strides(), t.options().device(c10::kCPU));
}

at::Tensor empty_memory_format(c10::IntArrayRef size, c10::optional<at::ScalarType> dtype,
                               c10::optional<at::Layout> layout, c10::optional<at::Device> device,
                               c10::optional<bool> pin_memory, c10::optional<at::MemoryFormat> memory_format) {
  const auto type = c10::dtype_or_default(dtype);
  return at::detail::empty_generic(size, &allocator, c10::DispatchKeySet(c10::DispatchKey::PrivateUse1), type,
                                   memory_format);
}

at::Tensor empty_strided(c10::IntArrayRef size, c10::IntArrayRef stride, c10::optional<at::ScalarType> dtype,
                         c10::optional<at::Layout> layout, c10::optional<at::Device> device,
                         c10::optional<bool> pin_memory) {
  const auto type = c10::dtype_or_default(dtype);
  return at::detail::empty_strided_generic(size, stride, &allocator, c10::DispatchKeySet(c10::DispatchKey::PrivateUse1),
                                           type);
}

// Copies between the CPU and the device, or on the device: memory is host
// memory on both sides, so a CPU copy between the aliases does it.
at::Tensor copy_from(const at::Tensor& self, const at::Tensor& dst, bool non_blocking) {
  if (on_fake(self) && dst.device().is_cpu()) ++host_reads;
  host_alias(dst).copy_(host_alias(self), non_blocking);
  return dst;
}

at::Tensor copy_from_and_resize(const at::Tensor& self, const at::Tensor& dst) {
  at::native::resize_(dst, self.sizes(), c10::nullopt);
  return copy_from(self, dst, false);
}

at::Tensor host_or_undefined(const c10::optional<at::Tensor>& t) {
  return t.has_value() && t->defined() ? host_alias(*t) : at::Tensor();
}

void check_same_device(const char* op, std::initializer_list<at::Tensor> tensors) {
  for (const at::Tensor& t : tensors)
    TORCH_CHECK(!t.defined() || on_fake(t),
                "Expected all tensors to be on the same device, but found at least two devices, privateuseone:0 and ",
                t.device(), "! (fake accelerator, in ", op, ")");
}

// Convolutions: libtorch sends a device other than the CPU and CUDA to the
// "overrideable" pair, which a backend must provide.
at::Tensor convolution(const at::Tensor& input, const at::Tensor& weight, const c10::optional<at::Tensor>& bias,
                       at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation, bool transposed,
                       at::IntArrayRef output_padding, int64_t groups) {
  check_same_device("convolution", {input, weight, bias.has_value() ? *bias : at::Tensor()});
  return at::convolution(host_alias(input), host_alias(weight), host_or_undefined(bias), stride, padding, dilation,
                         transposed, output_padding, groups)
      .to(input.device());
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> convolution_backward(const at::Tensor& grad, const at::Tensor& input,
                                                                    const at::Tensor& weight, at::IntArrayRef stride,
                                                                    at::IntArrayRef padding, at::IntArrayRef dilation,
                                                                    bool transposed, at::IntArrayRef output_padding,
                                                                    int64_t groups, std::array<bool, 3> mask) {
  check_same_device("convolution_backward", {grad, input, weight});
  const std::vector<int64_t> bias_sizes{transposed ? weight.size(1) * groups : weight.size(0)};
  auto [gi, gw, gb] =
      at::convolution_backward(host_alias(grad), host_alias(input), host_alias(weight), at::IntArrayRef(bias_sizes),
                               stride, padding, dilation, transposed, output_padding, groups, mask);
  auto back = [&](const at::Tensor& t) { return t.defined() ? t.to(input.device()) : t; };
  return {back(gi), back(gw), back(gb)};
}

// Module::to(device) swaps a parameter's data for a tensor on the device
// (set_data), which libtorch 1.13 allows only between its own dense backends.
bool compatible_shallow_copy_type(const at::Tensor& self, const at::Tensor& from) {
  return self.layout() == at::kStrided && from.layout() == at::kStrided;
}

bool is_device_tensor(const c10::IValue& v) { return v.isTensor() && on_fake(v.toTensor()); }

// CUDA's rule: every tensor argument of an operator on the device lives on
// it, except a 0-dim CPU tensor (a scalar).
void check_devices(const c10::OperatorHandle& op, const torch::jit::Stack& stack, size_t args) {
  const size_t first = stack.size() - args;
  auto misplaced = [](const at::Tensor& t) { return t.defined() && t.device().is_cpu() && t.dim() > 0; };
  bool on_device = false, on_cpu = false;
  for (size_t i = first; i < stack.size(); ++i) {
    const c10::IValue& v = stack[i];
    if (v.isTensor()) {
      on_device |= is_device_tensor(v);
      on_cpu |= misplaced(v.toTensor());
    } else if (v.isTensorList()) {
      for (const at::Tensor& t : v.toTensorVector()) {
        on_device |= t.defined() && on_fake(t);
        on_cpu |= misplaced(t);
      }
    } else if (v.isList()) {
      for (const c10::IValue& e : v.toListRef())
        if (e.isTensor()) {
          on_device |= is_device_tensor(e);
          on_cpu |= misplaced(e.toTensor());
        }
    }
  }
  // SMOE_FAKE_ABORT=1: abort instead, where a debugger shows who passed the tensor.
  static const bool abort_on_mismatch = std::getenv("SMOE_FAKE_ABORT") != nullptr;
  if (on_device && on_cpu && abort_on_mismatch) std::abort();
  TORCH_CHECK(!(on_device && on_cpu),
              "Expected all tensors to be on the same device, but found at least two devices, privateuseone:0 and "
              "cpu! (fake accelerator, in ",
              op.schema().name(), ")");
}

// Device arguments become CPU aliases over the same memory and the CPU kernel
// runs on them, so in-place updates (an optimiser's step, batch norm's
// running statistics) land in the device tensors themselves; new results are
// copied to the device. (ATen's own cpu_fallback copies arguments to the CPU
// and back, and 1.13's misses mutated optional arguments such as batch
// norm's running statistics.)
c10::IValue to_host(const c10::IValue& v, c10::optional<c10::Device>& device) {
  if (v.isTensor()) {
    const at::Tensor& t = v.toTensor();
    if (!on_fake(t)) return v;
    device = t.device();
    return host_alias(t);
  }
  if (v.isTensorList()) {
    c10::List<at::Tensor> out;
    for (const at::Tensor& t : v.toTensorVector()) {
      if (on_fake(t)) device = t.device();
      out.push_back(host_alias(t));
    }
    return out;
  }
  if (v.isList()) {  // e.g. Tensor?[] (index)
    const auto list = v.toList();
    c10::impl::GenericList out(list.elementType());
    for (const c10::IValue& e : list) out.push_back(to_host(e, device));
    return out;
  }
  if (v.isDevice() && v.toDevice().type() == kFake) {  // a factory's device
    device = v.toDevice();
    return c10::Device(c10::kCPU);
  }
  return v;
}

c10::IValue to_device(const c10::IValue& v, c10::Device device) {
  if (v.isTensor()) {
    const at::Tensor& t = v.toTensor();
    return t.defined() && t.device().is_cpu() ? t.to(device) : t;
  }
  if (v.isTensorList()) {
    c10::List<at::Tensor> out;
    for (const at::Tensor& t : v.toTensorVector()) out.push_back(t.defined() && t.device().is_cpu() ? t.to(device) : t);
    return out;
  }
  return v;
}

void fallback(const c10::OperatorHandle& op, torch::jit::Stack* stack) {
  const c10::FunctionSchema& schema = op.schema();
  const size_t args = schema.arguments().size();
  check_devices(op, *stack, args);
  ++fallback_calls;
  if (schema.name() == "aten::_local_scalar_dense") ++host_reads;  // .item()
  const size_t first = stack->size() - args;
  std::vector<c10::IValue> originals(stack->begin() + static_cast<std::ptrdiff_t>(first), stack->end());
  c10::optional<c10::Device> device;
  // An out= argument may be resized by the kernel, which memory it does not
  // own cannot be: it gets a CPU copy, copied back (resized) afterwards.
  std::vector<std::pair<at::Tensor, at::Tensor>> outs;  // (device tensor, its CPU copy)
  for (size_t i = first; i < stack->size(); ++i) {
    const c10::Argument& arg = schema.arguments()[i - first];
    c10::IValue& v = (*stack)[i];
    if (arg.kwarg_only() && arg.alias_info() && arg.alias_info()->isWrite() && v.isTensor() && on_fake(v.toTensor())) {
      device = v.toTensor().device();
      outs.emplace_back(v.toTensor(), host_alias(v.toTensor()).clone());  // not a host read of the program's
      v = outs.back().second;
    } else {
      v = to_host(v, device);
    }
  }
  op.redispatchBoxed(c10::DispatchKeySet(c10::DispatchKey::CPU), stack);
  for (auto& [out, copy] : outs) copy_from_and_resize(copy, out);
  if (!device) return;
  const size_t rets = schema.returns().size();
  for (size_t j = 0; j < rets; ++j) {
    c10::IValue& v = (*stack)[stack->size() - rets + j];
    const c10::AliasInfo* alias = schema.returns()[j].alias_info();
    if (alias == nullptr) {
      v = to_device(v, *device);
      continue;
    }
    // An in-place or out= operator returns the argument it wrote.
    TORCH_CHECK(alias->isWrite(), "fake accelerator: ", schema.name(),
                " returns a view and has no kernel of the device (views cannot fall back to the CPU)");
    for (size_t i = 0; i < args; ++i) {
      const c10::AliasInfo* a = schema.arguments()[i].alias_info();
      if (a && a->isWrite() && a->beforeSets() == alias->beforeSets()) v = originals[i];
    }
  }
}

}  // namespace

// How many operators ran through the fake device's CPU fallback so far
// (C linkage: tests find it with dlsym, the product never does).
extern "C" long smoe_fake_accelerator_calls() { return fallback_calls.load(); }

// How many times a device value was read back to the host so far.
extern "C" long smoe_fake_accelerator_host_reads() { return host_reads.load(); }

TORCH_LIBRARY_IMPL(aten, PrivateUse1, m) {
  m.impl("empty.memory_format", empty_memory_format);
  m.impl("empty_strided", empty_strided);
  m.impl("_copy_from", copy_from);
  m.impl("_copy_from_and_resize", copy_from_and_resize);
  m.impl("as_strided", at::native::as_strided_tensorimpl);
  m.impl("view", at::native::view);
#ifdef SMOE_FAKE_HAS_RESHAPE_ALIAS
  m.impl("_reshape_alias", at::native::_reshape_alias);
#endif
  m.impl("resize_", at::native::resize_);
  // A tensor over a storage on the device (serialisation uses it).
  m.impl("set_.source_Storage", at::native::set_);
  m.impl("set_.source_Storage_storage_offset", at::native::set_storage_cpu_);
  m.impl("_has_compatible_shallow_copy_type", compatible_shallow_copy_type);
  m.impl("convolution_overrideable", convolution);
  m.impl("convolution_backward_overrideable", convolution_backward);
}

// An operator with a device kernel loses its composite one for the device's
// autograd key too.
TORCH_LIBRARY_IMPL(aten, AutogradPrivateUse1, m) {
  m.impl("_has_compatible_shallow_copy_type", compatible_shallow_copy_type);
}

TORCH_LIBRARY_IMPL(_, PrivateUse1, m) { m.fallback(torch::CppFunction::makeFromBoxedFunction<&fallback>()); }
