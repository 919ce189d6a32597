# Every third-party dependency, found once, exposed as targets.

find_package(Threads REQUIRED)
find_package(Torch REQUIRED)

# Which libtorch, and whether smoe can use it: 1.13 or newer, and built with
# the C++11 ABI like every other library smoe links (Debian's Boost, yaml-cpp,
# spdlog, fmt, HDF5). The pre-cxx11-ABI builds (older pip wheels, the
# "libtorch-shared-with-deps" zips) would fail at link time with hundreds of
# undefined std::__cxx11 symbols; refuse them here in one line.
# The version is read from the headers smoe compiles against (TORCH_VERSION
# in the code), else from TorchConfigVersion.cmake.
set(SMOE_TORCH_VERSION "${Torch_VERSION}")
foreach(_dir IN LISTS TORCH_INCLUDE_DIRS)
  foreach(_h torch/headeronly/version.h torch/csrc/api/include/torch/version.h torch/version.h)
    if(EXISTS "${_dir}/${_h}")
      file(STRINGS "${_dir}/${_h}" _lines REGEX "#define TORCH_VERSION_(MAJOR|MINOR|PATCH) [0-9]+")
      if(_lines MATCHES "MAJOR ([0-9]+).*MINOR ([0-9]+).*PATCH ([0-9]+)")
        set(SMOE_TORCH_VERSION "${CMAKE_MATCH_1}.${CMAKE_MATCH_2}.${CMAKE_MATCH_3}")
        break()
      endif()
    endif()
  endforeach()
endforeach()
if(SMOE_TORCH_VERSION STREQUAL "")
  set(SMOE_TORCH_VERSION "unknown")
endif()
if(NOT SMOE_TORCH_VERSION STREQUAL "unknown" AND SMOE_TORCH_VERSION VERSION_LESS 1.13)
  message(FATAL_ERROR "smoe: libtorch ${SMOE_TORCH_VERSION} at ${Torch_DIR} is too old: smoe needs libtorch 1.13 or newer")
endif()
string(REGEX MATCH "_GLIBCXX_USE_CXX11_ABI=([01])" _abi "${TORCH_CXX_FLAGS}")
set(SMOE_TORCH_CXX11_ABI "${CMAKE_MATCH_1}")
if(SMOE_TORCH_CXX11_ABI STREQUAL "")
  set(SMOE_TORCH_CXX11_ABI "1")  # no flag: the compiler's default, the C++11 ABI
endif()
if(SMOE_TORCH_CXX11_ABI STREQUAL "0")
  message(FATAL_ERROR "smoe: libtorch ${SMOE_TORCH_VERSION} at ${Torch_DIR} is built with the pre-C++11 ABI "
                      "(_GLIBCXX_USE_CXX11_ABI=0) but smoe's other libraries use the C++11 ABI: use a cxx11-ABI "
                      "libtorch (PyTorch wheels from 2.7 on, the 'cxx11-abi' libtorch zips, or Debian's libtorch-dev)")
endif()
if(TARGET torch_cuda OR TORCH_CUDA_LIBRARIES)
  set(SMOE_TORCH_CUDA ON)
else()
  set(SMOE_TORCH_CUDA OFF)
endif()
# libtorch 2.10 and later need C++20 (their headers stop with an #error
# otherwise); their TorchConfig.cmake records it as the torch target's
# CXX_STANDARD, which consumers do not inherit: follow it here.
get_target_property(_torch_std torch CXX_STANDARD)
if(_torch_std AND _torch_std GREATER CMAKE_CXX_STANDARD)
  set(CMAKE_CXX_STANDARD ${_torch_std})
endif()
message(STATUS "smoe: libtorch ${SMOE_TORCH_VERSION} (${Torch_DIR}), CUDA ${SMOE_TORCH_CUDA}, "
               "C++11 ABI ${SMOE_TORCH_CXX11_ABI}, C++${CMAKE_CXX_STANDARD}")

find_package(MPI REQUIRED COMPONENTS C)
find_package(HDF5 REQUIRED COMPONENTS C)
if(POLICY CMP0167)
  cmake_policy(SET CMP0167 NEW)  # Boost's own BoostConfig.cmake (CMake 3.30 removed FindBoost)
