// Tutorial step 8: warming a cold cache from an old one. A new memcached pool
// starts empty; reads that miss it fall back to the old pool and copy what
// they find into the new one. See docs/tutorial.md.

#include <atomic>
#include <iostream>
#include <string>

#include "absl/strings/str_cat.h"
#include "check.h"
#include "memcached_server.h"
#include "tiercache/tiered_cache.h"

std::atomic<int> queries{0};

absl::StatusOr<std::string> LoadProduct(std::string_view key) {
  queries.fetch_add(1);
  return "product " + std::string(key);
}

int main() {
  // Two memcached servers on this machine stand for the old and the new pool.
  tiercache::testing::MemcachedServer old_server, new_server;
  TUTORIAL_CHECK(old_server.running() && new_server.running());

  // The old pool is warm: an earlier version of the application filled it.
  tiercache::MemcachedOptions old_options;
  old_options.servers = {old_server.address()};
  auto old_pool = *tiercache::MemcachedClient::Create(old_options);
  for (int i = 0; i < 100; ++i) {
    const std::string key = absl::StrCat("product:", i);
    TUTORIAL_CHECK(old_pool->Set(key, "product " + key).ok());
  }

  // The application moves to the new pool, naming the old one as fallback.
  tiercache::TieredOptions options;
  options.l1.max_bytes = 64 << 20;
  options.l2.servers = {new_server.address()};
  options.fallback_servers = {old_server.address()};
  auto cache = *tiercache::TieredCache::Create(options);

  for (int i = 0; i < 100; ++i) {
    const std::string key = absl::StrCat("product:", i);
    TUTORIAL_CHECK(*cache->GetOrLoad(key, LoadProduct) == "product " + key);
  }
  // Every read was a hit in the old pool: the database was not queried, and
  // the new pool now holds the data (stored over the lease each miss took,
  // so nothing written to the new pool meanwhile is overwritten).
  std::cout << "database queries: " << queries.load()
            << ", old-pool hits: " << cache->Stats().fallback_hits << "\n";
  TUTORIAL_CHECK(queries.load() == 0);
  TUTORIAL_CHECK(cache->Stats().fallback_hits == 100);
  tiercache::MemcachedOptions new_options;
  new_options.servers = {new_server.address()};
  auto new_pool = *tiercache::MemcachedClient::Create(new_options);
  TUTORIAL_CHECK(new_pool->Get("product:7")->has_value());

  // Keys that neither pool has are loaded as usual.
  TUTORIAL_CHECK(*cache->GetOrLoad("product:new", LoadProduct) == "product product:new");
  TUTORIAL_CHECK(queries.load() == 1);
  return 0;
}
