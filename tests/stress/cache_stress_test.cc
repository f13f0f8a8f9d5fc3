// 8 threads of mixed operations on one cache for a bounded time, meant to run
// under ThreadSanitizer (.ci/run), then the invariants:
//   - no read ever returns an entry whose expiry had passed when the read began;
//   - the charged bytes and items never exceed the budget (sampled while
//     running, checked exactly at the end), and the charged bytes equal the
//     sum over live entries (VerifyInvariants);
//   - every entry ever stored is either still cached or was reported once to
//     the removal listener: sets == removals + items.
// Time is a FakeClock moved by one thread, so TTLs expire mid-run without sleeps.

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "tiercache/cache.h"

namespace tiercache {
namespace {

std::chrono::milliseconds RunTime() {
  const char* env = std::getenv("TIERCACHE_STRESS_MS");
  return std::chrono::milliseconds(env != nullptr ? std::atoi(env) : 2000);
}

void RunStress(size_t stripes, EvictionPolicy policy = EvictionPolicy::kLru) {
  constexpr int kThreads = 8;
  constexpr int kKeys = 3000;
  constexpr size_t kMaxItems = 1024;
  const size_t max_bytes = 400 * 1024;

  FakeClock clock;
  std::atomic<uint64_t> removals{0};
  CacheOptions options;
  options.max_bytes = max_bytes;
  options.max_items = kMaxItems;
  options.stripes = stripes;
  options.policy = policy;
  options.clock = &clock;
  options.default_ttl = absl::Milliseconds(50);
  options.on_removal = [&](const Removal&) { removals.fetch_add(1, std::memory_order_relaxed); };
  auto created = Cache::Create(options);
  ASSERT_TRUE(created.ok()) << created.status();
  Cache& cache = **created;

  std::atomic<bool> stop{false};
  std::atomic<uint64_t> stale_reads{0}, over_budget{0}, operations{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      std::mt19937_64 rng(static_cast<uint64_t>(t) * 7919 + 1);
      std::string value;
      while (!stop.load(std::memory_order_relaxed)) {
        const std::string key = absl::StrCat("key", rng() % kKeys);
        const WriteOptions write{absl::Milliseconds(1 + static_cast<int64_t>(rng() % 100)),
                                 static_cast<uint32_t>(t)};
        const size_t size = rng() % 600;
        const absl::Time before = clock.Now();
        switch (rng() % 16) {
          case 0:
          case 1:
          case 2:
            (void)cache.Set(key, std::string(size, 'v'), write);
            break;
          case 3:
            (void)cache.Add(key, "1", write);
            break;
          case 4:
            (void)cache.Replace(key, std::string(size, 'r'));
            break;
          case 5: {
            std::optional<Item> item = cache.GetItem(key);
            if (item.has_value()) {
              if (item->expiry <= before) stale_reads.fetch_add(1);
              (void)cache.CompareAndSwap(key, item->value + "c", item->cas, write);
            }
            break;
          }
          case 6:
            (void)cache.Append(key, "a");
            break;
          case 7:
            cache.Delete(key);
            break;
          case 8:
            cache.Touch(key, absl::Milliseconds(1 + static_cast<int64_t>(rng() % 100)));
            break;
          case 9:
            if (cache.Set(key, std::to_string(rng() % 1000), write).ok()) {
              (void)cache.Increment(key, rng() % 10);
              (void)cache.Decrement(key, rng() % 10);
            }
            break;
          case 10:
            (void)cache.GetOrLoad(
                key,
                [&](std::string_view k) -> absl::StatusOr<std::string> {
                  if (rng() % 4 == 0) return absl::UnavailableError("flaky source");
                  return std::string(k);
                },
                write);
            break;
          case 11:
            if (t == 0 && rng() % 64 == 0) cache.ReclaimExpired();
            if (t == 1 && rng() % 4096 == 0) cache.Clear();
            break;
          default: {
            std::optional<Item> item = cache.GetItem(key);
            if (item.has_value() && item->expiry <= before) stale_reads.fetch_add(1);
            (void)cache.Get(key, &value);
            break;
          }
        }
        if (t == 0) {
          clock.Advance(absl::Microseconds(200));
          const CacheStats stats = cache.Stats();
          if (stats.bytes > max_bytes || stats.items > kMaxItems) over_budget.fetch_add(1);
        }
        operations.fetch_add(1, std::memory_order_relaxed);
      }
    });
  }
  std::this_thread::sleep_for(RunTime());  // the run's length, not synchronisation
  stop.store(true);
  for (auto& thread : threads) thread.join();

