// Every point-to-point message smoe's ranks exchange, by tag: one place for
// the tags, and for the sequences they take part in (each sequence is
// detailed beside its code).
//
//   1001 kRequestTag    worker -> rank 0's scheduler: REQUEST, carrying the
//                       last task's result (pipeline/scheduler.h)
//   1002 kReplyTag      scheduler -> worker: TASK id, STOP, or FAILED
//   1003 kHeartbeatTag  every rank's stall inspector -> rank 0's: what the
//                       rank is doing, every period (pipeline/stall_inspector.h;
//                       rank 0 aborts the job on a stall)
//   1011 kSweepTaskTag  a sweep group's first rank -> the group's other ranks:
//                       the next run to take part in, or -1 (pipeline/sweep_driver.h)
//   1012 kSweepExitTag  every rank -> world rank 0, then back: the exit
//                       statuses of a sweep, and the worst of them
//   1021 kScalingExitTag  world rank 0 -> the ranks a scaling study's run at P
//                       left out: the run's exit status, once it ended
//                       (pipeline/scaling_study.h)
//
// A sweep's groups hand runs out with the scheduler's sequence among the
// groups' first ranks (1001/1002 on their own communicator); inside a run the
// expert tasks use it again among the run's ranks. Collectives (broadcast,
// allreduce, allgather) take no tag.
#pragma once

namespace smoe::pipeline {

constexpr int kRequestTag = 1001;
constexpr int kReplyTag = 1002;
constexpr int kHeartbeatTag = 1003;
constexpr int kSweepTaskTag = 1011;
constexpr int kSweepExitTag = 1012;
constexpr int kScalingExitTag = 1021;

}  // namespace smoe::pipeline
