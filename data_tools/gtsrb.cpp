// The German Traffic Sign Recognition Benchmark as distributed (DFCP-MoE's
// dataset): PPM images of varying size, one CSV per class folder.
//
//   ROOT/Final_Training/Images/<class, 5 digits>/GT-<class>.csv + *.ppm
//   ROOT/Final_Test/Images/*.ppm with GT-final_test.csv (the separately
//   distributed ground truth) in Final_Test/Images, Final_Test or ROOT
//
// (ROOT may also be the folder that holds GTSRB/.) Each CSV is
// ';'-separated with a header: Filename;Width;Height;Roi.X1;Roi.Y1;Roi.X2;
// Roi.Y2;ClassId. Decisions: every image is cropped to its sign's region of
// interest, columns [X1, X2) and rows [Y1, Y2) (the common reading; --no-roi
// keeps the whole frame), then resized to --size x --size pixels (32 by
// default) with stb's default filter; samples are in CSV order within sorted
// class folders; without GT-final_test.csv (the test set's own CSV has no
// labels) there is no test split and the manifest says so.
#include <stb/stb_image.h>
#include <stb/stb_image_resize.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>

#include "core/atomic_file.h"
#include "core/error.h"
#include "data_tools/converters.h"

namespace fs = std::filesystem;

