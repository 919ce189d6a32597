#include "data/hdf5_check.h"

#include <mutex>

#include "core/error.h"

namespace smoe::data {

void hdf5_quiet() {
  static std::once_flag once;
  std::call_once(once, [] {
    H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr);
    // HDF5 keeps freed blocks on its own free lists, unbounded by default:
    // a rank that streams many batches would grow with the steps it takes.
    // 1 MiB per kind of list in all, 256 KiB per list.
    H5set_free_list_limits(1 << 20, 1 << 18, 1 << 20, 1 << 18, 1 << 20, 1 << 18);
  });
}

std::string hdf5_error_message() {
  std::string msg;
  H5Ewalk2(
      H5E_DEFAULT, H5E_WALK_UPWARD,
      [](unsigned n, const H5E_error2_t* err, void* data) -> herr_t {
        auto* out = static_cast<std::string*>(data);
        if (n == 0 && err->desc) *out = err->desc;
        return 0;
      },
      &msg);
  return msg;
}

[[noreturn]] void hdf5_fail(const char* call, const std::string& file, const char* src, int line) {
  std::string detail = hdf5_error_message();
  H5Eclear2(H5E_DEFAULT);
  std::string op = call;
  op = op.substr(0, op.find('('));
  fail("{}: HDF5 {} failed{} ({}:{})", file, op, detail.empty() ? "" : ": " + detail, src, line);
}

void H5Id::reset() {
  if (id_ < 0) return;
  switch (H5Iget_type(id_)) {
    case H5I_FILE:
      H5Fclose(id_);
      break;
    case H5I_DATASET:
      H5Dclose(id_);
      break;
    case H5I_DATASPACE:
      H5Sclose(id_);
      break;
    case H5I_DATATYPE:
      H5Tclose(id_);
      break;
    case H5I_GROUP:
      H5Gclose(id_);
      break;
    case H5I_ATTR:
      H5Aclose(id_);
      break;
    case H5I_GENPROP_LST:
      H5Pclose(id_);
      break;
    default:
      break;
  }
  id_ = -1;
}

}  // namespace smoe::data
