#include "data/prediction_file.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <sstream>

#include "core/error.h"
#include "data/hdf5_check.h"

namespace smoe::data {
namespace {

struct Column {
  const char* name;
  hid_t file_type;
  int rank;
};

std::vector<Column> columns(const PredictionLayout& l) {
  std::vector<Column> c = {
      {"prediction", H5T_STD_I64LE, 1}, {"expert", H5T_STD_I64LE, 1}, {"early_exit", H5T_STD_U8LE, 1}};
  if (l.labels) c.push_back({"label", H5T_STD_I64LE, 1});
  if (l.probs) c.push_back({"probs", H5T_IEEE_F32LE, 2});
  return c;
}

H5Id open_file(const std::string& path, unsigned flags) {
  hdf5_quiet();
  H5Id fapl(SMOE_H5_CHECK(H5Pcreate(H5P_FILE_ACCESS), path));
  SMOE_H5_CHECK(H5Pset_file_locking(fapl.get(), 0, 1), path);
  return H5Id(SMOE_H5_CHECK(H5Fopen(path.c_str(), flags, fapl.get()), path));
}

// pwrite of `bytes` at `offset`, whole.
void write_at(int fd, const std::string& path, int64_t offset, const void* data, size_t bytes) {
  const char* p = static_cast<const char*>(data);
  while (bytes > 0) {
    const ssize_t w = ::pwrite(fd, p, bytes, static_cast<off_t>(offset));
    SMOE_CHECK(w > 0 || errno == EINTR, "cannot write {}: {}", path, std::strerror(errno));
    if (w <= 0) continue;
    p += w;
    offset += w;
    bytes -= static_cast<size_t>(w);
  }
}

}  // namespace

DatasetOffsets create_prediction_file(const std::string& path, const PredictionLayout& l) {
  hdf5_quiet();
  SMOE_ASSERT(l.rows > 0 && l.classes > 0, "prediction file of {} rows and {} classes", l.rows, l.classes);
  H5Id fapl(SMOE_H5_CHECK(H5Pcreate(H5P_FILE_ACCESS), path));
  SMOE_H5_CHECK(H5Pset_file_locking(fapl.get(), 0, 1), path);
  // No timestamps: the same predictions make the same bytes.
  H5Id fcpl(SMOE_H5_CHECK(H5Pcreate(H5P_FILE_CREATE), path));
  SMOE_H5_CHECK(H5Pset_obj_track_times(fcpl.get(), 0), path);
  H5Id file(SMOE_H5_CHECK(H5Fcreate(path.c_str(), H5F_ACC_TRUNC, fcpl.get(), fapl.get()), path));
  DatasetOffsets offsets;
  for (const auto& c : columns(l)) {
    const hsize_t dims[2] = {static_cast<hsize_t>(l.rows), static_cast<hsize_t>(l.classes)};
    H5Id space(SMOE_H5_CHECK(H5Screate_simple(c.rank, dims, nullptr), path));
    H5Id dcpl(SMOE_H5_CHECK(H5Pcreate(H5P_DATASET_CREATE), path));
    SMOE_H5_CHECK(H5Pset_layout(dcpl.get(), H5D_CONTIGUOUS), path);
    SMOE_H5_CHECK(H5Pset_alloc_time(dcpl.get(), H5D_ALLOC_TIME_EARLY), path);
    SMOE_H5_CHECK(H5Pset_fill_time(dcpl.get(), H5D_FILL_TIME_NEVER), path);
    SMOE_H5_CHECK(H5Pset_obj_track_times(dcpl.get(), 0), path);
    H5Id dset(SMOE_H5_CHECK(
        H5Dcreate2(file.get(), c.name, c.file_type, space.get(), H5P_DEFAULT, dcpl.get(), H5P_DEFAULT), path));
    const haddr_t at = H5Dget_offset(dset.get());
    SMOE_CHECK(at != HADDR_UNDEF, "{}: dataset {} has no file offset", path, c.name);
    offsets[c.name] = static_cast<int64_t>(at);
  }
  SMOE_H5_CHECK(H5Fflush(file.get(), H5F_SCOPE_GLOBAL), path);
  return offsets;
}

void write_prediction_rows(const std::string& path, const PredictionLayout& l, const DatasetOffsets& offsets,
                           const PredictionRows& r) {
  const int64_t n = static_cast<int64_t>(r.prediction.size());
  SMOE_ASSERT(r.first >= 0 && r.first + n <= l.rows && static_cast<int64_t>(r.expert.size()) == n &&
                  static_cast<int64_t>(r.early_exit.size()) == n,
              "prediction rows [{}, {}) of {}", r.first, r.first + n, l.rows);
  if (n == 0) return;
  const int fd = ::open(path.c_str(), O_WRONLY | O_CLOEXEC);
  SMOE_CHECK(fd >= 0, "cannot open {} to write: {}", path, std::strerror(errno));
  try {
    write_at(fd, path, offsets.at("prediction") + r.first * 8, r.prediction.data(), static_cast<size_t>(n) * 8);
    write_at(fd, path, offsets.at("expert") + r.first * 8, r.expert.data(), static_cast<size_t>(n) * 8);
    write_at(fd, path, offsets.at("early_exit") + r.first, r.early_exit.data(), static_cast<size_t>(n));
    if (l.labels) {
      SMOE_ASSERT(static_cast<int64_t>(r.label.size()) == n, "labels of {} rows", n);
      write_at(fd, path, offsets.at("label") + r.first * 8, r.label.data(), static_cast<size_t>(n) * 8);
    }
    if (l.probs) {
      SMOE_ASSERT(static_cast<int64_t>(r.probs.size()) == n * l.classes, "probs of {} rows", n);
      write_at(fd, path, offsets.at("probs") + r.first * l.classes * 4, r.probs.data(),
               static_cast<size_t>(n * l.classes) * 4);
    }
    SMOE_CHECK(::fsync(fd) == 0, "cannot sync {}: {}", path, std::strerror(errno));
  } catch (...) {
    ::close(fd);
    throw;
  }
  ::close(fd);
}

void set_prediction_attributes(const std::string& path, const std::map<std::string, std::string>& text,
                               const std::map<std::string, double>& numbers) {
  H5Id file = open_file(path, H5F_ACC_RDWR);
  H5Id scalar(SMOE_H5_CHECK(H5Screate(H5S_SCALAR), path));
  // (Named, not structured bindings: SMOE_H5_CHECK's lambda cannot capture those in C++17.)
  for (const auto& kv : text) {
    const std::string &key = kv.first, &value = kv.second;
    H5Id type(SMOE_H5_CHECK(H5Tcopy(H5T_C_S1), path));
    SMOE_H5_CHECK(H5Tset_size(type.get(), std::max<size_t>(value.size(), 1)), path);
    H5Id a(
        SMOE_H5_CHECK(H5Acreate2(file.get(), key.c_str(), type.get(), scalar.get(), H5P_DEFAULT, H5P_DEFAULT), path));
    SMOE_H5_CHECK(H5Awrite(a.get(), type.get(), value.c_str()), path);
  }
  for (const auto& kv : numbers) {
    const std::string& key = kv.first;
    const double value = kv.second;
    H5Id a(SMOE_H5_CHECK(H5Acreate2(file.get(), key.c_str(), H5T_IEEE_F64LE, scalar.get(), H5P_DEFAULT, H5P_DEFAULT),
                         path));
    SMOE_H5_CHECK(H5Awrite(a.get(), H5T_NATIVE_DOUBLE, &value), path);
  }
  SMOE_H5_CHECK(H5Fflush(file.get(), H5F_SCOPE_GLOBAL), path);
}

std::string offsets_text(const DatasetOffsets& offsets) {
  std::ostringstream s;
  for (const auto& [name, at] : offsets) s << name << ' ' << at << '\n';
  return s.str();
}

DatasetOffsets offsets_from_text(const std::string& text) {
  DatasetOffsets o;
  std::istringstream s(text);
  std::string name;
  int64_t at = 0;
  while (s >> name >> at) o[name] = at;
  return o;
}

}  // namespace smoe::data
