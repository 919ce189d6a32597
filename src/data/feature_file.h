// Per-sample features made elsewhere (cluster.features): an HDF5 file whose
// dataset /features is a float matrix [N, D], row i the features of training
// sample i (the training split's id order, shards concatenated as the
// manifest lists them). Read by rows, one hyperslab per run of consecutive
// ids, so that a rank reads only its own rows and nothing grows with N but
// what it asked for. Every HDF5 failure names the file.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace smoe::data {

class FeatureFile {
 public:
  static constexpr const char* kDataset = "features";
  // Opens and checks the file: an HDF5 file with a 2-d floating-point /features.
  explicit FeatureFile(const std::string& path);
  ~FeatureFile();
  FeatureFile(const FeatureFile&) = delete;
  FeatureFile& operator=(const FeatureFile&) = delete;

  int64_t rows() const { return rows_; }
  int64_t dim() const { return dim_; }
  const std::string& path() const { return path_; }
  // Rows `ids` (any order) as float32, row-major [ids.size(), dim()].
  std::vector<float> read_rows(const std::vector<int64_t>& ids) const;

 private:
  std::string path_;
  int64_t rows_ = 0, dim_ = 0;
  int64_t file_ = -1, dataset_ = -1;
};

}  // namespace smoe::data
