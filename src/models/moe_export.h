// The trained single-gate MoE as one self-contained TorchScript file, for use
// outside smoe (torch.jit.load in Python, torch::jit::load in C++, no smoe
// code): the base model, the gate, the experts and their ensemblers with
// their weights as named parameters, and the inference rules traced from
// MoeModel::predict_routed (so the file computes what smoe computes, with the
// same conditional compute: an expert runs only on the samples routed to
// it). What the file offers (docs/export.md):
//
//   forward(images) -> probs [B, C]
//   predict(images) -> (probs [B, C], weight [B, K], early_exit [B])
//   attributes: rule ("base" | "top1" | "top2" | "anytime") and tau, which
//   may be changed after loading; ensembler, classes, input_shape,
//   format_version and the provenance (smoe_* strings), read-only by intent.
//
// A jointly trained MoE exports the same way, with its own rules
// (joint_export_rules()).
//
// `images` are the stored pixels (0..255, uint8 or float), [B, C, H, W]; the
// file normalises them as smoe's batches are (data/batch.h).
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace smoe::models {

class MoeModel;

struct ExportOptions {
  std::string rule = "anytime";  // forward()'s rule: base | top1 | top2 | anytime
  double tau = 0;                // the anytime threshold, in [0, 1]
  std::string ensembler = "bagging";
  std::vector<int64_t> input_shape;  // [C, H, W]
  std::vector<float> pixel_scale, pixel_shift;
  std::vector<std::string> classes;
  std::map<std::string, std::string> provenance;  // stored as attributes smoe_<key>
};

class JointMoeImpl;

// The rules an exported single-gate MoE knows, in the order of MoeModel::Predict.
const std::vector<std::string>& export_rules();
// A jointly trained MoE's (the report's names): "mixture" (sum_e g_e
// softmax(f_e), eq. 1 of Krishnamurthy et al.), "top1" (the gate's argmax
// expert alone), "top2" (the two largest gate values, renormalised). Every
// expert runs on every sample (the evaluation's dense path); tau and the
// ensembler do not apply, and predict()'s early_exit is all false.
const std::vector<std::string>& joint_export_rules();

// Writes `moe` (every expert loaded, on the CPU) to `path` atomically.
void export_moe(MoeModel& moe, const ExportOptions& options, const std::string& path);
void export_joint_moe(JointMoeImpl& moe, const ExportOptions& options, const std::string& path);

}  // namespace smoe::models
