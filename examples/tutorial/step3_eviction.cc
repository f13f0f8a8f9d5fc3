// Tutorial step 3: a bounded cache, eviction and the removal listener.
// See docs/tutorial.md.

#include <iostream>
#include <string>
#include <vector>

#include "check.h"
#include "tiercache/cache.h"

int main() {
  std::vector<std::string> removals;
  tiercache::CacheOptions options;
  // Room for exactly three entries with 1-byte keys and 100-byte values. The
  // charge is the memory an entry really holds, overhead included.
  options.max_bytes = 3 * tiercache::Cache::ChargeFor(1, 100);
  options.stripes = 1;  // one exact LRU, so the eviction order below is exact
  options.on_removal = [&removals](const tiercache::Removal& removal) {
    // Runs after the entry has left the cache, outside every lock.
    removals.push_back(std::string(removal.key) + " " +
                       std::string(tiercache::RemovalReasonName(removal.reason)));
  };
  auto created = tiercache::Cache::Create(options);
  TUTORIAL_CHECK(created.ok());
  tiercache::Cache& cache = **created;
  std::cout << "each entry is charged " << tiercache::Cache::ChargeFor(1, 100)
            << " bytes for 1 + 100 bytes of key and value\n";

  const std::string value(100, 'x');
  TUTORIAL_CHECK(cache.Set("a", value).ok());
  TUTORIAL_CHECK(cache.Set("b", value).ok());
  TUTORIAL_CHECK(cache.Set("c", value).ok());
  TUTORIAL_CHECK(cache.Get("a").has_value());  // "a" is now the most recently used
  TUTORIAL_CHECK(cache.Set("d", value).ok());  // full: the least recently used, "b", goes
  TUTORIAL_CHECK(!cache.Get("b").has_value());

  TUTORIAL_CHECK(cache.Set("a", "new").ok());  // overwriting reports the old value as replaced
  TUTORIAL_CHECK(cache.Delete("c"));

  for (const std::string& removal : removals) std::cout << "removed: " << removal << "\n";
  TUTORIAL_CHECK((removals == std::vector<std::string>{"b evicted", "a replaced", "c deleted"}));

  tiercache::CacheStats stats = cache.Stats();
  std::cout << stats.items << " items, " << stats.bytes << " of " << options.max_bytes << " bytes, "
            << stats.evictions << " eviction(s)\n";
  TUTORIAL_CHECK(stats.bytes <= options.max_bytes && stats.evictions == 1);
  return 0;
}
