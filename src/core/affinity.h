// The CPU cores this process may run on (its affinity mask, which cgroups,
// mpirun --bind-to and srun --cpus-per-task set), and the intra-op thread
// count a rank should use. std::thread::hardware_concurrency() is the wrong
// number on a cluster: it counts the node's cores, not the rank's.
#pragma once

#include <string>
#include <vector>

namespace smoe {

// The CPU ids of this process's affinity mask, ascending.
std::vector<int> affinity_cpus();
// "0-3,8,10-11".
std::string cpu_list(const std::vector<int>& cpus);

// Intra-op threads for a rank: `configured` when > 0; else the Slurm task's
// cpus (`slurm_cpus_per_task` > 0, from SLURM_CPUS_PER_TASK); else the cores
// of the rank's affinity mask when it is bound to part of the node; else the
// mask's cores shared among the node's `local_ranks`. At least 1.
int choose_threads(int configured, int slurm_cpus_per_task, int affinity_cores, int online_cores, int local_ranks);

// The same with this process's mask, the node's online cores and SLURM_CPUS_PER_TASK.
int threads_for_rank(int configured, int local_ranks);

}  // namespace smoe
