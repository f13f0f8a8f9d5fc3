# Run by CTest (see CMakeLists.txt here): install the build tree into PREFIX,
# build the consumer project against PREFIX alone, and run it.
foreach(var BUILD_TREE PREFIX CONSUMER_SOURCE CONSUMER_BUILD GENERATOR CXX_COMPILER)
  if(NOT DEFINED ${var})
    message(FATAL_ERROR "install_test.cmake: -D${var}=... is required")
  endif()
endforeach()

function(run)
  string(REPLACE ";" " " shown "${ARGN}")
  message(STATUS "install test: ${shown}")
  execute_process(COMMAND ${ARGN} RESULT_VARIABLE result)
  if(NOT result EQUAL 0)
    message(FATAL_ERROR "install test: '${shown}' failed: ${result}")
  endif()
endfunction()

# Start clean, so nothing from an earlier run (or the source tree) is found.
file(REMOVE_RECURSE "${PREFIX}" "${CONSUMER_BUILD}")

run("${CMAKE_COMMAND}" --install "${BUILD_TREE}" --prefix "${PREFIX}")

set(build_type "${BUILD_TYPE}")
if(build_type STREQUAL "")
  set(build_type Release)
endif()
run("${CMAKE_COMMAND}" -S "${CONSUMER_SOURCE}" -B "${CONSUMER_BUILD}" -G "${GENERATOR}"
    "-DCMAKE_CXX_COMPILER=${CXX_COMPILER}" "-DCMAKE_BUILD_TYPE=${build_type}"
    "-DCMAKE_PREFIX_PATH=${PREFIX}" -DCMAKE_FIND_USE_PACKAGE_REGISTRY=OFF
    "-DEXPECT_METRICS=${EXPECT_METRICS}")
run("${CMAKE_COMMAND}" --build "${CONSUMER_BUILD}")

# The package the consumer found must be the one just installed.
file(STRINGS "${CONSUMER_BUILD}/CMakeCache.txt" found REGEX "^tiercache_DIR:")
string(FIND "${found}" "${PREFIX}/" at)
if(NOT at GREATER -1)
  message(FATAL_ERROR "install test: the consumer found tiercache outside ${PREFIX}: ${found}")
endif()

run("${CONSUMER_BUILD}/tiercache_consumer")