  EXPECT_EQ(stale_reads.load(), 0u);
  EXPECT_EQ(over_budget.load(), 0u);
  absl::Status invariants = cache.VerifyInvariants();
  EXPECT_TRUE(invariants.ok()) << invariants;
  const CacheStats stats = cache.Stats();
  EXPECT_LE(stats.bytes, max_bytes);
  EXPECT_LE(stats.items, kMaxItems);
  EXPECT_EQ(stats.sets, removals.load() + stats.items);
  EXPECT_GT(stats.evictions, 0u);
  EXPECT_GT(stats.expirations, 0u);
  EXPECT_GT(operations.load(), 1000u);
  std::printf("%llu operations, %llu sets, %llu evictions, %llu expirations, %llu loads\n",
              static_cast<unsigned long long>(operations.load()),
              static_cast<unsigned long long>(stats.sets),
              static_cast<unsigned long long>(stats.evictions),
              static_cast<unsigned long long>(stats.expirations),
              static_cast<unsigned long long>(stats.loads));
}

TEST(CacheStressTest, EightThreadsAutomaticStripes) { RunStress(0); }
TEST(CacheStressTest, EightThreadsOneStripe) { RunStress(1); }
TEST(CacheStressTest, TinyLfuEightThreadsAutomaticStripes) {
  RunStress(0, EvictionPolicy::kTinyLfu);
}
TEST(CacheStressTest, TinyLfuEightThreadsOneStripe) { RunStress(1, EvictionPolicy::kTinyLfu); }

// Value sizes that drift while 8 threads write and read (issue 11): each
// thread moves through small, 2-4 KiB, small and 1 B - 64 KiB values, so
// compaction moves records while other threads read them. Every value names
// its key, and no read may ever return another key's value or a torn one;
// the reserved bytes stay within 1.1x max_bytes plus the per-stripe overhead.
void RunDriftStress(size_t stripes, EvictionPolicy policy) {
  constexpr int kThreads = 8;
  constexpr int kKeys = 4000;
  CacheOptions options;
  options.max_bytes = 2 << 20;
  options.stripes = stripes;
  options.policy = policy;
  auto created = Cache::Create(options);
  ASSERT_TRUE(created.ok()) << created.status();
  Cache& cache = **created;
  const size_t bound = options.max_bytes * 11 / 10 + cache.stripe_count() * (4 * 65536 + 16384);
  std::atomic<bool> stop{false};
  std::atomic<uint64_t> wrong{0}, over{0}, operations{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      std::mt19937_64 rng(static_cast<uint64_t>(t) * 104729 + 3);
      std::string value;
      for (uint64_t n = 0; !stop.load(std::memory_order_relaxed); ++n) {
        const std::string key = absl::StrCat("key", rng() % kKeys);
        if (rng() % 3 == 0) {
          size_t size = 40;
          switch ((n / 2000) % 4) {
            case 1:
              size = 2048 + rng() % 2049;
              break;
            case 3:
              size = 1 + rng() % 65536;
              break;
          }
          std::string v = key + "=";
          v.resize(std::max(size, v.size()), static_cast<char>('a' + t));
          (void)cache.Set(key, v);
        } else if (cache.Get(key, &value)) {
          // key "=" then one filler byte repeated: anything else is wrong.
          bool ok = value.size() > key.size() && value.compare(0, key.size(), key) == 0 &&
                    value[key.size()] == '=';
          for (size_t i = key.size() + 2; ok && i < value.size(); ++i) {
            ok = value[i] == value[key.size() + 1];
          }
          if (!ok) wrong.fetch_add(1);
        }
        if (t == 0 && n % 64 == 0 && cache.Stats().reserved_bytes > bound) over.fetch_add(1);
        operations.fetch_add(1, std::memory_order_relaxed);
      }
    });
  }
  std::this_thread::sleep_for(RunTime());  // the run's length, not synchronisation
  stop.store(true);
  for (auto& thread : threads) thread.join();
  EXPECT_EQ(wrong.load(), 0u);
  EXPECT_EQ(over.load(), 0u);
  absl::Status invariants = cache.VerifyInvariants();
  EXPECT_TRUE(invariants.ok()) << invariants;
  const CacheStats stats = cache.Stats();
  EXPECT_LE(stats.reserved_bytes, bound);
  EXPECT_GT(stats.compacted, 0u);
  std::printf("%llu operations, %llu records compacted, reserved %.2fx max_bytes\n",
              static_cast<unsigned long long>(operations.load()),
              static_cast<unsigned long long>(stats.compacted),
              static_cast<double>(stats.reserved_bytes) / static_cast<double>(options.max_bytes));
}

TEST(CacheStressTest, DriftingSizesEightThreads) { RunDriftStress(0, EvictionPolicy::kLru); }
TEST(CacheStressTest, DriftingSizesEightThreadsOneStripeTinyLfu) {
  RunDriftStress(1, EvictionPolicy::kTinyLfu);
}

}  // namespace
}  // namespace tiercache
