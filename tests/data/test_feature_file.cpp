#include <gtest/gtest.h>
#include <hdf5.h>

#include <vector>

#include "common/expect_error.h"
#include "common/temp_dir.h"
#include "core/atomic_file.h"
#include "data/feature_file.h"

namespace smoe::data {
namespace {

// Writes /features (or `name`) with the given HDF5 type and dims.
template <typename T>
void write_h5(const std::string& path, const std::vector<hsize_t>& dims, hid_t type, const std::vector<T>& values,
              const char* name = "features") {
  hid_t file = H5Fcreate(path.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
  hid_t space = H5Screate_simple(static_cast<int>(dims.size()), dims.data(), nullptr);
  hid_t dset = H5Dcreate2(file, name, type, space, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
  H5Dwrite(dset, type, H5S_ALL, H5S_ALL, H5P_DEFAULT, values.data());
  H5Dclose(dset);
  H5Sclose(space);
  H5Fclose(file);
}

TEST(FeatureFile, ReadsAnyRowsInTheirOrderAsFloat) {
  testing::TempDir tmp;
  std::vector<double> v(7 * 3);
  for (size_t i = 0; i < v.size(); ++i) v[i] = static_cast<double>(i) / 4;  // row r = [3r, 3r+1, 3r+2] / 4
  write_h5(tmp / "f.h5", {7, 3}, H5T_NATIVE_DOUBLE, v);
  FeatureFile f(tmp / "f.h5");
  EXPECT_EQ(f.rows(), 7);
  EXPECT_EQ(f.dim(), 3);
  // Runs of consecutive ids and single ones, out of order.
  const std::vector<int64_t> ids{5, 6, 0, 1, 2, 4};
  const std::vector<float> got = f.read_rows(ids);
  ASSERT_EQ(got.size(), ids.size() * 3);
  for (size_t i = 0; i < ids.size(); ++i)
    for (int d = 0; d < 3; ++d) EXPECT_EQ(got[i * 3 + d], static_cast<float>(ids[i] * 3 + d) / 4) << i << " " << d;
  EXPECT_TRUE(f.read_rows({}).empty());
  EXPECT_ERROR(f.read_rows({6, 7}), "f.h5: row 7 out of range [0, 7)");
}

TEST(FeatureFile, RefusesWhatIsNotAFeatureMatrix) {
  testing::TempDir tmp;
  EXPECT_ERROR(FeatureFile(tmp / "none.h5"), "features file " + (tmp / "none.h5") + " does not exist");
  write_file_atomic(tmp / "text.h5", "not hdf5");
  EXPECT_ERROR(FeatureFile(tmp / "text.h5"), "text.h5: not an HDF5 file");
  write_h5(tmp / "name.h5", {2, 2}, H5T_NATIVE_FLOAT, std::vector<float>(4), "embeddings");
  EXPECT_ERROR(FeatureFile(tmp / "name.h5"), "name.h5: no dataset /features");
  write_h5(tmp / "int.h5", {2, 2}, H5T_NATIVE_INT, std::vector<int>(4));
  EXPECT_ERROR(FeatureFile(tmp / "int.h5"), "int.h5: /features is not floating-point");
  write_h5(tmp / "flat.h5", {4}, H5T_NATIVE_FLOAT, std::vector<float>(4));
  EXPECT_ERROR(FeatureFile(tmp / "flat.h5"), "flat.h5: /features has 1 dimensions, expected 2 [N, D]");
}

}  // namespace
}  // namespace smoe::data
