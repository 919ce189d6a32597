#include "core/atomic_file.h"

#include <fcntl.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "core/error.h"

namespace fs = std::filesystem;

namespace smoe {
namespace {

std::string temp_name(const std::string& target) {
  static std::atomic<unsigned> counter{0};
  return fmt::format("{}.tmp-{}-{}", target, ::getpid(), counter++);
}

void fsync_path(const std::string& path, int flags) {
  int fd = ::open(path.c_str(), flags);
  if (fd < 0) throw Error(errno_message("open " + path));
  int rc = ::fsync(fd);
  ::close(fd);
  if (rc != 0) throw Error(errno_message("fsync " + path));
}

std::string parent_of(const std::string& path) {
  fs::path p = fs::path(path).parent_path();
  return p.empty() ? "." : p.string();
}

}  // namespace

void fsync_dir(const std::string& dir) { fsync_path(dir, O_RDONLY | O_DIRECTORY); }

void write_file_atomic(const std::string& path, std::string_view bytes) {
  AtomicPath out(path);
  int fd = ::open(out.temp().c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  if (fd < 0) throw Error(errno_message("cannot write " + path));
  size_t done = 0;
  while (done < bytes.size()) {
    ssize_t n = ::write(fd, bytes.data() + done, bytes.size() - done);
    if (n < 0) {
      if (errno == EINTR) continue;
      const std::string why = errno_message("cannot write " + path);
      ::close(fd);
      throw Error(why + " (any previous version is kept)");
    }
    done += static_cast<size_t>(n);
  }
  ::close(fd);
  out.commit();
}

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error(errno_message("cannot read " + path));
  std::ostringstream ss;
  ss << in.rdbuf();
  if (in.bad()) throw Error(errno_message("cannot read " + path));
  return ss.str();
}

AtomicPath::AtomicPath(std::string target) : target_(std::move(target)), temp_(temp_name(target_)) {}

AtomicPath::~AtomicPath() {
  if (!committed_) {
    std::error_code ec;
    fs::remove(temp_, ec);
  }
}

void AtomicPath::commit() {
  fsync_path(temp_, O_RDONLY);
  if (std::rename(temp_.c_str(), target_.c_str()) != 0)
    throw Error(errno_message("rename " + temp_ + " -> " + target_));
  committed_ = true;
  fsync_dir(parent_of(target_));
}

AtomicDir::AtomicDir(std::string target) : target_(std::move(target)), temp_(temp_name(target_)) {
  std::error_code ec;
  fs::create_directories(parent_of(target_), ec);
  if (!fs::create_directory(temp_, ec) || ec) fail("cannot create folder {}: {}", temp_, ec ? ec.message() : "exists");
}

AtomicDir::~AtomicDir() {
  if (!committed_) {
    std::error_code ec;
    fs::remove_all(temp_, ec);
  }
}

void AtomicDir::commit(bool replace) {
  for (const auto& entry : fs::directory_iterator(temp_))
    if (entry.is_regular_file()) fsync_path(entry.path().string(), O_RDONLY);
  fsync_dir(temp_);
  std::error_code ec;
  if (fs::exists(target_, ec)) {
    SMOE_CHECK(replace, "output folder {} already exists (use --force to replace it)", target_);
    // Move the old folder aside first so that the target name is never empty
    // of a complete dataset for longer than two renames.
    std::string old = temp_name(target_) + ".old";
    fs::rename(target_, old);
    fs::rename(temp_, target_);
    fs::remove_all(old, ec);
  } else {
    fs::rename(temp_, target_);
  }
  committed_ = true;
  fsync_dir(parent_of(target_));
}

}  // namespace smoe
