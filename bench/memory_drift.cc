// bench/memory_drift.cc — does the memory a Cache takes from the system stay
// near its budget when the sizes of its values drift? (issue 11)
//
// One Cache with max_bytes = 64 MiB (automatic stripes) is written in five
// phases, over one key space of 1M keys ("key:%d"), each write a Set of a
// random key:
//   1. 10M writes of 40-byte values;
//   2.  2M writes of 2-4 KiB values;
//   3. 10M writes of 40-byte values;
//   4.  1M writes of values of 1 B - 64 KiB (uniform);
//   5. 10M writes of 40-byte values;
// then Clear(), then the cache is destroyed. A sixth run puts a small cache
// (4 MiB, one stripe) through 1M writes of 1 B - 64 KiB values.
//
// After each phase it prints Stats().bytes, Stats().reserved_bytes (and the
// largest reserved_bytes seen during the phase, read every 4096 writes), the
// process's RSS growth since before the cache was created, and RSS growth /
// max_bytes; the JSON also has reserved bytes and RSS growth every 100k
// writes of the 64 MiB cache, for the chart of docs/performance.md. RSS is
// VmRSS from /proc/self/status; the values written are
// views into one buffer made before the baseline is read, so the only memory
// that grows is the cache's (and glibc's around it).
//
// Usage: memory_drift [--scale=F] [--json=PATH]
//   --scale multiplies every phase's write count (0.1 for a quick look).

#include <malloc.h>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <fstream>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_format.h"
#include "bench_support.h"
#include "tiercache/cache.h"

namespace {

using tiercache_bench::SplitMix64;
using tiercache_bench::VmRssBytes;

constexpr size_t kMiB = size_t{1} << 20;
constexpr size_t kKeys = 1'000'000;

struct Phase {
  std::string name;
  size_t writes;
  size_t min_value, max_value;
};

// A point of the RSS-over-time chart: after `write` writes in all.
struct Sample {
  size_t write;
  size_t reserved, rss_growth;
};

struct Row {
  std::string phase;
  size_t max_bytes;
  size_t bytes, reserved, peak_reserved, rss_growth;
  double writes_per_second = 0;  // the phase's Sets (with the sampling of Stats)
  uint64_t compacted = 0;        // records moved by compaction, in all so far
};

class Runner {
 public:
  // `keys` are made before the baseline `rss_base` is read.
  Runner(size_t max_bytes, size_t stripes, const std::vector<std::string>& keys, size_t rss_base)
      : max_bytes_(max_bytes), rss_base_(rss_base), keys_(keys) {
    tiercache::CacheOptions options;
    options.max_bytes = max_bytes;
    options.stripes = stripes;
    auto cache = tiercache::Cache::Create(options);
    if (!cache.ok()) {
      std::fprintf(stderr, "Cache::Create: %s\n", cache.status().ToString().c_str());
      std::exit(1);
    }
    cache_ = *std::move(cache);
  }

  Row Run(const Phase& phase, std::string_view values, SplitMix64& random) {
    const auto start = std::chrono::steady_clock::now();
    size_t peak = 0;
    for (size_t i = 0; i < phase.writes; ++i) {
      const size_t size = random.Between(phase.min_value, phase.max_value);
      const size_t offset = random.Next() % (values.size() - size + 1);
      const absl::Status status =
          cache_->Set(keys_[random.Next() % kKeys], values.substr(offset, size));
      if (!status.ok()) {
        std::fprintf(stderr, "Set: %s\n", status.ToString().c_str());
        std::exit(1);
      }
      if (i % 4096 == 0) peak = std::max<size_t>(peak, cache_->Stats().reserved_bytes);
      if (++writes_ % kSampleEvery == 0) {
        samples_.push_back({writes_, cache_->Stats().reserved_bytes, Growth()});
      }
    }
    Row row = Measure(phase.name, peak);
    row.compacted = cache_->Stats().compacted;
    const double seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    row.writes_per_second = static_cast<double>(phase.writes) / seconds;
    return row;
  }

  Row Clear() {
    cache_->Clear();
    return Measure("after Clear()", 0);
  }

  Row Destroy() {
    cache_.reset();
    return {"after destruction", max_bytes_, 0, 0, 0, Growth()};
  }

 private:
  size_t Growth() const {
    const size_t rss = VmRssBytes();
    return rss > rss_base_ ? rss - rss_base_ : 0;
  }
  Row Measure(const std::string& name, size_t peak) const {
    const tiercache::CacheStats stats = cache_->Stats();
    return {name,
            max_bytes_,
            stats.bytes,
            stats.reserved_bytes,
            std::max<size_t>(peak, stats.reserved_bytes),
            Growth()};
  }

  const size_t max_bytes_;
  const size_t rss_base_;
  size_t writes_ = 0;
  std::vector<Sample> samples_;

 public:
  static constexpr size_t kSampleEvery = 100'000;
  const std::vector<Sample>& samples() const { return samples_; }

