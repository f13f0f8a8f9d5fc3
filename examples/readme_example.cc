// The example in README.md, verbatim between the markers. Built and run as a
// test (label "example"), so the README's code always compiles and works.

// readme-begin
#include <iostream>

#include "tiercache/cache.h"

// The slow source of truth that the cache sits in front of.
absl::StatusOr<std::string> LoadProfile(std::string_view user) {
  return "{\"user\":\"" + std::string(user) + "\"}";
}

int main() {
  tiercache::CacheOptions options;
  options.max_bytes = 64 << 20;             // keys + values + real per-entry overhead
  options.default_ttl = absl::Minutes(10);  // unless a write gives its own TTL
  // Scan-resistant, frequency-aware eviction (W-TinyLFU); the default is kLru.
  options.policy = tiercache::EvictionPolicy::kTinyLfu;
  auto cache = tiercache::Cache::Create(options);
  if (!cache.ok()) return 1;

  absl::Status stored = (*cache)->Set("user:1", "{\"user\":\"ada\"}", {.ttl = absl::Seconds(30)});
  std::optional<std::string> hit = (*cache)->Get("user:1");  // nullopt on a miss

  // Cache-aside in one call: on a miss one caller runs the loader, concurrent
  // callers of the same key wait for it, and the value is stored.
  absl::StatusOr<std::string> profile = (*cache)->GetOrLoad("user:2", LoadProfile);

  tiercache::CacheStats stats = (*cache)->Stats();
  std::cout << stats.hits << " hits, " << stats.misses << " misses, " << stats.items << " items\n";
  return stored.ok() && hit.has_value() && profile.ok() ? 0 : 1;
}
// readme-end