endif()
find_package(Boost REQUIRED COMPONENTS program_options)
find_package(yaml-cpp REQUIRED)
# yaml-cpp 0.8 (Debian 13) names its target yaml-cpp::yaml-cpp and deprecates
# the plain name, the only one 0.7 (Debian 12) has.
add_library(smoe_yaml INTERFACE)
if(TARGET yaml-cpp::yaml-cpp)
  target_link_libraries(smoe_yaml INTERFACE yaml-cpp::yaml-cpp)
else()
  target_link_libraries(smoe_yaml INTERFACE yaml-cpp)
endif()
find_package(spdlog REQUIRED)
find_package(fmt REQUIRED)
find_package(nlohmann_json REQUIRED)
find_package(OpenSSL REQUIRED)
find_package(ZLIB REQUIRED)
find_package(GTest REQUIRED)
find_package(PkgConfig REQUIRED)
pkg_check_modules(PLPLOT REQUIRED IMPORTED_TARGET plplot)
find_package(xtensor REQUIRED)

# libtorch's exported flags carry -D_GLIBCXX_USE_CXX11_ABI=1; keep them on
# every target so that nothing is built with the other ABI.
add_library(smoe_torch_deps INTERFACE)
target_link_libraries(smoe_torch_deps INTERFACE ${TORCH_LIBRARIES})
target_compile_options(smoe_torch_deps INTERFACE ${TORCH_CXX_FLAGS})

# MPI through its C library only; OMPI_SKIP_MPICXX keeps OpenMPI's C++ bindings out.
add_library(smoe_mpi INTERFACE)
target_link_libraries(smoe_mpi INTERFACE MPI::MPI_C)
target_compile_definitions(smoe_mpi INTERFACE OMPI_SKIP_MPICXX MPICH_SKIP_MPICXX)

add_library(smoe_hdf5 INTERFACE)
target_include_directories(smoe_hdf5 SYSTEM INTERFACE ${HDF5_C_INCLUDE_DIRS})
target_link_libraries(smoe_hdf5 INTERFACE ${HDF5_C_LIBRARIES})
# HDF5's definitions (HDF5 2.x: _FILE_OFFSET_BITS=64) go on every target:
# on the HDF5 users alone they would differ from the precompiled header's,
# which GCC then refuses (-Winvalid-pch) and each file recompiles libtorch.
set(_hdf5_defs ${HDF5_C_DEFINITIONS})
foreach(_lib IN LISTS HDF5_C_LIBRARIES)
  if(TARGET ${_lib})
    get_target_property(_d ${_lib} INTERFACE_COMPILE_DEFINITIONS)
    if(_d)
      list(APPEND _hdf5_defs ${_d})
    endif()
  endif()
endforeach()
list(TRANSFORM _hdf5_defs REPLACE "^-D" "")
add_compile_definitions(${_hdf5_defs})

# NCCL: the communicator plugin is built whenever the toolkit is found. It is a
# separate shared object, opened at run time only when CUDA tensors are reduced,
# so the smoe binaries start on machines with neither CUDA nor NCCL.
set(SMOE_NCCL_FOUND OFF)
if(NOT SMOE_WITH_NCCL STREQUAL "OFF")
  find_path(NCCL_INCLUDE_DIR nccl.h HINTS ${SMOE_CUDA_ROOT}/include ENV NCCL_HOME PATH_SUFFIXES include)
  find_library(NCCL_LIBRARY nccl HINTS ${SMOE_CUDA_ROOT}/lib64 ENV NCCL_HOME PATH_SUFFIXES lib lib64)
  find_path(CUDART_INCLUDE_DIR cuda_runtime_api.h HINTS ${SMOE_CUDA_ROOT}/include)
  find_library(CUDART_LIBRARY cudart HINTS ${SMOE_CUDA_ROOT}/lib64)
  if(NCCL_INCLUDE_DIR AND NCCL_LIBRARY AND CUDART_INCLUDE_DIR AND CUDART_LIBRARY)
    set(SMOE_NCCL_FOUND ON)
    message(STATUS "smoe: NCCL plugin enabled (${NCCL_LIBRARY})")
  elseif(SMOE_WITH_NCCL STREQUAL "ON")
    message(FATAL_ERROR "SMOE_WITH_NCCL=ON but nccl.h/libnccl/cudart were not found under ${SMOE_CUDA_ROOT}")
  else()
    message(STATUS "smoe: NCCL not found; the NCCL plugin is not built")
  endif()
endif()

# One precompiled header for every target that uses libtorch (shared with REUSE_FROM).
function(smoe_use_torch_pch target)
  target_precompile_headers(${target} REUSE_FROM smoe_models)
endfunction()
