#include <gtest/gtest.h>
#include <stb/stb_image_write.h>

#include <array>
#include <filesystem>

#include "common/expect_error.h"
#include "common/source_files.h"
#include "common/temp_dir.h"
#include "common/xtensor_io.h"
#include "data/dataset.h"
#include "data_tools/converters.h"
#include "data_tools/dataset_writer.h"
#include "data_tools/inspect.h"

namespace fs = std::filesystem;

namespace smoe::data_tools {
namespace {

using testing::TempDir;

ConvertOptions small_shards() {
  ConvertOptions o;
  o.writer.shard_size = 7;
  o.writer.shard.chunk_images = 4;
  return o;
}

std::vector<uint8_t> image_of(const std::string& dir, const std::string& split, int64_t id) {
  auto ds = data::Dataset::open(dir, split);
  std::vector<uint8_t> out(static_cast<size_t>(ds->image_bytes()));
  ds->read(&id, 1, out.data());
  return out;
}

// --chunk 0 (the default) chunks about 256 KiB of pixels, at most 256
// images: what a streamed split reads back one chunk per random image.
TEST(DatasetWriter, DefaultChunksHoldAbout256KiB) {
  TempDir tmp;
  for (const auto& [shape, expected] : std::vector<std::pair<std::vector<int64_t>, int64_t>>{
           {{3, 64, 64}, 21}, {{1, 28, 28}, 256}, {{3, 32, 32}, 85}, {{3, 300, 300}, 1}}) {
    const std::string out = tmp / fmt::format("c{}", shape[1]);
    WriterOptions o;
    o.shard.chunk_images = 0;  // what smoe-data's --chunk gives by default
    DatasetWriter w(out, "t", shape, {"a"}, o);
    const int64_t img = shape[0] * shape[1] * shape[2];
    std::vector<uint8_t> images(static_cast<size_t>(2 * img), 1);
    std::vector<int64_t> labels = {0, 0};
    w.begin_split("train");
    w.add(images.data(), labels.data(), 2, "test");
    w.end_split();
    EXPECT_EQ(w.finish().chunk_images, expected) << shape[1];
    EXPECT_EQ(data::Manifest::load(out).chunk_images, expected);
  }
}

TEST(Idx, ConvertsPixelsAndLabelsExactly) {
  TempDir tmp;
  fs::create_directory(tmp / "src");
  testing::write_mnist_like(tmp / "src", 20, 9);
  auto m = convert("mnist", tmp / "src", tmp / "out", small_shards());
  EXPECT_EQ(m.split("train").count, 20);
  EXPECT_EQ(m.split("train").shards.size(), 3u);
  EXPECT_EQ(m.split("test").count, 9);
  EXPECT_EQ(m.shape, (std::vector<int64_t>{1, 28, 28}));
  auto img = image_of(tmp / "out", "train", 13);
  for (int p = 0; p < 784; ++p) ASSERT_EQ(img[p], (13 + p) % 251);
  auto ds = data::Dataset::open(tmp / "out", "test");
  EXPECT_EQ(ds->labels()[8], 8);
  EXPECT_EQ(verify(tmp / "out").samples, 29);
}

TEST(Idx, OutputIsByteForByteDeterministic) {
  TempDir tmp;
  fs::create_directory(tmp / "src");
  testing::write_mnist_like(tmp / "src", 30, 10);
  convert("fashion-mnist", tmp / "src", tmp / "a", small_shards());
  convert("fashion-mnist", tmp / "src", tmp / "b", small_shards());
  for (const auto& e : fs::directory_iterator(tmp / "a"))
    EXPECT_EQ(testing::read_raw(e.path()), testing::read_raw(tmp / "b/" + e.path().filename().string()))
        << e.path().filename();
}

class IdxDamage : public ::testing::Test {
 protected:
  void SetUp() override {
    fs::create_directory(tmp / "src");
    testing::write_mnist_like(tmp / "src", 50, 10);
  }
  void expect_failure(const std::string& substring) {
    EXPECT_ERROR(convert("mnist", tmp / "src", tmp / "out", small_shards()), substring);
    EXPECT_FALSE(fs::exists(tmp / "out"));
    for (const auto& e : fs::directory_iterator(tmp.path()))  // no temporary folder left behind
      EXPECT_EQ(e.path().filename().string().find("out.tmp"), std::string::npos) << e.path();
  }
  TempDir tmp;
};

TEST_F(IdxDamage, TruncatedGzip) {
  std::string gz = testing::read_raw(tmp / "src/train-images-idx3-ubyte.gz");
  testing::write_raw(tmp / "src/train-images-idx3-ubyte.gz", gz.substr(0, gz.size() / 2));
  expect_failure("train-images-idx3-ubyte.gz: truncated");
}

TEST_F(IdxDamage, CorruptedGzip) {
  std::string gz = testing::read_raw(tmp / "src/train-images-idx3-ubyte.gz");
  gz[gz.size() / 2] ^= 0x5a;
  testing::write_raw(tmp / "src/train-images-idx3-ubyte.gz", gz);
  expect_failure("train-images-idx3-ubyte.gz: corrupted");
}

TEST_F(IdxDamage, WrongMagic) {
  testing::write_gz(tmp / "src/train-labels-idx1-ubyte.gz", testing::idx_bytes({50, 2}, std::vector<uint8_t>(100)));
  expect_failure(
      "train-labels-idx1-ubyte.gz: wrong idx magic 0x00000802, expected 0x00000801 (unsigned bytes, 1 dimension)");
}

TEST_F(IdxDamage, CountMismatch) {
  testing::write_gz(tmp / "src/train-labels-idx1-ubyte.gz", testing::idx_bytes({49}, std::vector<uint8_t>(49)));
  expect_failure("train-images-idx3-ubyte.gz holds 50 images but " + (tmp / "src/train-labels-idx1-ubyte.gz") +
                 " holds 49 labels");
}

TEST_F(IdxDamage, LabelOutOfRange) {
  std::vector<uint8_t> labels(50, 1);
  labels[17] = 12;
  testing::write_gz(tmp / "src/train-labels-idx1-ubyte.gz", testing::idx_bytes({50}, labels));
  expect_failure("train-labels-idx1-ubyte.gz: label 12 of sample 17 is outside [0, 10)");
}

TEST_F(IdxDamage, MissingFile) {
  fs::remove(tmp / "src/t10k-labels-idx1-ubyte.gz");
  expect_failure("missing t10k-labels-idx1-ubyte (or t10k-labels-idx1-ubyte.gz)");
}

TEST(Output, ExistingFolderIsRefusedUnlessForced) {
  TempDir tmp;
  fs::create_directory(tmp / "src");
  testing::write_mnist_like(tmp / "src", 10, 5);
  fs::create_directory(tmp / "out");
  testing::write_raw(tmp / "out/precious.txt", "keep me");
  EXPECT_ERROR(convert("mnist", tmp / "src", tmp / "out", small_shards()),
               "output folder " + (tmp / "out") + " already exists (use --force to replace it)");
  EXPECT_EQ(testing::read_raw(tmp / "out/precious.txt"), "keep me");
  auto forced = small_shards();
  forced.writer.force = true;
  convert("mnist", tmp / "src", tmp / "out", forced);
  EXPECT_FALSE(fs::exists(tmp / "out/precious.txt"));
  EXPECT_EQ(verify(tmp / "out").samples, 15);
}

TEST(Verify, CatchesAFlippedByteAndAMissingShard) {
  TempDir tmp;
  fs::create_directory(tmp / "src");
  testing::write_mnist_like(tmp / "src", 20, 5);
  convert("mnist", tmp / "src", tmp / "out", small_shards());
  std::string shard = testing::read_raw(tmp / "out/train-00001.h5");
  shard[shard.size() - 100] ^= 0x01;
  testing::write_raw(tmp / "out/train-00001.h5", shard);
  EXPECT_ERROR(verify(tmp / "out"), (tmp / "out/train-00001.h5") + ": checksum mismatch");
  fs::remove(tmp / "out/train-00001.h5");
  EXPECT_ERROR(verify(tmp / "out"), (tmp / "out/train-00001.h5") + ": shard named in the manifest is missing");
}

TEST(Cifar, Cifar10AndCifar100Records) {
  TempDir tmp;
  fs::create_directories(tmp / "c10");
  auto records = [](int n, int label_bytes, int salt) {
    std::string s;
    for (int i = 0; i < n; ++i) {
      for (int b = 0; b < label_bytes; ++b) s.push_back(static_cast<char>((i + b * 3 + salt) % 10));
      for (int p = 0; p < 3072; ++p) s.push_back(static_cast<char>((i * 5 + p + salt) % 256));
    }
    return s;
  };
  for (int b = 1; b <= 5; ++b)
    testing::write_raw(tmp / ("c10/data_batch_" + std::to_string(b) + ".bin"), records(3, 1, b));
  testing::write_raw(tmp / "c10/test_batch.bin", records(4, 1, 0));
  auto m = convert("cifar10", tmp / "c10", tmp / "o10", small_shards());
  EXPECT_EQ(m.split("train").count, 15);
  EXPECT_EQ(m.shape, (std::vector<int64_t>{3, 32, 32}));
  // train sample 4 = second record of data_batch_2 (salt 2); channel 1 pixel 0 is byte 1024.
  auto img = image_of(tmp / "o10", "train", 4);
  EXPECT_EQ(img[1024], static_cast<uint8_t>((1 * 5 + 1024 + 2) % 256));
  EXPECT_EQ(data::Dataset::open(tmp / "o10", "train")->labels()[4], (1 + 2) % 10);

  fs::create_directories(tmp / "c100");
  testing::write_raw(tmp / "c100/train.bin", records(6, 2, 1));
  testing::write_raw(tmp / "c100/test.bin", records(2, 2, 0));
  auto m100 = convert("cifar100", tmp / "c100", tmp / "o100", small_shards());
  EXPECT_EQ(m100.num_classes, 100);
  EXPECT_EQ(data::Dataset::open(tmp / "o100", "train")->labels()[2], (2 + 3 + 1) % 10);  // fine label byte
  std::string t = records(2, 2, 0);
  testing::write_raw(tmp / "c100/test.bin", t.substr(0, t.size() - 10));
  EXPECT_ERROR(convert("cifar100", tmp / "c100", tmp / "o100b", small_shards()),
               "test.bin: truncated: 6138 bytes is not a whole number of 3074-byte records");
}

TEST(Npy, ChannelsLastImagesAndInt32Labels) {
  TempDir tmp;
  fs::create_directories(tmp / "np");
  xt::xarray<uint8_t> images = xt::zeros<uint8_t>({5, 6, 4, 3});
  for (size_t i = 0; i < 5; ++i)
    for (size_t y = 0; y < 6; ++y)
      for (size_t x = 0; x < 4; ++x)
        for (size_t c = 0; c < 3; ++c) images(i, y, x, c) = static_cast<uint8_t>(i * 50 + y * 7 + x * 3 + c);
  xt::xarray<int32_t> labels = {0, 2, 1, 2, 0};
  xt::dump_npy(tmp / "np/train_images.npy", images);
  xt::dump_npy(tmp / "np/train_labels.npy", labels);
  auto m = convert("npy", tmp / "np", tmp / "out", small_shards());
  EXPECT_EQ(m.shape, (std::vector<int64_t>{3, 6, 4}));
  EXPECT_EQ(m.num_classes, 3);
  auto img = image_of(tmp / "out", "train", 3);
  // [C, H, W] index of (c=2, y=5, x=1)
  EXPECT_EQ(img[(2 * 6 + 5) * 4 + 1], 3 * 50 + 5 * 7 + 1 * 3 + 2);
  xt::xarray<float> floats = xt::zeros<float>({5, 6, 4});
  xt::dump_npy(tmp / "np/train_images.npy", floats);
  EXPECT_ERROR(convert("npy", tmp / "np", tmp / "out2", small_shards()),
               "train_images.npy: images must be uint8, got dtype '<f4'");
}

// Found by fuzz_npy: xtensor's reader trusts the header (an empty one reads
// out of bounds, a huge shape allocates what it claims); such files are
// refused with one line before xtensor sees them.
TEST(Npy, HostileHeadersAreRefusedBeforeTheyAreParsed) {
  TempDir tmp;
  fs::create_directories(tmp / "np");
  auto npy = [](const std::string& dict, size_t data_bytes) {
    std::string header = dict;
    while ((10 + header.size() + 1) % 64 != 0) header += ' ';
    header += '\n';
    std::string s("\x93NUMPY\x01\x00", 8);
    s += static_cast<char>(header.size() & 0xff);
    s += static_cast<char>(header.size() >> 8);
    return s + header + std::string(data_bytes, '\0');
  };
  xt::xarray<int32_t> labels = {0, 1};
  xt::dump_npy(tmp / "np/train_labels.npy", labels);
  const std::string images = tmp / "np/train_images.npy";
  testing::write_raw(images, std::string("\x93NUMPY\x01\x00\x00\x00", 10));
  EXPECT_ERROR(convert("npy", tmp / "np", tmp / "out", small_shards()), "train_images.npy: truncated .npy header");
  testing::write_raw(images, npy("{'descr': '|u1', 'fortran_order': False, 'shape': (35184372088832, 4), }", 16));
  EXPECT_ERROR(convert("npy", tmp / "np", tmp / "out", small_shards()),
               "train_images.npy: a dimension of the .npy shape exceeds 2^40");
  testing::write_raw(images, npy("{'descr': '|u1', 'fortran_order': False, 'shape': (2, 8, 8), }", 16));
  EXPECT_ERROR(convert("npy", tmp / "np", tmp / "out", small_shards()),
               "train_images.npy: truncated: the data is shorter than its header says");
  testing::write_raw(images, std::string("PK\x03\x04 a zip file"));
  EXPECT_ERROR(convert("npy", tmp / "np", tmp / "out", small_shards()), "train_images.npy: not a .npy file");
  EXPECT_FALSE(fs::exists(tmp / "out"));
}

TEST(ImageFolder, PngTreeWithSplitsAndSortedClasses) {
  TempDir tmp;
  for (std::string split : {"train", "test"})
    for (std::string cls : {"cat", "dog"}) {
      fs::create_directories(tmp / ("imgs/" + split + "/" + cls));
      for (int i = 0; i < 3; ++i) {
        std::vector<uint8_t> rgb(5 * 4 * 3);
        for (size_t p = 0; p < rgb.size(); ++p) rgb[p] = static_cast<uint8_t>(p * 2 + i + (cls == "dog" ? 100 : 0));
        std::string path = tmp / ("imgs/" + split + "/" + cls + "/" + std::to_string(i) + ".png");
        ASSERT_TRUE(stbi_write_png(path.c_str(), 5, 4, 3, rgb.data(), 5 * 3));
      }
    }
  auto m = convert("image-folder", tmp / "imgs", tmp / "out", small_shards());
  EXPECT_EQ(m.class_names, (std::vector<std::string>{"cat", "dog"}));
  EXPECT_EQ(m.shape, (std::vector<int64_t>{3, 4, 5}));
  EXPECT_EQ(m.split("train").count, 6);
  auto ds = data::Dataset::open(tmp / "out", "train");
  EXPECT_EQ(ds->labels()[4], 1);  // dog/1.png
  auto img = image_of(tmp / "out", "train", 4);
  // pixel (y=2, x=3), channel 1 in the HWC source is byte (2*5+3)*3+1
  EXPECT_EQ(img[(1 * 4 + 2) * 5 + 3], static_cast<uint8_t>(((2 * 5 + 3) * 3 + 1) * 2 + 1 + 100));

  std::vector<uint8_t> small(3 * 3 * 3, 9);
  std::string odd = tmp / "imgs/train/dog/9.png";
  ASSERT_TRUE(stbi_write_png(odd.c_str(), 3, 3, 3, small.data(), 9));
  EXPECT_ERROR(convert("image-folder", tmp / "imgs", tmp / "out2", small_shards()),
               odd + ": image is 3x3 pixels, expected 5x4");
  testing::write_raw(odd, "not a png");
  EXPECT_ERROR(convert("image-folder", tmp / "imgs", tmp / "out3", small_shards()), odd + ": cannot decode image");
  EXPECT_FALSE(fs::exists(tmp / "out2"));
}

// A GTSRB tree: PPM frames of varying size whose sign region (the ROI) is
// one colour per class and whose border is another.
void write_ppm(const fs::path& path, int w, int h, const std::array<uint8_t, 3>& inside,
               const std::array<uint8_t, 3>& border, int x1, int y1, int x2, int y2) {
  std::string bytes = "P6\n" + std::to_string(w) + " " + std::to_string(h) + "\n255\n";
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x)
      for (int c = 0; c < 3; ++c)
        bytes.push_back(static_cast<char>(x >= x1 && x < x2 && y >= y1 && y < y2 ? inside[c] : border[c]));
  testing::write_raw(path, bytes);
}

const std::array<std::array<uint8_t, 3>, 2> kSignColour{{{200, 10, 10}, {10, 10, 200}}};
const std::array<uint8_t, 3> kBorder{0, 250, 0};

void write_gtsrb(const fs::path& root) {
  const std::string header = "Filename;Width;Height;Roi.X1;Roi.Y1;Roi.X2;Roi.Y2;ClassId\n";
  for (int cls = 0; cls < 2; ++cls) {
    const std::string name = cls == 0 ? "00000" : "00001";
    const fs::path dir = root / "GTSRB/Final_Training/Images" / name;
    fs::create_directories(dir);
    std::string csv = header;
    for (int i = 0; i < 3; ++i) {
      const int w = 10 + 2 * i, h = 8 + i;  // sizes vary, as in GTSRB
      const std::string file = "0000" + std::to_string(i) + "_00000.ppm";
      write_ppm(dir / file, w, h, kSignColour[cls], kBorder, 2, 2, w - 2, h - 2);
      csv += fmt::format("{};{};{};2;2;{};{};{}\n", file, w, h, w - 2, h - 2, cls);
    }
    testing::write_raw(dir / ("GT-" + name + ".csv"), csv);
  }
  const fs::path test = root / "GTSRB/Final_Test/Images";
  fs::create_directories(test);
  std::string gt = header;
  for (int i = 0; i < 2; ++i) {
    const std::string file = "0000" + std::to_string(i) + ".ppm";
    write_ppm(test / file, 9, 9, kSignColour[1 - i], kBorder, 1, 1, 8, 8);
    gt += fmt::format("{};9;9;1;1;8;8;{}\n", file, 1 - i);
  }
  testing::write_raw(root / "GT-final_test.csv", gt);  // the ground truth, downloaded apart
}

TEST(Gtsrb, PpmAndCsvCroppedToTheSignAndResized) {
  TempDir tmp;
  write_gtsrb(tmp / "src");
  ConvertOptions o = small_shards();
  o.image_size = 6;
  auto m = convert("gtsrb", tmp / "src", tmp / "out", o);
  EXPECT_EQ(m.class_names, (std::vector<std::string>{"00000", "00001"}));
  EXPECT_EQ(m.shape, (std::vector<int64_t>{3, 6, 6}));
  EXPECT_EQ(m.split("train").count, 6);
  EXPECT_EQ(m.split("test").count, 2);
  auto train = data::Dataset::open(tmp / "out", "train");
  EXPECT_EQ(train->labels(), (std::vector<int64_t>{0, 0, 0, 1, 1, 1}));
  EXPECT_EQ(data::Dataset::open(tmp / "out", "test")->labels(), (std::vector<int64_t>{1, 0}));
  // Cropped to the sign: every pixel is the class's colour, none the border's.
  for (int64_t id : {0, 4}) {
    auto img = image_of(tmp / "out", "train", id);
    for (int c = 0; c < 3; ++c)
      for (int p = 0; p < 36; ++p)
        ASSERT_NEAR(img[static_cast<size_t>(c * 36 + p)], kSignColour[id < 3 ? 0 : 1][c], 1)
            << id << " " << c << " " << p;
  }
  // --no-roi keeps the frame: the corner is the border's colour.
  o.gtsrb_roi = false;
  convert("gtsrb", tmp / "src", tmp / "whole", o);
  auto whole = image_of(tmp / "whole", "train", 0);
  EXPECT_EQ(whole[36], kBorder[1]);  // channel 1, pixel (0, 0)
}

TEST(Gtsrb, BadSourcesFailNamingTheFileAndWriteNothing) {
  TempDir tmp;
  write_gtsrb(tmp / "src");
  const fs::path csv = tmp / "src/GTSRB/Final_Training/Images/00001/GT-00001.csv";
  const std::string good = testing::read_raw(csv);
  const std::string header = "Filename;Width;Height;Roi.X1;Roi.Y1;Roi.X2;Roi.Y2;ClassId\n";
  testing::write_raw(csv, header + "00000_00000.ppm;10;8;2;2;30;6;1\n");
  EXPECT_ERROR(convert("gtsrb", tmp / "src", tmp / "out", small_shards()),
               "00000_00000.ppm: region of interest (2, 2)-(30, 6) is not inside the 10x8 image");
  testing::write_raw(csv, header + "00000_00000.ppm;10;8;2;2;8;6;7\n");
  EXPECT_ERROR(convert("gtsrb", tmp / "src", tmp / "out", small_shards()),
               "GT-00001.csv:2: ClassId 7 out of range [0, 2)");
  testing::write_raw(csv, header + "gone.ppm;10;8;2;2;8;6;1\n");
  EXPECT_ERROR(convert("gtsrb", tmp / "src", tmp / "out", small_shards()), "gone.ppm: listed in its CSV but missing");
  testing::write_raw(csv, "Filename;Width;Height;ClassId\n00000_00000.ppm;10;8;1\n");
  EXPECT_ERROR(convert("gtsrb", tmp / "src", tmp / "out", small_shards()), "GT-00001.csv: no column 'Roi.X1'");
  testing::write_raw(csv, header + "00000_00000.ppm;10;8;two;2;8;6;1\n");
  EXPECT_ERROR(convert("gtsrb", tmp / "src", tmp / "out", small_shards()),
               "GT-00001.csv:2: column Roi.X1 is 'two', expected an integer");
  testing::write_raw(csv, good);
  fs::remove(tmp / "src/GT-final_test.csv");
  EXPECT_FALSE(fs::exists(tmp / "out"));
  auto m = convert("gtsrb", tmp / "src", tmp / "out", small_shards());  // no ground truth: no test split
  EXPECT_EQ(m.splits.size(), 1u);
  EXPECT_ERROR(convert("gtsrb", tmp / "nowhere", tmp / "out2", small_shards()), "no Final_Training/Images folder");
}

TEST(Convert, UnknownFormatAndCompression) {
  EXPECT_ERROR(convert("jpeg2000", "/tmp", "/tmp/never", {}), "unknown format 'jpeg2000'");
  EXPECT_ERROR(parse_compression("zstd"), "--compression 'zstd': expected none, gzip or gzip-1 .. gzip-9");
  EXPECT_EQ(parse_compression("gzip-6"), 6);
  EXPECT_EQ(parse_compression("none"), 0);
}

}  // namespace
}  // namespace smoe::data_tools
