// The MPI communicator (OpenMPI, initialised with MPI_THREAD_MULTIPLE so the
// coordinator's scheduler thread can talk while its main thread trains).
// Every MPI return code is checked: errors name the call, rank, file and line.
#pragma once

#include <memory>
#include <string>

#include "comm/communicator.h"

namespace smoe::comm {

// Owns MPI_Init_thread / MPI_Finalize. Works under mpirun, srun and as a
// singleton (plain `smoe train` without a launcher).
class MpiRuntime {
 public:
  MpiRuntime(int* argc, char*** argv);
  ~MpiRuntime();
  MpiRuntime(const MpiRuntime&) = delete;
  MpiRuntime& operator=(const MpiRuntime&) = delete;

  // The world communicator.
  std::unique_ptr<Communicator> world();
  // Collective over the world: the ranks that pass the same colour form one
  // communicator (ordered by world rank); a negative colour gets nullptr.
  // `smoe sweep` runs each run on such a group of ranks.
  std::unique_ptr<Communicator> split_world(int color);
  // Rank and number of ranks on this node, from
  // MPI_Comm_split_type(MPI_COMM_TYPE_SHARED) (launcher variables such as
  // OMPI_COMM_WORLD_LOCAL_RANK or SLURM_LOCALID are not trusted). Under srun,
  // a world size other than SLURM_STEP_NUM_TASKS is an error at start-up.
  int local_rank() const { return local_rank_; }
  int local_size() const { return local_size_; }

 private:
  bool owns_ = false;
  int local_rank_ = 0;
  int local_size_ = 1;
};

// The MPI library, e.g. "Open MPI v4.1.4".
std::string mpi_library_version();

}  // namespace smoe::comm
