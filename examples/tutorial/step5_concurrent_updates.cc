// Tutorial step 5: concurrent updates with check-and-set, and counters.
// See docs/tutorial.md.

#include <iostream>
#include <string>
#include <thread>
#include <vector>

#include "check.h"
#include "tiercache/cache.h"

// Adds one to a counter stored as text, without losing updates to concurrent
// writers: read the entry's CAS, write only if nobody wrote since, else retry.
bool AddOne(tiercache::Cache& cache, std::string_view key) {
  while (true) {
    std::optional<tiercache::Item> item = cache.GetItem(key);
    if (!item.has_value()) return false;
    const std::string next = std::to_string(std::stoll(item->value) + 1);
    absl::StatusOr<tiercache::StoreResult> result = cache.CompareAndSwap(key, next, item->cas);
    if (!result.ok()) return false;
    if (*result == tiercache::StoreResult::kStored) return true;
    // kExists: another writer got there first; read again and retry.
  }
}

int main() {
  tiercache::CacheOptions options;
  options.max_bytes = 16 << 20;
  auto created = tiercache::Cache::Create(options);
  TUTORIAL_CHECK(created.ok());
  tiercache::Cache& cache = **created;

  // CAS: a stale version is refused.
  TUTORIAL_CHECK(cache.Set("likes", "0").ok());
  const uint64_t seen = cache.GetItem("likes")->cas;
  TUTORIAL_CHECK(*cache.CompareAndSwap("likes", "1", seen) == tiercache::StoreResult::kStored);
  TUTORIAL_CHECK(*cache.CompareAndSwap("likes", "2", seen) == tiercache::StoreResult::kExists);

  // Four threads, a thousand read-modify-write updates each: none is lost.
  std::vector<std::thread> writers;
  for (int i = 0; i < 4; ++i) {
    writers.emplace_back([&cache] {
      for (int n = 0; n < 1000; ++n) AddOne(cache, "likes");
    });
  }
  for (std::thread& t : writers) t.join();
  std::cout << "likes: " << *cache.Get("likes") << "\n";
  TUTORIAL_CHECK(cache.Get("likes") == "4001");

  // For plain counters, Increment/Decrement do the same in one call
  // (memcached semantics: unsigned, decrement stops at 0).
  TUTORIAL_CHECK(cache.Set("stock", "3").ok());
  TUTORIAL_CHECK(*cache.Increment("stock", 10) == 13);
  TUTORIAL_CHECK(*cache.Decrement("stock", 100) == 0);
  TUTORIAL_CHECK(absl::IsNotFound(cache.Increment("nothing", 1).status()));
  TUTORIAL_CHECK(cache.Set("name", "ada").ok());
  TUTORIAL_CHECK(absl::IsFailedPrecondition(cache.Increment("name", 1).status()));
  return 0;
}
