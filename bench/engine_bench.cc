// bench/engine_bench.cc — L1 engine throughput, with its baselines measured in
// the same run (a figure without its baseline means little on a shared
// machine):
//
//   BareRobinMap  a filled tsl::robin_map read with no lock: the floor. Each
//                 hit copies the value into a new std::string, as
//                 Cache::Get(key) does; `_GetHitReuse` copies it into a
//                 string reused across hits, as Cache::Get(key, &buffer)
//                 does, so that each of the two Gets has a fair floor.
//   MutexLru      std::mutex + std::unordered_map + std::list (mutex_lru.h):
//                 what users write by hand.
//   Cache         tiercache::Cache with automatic stripes; `_1Stripe` forces
//                 one stripe (exact LRU) to show what striping buys.
//
// Workload (fixed by the issue): 2^20 keys "key:%012d" (16 bytes), 100-byte
// values, keys drawn from Zipf(0.99). The key stream is precomputed once and
// shared; each thread starts at its own offset in it. Two cache states:
//
//   GetHit       every key is cached (sized from Cache::ChargeFor with 10%
//                headroom for uneven stripes, no item bound); Gets only.
//   Mixed90_10   the cache holds 2^20/10 items; 90% Get / 10% Set, and a Get
//                miss is followed by a Set (fill), so evictions run. The
//                cache is warmed with one pass over the key stream first.
//
// Figures: items_per_second is the operations of all threads divided by wall
// time (UseRealTime). `hit_ratio` is the mean over threads of hits / Gets.
// All fixtures are built lazily, once, by function-local statics, before the
// timed loop starts (Google Benchmark starts the clock after a barrier that
// every thread reaches only once the fixture exists).

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <optional>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_format.h"
#include "bench_support.h"
#include "benchmark/benchmark.h"
#include "mutex_lru.h"
#include "tiercache/cache.h"
#include "tsl/robin_map.h"

namespace tiercache_bench {
namespace {

constexpr size_t kKeyCount = size_t{1} << 20;
constexpr size_t kKeySize = 16;  // "key:%012d"
constexpr size_t kValueSize = 100;
constexpr double kZipfSkew = 0.99;
// Length of the shared key stream; a power of two so it is indexed by a mask.
constexpr size_t kStreamLength = size_t{1} << 22;
constexpr uint64_t kStreamSeed = 0x7469657263616368;  // "tiercach"
// In the mixed workload an operation is a Set when rng < kSetThreshold (10%).
constexpr uint64_t kSetThreshold = UINT64_MAX / 10;

struct Workload {
  std::vector<std::string> keys;  // keys[i] = "key:%012d" of i
  std::string value;              // every key's 100-byte value
  std::vector<uint32_t> stream;   // kStreamLength Zipf-distributed key indices
};

// Zipf(s) over ranks 0..n-1: P(rank k) is proportional to 1 / (k + 1)^s.
// Sampled exactly by inverting a precomputed CDF with a binary search; the
// 8 MiB table and the searches are paid once, outside every timed loop.
// Ranks are mapped to keys through a seeded random permutation (YCSB's
// "scrambled Zipfian"), so the hot keys are not the first keys formatted.
std::vector<uint32_t> ZipfStream(size_t n, double s, size_t length, uint64_t seed) {
  std::vector<double> cdf(n);
  double sum = 0;
  for (size_t k = 0; k < n; ++k) {
    sum += std::pow(static_cast<double>(k + 1), -s);
    cdf[k] = sum;
  }
  for (double& c : cdf) c /= sum;
  cdf.back() = 1.0;

  SplitMix64 rng(seed);
  std::vector<uint32_t> key_of_rank(n);
  for (size_t i = 0; i < n; ++i) key_of_rank[i] = static_cast<uint32_t>(i);
  for (size_t i = n - 1; i > 0; --i) {  // Fisher-Yates
    std::swap(key_of_rank[i], key_of_rank[rng.NextBelow(i + 1)]);
  }

  std::vector<uint32_t> stream(length);
  for (uint32_t& key : stream) {
    const double u = rng.NextDouble();
    size_t rank = static_cast<size_t>(std::upper_bound(cdf.begin(), cdf.end(), u) - cdf.begin());
    if (rank >= n) rank = n - 1;
    key = key_of_rank[rank];
  }
  return stream;
}

const Workload& GetWorkload() {
  static const Workload* const workload = [] {
    auto* w = new Workload;
    w->keys.reserve(kKeyCount);
    for (size_t i = 0; i < kKeyCount; ++i) {
      w->keys.push_back(absl::StrFormat("key:%012d", i));
      if (w->keys.back().size() != kKeySize) std::abort();
    }
    w->value.resize(kValueSize);
    for (size_t i = 0; i < kValueSize; ++i) {
      w->value[i] = static_cast<char>('a' + i % 26);
    }
    w->stream = ZipfStream(kKeyCount, kZipfSkew, kStreamLength, kStreamSeed);
    return w;
  }();
  return *workload;
}

// Where the next run starts reading the key stream. Google Benchmark runs each
// benchmark several times (growing iteration counts, then the measured run);
// if every run restarted at the same place, a run would replay keys its
// predecessor had just made recent, inflating hit ratios and CPU-cache warmth.
// Read by every thread before the loop's start barrier, advanced by thread 0
// after its end barrier, so the two never overlap.
std::atomic<size_t> g_stream_base{0};

// A thread's walk through the shared key stream, starting at its own offset.
class KeyStream {
 public:
  explicit KeyStream(const benchmark::State& state)
      : workload_(GetWorkload()),
        next_(g_stream_base.load(std::memory_order_relaxed) +
              static_cast<size_t>(state.thread_index()) *
                  (kStreamLength / static_cast<size_t>(state.threads()))) {}

