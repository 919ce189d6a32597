#include "models/init_lock.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>

#include <cstring>

namespace smoe::models {

std::recursive_mutex& init_mutex() {
  static std::recursive_mutex m;
  return m;
}

ProbeScope::ProbeScope() : lock_(init_mutex()) {
  at::Generator gen = at::detail::getDefaultCPUGenerator();
  std::lock_guard<std::mutex> guard(gen.mutex());
  const at::Tensor s = gen.get_state();
  state_.assign(static_cast<const char*>(s.data_ptr()), static_cast<size_t>(s.nbytes()));
}

ProbeScope::~ProbeScope() {
  at::Generator gen = at::detail::getDefaultCPUGenerator();
  std::lock_guard<std::mutex> guard(gen.mutex());
  at::Tensor s = at::empty({static_cast<int64_t>(state_.size())}, at::kByte);
  std::memcpy(s.data_ptr(), state_.data(), state_.size());
  gen.set_state(s);
}

}  // namespace smoe::models
