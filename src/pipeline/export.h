// `smoe export`: a finished run's MoE as one TorchScript file
// (models/moe_export.h), with the run's pixel normalisation, class names and
// provenance. Refuses, in one line and before writing anything, a folder
// without a finished run, a scheme whose model it cannot export, a rule, tau
// or ensembler it does not know, and an --out that exists (unless --force).
#pragma once

#include <optional>
#include <string>

namespace smoe::pipeline {

struct ExportRequest {
  std::string run_dir;
  std::string out;
  std::string rule;           // base | top1 | top2 | anytime (default), or mixture (default) | top1 | top2
  std::optional<double> tau;  // default: the report's tau at the base model's accuracy, else its best tau
  std::string ensembler;      // default: the run's ensembler.kind
  bool force = false;         // replace an existing --out
};

// Writes the file; returns a one-line summary for the user.
std::string export_run(const ExportRequest& request);

}  // namespace smoe::pipeline
