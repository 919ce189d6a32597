#include "pipeline/run_lock.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/file.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <thread>

#include "core/error.h"
#include "core/log.h"

namespace fs = std::filesystem;

namespace smoe::pipeline {
namespace {

std::string this_host() {
  char name[256] = {};
  return gethostname(name, sizeof name - 1) == 0 ? name : "unknown";
}

std::string owner_record() {
  const char* job = std::getenv("SLURM_JOB_ID");
  char when[32];
  std::time_t now = std::time(nullptr);
  std::tm tm{};
  localtime_r(&now, &tm);
  std::strftime(when, sizeof when, "%Y-%m-%d %H:%M:%S", &tm);
  return nlohmann::json{{"host", this_host()},
                        {"pid", static_cast<int64_t>(getpid())},
                        {"slurm_job", job ? job : ""},
                        {"since", when}}
             .dump() +
         "\n";
}

nlohmann::json read_owner(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  try {
    return nlohmann::json::parse(ss.str());
  } catch (const nlohmann::json::exception&) {
    return nlohmann::json::object();
  }
}

std::string describe(const nlohmann::json& o) {
  if (!o.contains("host")) return "another job";
  std::string s = fmt::format("host {} pid {}", o.value("host", "?"), o.value("pid", int64_t{0}));
  if (!o.value("slurm_job", std::string()).empty())
    s += fmt::format(" (Slurm job {})", o["slurm_job"].get<std::string>());
  return s + fmt::format(" since {}", o.value("since", "?"));
}

void write_all(int fd, const std::string& text, const std::string& path) {
  SMOE_CHECK(ftruncate(fd, 0) == 0 && pwrite(fd, text.data(), text.size(), 0) == static_cast<ssize_t>(text.size()),
             "cannot write the run-folder lock {}: {}", path, std::strerror(errno));
  fsync(fd);
}

bool flock_unsupported(int err) { return err == ENOLCK || err == EOPNOTSUPP || err == ENOSYS || err == EINVAL; }

}  // namespace

std::string RunLock::lock_path(const std::string& run_dir) {
  fs::path p = fs::path(run_dir).lexically_normal();
  if (p.filename().empty()) p = p.parent_path();  // "runs/a/" -> "runs/a"
  return p.string() + ".lock";
}

RunLock RunLock::acquire(const std::string& run_dir) {
  RunLock lock;
  lock.path_ = lock_path(run_dir);
  const fs::path parent = fs::path(lock.path_).parent_path();
  if (!parent.empty()) {
    std::error_code ec;
    fs::create_directories(parent, ec);
  }
  int fd = ::open(lock.path_.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  bool writable = true;
  if (fd < 0 && (errno == EROFS || errno == EACCES)) {
    // A folder nobody can write needs no lock (what writes there fails with
    // its own one-line error); an existing lock file is still honoured.
    fd = ::open(lock.path_.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) return lock;
    writable = false;
  }
  SMOE_CHECK(fd >= 0, "cannot create the run-folder lock {}: {}", lock.path_, std::strerror(errno));
  // A requeued Slurm job may start while its previous incarnation is still
  // being killed (KillWait): it waits for that one's lock.
  const char* restarts = std::getenv("SLURM_RESTART_COUNT");
  const char* wait_env = std::getenv("SMOE_LOCK_WAIT_S");
  const double wait_s = wait_env ? std::atof(wait_env) : (restarts && std::atoi(restarts) > 0 ? 120.0 : 0.0);
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(wait_s);
  int rc;
  while ((rc = ::flock(fd, LOCK_EX | LOCK_NB)) != 0 && errno == EWOULDBLOCK &&
         std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
  if (rc == 0) {
    const nlohmann::json before = read_owner(lock.path_);
    if (before.contains("pid")) log::debug("run lock  {}: the last holder ({}) is gone", lock.path_, describe(before));
    if (writable) write_all(fd, owner_record(), lock.path_);
    lock.fd_ = fd;
    return lock;
  }
  const int err = errno;
  if (err == EWOULDBLOCK) {
    const nlohmann::json owner = read_owner(lock.path_);
    ::close(fd);
    fail("run folder {} is in use by {} (lock {}): wait for that job to end or stop it", run_dir, describe(owner),
         lock.path_);
  }
  ::close(fd);
  SMOE_CHECK(flock_unsupported(err), "cannot lock {}: {}", lock.path_, std::strerror(err));
  if (!writable) return lock;
  // No flock on this file system: the file's existence is the lock.
  nlohmann::json owner = read_owner(lock.path_);
  if (owner.contains("pid")) {
    const bool here = owner.value("host", "") == this_host();
    const pid_t pid = static_cast<pid_t>(owner.value("pid", int64_t{0}));
    const bool alive = pid > 0 && (::kill(pid, 0) == 0 || errno == EPERM);
    SMOE_CHECK(here && !alive,
               "run folder {} is in use by {} (lock {}; this file system has no flock: if that job has ended, remove "
               "the lock file)",
               run_dir, describe(owner), lock.path_);
    log::warn("run lock  {}: replacing the stale lock of {}, which is no longer running", lock.path_, describe(owner));
  }
  std::error_code ec;
  fs::remove(lock.path_, ec);
  const int efd = ::open(lock.path_.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  SMOE_CHECK(efd >= 0, "run folder {} was locked by another job just now (lock {})", run_dir, lock.path_);
  write_all(efd, owner_record(), lock.path_);
  lock.fd_ = efd;
  lock.owns_file_ = true;
  return lock;
}

void RunLock::release() {
  if (fd_ < 0) return;
  if (owns_file_) {
    std::error_code ec;
    fs::remove(path_, ec);
  }
  ::close(fd_);  // drops the flock
  fd_ = -1;
}

RunLock::~RunLock() { release(); }

RunLock::RunLock(RunLock&& o) noexcept : path_(std::move(o.path_)), fd_(o.fd_), owns_file_(o.owns_file_) { o.fd_ = -1; }

RunLock& RunLock::operator=(RunLock&& o) noexcept {
  if (this != &o) {
    release();
    path_ = std::move(o.path_);
    fd_ = o.fd_;
    owns_file_ = o.owns_file_;
    o.fd_ = -1;
  }
  return *this;
}

}  // namespace smoe::pipeline
