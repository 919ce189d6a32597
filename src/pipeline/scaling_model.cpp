#include "pipeline/scaling_model.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "pipeline/run_dir.h"
#include "pipeline/scheduler.h"

namespace smoe::pipeline {
namespace {

double log2_ceil(int P) { return P <= 1 ? 0.0 : std::ceil(std::log2(static_cast<double>(P))); }

comm::TrafficCounts counts_from_json(const nlohmann::json& ops) {
  comm::TrafficCounts c;
  if (!ops.is_object()) return c;
  for (int i = 0; i < comm::kOps; ++i) {
    const char* name = comm::op_name(static_cast<comm::Op>(i));
    if (!ops.contains(name)) continue;
    const nlohmann::json& o = ops[name];
    comm::OpCount& d = c.ops[static_cast<size_t>(i)];
    d.calls = o.value("calls", int64_t{0});
    d.payload_bytes = o.value("payload_bytes", 0.0);
    d.sent_bytes = o.value("sent_bytes", 0.0);
    d.recv_bytes = o.value("recv_bytes", 0.0);
    d.seconds = o.value("seconds", 0.0);
  }
  return c;
}

// Seconds of `reps` allreduces of `count` doubles on comm, the slowest rank's.
double time_allreduce(comm::Communicator& comm, size_t count, int reps) {
  std::vector<double> buf(count, 1.0);
  comm.allreduce(comm::host_buffer(buf), comm::ReduceOp::sum);  // warm-up
  comm.barrier();
  const auto t0 = std::chrono::steady_clock::now();
  for (int i = 0; i < reps; ++i) comm.allreduce(comm::host_buffer(buf), comm::ReduceOp::sum);
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() / reps;
  return comm.allreduce_max(s);
}

}  // namespace

double CollectiveModel::cost(comm::Op op, double bytes, int P) const {
  if (P <= 1 || !known()) return 0.0;
  const double a = latency_s, b = seconds_per_byte, p = static_cast<double>(P);
  switch (op) {
    case comm::Op::allreduce:
      return 2 * (p - 1) * (a + bytes / p * b);
    case comm::Op::broadcast:
      return log2_ceil(P) * (a + bytes * b);
    case comm::Op::allgather:
    case comm::Op::gather:
      return (p - 1) * a + (p - 1) / p * bytes * b;
    case comm::Op::barrier:
      return 2 * log2_ceil(P) * a;
    case comm::Op::message:
      return 0.0;  // control messages: see the header
  }
  return 0.0;
}

CollectiveModel measure_collectives(comm::Communicator& comm) {
  CollectiveModel m;
  m.latency_s = 0;
  m.seconds_per_byte = 0;
  m.source = "one rank: no collective";
  const int P = comm.size();
  if (P < 2) return m;
  const double small_bytes = 8, large_bytes = 4.0 * 1024 * 1024;
  const double t_small = time_allreduce(comm, 1, 200);
  const double t_large = time_allreduce(comm, static_cast<size_t>(large_bytes / 8), 10);
  // t(n) = 2 (P-1) a + 2 (P-1)/P n b, solved for the two sizes.
  const double p = static_cast<double>(P);
  m.seconds_per_byte = std::max(0.0, (t_large - t_small) / (2 * (p - 1) / p * (large_bytes - small_bytes)));
  m.latency_s = std::max(0.0, (t_small - 2 * (p - 1) / p * small_bytes * m.seconds_per_byte) / (2 * (p - 1)));
  m.source = fmt::format("measured on this job's {} ranks (allreduce of 8 B and 4 MiB)", P);
  return m;
}

double collective_seconds(const comm::TrafficCounts& calls, int calls_ranks, int P, const CollectiveModel& model) {
  double s = 0;
  for (int i = 0; i < comm::kOps; ++i) {
    const auto op = static_cast<comm::Op>(i);
    const comm::OpCount& c = calls[op];
    if (c.calls == 0 || op == comm::Op::message) continue;
    double per_call = c.payload_bytes / static_cast<double>(c.calls);
    if (op == comm::Op::allgather) per_call *= std::max(calls_ranks, 1);  // every rank's block
    if (op == comm::Op::gather) per_call = (c.payload_bytes + c.recv_bytes) / static_cast<double>(c.calls);
    s += static_cast<double>(c.calls) * model.cost(op, per_call, P);
  }
  return s;
}

StageMeasure stage_measure(const nlohmann::json& report, const nlohmann::json& done, const std::string& stage,
                           const std::string& run_dir) {
  SMOE_CHECK(report.contains("stages") && report["stages"].contains(stage), "{}: report.json has no stage '{}'",
             run_dir, stage);
  StageMeasure m;
  m.stage = stage;
  m.ranks = report.value("ranks", 1);
  m.seconds = report["stages"][stage].get<double>();
  if (report.contains("stage_comm") && report["stage_comm"].contains(stage) && report["stage_comm"][stage].is_object())
    m.ops = counts_from_json(report["stage_comm"][stage].value("ops", nlohmann::json::object()));
  const nlohmann::json record = done.value(stage, nlohmann::json::object());
  if (record.contains("micro_batches_per_step")) {
    m.kind = WorkKind::micro_batches;
    m.units = record["micro_batches_per_step"].get<int64_t>();
  } else if (stage == "experts") {
    m.kind = WorkKind::tasks;
    m.shared_seconds = record.value("trunk_cache_seconds", 0.0);
    for (int64_t k = 0; done.contains(expert_task_key(k, 0)); ++k) {
      const nlohmann::json& t = done[expert_task_key(k, 0)];
      m.task_seconds.push_back(t.value("seconds", 0.0));
      m.task_cost.push_back(t.value("predicted_cost", 1.0));
    }
    m.units = static_cast<int64_t>(m.task_seconds.size());
  }
  return m;
}

namespace {

// The work of one rank relative to the whole, as the stage splits it.
double work_share(const StageMeasure& m, int P) {
  if (m.kind == WorkKind::micro_batches && m.units > 0) return static_cast<double>((m.units + P - 1) / P);
  return 1.0 / P;
}

double makespan(const StageMeasure& m, int P, const CollectiveModel& c) {
  std::vector<int64_t> ids(m.task_seconds.size());
  for (size_t i = 0; i < ids.size(); ++i) ids[i] = static_cast<int64_t>(i);
  // One request and one reply per task (none with one rank: rank 0's own worker).
  const double dispatch = P > 1 ? 2 * std::max(c.latency_s, 0.0) : 0.0;
  return simulate_schedule(longest_first(ids, m.task_cost), m.task_seconds, P, dispatch);
}

}  // namespace

double StageModel::collective(int P) const {
  if (base.kind != WorkKind::micro_batches) return collective_seconds(calls, calls_ranks, P, collectives);
  // A micro-batch stage's allreduces come once a step (more work, more
  // steps); its broadcasts and the rest once a stage.
  comm::TrafficCounts per_step, once = calls;
  per_step.ops[static_cast<size_t>(comm::Op::allreduce)] = calls[comm::Op::allreduce];
  once.ops[static_cast<size_t>(comm::Op::allreduce)] = comm::OpCount{};
  return collective_seconds(per_step, calls_ranks, P, collectives) * scale(P) +
         collective_seconds(once, calls_ranks, P, collectives);
}

// The serial part is a fixed cost (setting up, calibrating, writing): only
// the work the ranks share grows with a weak study's P and the work factor.
double StageModel::compute(int P) const {
  if (base.kind == WorkKind::tasks && !base.task_seconds.empty())
    return serial + (base.shared_seconds * base.ranks / P + makespan(base, P, collectives)) * scale(P);
  return serial + parallel * work_share(base, P) * scale(P);
}

double StageModel::replay(const StageMeasure& run) const {
  if (run.kind != WorkKind::tasks || run.task_seconds.empty()) return seconds(run.ranks);
  return serial + run.shared_seconds + makespan(run, run.ranks, collectives) + collective(run.ranks);
}

StageModel fit_stage(const std::vector<StageMeasure>& runs, const CollectiveModel& collectives, bool weak) {
  SMOE_CHECK(!runs.empty(), "fit_stage: no run");
  StageModel m;
  m.base = runs.front();
  m.calls = runs.back().ops;
  m.calls_ranks = runs.back().ranks;
  m.collectives = collectives;
  m.weak = weak;
  auto compute_of = [&](const StageMeasure& r) { return std::max(0.0, r.seconds - m.collective(r.ranks)); };
  if (m.base.kind == WorkKind::tasks && !m.base.task_seconds.empty()) {
    m.serial = std::max(0.0, compute_of(m.base) - m.base.shared_seconds - makespan(m.base, m.base.ranks, collectives));
    return m;
  }
  // compute = serial + parallel w scale, least squares over the runs.
  double n = 0, sw = 0, sc = 0, sww = 0, swc = 0;
  for (const auto& r : runs) {
    const double w = work_share(m.base, r.ranks) * m.scale(r.ranks), c = compute_of(r);
    n += 1;
    sw += w;
    sc += c;
    sww += w * w;
    swc += w * c;
  }
  const double det = n * sww - sw * sw;
  if (runs.size() >= 2 && det > 1e-12) {
    m.parallel = (n * swc - sw * sc) / det;
    m.serial = (sc - m.parallel * sw) / n;
  }
  if (runs.size() >= 2 && det > 1e-12 && m.parallel < 0) {
    // More ranks did not shorten it (a stage every rank repeats): all serial.
    m.serial = sc / n;
    m.parallel = 0;
  } else if (runs.size() < 2 || det <= 1e-12 || m.serial < 0) {
    // One run, or faster than linear (noise, caches): no serial part.
    m.serial = 0;
    m.parallel = sww > 0 ? swc / sww : 0.0;
  }
  return m;
}

}  // namespace smoe::pipeline
