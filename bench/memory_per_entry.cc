// bench/memory_per_entry.cc — the real memory an entry costs beyond its key
// and value, for tiercache::Cache and for two baselines measured in the same
// process: the std::mutex + std::unordered_map + std::list LRU users write by
// hand (mutex_lru.h) and a bare tsl::robin_map<std::string, std::string>.
//
// Each structure is filled with N entries (default 10,000,000) of 16-byte keys
// ("k:%014d") and 32-byte values, and sized so that nothing is evicted. Memory
// is read twice around the fill:
//   rss    VmRSS from /proc/self/status: what the system charges the process,
//          and the figure bytes/entry is computed from (the cache's pages are
//          mapped with mmap, outside malloc, since issue 11);
//   heap   glibc mallinfo2(): uordblks (bytes in use in every arena, chunk
//          headers included) + hblkhd (bytes in mmap'ed blocks), shown too.
// The structures are measured one after another; each is destroyed and
// malloc_trim(0) is called before the next baseline is read. Keys and values
// are formatted into stack buffers, so the only heap the fill leaves behind
// is the structure's.
//
// Usage: memory_per_entry [N] [--only=cache|tinylfu|lru|robin_map]

#include <malloc.h>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_format.h"
#include "bench_support.h"
#include "mutex_lru.h"
#include "tiercache/cache.h"
#include "tsl/robin_map.h"

namespace tiercache_bench {
namespace {

constexpr size_t kKeySize = 16;
constexpr size_t kValueSize = 32;
constexpr size_t kDefaultEntries = 10'000'000;

struct Snapshot {
  size_t heap_bytes;
  size_t rss_bytes;
};

size_t HeapInUse() {
  const struct mallinfo2 info = mallinfo2();
  return info.uordblks + info.hblkhd;
}

Snapshot Take() { return {HeapInUse(), VmRssBytes()}; }

// Formats entry i's key and value into the caller's buffers.
class EntryFormatter {
 public:
  std::string_view Key(size_t i) {
    absl::SNPrintF(key_, sizeof(key_), "k:%014d", i);
    return {key_, kKeySize};
  }
  std::string_view Value(size_t i) {
    absl::SNPrintF(value_, sizeof(value_), "v:%030d", i);
    return {value_, kValueSize};
  }