 private:
  const std::vector<std::string>& keys_;
  std::unique_ptr<tiercache::Cache> cache_;
};

void Print(const Row& row) {
  const double mib = static_cast<double>(kMiB);
  const bool timed = row.writes_per_second > 0;
  std::printf("%-42s %9.1f %9.1f %9.1f %9.1f %8.2f %9s %10s\n", row.phase.c_str(),
              static_cast<double>(row.bytes) / mib, static_cast<double>(row.reserved) / mib,
              static_cast<double>(row.peak_reserved) / mib,
              static_cast<double>(row.rss_growth) / mib,
              static_cast<double>(row.rss_growth) / static_cast<double>(row.max_bytes),
              timed ? absl::StrFormat("%.2fM", row.writes_per_second / 1e6).c_str() : "",
              timed ? absl::StrFormat("%d", row.compacted).c_str() : "");
  std::fflush(stdout);
}

std::string Json(const std::vector<Row>& rows, const std::vector<Sample>& samples,
                 const std::vector<size_t>& phase_ends) {
  std::string json = "{\n  \"program\": \"memory_drift\",\n  \"samples\": [";
  for (size_t i = 0; i < samples.size(); ++i) {
    json += absl::StrFormat("%s[%d, %d, %d]", i ? ", " : "", samples[i].write, samples[i].reserved,
                            samples[i].rss_growth);
  }
  json += "],\n  \"phase_ends\": [";
  for (size_t i = 0; i < phase_ends.size(); ++i) {
    json += absl::StrFormat("%s%d", i ? ", " : "", phase_ends[i]);
  }
  json += "],\n  \"rows\": [\n";
  for (size_t i = 0; i < rows.size(); ++i) {
    const Row& r = rows[i];
    json += absl::StrFormat(
        "    {\"phase\": \"%s\", \"max_bytes\": %d, \"bytes\": %d, \"reserved_bytes\": %d, "
        "\"peak_reserved_bytes\": %d, \"rss_growth\": %d}%s\n",
        r.phase, r.max_bytes, r.bytes, r.reserved, r.peak_reserved, r.rss_growth,
        i + 1 < rows.size() ? "," : "");
  }
  return json + "  ]\n}\n";
}

}  // namespace

int main(int argc, char** argv) {
  double scale = 1;
  std::string json_path;
  for (int i = 1; i < argc; ++i) {
    const std::string_view arg = argv[i];
    if (arg.rfind("--scale=", 0) == 0 && absl::SimpleAtod(std::string(arg.substr(8)), &scale) &&
        scale > 0) {
      continue;
    }
    if (arg.rfind("--json=", 0) == 0) {
      json_path = std::string(arg.substr(7));
      continue;
    }
    std::fprintf(stderr, "usage: memory_drift [--scale=F] [--json=PATH]\n");
    return 2;
  }
  const auto writes = [scale](size_t n) {
    return std::max<size_t>(1, static_cast<size_t>(static_cast<double>(n) * scale));
  };
  // Keys and values (views into one buffer) are made before the baseline.
  std::vector<std::string> keys(kKeys);
  for (size_t i = 0; i < kKeys; ++i) keys[i] = absl::StrFormat("key:%d", i);
  std::string values(64 * 1024, '\0');
  SplitMix64 fill(7);
  for (char& c : values) c = static_cast<char>('a' + fill.Next() % 26);

  std::printf("%-42s %9s %9s %9s %9s %8s %9s %10s\n", "phase (MiB)", "bytes", "reserved",
              "peak res", "RSS grow", "RSS/max", "writes/s", "compacted");
  std::vector<Row> rows;
  std::vector<Sample> samples;     // the 64 MiB cache's, every 100k writes
  std::vector<size_t> phase_ends;  // in writes
  size_t written = 0;
  {
    malloc_trim(0);
    Runner runner(64 * kMiB, 0, keys, VmRssBytes());
    SplitMix64 random(1);
    const std::vector<Phase> phases = {
        {"1: 40-byte values", writes(10'000'000), 40, 40},
        {"2: 2-4 KiB values", writes(2'000'000), 2048, 4096},
        {"3: 40-byte values", writes(10'000'000), 40, 40},
        {"4: 1 B - 64 KiB values", writes(1'000'000), 1, 64 * 1024},
        {"5: 40-byte values", writes(10'000'000), 40, 40},
    };
    for (const Phase& phase : phases) {
      rows.push_back(runner.Run(phase, values, random));
      Print(rows.back());
      written += phase.writes;
      phase_ends.push_back(written);
    }
    samples = runner.samples();
    rows.push_back(runner.Clear());
    Print(rows.back());
    rows.push_back(runner.Destroy());
    Print(rows.back());
  }
  {
    malloc_trim(0);
    Runner runner(4 * kMiB, 1, keys, VmRssBytes());
    SplitMix64 random(2);
    rows.push_back(runner.Run(
        {"small (4 MiB, 1 stripe): 1 B - 64 KiB values", writes(1'000'000), 1, 64 * 1024}, values,
        random));
    Print(rows.back());
  }
  if (!json_path.empty()) {
    std::ofstream out(json_path);
    out << Json(rows, samples, phase_ends);
    if (!out) {
      std::fprintf(stderr, "cannot write %s\n", json_path.c_str());
      return 1;
    }
  }
  return 0;
}