  const std::string& Next() {
    return workload_.keys[workload_.stream[next_++ & (kStreamLength - 1)]];
  }

 private:
  const Workload& workload_;
  size_t next_;
};

void Fail(const char* what, const absl::Status& status) {
  std::fprintf(stderr, "engine_bench: %s: %s\n", what, status.ToString().c_str());
  std::abort();
}

std::unique_ptr<tiercache::Cache> MakeCache(tiercache::CacheOptions options) {
  absl::StatusOr<std::unique_ptr<tiercache::Cache>> cache =
      tiercache::Cache::Create(std::move(options));
  if (!cache.ok()) Fail("Cache::Create", cache.status());
  return *std::move(cache);
}

// Room for every key: the engine's own charge per entry, times the keys, plus
// 10% so that a stripe holding more than its share of keys does not evict.
size_t FullBudgetBytes() {
  return static_cast<size_t>(
      static_cast<double>(tiercache::Cache::ChargeFor(kKeySize, kValueSize)) *
      static_cast<double>(kKeyCount) * 1.1);
}

// Fills `cache` with every key and checks that nothing was evicted.
void FillCache(tiercache::Cache& cache, const char* name) {
  const Workload& w = GetWorkload();
  for (const std::string& key : w.keys) {
    absl::Status status = cache.Set(key, w.value);
    if (!status.ok()) Fail("Cache::Set", status);
  }
  const tiercache::CacheStats stats = cache.Stats();
  if (stats.items != kKeyCount || stats.evictions != 0) {
    std::fprintf(stderr,
                 "engine_bench: WARNING: %s holds %llu of %zu keys after the fill "
                 "(%llu evictions); its GetHit figures include misses\n",
                 name, static_cast<unsigned long long>(stats.items), kKeyCount,
                 static_cast<unsigned long long>(stats.evictions));
  }
}

tiercache::Cache& FullCache() {
  static tiercache::Cache* const cache = [] {
    tiercache::CacheOptions options;
    options.max_bytes = FullBudgetBytes();
    std::unique_ptr<tiercache::Cache> c = MakeCache(std::move(options));
    FillCache(*c, "FullCache");
    return c.release();
  }();
  return *cache;
}

tiercache::Cache& FullCacheTinyLfu() {
  static tiercache::Cache* const cache = [] {
    tiercache::CacheOptions options;
    options.max_bytes = FullBudgetBytes();
    options.policy = tiercache::EvictionPolicy::kTinyLfu;
    std::unique_ptr<tiercache::Cache> c = MakeCache(std::move(options));
    FillCache(*c, "FullCacheTinyLfu");
    return c.release();
  }();
  return *cache;
}

tiercache::Cache& FullCacheOneStripe() {
  static tiercache::Cache* const cache = [] {
    tiercache::CacheOptions options;
    options.max_bytes = FullBudgetBytes();
    options.stripes = 1;
    std::unique_ptr<tiercache::Cache> c = MakeCache(std::move(options));
    FillCache(*c, "FullCacheOneStripe");
    return c.release();
  }();
  return *cache;
}

const tsl::robin_map<std::string, std::string>& FullRobinMap() {
  static const tsl::robin_map<std::string, std::string>* const map = [] {
    const Workload& w = GetWorkload();
    auto* m = new tsl::robin_map<std::string, std::string>;
    for (const std::string& key : w.keys) m->emplace(key, w.value);
    return m;
  }();
  return *map;
}

MutexLru& FullMutexLru() {
  static MutexLru* const lru = [] {
    const Workload& w = GetWorkload();
    auto* l = new MutexLru(kKeyCount);
    for (const std::string& key : w.keys) l->Set(key, w.value);
    return l;
  }();
  return *lru;
}

// One single-threaded pass of the mixed workload's fill rule (Get, and Set on
// a miss) over the whole key stream, so the timed runs start from a warm,
// full cache rather than measuring the cold fill.
template <typename CacheT>
void Warm(CacheT& cache) {
  const Workload& w = GetWorkload();
  for (uint32_t index : w.stream) {
    const std::string& key = w.keys[index];
    if (!cache.Get(key).has_value()) {
      if constexpr (std::is_same_v<CacheT, MutexLru>) {
        cache.Set(key, w.value);
      } else {
        absl::Status status = cache.Set(key, w.value);
        if (!status.ok()) Fail("Cache::Set", status);
      }
    }
  }
}

std::unique_ptr<tiercache::Cache> MakeTenPercentCache(tiercache::EvictionPolicy policy) {
  tiercache::CacheOptions options;
  options.max_items = kKeyCount / 10;
  options.max_bytes = FullBudgetBytes();  // the item bound is the binding one
  options.policy = policy;
  std::unique_ptr<tiercache::Cache> c = MakeCache(std::move(options));
  Warm(*c);
  return c;
}

// One per policy, each built once, on first use (a function-local static:
// the benchmark's threads may all ask at once).
tiercache::Cache& TenPercentCache() {
  static tiercache::Cache* const cache =
      MakeTenPercentCache(tiercache::EvictionPolicy::kLru).release();
  return *cache;
}

tiercache::Cache& TenPercentCacheTinyLfu() {
  static tiercache::Cache* const cache =
      MakeTenPercentCache(tiercache::EvictionPolicy::kTinyLfu).release();
  return *cache;
}

MutexLru& TenPercentMutexLru() {
  static MutexLru* const lru = [] {
    auto* l = new MutexLru(kKeyCount / 10);
    Warm(*l);
    return l;
  }();
  return *lru;
}

// Called by every thread after its timed loop.
void ReportCounters(benchmark::State& state, int64_t gets, int64_t hits) {
  if (state.thread_index() == 0) {
    g_stream_base.fetch_add(static_cast<size_t>(state.iterations()), std::memory_order_relaxed);
  }
  state.SetItemsProcessed(state.iterations());
  state.counters["hit_ratio"] =
      benchmark::Counter(gets > 0 ? static_cast<double>(hits) / static_cast<double>(gets) : 0.0,
                         benchmark::Counter::kAvgThreads);
}

void ReportStripes(benchmark::State& state, const tiercache::Cache& cache) {
  state.counters["stripes"] = benchmark::Counter(static_cast<double>(cache.stripe_count()),
                                                 benchmark::Counter::kAvgThreads);
}

// ---- All keys cached: Get hits ----

void BM_BareRobinMap_GetHit(benchmark::State& state) {
  const tsl::robin_map<std::string, std::string>& map = FullRobinMap();
  KeyStream keys(state);
  int64_t hits = 0;
  for (auto _ : state) {
    auto it = map.find(keys.Next());
    std::optional<std::string> value =
        it != map.end() ? std::optional<std::string>(it->second) : std::nullopt;
    hits += value.has_value();
    benchmark::DoNotOptimize(value);
  }
  ReportCounters(state, static_cast<int64_t>(state.iterations()), hits);
}

void BM_BareRobinMap_GetHitReuse(benchmark::State& state) {
  const tsl::robin_map<std::string, std::string>& map = FullRobinMap();
  KeyStream keys(state);
  std::string value;
  int64_t hits = 0;
  for (auto _ : state) {
    auto it = map.find(keys.Next());
    if (it != map.end()) {
      value.assign(it->second);
      ++hits;
    }
    benchmark::DoNotOptimize(value);
  }
  ReportCounters(state, static_cast<int64_t>(state.iterations()), hits);
}

void BM_MutexLru_GetHit(benchmark::State& state) {
  MutexLru& lru = FullMutexLru();
  KeyStream keys(state);
  int64_t hits = 0;
  for (auto _ : state) {
    std::optional<std::string> value = lru.Get(keys.Next());
    hits += value.has_value();
    benchmark::DoNotOptimize(value);
  }
  ReportCounters(state, static_cast<int64_t>(state.iterations()), hits);
}

void CacheGetHit(benchmark::State& state, tiercache::Cache& cache) {
  KeyStream keys(state);
  int64_t hits = 0;
  for (auto _ : state) {
    std::optional<std::string> value = cache.Get(keys.Next());
    hits += value.has_value();
    benchmark::DoNotOptimize(value);
  }
  ReportCounters(state, static_cast<int64_t>(state.iterations()), hits);
  ReportStripes(state, cache);
}

void BM_Cache_GetHit(benchmark::State& state) { CacheGetHit(state, FullCache()); }

void BM_Cache_GetHit_1Stripe(benchmark::State& state) { CacheGetHit(state, FullCacheOneStripe()); }

void CacheGetHitReuse(benchmark::State& state, tiercache::Cache& cache) {
  KeyStream keys(state);
  std::string value;
  int64_t hits = 0;
  for (auto _ : state) {
    hits += cache.Get(keys.Next(), &value);
    benchmark::DoNotOptimize(value);
  }
  ReportCounters(state, static_cast<int64_t>(state.iterations()), hits);
  ReportStripes(state, cache);
}

void BM_Cache_GetHitReuse(benchmark::State& state) { CacheGetHitReuse(state, FullCache()); }

// The same with EvictionPolicy::kTinyLfu: a hit also counts the key in the
// frequency sketch.
void BM_Cache_GetHitReuse_TinyLfu(benchmark::State& state) {
  CacheGetHitReuse(state, FullCacheTinyLfu());
}

// ---- 10% of the keys cached: 90% Get (a miss fills) / 10% Set ----

uint64_t MixSeed(const benchmark::State& state) {
  return kStreamSeed + 1 + static_cast<uint64_t>(state.thread_index());
}

void BM_MutexLru_Mixed90_10(benchmark::State& state) {
  MutexLru& lru = TenPercentMutexLru();
  const std::string& new_value = GetWorkload().value;
  KeyStream keys(state);
  SplitMix64 rng(MixSeed(state));
  int64_t gets = 0;
  int64_t hits = 0;
  for (auto _ : state) {
    const std::string& key = keys.Next();
    if (rng.Next() < kSetThreshold) {
      lru.Set(key, new_value);
      continue;
    }
    ++gets;
    std::optional<std::string> value = lru.Get(key);
    if (value.has_value()) {
      ++hits;
    } else {
      lru.Set(key, new_value);
    }
    benchmark::DoNotOptimize(value);
  }
  ReportCounters(state, gets, hits);
}

void CacheMixed90_10(benchmark::State& state, tiercache::Cache& cache) {
  const std::string& new_value = GetWorkload().value;
  KeyStream keys(state);
  SplitMix64 rng(MixSeed(state));
  int64_t gets = 0;
  int64_t hits = 0;
  int64_t failed_sets = 0;
  for (auto _ : state) {
    const std::string& key = keys.Next();
    if (rng.Next() < kSetThreshold) {
      failed_sets += !cache.Set(key, new_value).ok();
      continue;
    }
    ++gets;
    std::optional<std::string> value = cache.Get(key);
    if (value.has_value()) {
      ++hits;
    } else {
      failed_sets += !cache.Set(key, new_value).ok();
    }
    benchmark::DoNotOptimize(value);
  }
  ReportCounters(state, gets, hits);
  ReportStripes(state, cache);
  if (failed_sets > 0) state.SkipWithError("Cache::Set failed during the run");
}

void BM_Cache_Mixed90_10(benchmark::State& state) { CacheMixed90_10(state, TenPercentCache()); }

void BM_Cache_Mixed90_10_TinyLfu(benchmark::State& state) {
  CacheMixed90_10(state, TenPercentCacheTinyLfu());
}

void ThreadCounts(benchmark::internal::Benchmark* b) {
  b->Threads(1)->Threads(2)->Threads(8)->UseRealTime();
}

BENCHMARK(BM_BareRobinMap_GetHit)->Apply(ThreadCounts);
BENCHMARK(BM_BareRobinMap_GetHitReuse)->Apply(ThreadCounts);
BENCHMARK(BM_MutexLru_GetHit)->Apply(ThreadCounts);
BENCHMARK(BM_Cache_GetHit)->Apply(ThreadCounts);
BENCHMARK(BM_Cache_GetHitReuse)->Apply(ThreadCounts);
BENCHMARK(BM_Cache_GetHitReuse_TinyLfu)->Apply(ThreadCounts);
BENCHMARK(BM_Cache_GetHit_1Stripe)->Apply(ThreadCounts);
BENCHMARK(BM_MutexLru_Mixed90_10)->Apply(ThreadCounts);
BENCHMARK(BM_Cache_Mixed90_10)->Apply(ThreadCounts);
BENCHMARK(BM_Cache_Mixed90_10_TinyLfu)->Apply(ThreadCounts);

}  // namespace
}  // namespace tiercache_bench

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::AddCustomContext(
      "workload",
      absl::StrFormat("%zu keys of %zu bytes, %zu-byte values, Zipf(%.2f) stream of %zu",
                      tiercache_bench::kKeyCount, tiercache_bench::kKeySize,
                      tiercache_bench::kValueSize, tiercache_bench::kZipfSkew,
                      tiercache_bench::kStreamLength));
  benchmark::AddCustomContext(
      "charge_per_entry",
      absl::StrFormat("%zu", tiercache::Cache::ChargeFor(tiercache_bench::kKeySize,
                                                         tiercache_bench::kValueSize)));
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
