# Every third-party dependency, found once, exposed as targets.

find_package(Threads REQUIRED)
find_package(Torch REQUIRED)
find_package(MPI REQUIRED COMPONENTS C)
find_package(HDF5 REQUIRED COMPONENTS C)
find_package(Boost REQUIRED COMPONENTS program_options)
find_package(yaml-cpp REQUIRED)
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
target_compile_definitions(smoe_hdf5 INTERFACE ${HDF5_C_DEFINITIONS})

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
