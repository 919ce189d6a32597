// Converters from the formats people have to a smoe dataset folder. Each reads
// and checks its source, then streams the samples into a DatasetWriter; a bad
// source fails with one line naming the file and what is wrong, before
// anything is written to the output.
#pragma once

#include <string>

#include "data/manifest.h"
#include "data_tools/dataset_writer.h"

namespace smoe::data_tools {

struct ConvertOptions {
  WriterOptions writer;
  std::string name;                      // dataset name; default from the format
  std::string cifar100_labels = "fine";  // fine | coarse
  std::string npy_layout = "auto";       // auto | nchw | nhwc
  int64_t image_channels = 0;            // image folder: 0 = from the first image, else 1 or 3
  int64_t image_size = 32;               // gtsrb: images resized to size x size
  bool gtsrb_roi = true;                 // gtsrb: crop each image to its sign's region of interest
};

// Formats: fashion-mnist, mnist (idx files, gzip'ed or not), cifar10,
// cifar100 (binary batches), npy (<split>_images.npy + <split>_labels.npy),
// image-folder (ROOT/<split>/<class>/* or ROOT/<class>/*, PNG or JPEG),
// gtsrb (GTSRB's Final_Training / Final_Test PPM + CSV layout, gtsrb.cpp).
data::Manifest convert(const std::string& format, const std::string& src, const std::string& out,
                       const ConvertOptions& options);

data::Manifest convert_idx(const std::string& src, const std::string& out, const ConvertOptions& options,
                           const std::string& default_name, const std::vector<std::string>& class_names);
data::Manifest convert_cifar(const std::string& src, const std::string& out, const ConvertOptions& options,
                             int classes);
data::Manifest convert_npy(const std::string& src, const std::string& out, const ConvertOptions& options);
data::Manifest convert_image_folder(const std::string& src, const std::string& out, const ConvertOptions& options);
data::Manifest convert_gtsrb(const std::string& src, const std::string& out, const ConvertOptions& options);

// Reads a whole idx file (optionally gzip-compressed): checks the magic
// (unsigned bytes, `dims` dimensions), the sizes and that the data is complete.
struct IdxArray {
  std::vector<int64_t> dims;
  std::vector<uint8_t> data;
};
IdxArray read_idx(const std::string& path, int dims);

}  // namespace smoe::data_tools
