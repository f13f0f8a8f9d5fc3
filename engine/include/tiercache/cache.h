// tiercache/cache.h — the L1 engine: an in-process, thread-safe LRU cache with
// a per-entry TTL.
//
// A `Cache` maps byte-string keys to byte-string values, each with 32-bit
// client flags, a 64-bit CAS that changes on every modification, and an expiry.
// It is bounded by bytes (`max_bytes`) and optionally by items (`max_items`):
// when a write would exceed either bound, the least recently used entries are
// evicted. After every call returns, the charged bytes are <= `max_bytes` and
// the item count is <= `max_items`.
//
// What "charge" means: the real memory an entry holds — its record (a 32-byte
// header + key + value, rounded up to 8 bytes in the stripe's pages, or up to
// 4 KiB for records over 16 KiB, which are mapped on their own), its share of the
// hash table (one 8-byte bucket divided by the table's mean load) and, if it
// expires, its share of the expiry heap. It is not a guess supplied by the
// caller. And what the cache holds from the system (`Stats().reserved_bytes`:
// pages, mappings, tables, free space kept for reuse) stays within 1.1x
// `max_bytes` plus a fixed overhead per stripe, however value sizes drift:
// sparse pages are compacted and unmapped, and `Clear()` or destruction
// returns the memory to the system (docs/design.md, "Memory").
//
// Striping: the cache is N independent stripes, each a complete single-lock
// LRU cache with its own hash table, LRU list and expiry heap, holding
// `max_bytes / N` bytes and `max_items / N` items. A key's stripe is picked
// from the high bits of its hash. With `stripes = 1` eviction is exact LRU;
// with more stripes it is LRU within each stripe (the hit-ratio cost is
// measured in docs/performance.md).
//
// Expiry: an expired entry is never returned. Expired entries are reclaimed
// without being read again: each write trims a few from its stripe's expiry
// heap, `ReclaimExpired()` trims all of them, and `reap_interval` runs a
// background thread that calls it (for caches that go idle).
//
// Callbacks: `on_removal` and `GetOrLoad` loaders never run under a stripe
// lock, so they may call back into the cache.
//
// Errors: bad input returns `InvalidArgument` naming the limit; nothing is
// stored or evicted. A miss is not an error. No exceptions are thrown.

#ifndef TIERCACHE_CACHE_H_
#define TIERCACHE_CACHE_H_

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/functional/function_ref.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "absl/types/span.h"
#include "tiercache/clock.h"
#include "tiercache/types.h"

