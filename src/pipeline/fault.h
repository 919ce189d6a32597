// Fault injection for the failure tests, driven by SMOE_FAULT:
//
//   expert:K            the rank that trains expert K throws
//   stage:NAME[:RANK]   every rank (or rank RANK) throws as stage NAME starts
//   kill:NAME[:RANK]    every rank (or rank RANK) dies by SIGKILL as stage NAME
//                       starts (a lost node: nothing is flushed or cleaned up)
//   term:NAME[:RANK]    ... receives SIGTERM there (a time limit, preemption):
//                       inside a training loop smoe stops at the next step
//                       and exits 75, resumable
//   hang:NAME[:RANK]    ... stops making progress there for ever (what the
//                       stall inspector must catch)
//
// Unset, it costs one getenv per stage and per expert task.
#pragma once

#include <cstdint>
#include <string>

namespace smoe::pipeline {

void inject_stage_fault(const std::string& stage, int rank);
void inject_expert_fault(int64_t expert);

}  // namespace smoe::pipeline
