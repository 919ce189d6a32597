#include "core/affinity.h"

#include <sched.h>
#include <unistd.h>

#include <fmt/format.h>
#include <algorithm>
#include <cstdlib>

namespace smoe {

std::vector<int> affinity_cpus() {
  std::vector<int> out;
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof set, &set) != 0) return out;
  for (int c = 0; c < CPU_SETSIZE; ++c)
    if (CPU_ISSET(c, &set)) out.push_back(c);
  return out;
}

std::string cpu_list(const std::vector<int>& cpus) {
  std::string s;
  for (size_t i = 0; i < cpus.size();) {
    size_t j = i;
    while (j + 1 < cpus.size() && cpus[j + 1] == cpus[j] + 1) ++j;
    if (!s.empty()) s += ",";
    s += j == i ? fmt::format("{}", cpus[i]) : fmt::format("{}-{}", cpus[i], cpus[j]);
    i = j + 1;
  }
  return s;
}

int choose_threads(int configured, int slurm_cpus_per_task, int affinity_cores, int online_cores, int local_ranks) {
  if (configured > 0) return configured;
  if (slurm_cpus_per_task > 0) return slurm_cpus_per_task;
  const int mask = std::max(affinity_cores, 1);
  if (mask < online_cores) return mask;  // bound to its own cores
  return std::max(1, mask / std::max(local_ranks, 1));
}

int threads_for_rank(int configured, int local_ranks) {
  const char* slurm = std::getenv("SLURM_CPUS_PER_TASK");
  const int slurm_cpus = slurm ? std::atoi(slurm) : 0;
  const int online = static_cast<int>(std::max(1L, sysconf(_SC_NPROCESSORS_ONLN)));
  return choose_threads(configured, slurm_cpus, static_cast<int>(affinity_cpus().size()), online, local_ranks);
}

}  // namespace smoe
