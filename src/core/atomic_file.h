// Crash-safe writes: everything that matters (manifests, checkpoints, shards,
// reports) is written to a temporary name beside its target, fsync'ed, and
// renamed over the target, so a reader sees either the old file or the whole
// new one — never half of it, whatever kills the writer.
#pragma once

#include <string>
#include <string_view>

namespace smoe {

// Atomically replaces `path` with `bytes`.
void write_file_atomic(const std::string& path, std::string_view bytes);

// Reads a whole file; throws smoe::Error naming it when it cannot.
std::string read_file(const std::string& path);

// fsync()s a directory so that a rename inside it is durable.
void fsync_dir(const std::string& dir);

// A temporary path beside `target` for writers that need a file name (HDF5).
// commit() fsyncs the temporary file and renames it onto the target; if the
// object dies uncommitted, the temporary file is removed.
class AtomicPath {
 public:
  explicit AtomicPath(std::string target);
  ~AtomicPath();
  AtomicPath(const AtomicPath&) = delete;
  AtomicPath& operator=(const AtomicPath&) = delete;

  const std::string& temp() const { return temp_; }
  const std::string& target() const { return target_; }
  void commit();

 private:
  std::string target_;
  std::string temp_;
  bool committed_ = false;
};

// Same for a whole directory: build it under temp(), then commit() renames it
// onto the target (replacing an existing target only when `replace` is true).
class AtomicDir {
 public:
  explicit AtomicDir(std::string target);
  ~AtomicDir();
  AtomicDir(const AtomicDir&) = delete;
  AtomicDir& operator=(const AtomicDir&) = delete;

  const std::string& temp() const { return temp_; }
  void commit(bool replace);

 private:
  std::string target_;
  std::string temp_;
  bool committed_ = false;
};

}  // namespace smoe
