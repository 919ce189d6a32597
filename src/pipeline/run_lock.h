// One job per run folder: an advisory lock on `<run folder>.lock` (beside
// the folder, so that --force can delete the folder and a fresh folder stays
// empty), held by rank 0 for the whole command. The file records the owner
// (host, pid, Slurm job id, start time) so that a second job stops with one
// line naming the first. The lock is flock(2): the kernel releases it when
// its process dies, so a dead job's lock is stale by construction and the
// next job takes it (and says so). On a file system without flock (Lustre
// mounted without -o flock, some NFS), the file itself is the lock, created
// exclusively: a leftover one from a dead process of this host is detected
// (its pid is gone) and replaced; one from another host must be removed by
// hand, and the error says which file. Where the lock file cannot be
// created (a read-only run folder's parent) and none exists, nothing is
// locked: nobody can write there either. A requeued Slurm job
// (SLURM_RESTART_COUNT > 0) waits up to 120 s for its previous incarnation
// to die; SMOE_LOCK_WAIT_S sets that wait for any job.
#pragma once

#include <string>

namespace smoe::pipeline {

class RunLock {
 public:
  RunLock() = default;
  // Takes the lock of run folder `run_dir`, or fails naming its holder.
  static RunLock acquire(const std::string& run_dir);
  ~RunLock();
  RunLock(RunLock&& other) noexcept;
  RunLock& operator=(RunLock&& other) noexcept;
  RunLock(const RunLock&) = delete;
  RunLock& operator=(const RunLock&) = delete;

  const std::string& path() const { return path_; }
  static std::string lock_path(const std::string& run_dir);

 private:
  void release();
  std::string path_;
  int fd_ = -1;
  bool owns_file_ = false;  // no flock: the file is the lock, removed on release
};

}  // namespace smoe::pipeline
