# shellcheck shell=bash
# The set-up shared by scripts/test, scripts/demo and .ci/run. Source it; do
# not run it. It defines functions and changes nothing until one is called.
#
# Environment knobs (all optional):
#   TIERCACHE_JOBS          parallel build jobs (default: nproc)
#   TIERCACHE_TEST_JOBS     parallel ctest jobs (default: 2)
#   TIERCACHE_TEST_TIMEOUT  seconds before ctest kills one test (default: 300)
#   TIERCACHE_BUILD_TYPE    CMake build type (default: RelWithDebInfo)

set -euo pipefail

TIERCACHE_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"

# Everything the build, the tests, the benchmarks and the examples need, from
# Debian 12. memcached, libmemcached-dev and python3-pymemcache serve the L2
# (mirror) tests; clang-format keeps the style.
TIERCACHE_PACKAGES=(
  cmake ninja-build g++ pkg-config
  libabsl-dev robin-map-dev
  libgtest-dev libgmock-dev libbenchmark-dev zlib1g-dev
  memcached libmemcached-dev python3-pymemcache libmd-dev
  libssl-dev openssl  # TLS to memcached; openssl makes the tests' certificates
  prometheus-cpp-dev python3-prometheus-client  # tiercache::metrics; its tests parse the scrape
  libsqlite3-dev  # the demo's database
  clang-format
  clang libclang-rt-14-dev  # libFuzzer: scripts/fuzz
)

tiercache_log() { printf '==> %s\n' "$*" >&2; }
tiercache_die() { printf 'error: %s\n' "$*" >&2; exit 1; }

# Prints the packages of TIERCACHE_PACKAGES that are not installed, one a line.
tiercache_missing_packages() {
  local package
  for package in "${TIERCACHE_PACKAGES[@]}"; do
    if [[ "$(dpkg-query -W -f='${db:Status-Abbrev}' "$package" 2>/dev/null)" != ii* ]]; then
      printf '%s\n' "$package"
    fi
  done
}

# Installs whatever is missing. Only touches apt when something is missing, so
# a re-run costs one dpkg-query per package.
tiercache_install_packages() {
  if ! command -v dpkg-query >/dev/null 2>&1; then
    tiercache_log "not a Debian system: make sure these (or their equivalents) are installed:"
    tiercache_log "  ${TIERCACHE_PACKAGES[*]}"
    return 0
  fi
  local missing
  mapfile -t missing < <(tiercache_missing_packages)
  if ((${#missing[@]} == 0)); then
    return 0
  fi
  if ((EUID != 0)); then
    tiercache_die "missing Debian packages: ${missing[*]}
run as root, or install them first:
  sudo apt-get update && sudo apt-get install -y ${missing[*]}"
  fi
  tiercache_log "installing missing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" </dev/null
  mapfile -t missing < <(tiercache_missing_packages)
  if ((${#missing[@]} != 0)); then
    tiercache_die "still missing after apt-get install: ${missing[*]}"
  fi
}

tiercache_jobs() { printf '%s\n' "${TIERCACHE_JOBS:-$(nproc)}"; }

# tiercache_configure DIR [CMAKE_ARG...]
# Configures a Ninja build of the project in DIR (relative to the repository
# root). Skipped when DIR was already configured with the same arguments: after
# that, ninja re-runs CMake by itself whenever a CMakeLists.txt changes.
tiercache_configure() {
  local dir="$1"
  shift
  local args=(
    -G Ninja
    -DCMAKE_BUILD_TYPE="${TIERCACHE_BUILD_TYPE:-RelWithDebInfo}"
    -DCMAKE_EXPORT_COMPILE_COMMANDS=ON
    -DTIERCACHE_WERROR=ON
    "$@"
  )
  local build="${TIERCACHE_ROOT}/${dir}"
  local stamp="${build}/.tiercache-configure-args"
  if [[ -f "${build}/build.ninja" && -f "${stamp}" && "$(cat "${stamp}")" == "${args[*]}" ]]; then
    return 0
  fi
  if [[ -f "${build}/CMakeCache.txt" ]] &&
    ! grep -q '^CMAKE_GENERATOR:INTERNAL=Ninja$' "${build}/CMakeCache.txt"; then
    tiercache_die "${dir}/ was configured with another generator; remove it and run again"
  fi
  tiercache_log "configuring ${dir}/ (${args[*]})"
  cmake -S "${TIERCACHE_ROOT}" -B "${build}" "${args[@]}"
  printf '%s' "${args[*]}" >"${stamp}"
}

# tiercache_build DIR [TARGET...]   (no target: everything)
tiercache_build() {
  local dir="$1"
  shift
  local targets=()
  if (($# > 0)); then
    targets=(--target "$@")
  fi
  tiercache_log "building ${dir}/ ${*:-(all targets)} with $(tiercache_jobs) jobs"
  cmake --build "${TIERCACHE_ROOT}/${dir}" --parallel "$(tiercache_jobs)" "${targets[@]}"
}

# tiercache_ctest DIR [CTEST_ARG...]
tiercache_ctest() {
  local dir="$1"
  shift
  tiercache_log "testing ${dir}/ $*"
  ctest --test-dir "${TIERCACHE_ROOT}/${dir}" --output-on-failure \
    -j "${TIERCACHE_TEST_JOBS:-2}" --timeout "${TIERCACHE_TEST_TIMEOUT:-300}" "$@"
}
