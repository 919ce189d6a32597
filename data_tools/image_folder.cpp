// An ImageFolder tree of PNG/JPEG files: ROOT/<split>/<class>/<image> when
// ROOT holds a 'train' folder, else ROOT/<class>/<image> as a single 'train'
// split. Classes are the sorted class-folder names; files are taken in sorted
// order, so the output does not depend on the file system's listing order.
// Images are decoded by stb_image (Debian's libstb).
#include <stb/stb_image.h>

#include <algorithm>
#include <filesystem>

#include "core/atomic_file.h"
#include "core/error.h"
#include "data_tools/converters.h"

namespace fs = std::filesystem;

namespace smoe::data_tools {
namespace {

bool is_image(const fs::path& p) {
  std::string ext = p.extension().string();
  std::transform(ext.begin(), ext.end(), ext.begin(), [](unsigned char c) { return std::tolower(c); });
  return ext == ".png" || ext == ".jpg" || ext == ".jpeg";
}

std::vector<std::string> sorted_dirs(const fs::path& root) {
  std::vector<std::string> out;
  for (const auto& e : fs::directory_iterator(root))
    if (e.is_directory()) out.push_back(e.path().filename().string());
  std::sort(out.begin(), out.end());
  return out;
}

struct Item {
  std::string path;
  int64_t label;
};

}  // namespace

data::Manifest convert_image_folder(const std::string& src, const std::string& out, const ConvertOptions& options) {
  SMOE_CHECK(fs::is_directory(src), "source folder {} does not exist", src);
  SMOE_CHECK(options.image_channels == 0 || options.image_channels == 1 || options.image_channels == 3,
             "--channels must be 1 or 3, got {}", options.image_channels);
  std::vector<std::pair<std::string, fs::path>> splits;  // name, folder of class folders
  if (fs::is_directory(fs::path(src) / "train")) {
    for (const auto& s : sorted_dirs(src)) splits.push_back({s, fs::path(src) / s});
    std::stable_sort(splits.begin(), splits.end(), [](const auto& a, const auto& b) {
      auto rank = [](const std::string& n) { return n == "train" ? 0 : n == "test" ? 1 : 2; };
      return rank(a.first) < rank(b.first);
    });
  } else {
    splits.push_back({"train", fs::path(src)});
  }
  std::vector<std::string> classes = sorted_dirs(splits[0].second);
  SMOE_CHECK(!classes.empty(), "{}: no class folders", splits[0].second.string());

  std::vector<std::vector<Item>> items(splits.size());
  for (size_t s = 0; s < splits.size(); ++s) {
    for (const auto& cls : sorted_dirs(splits[s].second)) {
      auto it = std::find(classes.begin(), classes.end(), cls);
      SMOE_CHECK(it != classes.end(), "{}: class '{}' does not exist in the {} split",
                 (splits[s].second / cls).string(), cls, splits[0].first);
      std::vector<std::string> files;
      for (const auto& e : fs::directory_iterator(splits[s].second / cls))
        if (e.is_regular_file() && is_image(e.path())) files.push_back(e.path().string());
      std::sort(files.begin(), files.end());
      for (auto& f : files) items[s].push_back({f, it - classes.begin()});
    }
    SMOE_CHECK(!items[s].empty(), "{}: no PNG or JPEG images", splits[s].second.string());
  }

  // The first image fixes the shape; every other must match it.
  int W = 0, H = 0, C = static_cast<int>(options.image_channels);
  std::string first;
  std::unique_ptr<DatasetWriter> w;
  for (size_t s = 0; s < splits.size(); ++s) {
    for (size_t i = 0; i < items[s].size(); ++i) {
      const std::string& path = items[s][i].path;
      std::string bytes = read_file(path);
      int w_ = 0, h_ = 0, c_ = 0;
      if (!stbi_info_from_memory(reinterpret_cast<const stbi_uc*>(bytes.data()), static_cast<int>(bytes.size()), &w_,
                                 &h_, &c_))
        fail("{}: cannot decode image: {}", path, stbi_failure_reason());
      if (!w) {
        W = w_;
        H = h_;
        if (C == 0) C = (c_ == 1 || c_ == 2) ? 1 : 3;
        first = path;
        w = std::make_unique<DatasetWriter>(out,
                                            options.name.empty() ? fs::path(src).filename().string() : options.name,
                                            std::vector<int64_t>{C, H, W}, classes, options.writer);
      }
      SMOE_CHECK(w_ == W && h_ == H, "{}: image is {}x{} pixels, expected {}x{} like {}", path, w_, h_, W, H, first);
      if (i == 0) w->begin_split(splits[s].first);
      std::unique_ptr<stbi_uc, void (*)(void*)> pixels(
          stbi_load_from_memory(reinterpret_cast<const stbi_uc*>(bytes.data()), static_cast<int>(bytes.size()), &w_,
                                &h_, &c_, C),
          stbi_image_free);
      SMOE_CHECK(pixels, "{}: cannot decode image: {}", path, stbi_failure_reason());
      // stb gives [H, W, C]; the dataset stores [C, H, W].
      std::vector<uint8_t> chw(static_cast<size_t>(C * H * W));
      for (int c = 0; c < C; ++c)
        for (int y = 0; y < H; ++y)
          for (int x = 0; x < W; ++x) chw[static_cast<size_t>((c * H + y) * W + x)] = pixels.get()[(y * W + x) * C + c];
      w->add(chw.data(), &items[s][i].label, 1, path);
    }
    w->end_split();
  }
  w->set_source({{"format", "image-folder"}});
  return w->finish();
}

}  // namespace smoe::data_tools
