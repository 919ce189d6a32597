#include "data/feature_file.h"

#include <filesystem>

#include "core/error.h"
#include "data/hdf5_check.h"

namespace smoe::data {

FeatureFile::FeatureFile(const std::string& path) : path_(path) {
  hdf5_quiet();
  SMOE_CHECK(std::filesystem::is_regular_file(path), "features file {} does not exist", path);
  SMOE_CHECK(H5Fis_hdf5(path.c_str()) > 0, "features file {}: not an HDF5 file", path);
  H5Id fapl(SMOE_H5_CHECK(H5Pcreate(H5P_FILE_ACCESS), path));
  SMOE_H5_CHECK(H5Pset_file_locking(fapl.get(), 0, 1), path);  // read-only: no locks (Lustre)
  H5Id file(SMOE_H5_CHECK(H5Fopen(path.c_str(), H5F_ACC_RDONLY, fapl.get()), path));
  SMOE_CHECK(H5Lexists(file.get(), kDataset, H5P_DEFAULT) > 0,
             "features file {}: no dataset /{} (expected float [N, D], one row per training sample)", path, kDataset);
  H5Id dset(SMOE_H5_CHECK(H5Dopen2(file.get(), kDataset, H5P_DEFAULT), path));
  H5Id type(SMOE_H5_CHECK(H5Dget_type(dset.get()), path));
  SMOE_CHECK(H5Tget_class(type.get()) == H5T_FLOAT, "features file {}: /{} is not floating-point", path, kDataset);
  H5Id space(SMOE_H5_CHECK(H5Dget_space(dset.get()), path));
  const int rank = SMOE_H5_CHECK(H5Sget_simple_extent_ndims(space.get()), path);
  SMOE_CHECK(rank == 2, "features file {}: /{} has {} dimensions, expected 2 [N, D]", path, kDataset, rank);
  hsize_t dims[2];
  SMOE_H5_CHECK(H5Sget_simple_extent_dims(space.get(), dims, nullptr), path);
  rows_ = static_cast<int64_t>(dims[0]);
  dim_ = static_cast<int64_t>(dims[1]);
  SMOE_CHECK(dim_ >= 1, "features file {}: /{} has 0 columns", path, kDataset);
  file_ = file.release();
  dataset_ = dset.release();
}

FeatureFile::~FeatureFile() {
  H5Id(static_cast<hid_t>(dataset_));
  H5Id(static_cast<hid_t>(file_));
}

std::vector<float> FeatureFile::read_rows(const std::vector<int64_t>& ids) const {
  std::vector<float> out(ids.size() * static_cast<size_t>(dim_));
  H5Id fspace(SMOE_H5_CHECK(H5Dget_space(dataset_), path_));
  size_t i = 0;
  while (i < ids.size()) {
    // One read per run of consecutive ids (a rank's rows come in batches).
    size_t j = i + 1;
    while (j < ids.size() && ids[j] == ids[j - 1] + 1) ++j;
    SMOE_CHECK(ids[i] >= 0 && ids[j - 1] < rows_, "features file {}: row {} out of range [0, {})", path_,
               ids[i] < 0 ? ids[i] : ids[j - 1], rows_);
    const hsize_t start[2] = {static_cast<hsize_t>(ids[i]), 0};
    const hsize_t count[2] = {static_cast<hsize_t>(j - i), static_cast<hsize_t>(dim_)};
    SMOE_H5_CHECK(H5Sselect_hyperslab(fspace.get(), H5S_SELECT_SET, start, nullptr, count, nullptr), path_);
    H5Id mspace(SMOE_H5_CHECK(H5Screate_simple(2, count, nullptr), path_));
    SMOE_H5_CHECK(H5Dread(dataset_, H5T_NATIVE_FLOAT, mspace.get(), fspace.get(), H5P_DEFAULT,
                          out.data() + i * static_cast<size_t>(dim_)),
                  path_);
    i = j;
  }
  return out;
}

}  // namespace smoe::data
