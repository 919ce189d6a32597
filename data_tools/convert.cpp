#include <filesystem>

#include "core/error.h"
#include "data_tools/converters.h"

namespace smoe::data_tools {

data::Manifest convert(const std::string& format, const std::string& src, const std::string& out,
                       const ConvertOptions& options) {
  // Refuse an existing output before reading anything.
  SMOE_CHECK(options.writer.force || !std::filesystem::exists(out),
             "output folder {} already exists (use --force to replace it)", out);
  if (format == "fashion-mnist")
    return convert_idx(
        src, out, options, "fashion-mnist",
        {"T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"});
  if (format == "mnist")
    return convert_idx(src, out, options, "mnist", {"0", "1", "2", "3", "4", "5", "6", "7", "8", "9"});
  if (format == "cifar10") return convert_cifar(src, out, options, 10);
  if (format == "cifar100") return convert_cifar(src, out, options, 100);
  if (format == "npy") return convert_npy(src, out, options);
  if (format == "image-folder") return convert_image_folder(src, out, options);
  if (format == "gtsrb") return convert_gtsrb(src, out, options);
  fail("unknown format '{}' (expected fashion-mnist, mnist, cifar10, cifar100, npy, image-folder or gtsrb)", format);
}

}  // namespace smoe::data_tools
