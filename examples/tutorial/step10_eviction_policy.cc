// Tutorial step 10: choosing the eviction policy, and watching the database
// loads it saves. See docs/tutorial.md.
//
// The workload is the one LRU handles worst and real services see daily: a
// hot set of keys that users read all the time, and now and then a job that
// reads a long run of keys once each (a report, a backfill, a crawler).

#include <cstdint>
#include <iostream>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "check.h"
#include "tiercache/cache.h"

namespace {

struct Outcome {
  double hit_ratio = 0;
  int loads = 0;  // calls to the "database"
};

Outcome Run(tiercache::EvictionPolicy policy) {
  tiercache::CacheOptions options;
  options.max_items = 1000;  // room for the 800 hot keys, not for them and a scan
  options.policy = policy;
  options.policy_seed = 1;  // replay exactly; leave it 0 (random) in a service
  auto created = tiercache::Cache::Create(options);
  TUTORIAL_CHECK(created.ok());
  tiercache::Cache& cache = **created;

  int loads = 0;
  auto load_from_database = [&loads](std::string_view key) -> absl::StatusOr<std::string> {
    ++loads;
    return "row for " + std::string(key);
  };
  uint64_t scanned = 0;
  for (int round = 0; round < 50; ++round) {
    // Users: each hot key, twice (the hot set is read over and over).
    for (int pass = 0; pass < 2; ++pass) {
      for (int i = 0; i < 800; ++i) {
        TUTORIAL_CHECK(cache.GetOrLoad(absl::StrCat("user:", i), load_from_database).ok());
      }
    }
    // A batch job: 500 keys it reads once and never again.
    for (int i = 0; i < 500; ++i) {
      TUTORIAL_CHECK(cache.GetOrLoad(absl::StrCat("report:", scanned++), load_from_database).ok());
    }
  }
  const tiercache::CacheStats stats = cache.Stats();
  return {100.0 * static_cast<double>(stats.hits) / static_cast<double>(stats.hits + stats.misses),
          loads};
}

}  // namespace

int main() {
  const Outcome lru = Run(tiercache::EvictionPolicy::kLru);
  const Outcome tiny_lfu = Run(tiercache::EvictionPolicy::kTinyLfu);
  std::cout << "kLru:     hit ratio " << lru.hit_ratio << "%, " << lru.loads << " database loads\n";
  std::cout << "kTinyLfu: hit ratio " << tiny_lfu.hit_ratio << "%, " << tiny_lfu.loads
            << " database loads\n";
  // Under LRU each job's scan pushes the whole hot set out, so every round
  // reloads it. W-TinyLFU admits a scanned key only if it has been asked for
  // more often than the entry it would replace, which a key read once never
  // has: the hot set stays, and only the scans reach the database.
  TUTORIAL_CHECK(tiny_lfu.loads < lru.loads / 2);
  TUTORIAL_CHECK(tiny_lfu.hit_ratio > lru.hit_ratio + 20);
  return 0;
}
