# Compiler launcher, linker and warnings shared by every target.

find_program(SMOE_CCACHE ccache)
if(SMOE_CCACHE AND NOT CMAKE_CXX_COMPILER_LAUNCHER)
  set(CMAKE_C_COMPILER_LAUNCHER ${SMOE_CCACHE})
  set(CMAKE_CXX_COMPILER_LAUNCHER ${SMOE_CCACHE})
endif()

# lld links libtorch programs in a fraction of the default linker's time.
include(CheckCXXSourceCompiles)
find_program(SMOE_LLD ld.lld)
if(SMOE_LLD)
  add_link_options(-fuse-ld=lld)
endif()

add_library(smoe_warnings INTERFACE)
target_compile_options(smoe_warnings INTERFACE -Wall -Wextra -Wno-unused-parameter)

# Sanitized builds (launch/test-sanitizers.sh, launch/fuzz.sh): every target,
# stopping at the first report.
if(SMOE_FUZZ)
  set(SMOE_SANITIZE "fuzzer-no-link,address,undefined")
endif()
if(SMOE_SANITIZE)
  add_compile_options(-fsanitize=${SMOE_SANITIZE} -fno-omit-frame-pointer -fno-sanitize-recover=all)
  add_link_options(-fsanitize=${SMOE_SANITIZE})
endif()