namespace tiercache {

enum class RemovalReason {
  kEvicted,   // pushed out by the LRU to make room
  kExpired,   // its TTL ran out
  kReplaced,  // overwritten by a write to the same key
  kDeleted,   // removed by Delete()
  kCleared,   // removed by Clear() or the cache's destruction
};
std::string_view RemovalReasonName(RemovalReason reason);

// Passed to `on_removal`. The views are valid only during the callback.
struct Removal {
  std::string_view key;
  std::string_view value;
  uint32_t flags = 0;
  RemovalReason reason = RemovalReason::kEvicted;
};

// Which entry a full stripe gives up (docs/design.md, "Eviction policies").
enum class EvictionPolicy {
  // Least recently used; with one stripe, exact LRU.
  kLru,
  // W-TinyLFU: new entries enter a small LRU window; leaving it, one is
  // admitted to the main region (segmented LRU) only if it has been asked for
  // more often lately than the main region's next victim (a 4-bit count-min
  // sketch remembers); the window's size is tuned at run time by hill
  // climbing on the hit ratio. Keeps what is read again better than LRU
  // under scans, loops and frequency-skewed workloads.
  kTinyLfu,
};

struct CacheOptions {
  // Budget for keys + values + real per-entry overhead. Must be > 0.
  size_t max_bytes = 64 << 20;
  // 0: bounded by bytes only.
  size_t max_items = 0;
  // TTL of writes that do not give one. InfiniteDuration: never expires.
  absl::Duration default_ttl = absl::InfiniteDuration();
  // 0: automatic (a power of two, at most 64, fewer for small budgets);
  // 1: one exact LRU. Other values must be powers of two.
  size_t stripes = 0;
  // Keys are 1..max_key_size bytes (at most 65535); values at most
  // max_value_size bytes.
  size_t max_key_size = 250;
  size_t max_value_size = 1 << 20;
  // nullptr: the real clock. Not owned; must outlive the cache.
  Clock* clock = nullptr;
  // Called after an entry leaves the cache, outside every lock.
  std::function<void(const Removal&)> on_removal;
  // > 0: a background thread calls ReclaimExpired() this often. 0: none.
  absl::Duration reap_interval = absl::ZeroDuration();
  EvictionPolicy policy = EvictionPolicy::kLru;
  // kTinyLfu: seeds the frequency sketch's hashing and the admission's
  // randomness. 0: a random seed per cache (so which keys collide cannot be
  // planned by a client); tests fix one to replay exactly.
  uint64_t policy_seed = 0;
};

// WriteOptions, Item and StoreResult: tiercache/types.h.

struct CacheStats {
  uint64_t hits = 0;
  uint64_t misses = 0;
  uint64_t sets = 0;  // every stored write (Set, Add, CAS, Append, ...)
  uint64_t evictions = 0;
  uint64_t expirations = 0;
  uint64_t items = 0;
  uint64_t bytes = 0;  // charged bytes, <= max_bytes
  // Memory the stripes hold from the system: records' pages (including
  // free space kept for reuse) and mappings, hash tables, expiry heaps and
  // kTinyLfu's sketches. At every call's return it is at most 1.1x
  // max_bytes plus a fixed overhead per stripe (docs/design.md, "Memory").
  uint64_t reserved_bytes = 0;
  // Records moved by compaction, to let pages go back to the system.
  uint64_t compacted = 0;
  uint64_t loads = 0;  // loader calls made by GetOrLoad
  uint64_t load_failures = 0;
  uint64_t load_waits = 0;  // GetOrLoad calls answered by another caller's load
};

using Loader = absl::FunctionRef<absl::StatusOr<std::string>(std::string_view key)>;

namespace engine_internal {
class Stripe;
class LargeBlockPool;
struct Graveyard;
enum class StoreMode : int;
}  // namespace engine_internal
namespace common_internal {
class SingleFlight;
}  // namespace common_internal

class Cache {
 public:
  // Validates `options`; InvalidArgument names the bad field.
  static absl::StatusOr<std::unique_ptr<Cache>> Create(CacheOptions options);
  ~Cache();  // removes every entry (reason kCleared) and stops the reaper
  Cache(const Cache&) = delete;
  Cache& operator=(const Cache&) = delete;

  // Reads. A hit makes the entry the most recently used.
  std::optional<std::string> Get(std::string_view key);
  // As Get, reusing `*value`'s buffer; returns false on a miss.
  bool Get(std::string_view key, std::string* value);
  std::optional<Item> GetItem(std::string_view key);
  absl::flat_hash_map<std::string, Item> GetMany(absl::Span<const std::string_view> keys);

  // Writes.
  absl::Status Set(std::string_view key, std::string_view value, WriteOptions options = {});
  // All pairs are validated before any is stored.
  absl::Status SetMany(absl::Span<const std::pair<std::string_view, std::string_view>> items,
                       WriteOptions options = {});
  absl::StatusOr<StoreResult> Add(std::string_view key, std::string_view value,
                                  WriteOptions options = {});
  absl::StatusOr<StoreResult> Replace(std::string_view key, std::string_view value,
                                      WriteOptions options = {});
  // Stores only if the entry's CAS is still `cas` (from GetItem).
  absl::StatusOr<StoreResult> CompareAndSwap(std::string_view key, std::string_view value,
                                             uint64_t cas, WriteOptions options = {});
  // Append/Prepend keep the entry's flags and expiry.
  absl::StatusOr<StoreResult> Append(std::string_view key, std::string_view suffix);
  absl::StatusOr<StoreResult> Prepend(std::string_view key, std::string_view prefix);
  bool Delete(std::string_view key);
  // Deletes only if the entry's CAS is still `cas` (from GetItem; 0: any):
  // false if the key is missing or was modified since.
  bool Delete(std::string_view key, uint64_t cas);
  // Sets a new TTL (> 0, or InfiniteDuration). False if the key is missing.
  bool Touch(std::string_view key, absl::Duration ttl);

