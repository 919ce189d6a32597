// Checkpoints are state dicts (name -> tensor) in PyTorch's torch.save
// format (torch::pickle_save's, without TorchScript's type tags), written
// atomically; Python opens them with torch.load, weights_only or not. Saving the same weights twice gives the same
// bytes, so a checkpoint's SHA-256 identifies its weights.
#pragma once

#include <torch/nn/module.h>
#include <torch/optim/optimizer.h>

#include <map>
#include <string>

namespace smoe::train {

using StateDict = std::map<std::string, at::Tensor>;

// Parameters and buffers of a module by their dotted names.
StateDict state_dict(const torch::nn::Module& m);
// Writes `state` to `path` atomically; returns the file's SHA-256.
std::string save_state(const StateDict& state, const std::string& path);
std::string save_module(const torch::nn::Module& m, const std::string& path);
// Reads a state dict; errors name the file.
StateDict load_state(const std::string& path);
// Reads any value saved by torch.save or torch::pickle_save; `what` names the
// file in errors ("checkpoint", "features file"). libtorch 1.13 cannot read a
// Python dict of one entry (pickle's SETITEM): that error says so.
c10::IValue load_pickle(const std::string& path, const std::string& what);
// Loads into a module: every parameter and buffer must be present with its shape.
void load_module(torch::nn::Module& m, const std::string& path);

// An optimiser's state (momenta; Adam's moments and step counts) as bytes
// (torch::serialize's archive format), and back: with the weights, what a
// training run resumed mid-way needs to continue exactly. The bytes start
// with the libtorch release that wrote them; a state from another release
// (libtorch's archive maps states to parameters differently across releases)
// is refused with both versions named.
std::string optimizer_state(torch::optim::Optimizer& opt);
void load_optimizer_state(torch::optim::Optimizer& opt, const std::string& bytes, const std::string& origin);

}  // namespace smoe::train