namespace smoe::data_tools {
namespace {

struct Record {
  std::string path;
  int64_t x1, y1, x2, y2, label;
};

std::vector<std::string> split_line(const std::string& line, char sep) {
  std::vector<std::string> out;
  std::stringstream ss(line);
  std::string cell;
  while (std::getline(ss, cell, sep)) {
    while (!cell.empty() && (cell.back() == '\r' || cell.back() == ' ')) cell.pop_back();
    out.push_back(cell);
  }
  return out;
}

int64_t parse_int(const std::string& text, const std::string& csv, int64_t line, const std::string& column) {
  size_t used = 0;
  int64_t v = 0;
  try {
    v = std::stoll(text, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  SMOE_CHECK(used == text.size() && !text.empty(), "{}:{}: column {} is '{}', expected an integer", csv, line, column,
             text);
  return v;
}

// The records of one CSV; image paths are relative to the CSV's folder.
std::vector<Record> read_csv(const fs::path& csv, int64_t classes) {
  std::ifstream in(csv);
  SMOE_CHECK(in, "cannot open {}", csv.string());
  std::string line;
  SMOE_CHECK(static_cast<bool>(std::getline(in, line)), "{}: empty file, expected a header line", csv.string());
  const std::vector<std::string> header = split_line(line, ';');
  std::map<std::string, size_t> col;
  for (size_t i = 0; i < header.size(); ++i) col[header[i]] = i;
  for (const char* need : {"Filename", "Roi.X1", "Roi.Y1", "Roi.X2", "Roi.Y2", "ClassId"})
    SMOE_CHECK(col.count(need),
               "{}: no column '{}' in the header (a GTSRB CSV has Filename;Width;Height;Roi.X1;"
               "Roi.Y1;Roi.X2;Roi.Y2;ClassId)",
               csv.string(), need);
  std::vector<Record> out;
  for (int64_t n = 2; std::getline(in, line); ++n) {
    if (line.empty() || line == "\r") continue;
    const std::vector<std::string> cells = split_line(line, ';');
    SMOE_CHECK(cells.size() >= header.size(), "{}:{}: {} columns, the header has {}", csv.string(), n, cells.size(),
               header.size());
    auto num = [&](const char* c) { return parse_int(cells[col[c]], csv.string(), n, c); };
    Record r{(csv.parent_path() / cells[col["Filename"]]).string(),
             num("Roi.X1"),
             num("Roi.Y1"),
             num("Roi.X2"),
             num("Roi.Y2"),
             num("ClassId")};
    SMOE_CHECK(r.label >= 0 && r.label < classes, "{}:{}: ClassId {} out of range [0, {})", csv.string(), n, r.label,
               classes);
    out.push_back(std::move(r));
  }
  SMOE_CHECK(!out.empty(), "{}: no images listed", csv.string());
  return out;
}

// One image: decoded, cropped to its region of interest, resized, as [C, S, S].
std::vector<uint8_t> load(const Record& r, int size, bool roi) {
  SMOE_CHECK(fs::is_regular_file(r.path), "{}: listed in its CSV but missing", r.path);
  const std::string bytes = read_file(r.path);
  int w = 0, h = 0, c = 0;
  std::unique_ptr<stbi_uc, void (*)(void*)> pixels(stbi_load_from_memory(reinterpret_cast<const stbi_uc*>(bytes.data()),
                                                                         static_cast<int>(bytes.size()), &w, &h, &c, 3),
                                                   stbi_image_free);
  SMOE_CHECK(pixels, "{}: cannot decode image: {}", r.path, stbi_failure_reason());
  int64_t x1 = 0, y1 = 0, x2 = w, y2 = h;
  if (roi) {
    SMOE_CHECK(0 <= r.x1 && r.x1 < r.x2 && r.x2 <= w && 0 <= r.y1 && r.y1 < r.y2 && r.y2 <= h,
               "{}: region of interest ({}, {})-({}, {}) is not inside the {}x{} image", r.path, r.x1, r.y1, r.x2, r.y2,
               w, h);
    x1 = r.x1, y1 = r.y1, x2 = r.x2, y2 = r.y2;
  }
  std::vector<uint8_t> hwc(static_cast<size_t>(size * size * 3));
  const stbi_uc* crop = pixels.get() + (y1 * w + x1) * 3;
  SMOE_CHECK(stbir_resize_uint8(crop, static_cast<int>(x2 - x1), static_cast<int>(y2 - y1), w * 3, hwc.data(), size,
                                size, size * 3, 3) == 1,
             "{}: cannot resize the image", r.path);
  std::vector<uint8_t> chw(hwc.size());
  for (int ch = 0; ch < 3; ++ch)
    for (int p = 0; p < size * size; ++p)
      chw[static_cast<size_t>(ch * size * size + p)] = hwc[static_cast<size_t>(p * 3 + ch)];
  return chw;
}

}  // namespace

data::Manifest convert_gtsrb(const std::string& src, const std::string& out, const ConvertOptions& options) {
  fs::path root(src);
  if (!fs::is_directory(root / "Final_Training") && fs::is_directory(root / "GTSRB")) root /= "GTSRB";
  const fs::path train_dir = root / "Final_Training" / "Images";
  SMOE_CHECK(fs::is_directory(train_dir), "{}: no Final_Training/Images folder (the GTSRB layout)", src);
  SMOE_CHECK(options.image_size >= 4 && options.image_size <= 1024, "--size must be 4..1024 pixels, got {}",
             options.image_size);
  std::vector<std::string> classes;
  for (const auto& e : fs::directory_iterator(train_dir))
    if (e.is_directory()) classes.push_back(e.path().filename().string());
  std::sort(classes.begin(), classes.end());
  SMOE_CHECK(!classes.empty(), "{}: no class folders", train_dir.string());
  const auto n_classes = static_cast<int64_t>(classes.size());

  // Every CSV is read and checked before anything is written.
  std::vector<Record> train;
  for (const auto& cls : classes) {
    const fs::path csv = train_dir / cls / ("GT-" + cls + ".csv");
    SMOE_CHECK(fs::is_regular_file(csv), "{}: missing (every GTSRB class folder has one)", csv.string());
    for (auto& r : read_csv(csv, n_classes)) train.push_back(std::move(r));
  }
  std::vector<Record> test;
  std::string test_note = "absent: no GT-final_test.csv (the test ground truth) found";
  for (const fs::path& dir : {root / "Final_Test" / "Images", root / "Final_Test", root, fs::path(src)}) {
    const fs::path csv = dir / "GT-final_test.csv";
    if (!fs::is_regular_file(csv)) continue;
    test = read_csv(csv, n_classes);
    // The ground truth may lie beside the images or above them.
    for (auto& r : test)
      if (!fs::exists(r.path)) r.path = (root / "Final_Test" / "Images" / fs::path(r.path).filename()).string();
    test_note = csv.string();
    break;
  }

  const int S = static_cast<int>(options.image_size);
  DatasetWriter w(out, options.name.empty() ? "gtsrb" : options.name, {3, S, S}, classes, options.writer);
  for (const auto& [name, records] : {std::pair{"train", &train}, std::pair{"test", &test}}) {
    if (records->empty()) continue;
    w.begin_split(name);
    for (const Record& r : *records) {
      const std::vector<uint8_t> img = load(r, S, options.gtsrb_roi);
      w.add(img.data(), &r.label, 1, r.path);
    }
    w.end_split();
  }
  w.set_source({{"format", "gtsrb"}, {"size", S}, {"roi_crop", options.gtsrb_roi}, {"test", test_note}});
  return w.finish();
}

}  // namespace smoe::data_tools
