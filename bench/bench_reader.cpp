// Reader throughput: random mini-batches of 128 from a dataset folder's train
// split, turned into normalised float tensors, for each storage mode, with
// and without augmentation. Prints images/s per configuration.
//
//   bench_reader DATASET_DIR [batches]
#include <chrono>
#include <cstdio>
#include <string>

#include "data/batch.h"
#include "data/sampler.h"

using namespace smoe::data;

namespace {

double run(const std::shared_ptr<const Dataset>& ds, const std::vector<int64_t>& order, bool augment, int64_t prefetch,
           size_t batches) {
  auto all = make_batches(order, 128, true);
  all.resize(std::min(all.size(), batches));
  Transform t;
  t.augment = augment;
  t.crop_padding = 2;
  t.hflip = true;
  t.seed = 1;
  auto start = std::chrono::steady_clock::now();
  BatchLoader loader(ds, all, t, prefetch);
  int64_t images = 0;
  while (auto b = loader.next()) images += b->images.size(0);
  double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return images / s;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: bench_reader DATASET_DIR [batches]\n");
    return 2;
  }
  const std::string dir = argv[1];
  const size_t batches = argc > 2 ? std::stoul(argv[2]) : 400;
  struct Mode {
    const char* name;
    StorageMode storage;
    int64_t cache_mb;
    bool chunk_aware;
  };
  const Mode modes[] = {{"memory (split read whole)", StorageMode::memory, 0, false},
                        {"stream, chunk cache sized to shard", StorageMode::stream, 256, false},
                        {"stream, chunk-aware order, 8 MiB cache", StorageMode::stream, 8, true},
                        {"stream, HDF5 default 1 MiB cache", StorageMode::stream, 1, false}};
  std::printf("%-42s %-8s %14s %14s\n", "storage", "augment", "images/s", "prefetch=2");
  uint64_t seed = 1;
  for (const auto& m : modes) {
    // The slow mode reads fewer batches.
    const size_t n = m.cache_mb == 1 ? std::min<size_t>(batches, 20) : batches;
    for (bool augment : {false, true}) {
      double rate[2] = {0, 0};
      for (int64_t prefetch : {0, 2}) {
        // A fresh open (cold chunk cache) and a fresh order for every run.
        DatasetOptions o;
        o.storage = m.storage;
        o.cache_mb = m.cache_mb;
        auto t0 = std::chrono::steady_clock::now();
        std::shared_ptr<const Dataset> ds = Dataset::open(dir, "train", o);
        double open_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        ++seed;
        auto order = m.chunk_aware ? chunk_aware_permutation(ds->size(), ds->manifest().chunk_images, 32, seed)
                                   : permutation(ds->size(), seed);
        double r = run(ds, order, augment, prefetch, n);
        // Memory mode pays its load once per process: report it separately, not per batch.
        rate[prefetch ? 1 : 0] = r;
        if (!augment && prefetch == 0 && m.storage == StorageMode::memory)
          std::printf("  (memory mode loads the split in %.2f s)\n", open_s);
      }
      std::printf("%-42s %-8s %14.0f %14.0f\n", m.name, augment ? "yes" : "no", rate[0], rate[1]);
    }
  }
  return 0;
}