 private:
  char key_[kKeySize + 1];
  char value_[kValueSize + 1];
};

struct Result {
  const char* name;
  size_t entries;
  size_t heap_delta;
  long long rss_delta;
  double fill_seconds;
  std::optional<double> charge_per_entry;  // the cache's own accounting
  std::string note;
};

using Clock = std::chrono::steady_clock;

double SecondsSince(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

Result Finish(const char* name, size_t n, const Snapshot& before, Clock::time_point start) {
  const double seconds = SecondsSince(start);
  const Snapshot after = Take();
  return Result{name,
                n,
                after.heap_bytes - before.heap_bytes,
                static_cast<long long>(after.rss_bytes) - static_cast<long long>(before.rss_bytes),
                seconds,
                std::nullopt,
                ""};
}

Result MeasureCache(size_t n, tiercache::EvictionPolicy policy = tiercache::EvictionPolicy::kLru) {
  malloc_trim(0);
  tiercache::CacheOptions options;
  options.policy = policy;
  // Bytes only: an item bound is split evenly across stripes, and keys are
  // not, so max_items = n would evict from the fuller stripes. The 10%
  // headroom covers the same unevenness for bytes.
  options.max_bytes =
      static_cast<size_t>(static_cast<double>(tiercache::Cache::ChargeFor(kKeySize, kValueSize)) *
                          static_cast<double>(n) * 1.1);
  const Snapshot before = Take();
  const Clock::time_point start = Clock::now();
  absl::StatusOr<std::unique_ptr<tiercache::Cache>> created = tiercache::Cache::Create(options);
  if (!created.ok()) {
    std::fprintf(stderr, "Cache::Create: %s\n", created.status().ToString().c_str());
    std::exit(1);
  }
  std::unique_ptr<tiercache::Cache> cache = *std::move(created);
  EntryFormatter format;
  for (size_t i = 0; i < n; ++i) {
    absl::Status status = cache->Set(format.Key(i), format.Value(i));
    if (!status.ok()) {
      std::fprintf(stderr, "Cache::Set: %s\n", status.ToString().c_str());
      std::exit(1);
    }
  }
  Result result = Finish(policy == tiercache::EvictionPolicy::kLru ? "tiercache::Cache (kLru)"
                                                                   : "tiercache::Cache (kTinyLfu)",
                         n, before, start);
  const tiercache::CacheStats stats = cache->Stats();
  result.charge_per_entry = static_cast<double>(stats.bytes) / static_cast<double>(n);
  result.note = absl::StrFormat("stripes=%zu items=%d evictions=%d charged=%d max_bytes=%zu",
                                cache->stripe_count(), stats.items, stats.evictions, stats.bytes,
                                options.max_bytes);
  if (stats.items != n || stats.evictions != 0) result.note += " WARNING: entries were evicted";
  return result;
}

Result MeasureMutexLru(size_t n) {
  malloc_trim(0);
  const Snapshot before = Take();
  const Clock::time_point start = Clock::now();
  auto lru = std::make_unique<MutexLru>(n);
  EntryFormatter format;
  std::string key;  // one reused buffer: MutexLru::Set takes a std::string
  for (size_t i = 0; i < n; ++i) {
    key.assign(format.Key(i));
    lru->Set(key, format.Value(i));
  }
  Result result = Finish("mutex+unordered_map+list LRU", n, before, start);
  result.note = absl::StrFormat("items=%zu", lru->size());
  return result;
}

Result MeasureRobinMap(size_t n) {
  malloc_trim(0);
  const Snapshot before = Take();
  const Clock::time_point start = Clock::now();
  auto map = std::make_unique<tsl::robin_map<std::string, std::string>>();
  EntryFormatter format;
  for (size_t i = 0; i < n; ++i) {
    map->try_emplace(std::string(format.Key(i)), format.Value(i));
  }
  Result result = Finish("tsl::robin_map<string,string>", n, before, start);
  result.note = absl::StrFormat("items=%zu buckets=%zu load=%.3f", map->size(), map->bucket_count(),
                                map->load_factor());
  return result;
}

void Print(const Result& r) {
  const double n = static_cast<double>(r.entries);
  // RSS, not the heap: the cache's pages are mapped outside malloc.
  const double per_entry = static_cast<double>(r.rss_delta) / n;
  std::printf(
      "%-30s entries=%zu rss_delta=%lld bytes/entry=%.1f beyond_key_value=%.1f "
      "heap_delta=%zu heap/entry=%.1f charge/entry=%s fill=%.2fs (%.2f M/s)\n  %s\n",
      r.name, r.entries, r.rss_delta, per_entry,
      per_entry - static_cast<double>(kKeySize + kValueSize), r.heap_delta,
      static_cast<double>(r.heap_delta) / n,
      r.charge_per_entry ? absl::StrFormat("%.1f", *r.charge_per_entry).c_str() : "-",
      r.fill_seconds, n / r.fill_seconds / 1e6, r.note.c_str());
  std::fflush(stdout);
}

int Main(int argc, char** argv) {
  size_t n = kDefaultEntries;
  std::string only;
  for (int i = 1; i < argc; ++i) {
    const std::string_view arg = argv[i];
    if (arg.rfind("--only=", 0) == 0) {
      only = std::string(arg.substr(7));
      if (only != "cache" && only != "tinylfu" && only != "lru" && only != "robin_map") {
        std::fprintf(stderr, "--only must be cache, tinylfu, lru or robin_map, not '%s'\n",
                     only.c_str());
        return 2;
      }
    } else {
      char* end = nullptr;
      n = std::strtoull(argv[i], &end, 10);
      if (end == argv[i] || *end != '\0' || n == 0) {
        std::fprintf(stderr, "usage: %s [entries] [--only=cache|tinylfu|lru|robin_map]\n", argv[0]);
        return 2;
      }
    }
  }
  std::printf(
      "memory_per_entry: %zu entries, %zu-byte keys, %zu-byte values; "
      "Cache::ChargeFor(%zu, %zu) = %zu\n",
      n, kKeySize, kValueSize, kKeySize, kValueSize,
      tiercache::Cache::ChargeFor(kKeySize, kValueSize));
  std::printf(
      "bytes/entry = rss_delta / entries; beyond_key_value = bytes/entry - %zu; "
      "heap = mallinfo2 uordblks + hblkhd\n",
      kKeySize + kValueSize);
  if (only.empty() || only == "cache") Print(MeasureCache(n));
  if (only.empty() || only == "tinylfu") {
    Print(MeasureCache(n, tiercache::EvictionPolicy::kTinyLfu));
  }
  if (only.empty() || only == "lru") Print(MeasureMutexLru(n));
  if (only.empty() || only == "robin_map") Print(MeasureRobinMap(n));
  return 0;
}

}  // namespace
}  // namespace tiercache_bench

int main(int argc, char** argv) { return tiercache_bench::Main(argc, argv); }
