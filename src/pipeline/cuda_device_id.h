// A CUDA device's UUID ("GPU-xxxxxxxx-xxxx-..." as nvidia-smi -L prints it):
// the same in every process of the node whatever CUDA_VISIBLE_DEVICES
// renumbered, so that ranks can tell whether they picked the same GPU.
// Builds against a libtorch without CUDA name the device by index and host.
#pragma once

#include <string>

namespace smoe::pipeline {

std::string cuda_device_id(int index);

}  // namespace smoe::pipeline
