// HDF5 error handling for src/data: automatic error printing is turned off
// and each failing call becomes an smoe::Error with the operation, the file,
// the source location and the innermost message of HDF5's error stack.
#pragma once

#include <hdf5.h>

#include <string>

namespace smoe::data {

// Silences HDF5's own stderr printing and bounds its internal free lists
// (once per process; smoe's readers call it before opening a file).
void hdf5_quiet();
// The innermost HDF5 error message of the current stack ("" if none).
std::string hdf5_error_message();
[[noreturn]] void hdf5_fail(const char* call, const std::string& file, const char* src, int line);

// Closes an HDF5 identifier with the matching H5?close when it goes out of scope.
class H5Id {
 public:
  H5Id() = default;
  explicit H5Id(hid_t id) : id_(id) {}
  ~H5Id() { reset(); }
  H5Id(H5Id&& o) noexcept : id_(o.id_) { o.id_ = -1; }
  H5Id& operator=(H5Id&& o) noexcept {
    if (this != &o) {
      reset();
      id_ = o.id_;
      o.id_ = -1;
    }
    return *this;
  }
  hid_t get() const { return id_; }
  hid_t release() {
    hid_t id = id_;
    id_ = -1;
    return id;
  }
  void reset();

 private:
  hid_t id_ = -1;
};

}  // namespace smoe::data

// Checks an HDF5 call returning herr_t or hid_t (negative = failure).
#define SMOE_H5_CHECK(call, file)                                                    \
  ([&]() {                                                                           \
    auto smoe_h5_rc_ = (call);                                                       \
    if (smoe_h5_rc_ < 0) ::smoe::data::hdf5_fail(#call, (file), __FILE__, __LINE__); \
    return smoe_h5_rc_;                                                              \
  }())
