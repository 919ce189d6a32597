#include "data/shard.h"

#include <algorithm>
#include <filesystem>

#include "core/error.h"
#include "data/hdf5_check.h"

namespace smoe::data {

std::string hdf5_version() {
  unsigned major = 0, minor = 0, release = 0;
  if (H5get_libversion(&major, &minor, &release) < 0) return "unknown";
  return std::to_string(major) + "." + std::to_string(minor) + "." + std::to_string(release);
}
namespace {

constexpr const char* kImages = "images";
constexpr const char* kLabels = "labels";

size_t next_prime(size_t n) {
  auto prime = [](size_t m) {
    for (size_t d = 2; d * d <= m; ++d)
      if (m % d == 0) return false;
    return m >= 2;
  };
  while (!prime(n)) ++n;
  return n;
}

// Bytes of one chunk of /images (uint8), or 0 when it is not chunked.
size_t chunk_bytes_of(hid_t file, const std::string& path) {
  H5Id images(SMOE_H5_CHECK(H5Dopen2(file, kImages, H5P_DEFAULT), path));
  H5Id dcpl(SMOE_H5_CHECK(H5Dget_create_plist(images.get()), path));
  if (H5Pget_layout(dcpl.get()) != H5D_CHUNKED) return 0;
  hsize_t dims[4] = {0, 0, 0, 0};
  const int rank = H5Pget_chunk(dcpl.get(), 4, dims);
  size_t bytes = 1;
  for (int d = 0; d < rank; ++d) bytes *= static_cast<size_t>(dims[d]);
  return rank > 0 ? bytes : 0;
}

// Dataset creation properties: chunking, optional deflate, and no object
// timestamps (they would make identical inputs give different bytes).
H5Id dataset_props(const std::string& path, int rank, const hsize_t* chunk, int gzip_level) {
  H5Id dcpl(SMOE_H5_CHECK(H5Pcreate(H5P_DATASET_CREATE), path));
  SMOE_H5_CHECK(H5Pset_obj_track_times(dcpl.get(), 0), path);
  if (chunk) {
    SMOE_H5_CHECK(H5Pset_chunk(dcpl.get(), rank, chunk), path);
    if (gzip_level > 0) SMOE_H5_CHECK(H5Pset_deflate(dcpl.get(), static_cast<unsigned>(gzip_level)), path);
  }
  return dcpl;
}

void check_integer_type(hid_t dset, size_t bytes, H5T_sign_t sign, const std::string& path, const char* name,
                        const char* expected) {
  H5Id type(SMOE_H5_CHECK(H5Dget_type(dset), path));
  bool ok =
      H5Tget_class(type.get()) == H5T_INTEGER && H5Tget_size(type.get()) == bytes && H5Tget_sign(type.get()) == sign;
  SMOE_CHECK(ok, "{}: /{} must be {}", path, name, expected);
}

std::vector<hsize_t> dims_of(hid_t dset, const std::string& path) {
  H5Id space(SMOE_H5_CHECK(H5Dget_space(dset), path));
  int rank = SMOE_H5_CHECK(H5Sget_simple_extent_ndims(space.get()), path);
  std::vector<hsize_t> dims(static_cast<size_t>(rank));
  SMOE_H5_CHECK(H5Sget_simple_extent_dims(space.get(), dims.data(), nullptr), path);
  return dims;
}

}  // namespace

void write_shard(const std::string& path, const uint8_t* images, const int64_t* labels, int64_t count,
                 const std::vector<int64_t>& shape, const ShardWriteOptions& options) {
  hdf5_quiet();
  SMOE_ASSERT(shape.size() == 3 && count > 0, "write_shard: bad shape or empty shard");
  SMOE_CHECK(options.chunk_images >= 1, "chunk size must be at least 1 image, got {}", options.chunk_images);
  SMOE_CHECK(options.gzip_level >= 0 && options.gzip_level <= 9, "gzip level must be 0..9, got {}", options.gzip_level);
  // No file locks: a shard is written once, into a temporary folder, by one
  // process, and Lustre mounted without flock refuses them.
  H5Id fapl(SMOE_H5_CHECK(H5Pcreate(H5P_FILE_ACCESS), path));
  SMOE_H5_CHECK(H5Pset_file_locking(fapl.get(), 0, 1), path);
  // Nor timestamps on the root group: HDF5 2.x writes its object header in a
  // format that records them, so two identical conversions differed in 8 bytes.
  H5Id fcpl(SMOE_H5_CHECK(H5Pcreate(H5P_FILE_CREATE), path));
  SMOE_H5_CHECK(H5Pset_obj_track_times(fcpl.get(), 0), path);
  H5Id file(SMOE_H5_CHECK(H5Fcreate(path.c_str(), H5F_ACC_TRUNC, fcpl.get(), fapl.get()), path));

  const hsize_t n = static_cast<hsize_t>(count);
  hsize_t img_dims[4] = {n, static_cast<hsize_t>(shape[0]), static_cast<hsize_t>(shape[1]),
                         static_cast<hsize_t>(shape[2])};
  hsize_t chunk[4] = {std::min<hsize_t>(n, static_cast<hsize_t>(options.chunk_images)), img_dims[1], img_dims[2],
                      img_dims[3]};
  {
    H5Id space(SMOE_H5_CHECK(H5Screate_simple(4, img_dims, nullptr), path));
    H5Id dcpl = dataset_props(path, 4, chunk, options.gzip_level);
    H5Id dset(SMOE_H5_CHECK(
        H5Dcreate2(file.get(), kImages, H5T_STD_U8LE, space.get(), H5P_DEFAULT, dcpl.get(), H5P_DEFAULT), path));
    SMOE_H5_CHECK(H5Dwrite(dset.get(), H5T_NATIVE_UINT8, H5S_ALL, H5S_ALL, H5P_DEFAULT, images), path);
  }
  {
    H5Id space(SMOE_H5_CHECK(H5Screate_simple(1, &n, nullptr), path));
    H5Id dcpl = dataset_props(path, 1, nullptr, 0);
    H5Id dset(SMOE_H5_CHECK(
        H5Dcreate2(file.get(), kLabels, H5T_STD_I64LE, space.get(), H5P_DEFAULT, dcpl.get(), H5P_DEFAULT), path));
    SMOE_H5_CHECK(H5Dwrite(dset.get(), H5T_NATIVE_INT64, H5S_ALL, H5S_ALL, H5P_DEFAULT, labels), path);
  }
  SMOE_H5_CHECK(H5Fflush(file.get(), H5F_SCOPE_GLOBAL), path);
}

ShardReader::ShardReader(const std::string& path, const std::vector<int64_t>& shape, size_t cache_bytes)
    : path_(path), shape_(shape) {
  hdf5_quiet();
  SMOE_CHECK(std::filesystem::exists(path), "shard {} is missing", path);
  SMOE_CHECK(H5Fis_hdf5(path.c_str()) > 0, "{}: not an HDF5 file", path);
  // Shards are read-only: no file locks, which fail on many cluster file
  // systems (what HDF5_USE_FILE_LOCKING=FALSE does, per file).
  H5Id fapl(SMOE_H5_CHECK(H5Pcreate(H5P_FILE_ACCESS), path));
  SMOE_H5_CHECK(H5Pset_file_locking(fapl.get(), 0, 1), path);
  H5Id file(SMOE_H5_CHECK(H5Fopen(path.c_str(), H5F_ACC_RDONLY, fapl.get()), path));
  SMOE_CHECK(H5Lexists(file.get(), kImages, H5P_DEFAULT) > 0, "{}: dataset /{} is missing", path, kImages);
  SMOE_CHECK(H5Lexists(file.get(), kLabels, H5P_DEFAULT) > 0, "{}: dataset /{} is missing", path, kLabels);

  H5Id dapl(SMOE_H5_CHECK(H5Pcreate(H5P_DATASET_ACCESS), path));
  if (cache_bytes > 0) {
    // HDF5's advice: about 100 hash slots per chunk the cache can hold, a
    // prime. Preemption weight 0.75 (HDF5's default): with 1.0, HDF5 1.10
    // kept every chunk ever read in memory whatever the cache's size (186
    // MiB for a 4 MiB cache after random reads over a 94 MiB shard, measured),
    // so a streamed split grew with its size.
    const size_t chunk = std::max<size_t>(chunk_bytes_of(file.get(), path), 1);
    const size_t slots = next_prime(std::max<size_t>(101, 100 * (cache_bytes / chunk + 1)));
    SMOE_H5_CHECK(H5Pset_chunk_cache(dapl.get(), slots, cache_bytes, 0.75), path);
  }
  H5Id images(SMOE_H5_CHECK(H5Dopen2(file.get(), kImages, dapl.get()), path));
  H5Id labels(SMOE_H5_CHECK(H5Dopen2(file.get(), kLabels, H5P_DEFAULT), path));
  check_integer_type(images.get(), 1, H5T_SGN_NONE, path, kImages, "uint8");
  check_integer_type(labels.get(), 8, H5T_SGN_2, path, kLabels, "int64");

  auto idims = dims_of(images.get(), path);
  auto ldims = dims_of(labels.get(), path);
  SMOE_CHECK(idims.size() == 4, "{}: /images has {} dimensions, expected 4 [n, C, H, W]", path, idims.size());
  SMOE_CHECK(ldims.size() == 1, "{}: /labels has {} dimensions, expected 1", path, ldims.size());
  for (size_t d = 0; d < 3; ++d)
    SMOE_CHECK(static_cast<int64_t>(idims[d + 1]) == shape[d],
               "{}: /images has shape [{}, {}, {}, {}], expected [n, {}, {}, {}]", path, idims[0], idims[1], idims[2],
               idims[3], shape[0], shape[1], shape[2]);
  SMOE_CHECK(idims[0] == ldims[0], "{}: {} images but {} labels", path, idims[0], ldims[0]);
  count_ = static_cast<int64_t>(idims[0]);
  file_ = file.release();
  images_ = images.release();
  labels_ = labels.release();
}

ShardReader::~ShardReader() {
  H5Id(static_cast<hid_t>(images_));
  H5Id(static_cast<hid_t>(labels_));
  H5Id(static_cast<hid_t>(file_));
}

void ShardReader::read_images(uint8_t* out) const {
  SMOE_H5_CHECK(H5Dread(images_, H5T_NATIVE_UINT8, H5S_ALL, H5S_ALL, H5P_DEFAULT, out), path_);
}

void ShardReader::read_labels(int64_t* out) const {
  SMOE_H5_CHECK(H5Dread(labels_, H5T_NATIVE_INT64, H5S_ALL, H5S_ALL, H5P_DEFAULT, out), path_);
}

void ShardReader::read_rows(const int64_t* rows, size_t n, uint8_t* out) const {
  if (n == 0) return;
  const hsize_t img[4] = {1, static_cast<hsize_t>(shape_[0]), static_cast<hsize_t>(shape_[1]),
                          static_cast<hsize_t>(shape_[2])};
  const size_t img_bytes = static_cast<size_t>(shape_[0] * shape_[1] * shape_[2]);
  H5Id fspace(SMOE_H5_CHECK(H5Dget_space(images_), path_));
  H5Id mspace(SMOE_H5_CHECK(H5Screate_simple(4, img, nullptr), path_));
  for (size_t i = 0; i < n; ++i) {
    SMOE_CHECK(rows[i] >= 0 && rows[i] < count_, "{}: row {} out of range [0, {})", path_, rows[i], count_);
    hsize_t start[4] = {static_cast<hsize_t>(rows[i]), 0, 0, 0};
    SMOE_H5_CHECK(H5Sselect_hyperslab(fspace.get(), H5S_SELECT_SET, start, nullptr, img, nullptr), path_);
    SMOE_H5_CHECK(H5Dread(images_, H5T_NATIVE_UINT8, mspace.get(), fspace.get(), H5P_DEFAULT, out + i * img_bytes),
                  path_);
  }
}

}  // namespace smoe::data
