// Fault injection for the failure tests, driven by SMOE_FAULT=ACTION:POINT[:RANK]
// (or expert:K). A fault happens at a named point of the program, never at
// a time: a test that needs a kill, a signal or a time limit names where,
// and the outcome is the same on a fast, a slow or a loaded machine.
//
// Actions (every rank, or only rank RANK, that reaches POINT):
//   stage    throws there (a failing rank)
//   kill     dies by SIGKILL there (a lost rank: nothing is flushed)
//   killjob  SIGKILLs the whole job there: every rank its launcher started
//            on this node, the launcher (mpirun) itself, then this rank —
//            a node lost, `scancel --signal=KILL`
//   term     receives SIGTERM there (preemption, a time limit): inside a
//            training loop smoe stops at the next step and exits 75
//   termjob  sends SIGTERM there to every rank of the job on this node
//            (what Slurm's time limit does), not to the launcher
//   wait     blocks there until SIGTERM or SIGUSR1 arrives, then goes on
//            (a job that reaches its time limit exactly there)
//   hang     stops making progress there for ever (the stall inspector's case)
//   torch    makes a real libtorch error there (a view of the wrong size):
//            its multi-line message and backtrace, as a libtorch failure
//            inside a stage would give
//   expert:K the rank that trains expert K throws
//
// Points:
//   NAME               as stage NAME starts (base, embed, cluster, ...)
//   NAME-done          once stage NAME has finished on every rank (and
//                      run.json records it; eval-done: report.json written)
//   STAGE-epoch-E      after epoch E's checkpoint of an epoch-checkpointed
//                      stage (base-epoch-2, joint-epoch-1), every rank past it
//   expert-K-epoch-E   after expert K's epoch-E checkpoint (group-T-epoch-E
//                      for fused tasks), on the rank training it
//   recorded-KEY       on rank 0, right after run.json records KEY
//                      (recorded-expert/000, recorded-em/2/expert/001,
//                      recorded-cluster)
//
// Unset, it costs one getenv per point. An unknown action is an error at
// the first point, so that a mistyped SMOE_FAULT cannot pass a test silently.
#pragma once

#include <cstdint>
#include <string>

namespace smoe::pipeline {

// The fault point `point` on rank `rank`.
void inject_stage_fault(const std::string& point, int rank);
void inject_expert_fault(int64_t expert);

}  // namespace smoe::pipeline
