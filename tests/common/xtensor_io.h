// xtensor's containers and .npy reader/writer, which the tests and
// bench_kmeans use as an independent implementation of NumPy's format.
// xtensor 0.26 (Debian 13 and later) moved its headers into folders
// (xtensor/containers/xarray.hpp); 0.24 (Debian 12) has them flat.
#pragma once

#if __has_include(<xtensor/containers/xarray.hpp>)
#include <xtensor/containers/xadapt.hpp>
#include <xtensor/containers/xarray.hpp>
#include <xtensor/io/xnpy.hpp>
#else
#include <xtensor/xadapt.hpp>
#include <xtensor/xarray.hpp>
#include <xtensor/xnpy.hpp>
#endif
