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

}  // namespace
}  // namespace tiercache
