// smoe-data: build, inspect and verify dataset folders.
//
//   smoe-data convert FORMAT SRC OUT [options]
//   smoe-data inspect DIR
//   smoe-data verify DIR
#include <boost/program_options.hpp>
#include <chrono>
#include <filesystem>
#include <iostream>

#include "apps/cli.h"
#include "core/error.h"
#include "data_tools/converters.h"
#include "data_tools/inspect.h"

namespace po = boost::program_options;
namespace fs = std::filesystem;
using namespace smoe;

namespace {

const char* kUsage =
    "usage:\n"
    "  smoe-data convert FORMAT SRC OUT [options]   FORMAT: fashion-mnist, mnist, cifar10, cifar100, npy, "
    "image-folder, gtsrb\n"
    "  smoe-data inspect DIR                        what a dataset folder holds\n"
    "  smoe-data verify DIR                         re-read every shard and check it against the manifest\n";

po::variables_map parse(const std::vector<std::string>& args, const po::options_description& opts,
                        const po::positional_options_description& pos) {
  po::variables_map vm;
  po::store(po::command_line_parser(args).options(opts).positional(pos).run(), vm);
  po::notify(vm);
  return vm;
}

int cmd_convert(const std::vector<std::string>& args) {
  data_tools::ConvertOptions o;
  std::string format, src, out, compression;
  po::options_description opts("smoe-data convert FORMAT SRC OUT");
  opts.add_options()("help,h", "this help")                                                      //
      ("format", po::value(&format)->required(), "source format")                                //
      ("src", po::value(&src)->required(), "source file or folder")                              //
      ("out", po::value(&out)->required(), "output dataset folder")                              //
      ("shard-size", po::value(&o.writer.shard_size)->default_value(10000), "images per shard")  //
      ("chunk", po::value(&o.writer.shard.chunk_images)->default_value(0),
       "images per HDF5 chunk (0: about 256 KiB of pixels, at most 256 images)")                         //
      ("compression", po::value(&compression)->default_value("gzip-1"), "none, gzip or gzip-1..gzip-9")  //
      ("name", po::value(&o.name), "dataset name (default from the format)")                             //
      ("force", po::bool_switch(&o.writer.force), "replace OUT if it exists")                            //
      ("cifar100-labels", po::value(&o.cifar100_labels)->default_value("fine"), "fine or coarse")        //
      ("layout", po::value(&o.npy_layout)->default_value("auto"), "npy images: auto, nchw or nhwc")      //
      ("channels", po::value(&o.image_channels)->default_value(0),
       "image-folder: 1 or 3 (0 = from the first image)")                                                   //
      ("size", po::value(&o.image_size)->default_value(32), "gtsrb: images resized to SIZE x SIZE pixels")  //
      ("no-roi", po::bool_switch(), "gtsrb: keep the whole frame instead of cropping to the sign's region");
  po::positional_options_description pos;
  pos.add("format", 1).add("src", 1).add("out", 1);
  for (const auto& a : args)
    if (a == "--help" || a == "-h") {
      std::cout << opts;
      return 0;
    }
  const po::variables_map vm = parse(args, opts, pos);
  o.writer.shard.gzip_level = data_tools::parse_compression(compression);
  o.gtsrb_roi = !vm["no-roi"].as<bool>();

  auto t0 = std::chrono::steady_clock::now();
  auto m = data_tools::convert(format, src, out, o);
  double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  int64_t samples = 0, shards = 0;
  for (const auto& s : m.splits) {
    samples += s.count;
    shards += static_cast<int64_t>(s.shards.size());
  }
  double raw_mb = static_cast<double>(samples * m.image_bytes()) / 1e6;
  uint64_t bytes = 0;
  for (const auto& e : fs::directory_iterator(out)) bytes += e.file_size();
  std::cout << fmt::format(
      "converted {} images ({:.1f} MB of pixels) into {} shards, {:.1f} MB on disk, in {:.2f} s "
      "({:.1f} MB/s, {:.0f} images/s): {}\n",
      samples, raw_mb, shards, bytes / 1e6, seconds, raw_mb / seconds, samples / seconds, out);
  return 0;
}

int cmd_dir(const std::string& name, const std::vector<std::string>& args) {
  std::string dir;
  po::options_description opts("smoe-data " + name + " DIR");
  opts.add_options()("help,h", "this help")("dir", po::value(&dir)->required(), "dataset folder");
  po::positional_options_description pos;
  pos.add("dir", 1);
  for (const auto& a : args)
    if (a == "--help" || a == "-h") {
      std::cout << opts;
      return 0;
    }
  parse(args, opts, pos);
  if (name == "inspect") {
    std::cout << data_tools::inspect(dir);
  } else {
    auto r = data_tools::verify(dir);
    std::cout << fmt::format("ok: {} shards, {} samples, {:.1f} MB verified in {}\n", r.shards, r.samples,
                             r.bytes / 1e6, dir);
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  return apps::run_cli("smoe-data", [&]() -> int {
    std::vector<std::string> args(argv + 1, argv + argc);
    if (args.empty() || args[0] == "--help" || args[0] == "-h" || args[0] == "help") {
      std::cout << kUsage;
      return args.empty() ? 2 : 0;
    }
    std::string cmd = args[0];
    args.erase(args.begin());
    if (cmd == "convert") return cmd_convert(args);
    if (cmd == "inspect" || cmd == "verify") return cmd_dir(cmd, args);
    fail("unknown command '{}' (expected convert, inspect or verify)", cmd);
  });
}
