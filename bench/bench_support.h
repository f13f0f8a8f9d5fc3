// Small helpers the benchmark programs share: a portable random stream, the
// process's resident memory, and CPU pinning.

#ifndef TIERCACHE_BENCH_BENCH_SUPPORT_H_
#define TIERCACHE_BENCH_BENCH_SUPPORT_H_

#include <dirent.h>
#include <sched.h>
#include <sys/types.h>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <fstream>
#include <string>

namespace tiercache_bench {

// SplitMix64 (Steele, Lea, Flood 2014): tiny, fast, and identical on every
// platform, unlike the std distributions.
class SplitMix64 {
 public:
  explicit SplitMix64(uint64_t seed) : state_(seed) {}
  uint64_t Next() {
    uint64_t z = (state_ += 0x9e3779b97f4a7c15);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9;
    z = (z ^ (z >> 27)) * 0x94d049bb133111eb;
    return z ^ (z >> 31);
  }
  // Uniform in [0, 1) with 53 random bits.
  double NextDouble() { return static_cast<double>(Next() >> 11) * 0x1.0p-53; }
  // Uniform in [0, n), n > 0; the modulo bias is < n / 2^64.
  uint64_t NextBelow(uint64_t n) { return Next() % n; }
  // Uniform in [lo, hi].
  size_t Between(size_t lo, size_t hi) { return lo + Next() % (hi - lo + 1); }

 private:
  uint64_t state_;
};

// VmRSS from /proc/self/status, in bytes; 0 if it cannot be read.
inline size_t VmRssBytes() {
  std::ifstream status("/proc/self/status");
  std::string line;
  while (std::getline(status, line)) {
    if (line.rfind("VmRSS:", 0) == 0) {
      return std::strtoull(line.c_str() + 6, nullptr, 10) * 1024;  // "VmRSS:  123 kB"
    }
  }
  return 0;
}

// The calling thread's CPU mask, to give back to RestoreAffinity.
inline cpu_set_t CurrentAffinity() {
  cpu_set_t set;
  CPU_ZERO(&set);
  (void)::sched_getaffinity(0, sizeof(set), &set);
  return set;
}
inline void RestoreAffinity(const cpu_set_t& set) {
  (void)::sched_setaffinity(0, sizeof(set), &set);
}

// Pins the calling thread (and the threads it creates later) to `cpu`, or
// to every CPU for `cpu` < 0. On this 2-vCPU VM a blocking round trip costs
// about 18 us when client and server share a CPU and 55-80 us when one must
// wake the other: a latency comparison pins both sides, or the scheduler's
// choice of layout decides it (docs/performance.md, "TLS").
inline void PinThisThread(int cpu) {
  cpu_set_t set;
  CPU_ZERO(&set);
  if (cpu >= 0) {
    CPU_SET(cpu, &set);
  } else {
    for (int i = 0; i < CPU_SETSIZE; ++i) CPU_SET(i, &set);
  }
  (void)::sched_setaffinity(0, sizeof(set), &set);
}

// Pins every thread of process `pid` to `cpu`.
inline void PinProcess(pid_t pid, int cpu) {
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(cpu, &set);
  const std::string tasks = "/proc/" + std::to_string(pid) + "/task";
  DIR* dir = ::opendir(tasks.c_str());
  if (dir == nullptr) return;
  while (const dirent* entry = ::readdir(dir)) {
    const pid_t tid = std::atoi(entry->d_name);
    if (tid > 0) (void)::sched_setaffinity(tid, sizeof(set), &set);
  }
  ::closedir(dir);
}

}  // namespace tiercache_bench

#endif  // TIERCACHE_BENCH_BENCH_SUPPORT_H_