  // memcached 1.6 semantics. A value is a number when memcached would read it
  // as one: optional leading whitespace (C locale: space, \t \n \v \f \r),
  // one optional '+' or '-', one or more decimal digits (leading zeros
  // allowed), then whitespace, a NUL byte or the end of the value; anything
  // after that is ignored. A number that does not fit in 64 bits is not a
  // number. A sign applies modulo 2^64 and a result negative as int64_t is
  // refused: "-0" is 0, "-18446744073709551615" is 1, "-5" is not a number.
  // Increment wraps at 2^64, decrement stops at 0, and the result is stored
  // as the plain decimal number with the entry's flags and expiry kept
  // (memcached pads a result shorter than the old value with spaces: see
  // docs/design.md). NotFound when the key is missing, FailedPrecondition
  // when the value is not a number; the value is then unchanged.
  absl::StatusOr<uint64_t> Increment(std::string_view key, uint64_t delta);
  absl::StatusOr<uint64_t> Decrement(std::string_view key, uint64_t delta);

  // Returns the cached value, or calls `loader` once for all concurrent
  // callers of the same missing key and stores its value. A loader error
  // reaches every waiter and is not cached. The loader runs in the calling
  // thread with no lock held; it must not throw.
  absl::StatusOr<std::string> GetOrLoad(std::string_view key, Loader loader,
                                        WriteOptions options = {});

  // Removes every expired entry now; returns how many.
  size_t ReclaimExpired();
  // Removes every entry (reason kCleared).
  void Clear();
  CacheStats Stats() const;
  // O(entries), takes every stripe lock in turn: checks that each stripe's
  // table, LRU list and expiry heap agree, that the charged bytes equal the sum
  // over live entries and that no budget is exceeded. For tests and debugging.
  absl::Status VerifyInvariants() const;

  size_t stripe_count() const { return stripes_.size(); }
  const CacheOptions& options() const { return options_; }

  // The bytes an entry with these key and value sizes is charged (an entry
  // that expires also pays for its place in the expiry heap).
  static size_t ChargeFor(size_t key_size, size_t value_size, bool expires = false);

 private:
  explicit Cache(CacheOptions options, size_t stripe_count);
  absl::Status ValidateKey(std::string_view key) const;
  absl::Status ValidateWrite(std::string_view key, size_t value_size,
                             const WriteOptions& options) const;
  engine_internal::Stripe& StripeFor(uint64_t hash);
  int64_t NowNanos() const;
  int64_t ExpiryFor(const WriteOptions& options, int64_t now_ns) const;
  // Runs the removal listener over `dead`, then frees it. No lock is held.
  bool keep_removed() const { return static_cast<bool>(options_.on_removal); }
  void Bury(engine_internal::Graveyard& dead);
  bool Read(std::string_view key, std::string* value, bool count);
  absl::StatusOr<StoreResult> Store(std::string_view key, std::string_view value,
                                    const WriteOptions& options, engine_internal::StoreMode mode,
                                    uint64_t cas);
  absl::StatusOr<StoreResult> Concatenate(std::string_view key, std::string_view piece,
                                          bool append);
  absl::StatusOr<uint64_t> AddToNumber(std::string_view key, uint64_t delta, bool increment);
  void ReapLoop();

  CacheOptions options_;
  int stripe_shift_;  // 64 - log2(stripes); 64 when there is one stripe
  std::vector<std::unique_ptr<engine_internal::Stripe>> stripes_;
  std::unique_ptr<common_internal::SingleFlight> flights_;
  // Freed large-record blocks kept for reuse (engine/arena.h).
  std::unique_ptr<engine_internal::LargeBlockPool> large_pool_;
  std::atomic<uint64_t> loads_{0};
  std::atomic<uint64_t> load_failures_{0};
  std::atomic<uint64_t> load_waits_{0};
  struct Reaper;
  std::unique_ptr<Reaper> reaper_;
};

}  // namespace tiercache

#endif  // TIERCACHE_CACHE_H_
