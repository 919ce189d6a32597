#include "pipeline/stage_traffic.h"

#include <sstream>

#include "pipeline/run_state.h"
#include "pipeline/stage.h"

namespace smoe::pipeline {

StageTraffic::StageTraffic(const comm::Communicator& comm) {
  if (const comm::Traffic* t = comm.traffic()) start_ = t->snapshot();
}

nlohmann::json StageTraffic::finish(comm::Communicator& comm) const {
  const comm::Traffic* t = comm.traffic();
  if (!t) return nullptr;
  const comm::TrafficCounts d = t->snapshot().since(start_);
  // Three numbers per rank, as text (the gather is itself counted, after the snapshot).
  std::ostringstream mine;
  mine.precision(17);
  mine << d.sent_bytes() << ' ' << d.recv_bytes() << ' ' << d.seconds();
  const std::vector<std::string> parts = comm.gather_bytes(mine.str(), 0);
  if (!comm.is_root()) return nullptr;
  nlohmann::json sent = nlohmann::json::array(), recv = nlohmann::json::array(), seconds = nlohmann::json::array();
  for (const std::string& p : parts) {
    std::istringstream in(p);
    double a = 0, b = 0, c = 0;
    in >> a >> b >> c;
    sent.push_back(a);
    recv.push_back(b);
    seconds.push_back(c);
  }
  return {{"ops", comm::to_json(d)}, {"sent_bytes", sent}, {"recv_bytes", recv}, {"seconds", seconds}};
}

nlohmann::json recorded_stage_field(const RunState& s, const char* field) {
  nlohmann::json out = nlohmann::json::object();
  for (const auto& st : scheme_plan(s.cfg))
    if (st.recorded && s.run.done(st.name)) {
      const nlohmann::json r = s.run.record(st.name);
      if (r.contains(field)) out[st.name] = r[field];
    }
  return out;
}

}  // namespace smoe::pipeline
