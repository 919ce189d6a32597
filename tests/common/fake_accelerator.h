// The fake accelerator (fake_accelerator.cpp): a libtorch backend on the
// PrivateUse1 device type whose memory is host memory and whose kernels are
// the CPU's. A test binary linked with smoe_fake_accelerator has it
// registered; c10::Device(c10::kPrivateUse1, 0) is its device.
#pragma once

#include <c10/core/Device.h>

extern "C" long smoe_fake_accelerator_calls();
extern "C" long smoe_fake_accelerator_host_reads();

namespace smoe::testing {

inline c10::Device fake_accelerator() { return c10::Device(c10::kPrivateUse1, 0); }

// Operators that ran on the fake device so far (through its CPU fallback).
inline long fake_accelerator_calls() { return smoe_fake_accelerator_calls(); }
// Device values read back by the host so far (copies to the CPU, .item()):
// each is a point where a GPU's queue drains and the host waits.
inline long fake_accelerator_host_reads() { return smoe_fake_accelerator_host_reads(); }

}  // namespace smoe::testing
