// The vocabulary both tiers speak: what a write asks for (WriteOptions), what a
// read returns with its metadata (Item), and how a conditional write ended
// (StoreResult, in memcached's terms). In a header of their own so that the
// L2 client does not depend on the whole engine API (tiercache/cache.h).

#ifndef TIERCACHE_TYPES_H_
#define TIERCACHE_TYPES_H_

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "absl/time/time.h"

namespace tiercache {

struct WriteOptions {
  // nullopt: the cache's default_ttl. Must be > 0; InfiniteDuration: never.
  std::optional<absl::Duration> ttl;
  uint32_t flags = 0;
};

struct Item {
  std::string value;
  uint32_t flags = 0;
  uint64_t cas = 0;
  absl::Time expiry = absl::InfiniteFuture();  // InfiniteFuture: never
};

// The outcome of a conditional write; memcached's vocabulary.
enum class StoreResult {
  kStored,     // written
  kNotStored,  // Add: key present; Replace/Append/Prepend: key missing
  kExists,     // CompareAndSwap: the CAS did not match (someone wrote first)
  kNotFound,   // CompareAndSwap: the key is missing
};
std::string_view StoreResultName(StoreResult result);

}  // namespace tiercache

#endif  // TIERCACHE_TYPES_H_
