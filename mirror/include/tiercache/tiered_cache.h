// tiercache/tiered_cache.h — one cache that many application replicas share.
//
// A `TieredCache` is an in-process L1 (`Cache`) in front of a memcached L2
// (`MemcachedClient`), with a loader for the canonical data source behind
// both. Each replica (process) has its own L1; all share the L2.
//
// Reads: `Get` answers from L1, then L2 (filling L1). `GetOrLoad` adds the
// loader: for a key missing from both tiers exactly one loader call runs
// across all replicas. Inside a process concurrent callers share one flight;
// across processes the flight's leader takes a memcached lease (`mg ... N`):
// the replica that wins it loads and stores, the others poll L2 until the
// value appears. A waiter stops waiting after `lease_wait` and loads itself;
// a winner that dies mid-load holds the lease for at most `lease_ttl`.
//
// Many keys: `GetMany` answers what L1 can and asks L2 for the rest in one
// pipelined round trip per server; `GetOrLoadMany` adds one loader call for
// the keys missing from both tiers, with a lease per key across replicas.
//
// Writes: `Set` writes L1 and replicates to L2 (queued and pipelined in
// `MirrorMode::kAsync`, the default; acknowledged before returning in
// `kSync`). `Delete` removes the L1 copy, lets the writes queued before it
// reach memcached, and deletes synchronously, so after it returns OK no
// replica, this one included, reads the old value from L2.
//
// Coherence: an L1 copy is served without asking L2 for `max_staleness`
// after it was last checked against L2. After that, the next read revalidates
// it by CAS (`mg <key> c`, no value): unchanged, it is served and checked
// again `max_staleness` later; changed, L2's value replaces it; gone, it is
// dropped. So a write or delete that has reached memcached is seen by every
// replica within `max_staleness` plus the revalidation's round trips (one
// when nothing changed, two when something did). docs/tiered.md gives
// the exact guarantee and its limits.
//
// Read-modify-write across replicas goes to L2, the shared truth: `GetItem`
// returns L2's item with its CAS, `CompareAndSwap` stores only if that CAS
// still matches, `Increment`/`Decrement` are memcached's atomic counters.
//
// Outages: every L2 call has a deadline (`l2.op_timeout`). While memcached
// is down L1 keeps serving (stale copies too: their revalidation fails fast
// and is counted in l2_errors), `GetOrLoad` falls back to the loader, writes that cannot be
// replicated are counted in `Stats().mirror` and reported to `on_l2_error`,
// and replication resumes by itself when memcached returns.
//
// Warm-up: with `fallback_servers` (an old pool), an L2 miss reads the old
// pool; a hit fills L1 and is stored in the primary pool with `add` (Get) or
// over this replica's lease stub (GetOrLoad), neither of which overwrites
// newer data there.
//
// Time: staleness, expiry and the waits between lease polls are read from
// `l1.clock` (the real clock by default), so tests drive them with a
// FakeClock; waits for memcached itself (op_timeout, Flush) are real time.
//
// Thread-safe. Bad input (an empty or too-long key, a value over the limits)
// is InvalidArgument naming the limit, and nothing is written to either tier.
// L1 is private: values there carry TieredCache's header; read this
// replica's copy with GetL1Copy and L1's statistics in Stats().l1.

#ifndef TIERCACHE_TIERED_CACHE_H_
#define TIERCACHE_TIERED_CACHE_H_

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/functional/function_ref.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "absl/types/span.h"
#include "tiercache/cache.h"
#include "tiercache/memcached.h"
#include "tiercache/mirror.h"

namespace tiercache {

struct TieredOptions {
  // The L1 of this process. Its `on_removal` sees values as they were
  // written (a copy rewritten after a revalidation shows up as kReplaced);
  // its `max_value_size` bounds the values of every write. Its `clock` also
  // measures max_staleness (the real clock by default: wall time, so a step
  // backwards lengthens a copy's life by the step) and paces the polls of a
  // lease wait (on a FakeClock each poll's wait advances it: waiting for
  // another replica's load takes no real time, and lease_wait runs out on
  // the fake clock).
  CacheOptions l1;
  // The shared L2.
  MemcachedOptions l2;
  // Replication of writes to L2: the mode (kAsync queues and pipelines,
  // kSync waits for memcached), the queue's bounds and batch size; see
  // mirror.h. Its `on_error`, if set, is called besides `on_l2_error`.
  MirrorOptions mirror;
  // An L1 copy is served for this long after it was last checked against L2,
  // then revalidated. ZeroDuration: every read checks L2 (but a hit still
  // transfers no value when nothing changed). InfiniteDuration: never.
  absl::Duration max_staleness = absl::Seconds(1);
  // An old pool, read on L2 misses (warm-up); same key_prefix and timeouts.
  std::vector<std::string> fallback_servers;
  // The lifetime of the lease a loading replica holds in memcached: how long
  // a replica that died mid-load can keep others from winning a new lease.
  // >= 1 s; memcached counts whole seconds, so it is rounded up.
  absl::Duration lease_ttl = absl::Seconds(30);
  // How long a replica waits for another replica's load before it loads
  // itself. Bounds every GetOrLoad's wait (plus its own L2 calls and loader).
  absl::Duration lease_wait = absl::Seconds(2);
  // Called for every L2 failure (a failed read, a write lost or refused).
  // Must not block for long; may run on the mirror's thread.
  std::function<void(std::string_view key, const absl::Status& why)> on_l2_error;
};

// Per call of GetOrLoad.
struct LoadOptions {
  // > 0: early refresh. When a copy due for revalidation has less than this
  // left to live, L2 is asked with `R`: one replica (the one memcached picks)
  // reloads it, while every other caller keeps getting the current value.
  // Whole seconds (memcached's clock), at most 30 days.
  absl::Duration refresh_ahead = absl::ZeroDuration();
};

// The loader of GetOrLoadMany: the values of `keys`, by key. A key it leaves
// out has no value (it is neither cached nor in the result); an error fails
// the whole call.
using BulkLoader = absl::FunctionRef<absl::StatusOr<absl::flat_hash_map<std::string, std::string>>(
    absl::Span<const std::string_view> keys)>;

struct TieredStats {
  CacheStats l1;               // this process's L1 (its hits include revalidated copies)
  MirrorStats mirror;          // replication: failed + dropped writes are what L2 lost
  uint64_t l1_hits = 0;        // reads answered by an L1 copy
  uint64_t l2_hits = 0;        // reads answered by L2 (filling L1)
  uint64_t l2_misses = 0;      // reads L2 could not answer: not there
  uint64_t l2_errors = 0;      // L2 calls that failed (down, timeout, refused)
  uint64_t fallback_hits = 0;  // L2 misses answered by the old pool
  uint64_t revalidations = 0;  // stale L1 copies checked against L2
  uint64_t revalidated_unchanged = 0;
  uint64_t revalidated_changed = 0;  // replaced by L2's newer value
  uint64_t revalidated_gone = 0;     // dropped: deleted or expired in L2
  uint64_t loads = 0;                // loader calls
  uint64_t load_failures = 0;
  uint64_t lease_wins = 0;      // this replica won a lease and loaded
  uint64_t lease_waits = 0;     // waited for another replica's load
  uint64_t lease_timeouts = 0;  // waited lease_wait, then loaded itself
  uint64_t refreshes = 0;       // early refreshes this replica did
  // The L2 pool's servers (the gutter pool after the primaries): up or down,
  // transitions, requests rerouted to the gutter.
  std::vector<ServerStatus> l2_servers;
  // How long L2 requests took, by operation; lease waits included.
  L2Latencies l2_latency;
};

class TieredCache;
namespace mirror_internal {
class L2Tier;  // the L2 as the tiered layer sees it (mirror/tiered/l2_tier.h)
// A TieredCache over any L2 (unit tests pass a fake).
absl::StatusOr<std::unique_ptr<TieredCache>> CreateTieredCache(TieredOptions options,
                                                               std::unique_ptr<L2Tier> l2);
}  // namespace mirror_internal

class TieredCache {
 public:
  // Validates the options (memcached is not contacted: a server that is down
  // now is counted later, not an error here).
  static absl::StatusOr<std::unique_ptr<TieredCache>> Create(TieredOptions options);
  // Sends what is queued for L2 (each batch bounded by op_timeout), then stops.
  ~TieredCache();
  TieredCache(const TieredCache&) = delete;
  TieredCache& operator=(const TieredCache&) = delete;

  // L1, then L2 (then the old pool). nullopt on a miss, on bad input, and
  // when L2 cannot answer and L1 has no copy (counted in l2_errors).
  std::optional<std::string> Get(std::string_view key);

  // L1, then L2, then `loader`; fills both tiers. One loader call per missing
  // key across all replicas (see the top of this file). A loader error
  // reaches every caller waiting for it and is not cached.
  absl::StatusOr<std::string> GetOrLoad(std::string_view key, Loader loader,
                                        WriteOptions options = {}, LoadOptions load = {});

  // The values of `keys` that either tier has, by key: L1 first, then one
  // pipelined L2 round trip per server for the rest (stale L1 copies among
  // them are revalidated by value in that same round trip), then the old
  // pool key by key. Keys neither tier has are absent. When L2 cannot answer,
  // stale copies are served and the rest are absent (counted in l2_errors).
  // InvalidArgument for a bad key, before anything is asked.
  absl::StatusOr<absl::flat_hash_map<std::string, std::string>> GetMany(
      absl::Span<const std::string_view> keys);

  // GetMany, then one `loader` call for the keys missing from both tiers, each
  // loaded once across replicas: the L2 round trip takes a lease per missing
  // key (`mg ... N`). Keys whose lease another replica holds are polled, in
  // one round trip per poll, until their values appear; any still missing
  // after `lease_wait` (or whose holder died) are loaded in a second loader
  // call. Loaded values fill both tiers. A loader error fails the call and
  // releases the leases. Keys the loader does not return are absent.
  absl::StatusOr<absl::flat_hash_map<std::string, std::string>> GetOrLoadMany(
      absl::Span<const std::string_view> keys, BulkLoader loader, WriteOptions options = {});

  // Writes L1 and replicates to L2. kAsync: OK once queued (ResourceExhausted
  // if the queue is full); kSync: OK once memcached stored it (its error
  // otherwise; L1 keeps the value either way).
  absl::Status Set(std::string_view key, std::string_view value, WriteOptions options = {});
  // Removes the key from L1 and L2 and waits until memcached applied the
  // delete. Not an error if the key was absent. On an error (L2 down, a
  // timeout while earlier writes drain) L1's copy is gone but other replicas
  // and L2 may still hold the value: retry the delete.
  absl::Status Delete(std::string_view key);

  // L2's item (value, flags, CAS, expiry), for read-modify-write across
  // replicas (L1 is left alone). nullopt if L2 has no such key. An L2 failure is an
  // error, not a stale L1 answer: a CAS needs L2's current CAS.
  absl::StatusOr<std::optional<Item>> GetItem(std::string_view key);
  // Stores in L2 only if its CAS is still `cas` (from GetItem), then in L1.
  // kExists/kNotFound drop the L1 copy, which is then known to be old.
  absl::StatusOr<StoreResult> CompareAndSwap(std::string_view key, std::string_view value,
                                             uint64_t cas, WriteOptions options = {});
  // memcached's counters, on L2 (NotFound when missing). This replica's L1
  // copy is dropped; the next read fetches the new number.
  absl::StatusOr<uint64_t> Increment(std::string_view key, uint64_t delta);
  absl::StatusOr<uint64_t> Decrement(std::string_view key, uint64_t delta);

  // Waits until every write so far has been acknowledged by L2 (or failed).
  // DeadlineExceeded after `timeout`.
  absl::Status Flush(absl::Duration timeout);

  // Replaces the L2 pool's servers while running (l2.servers; the gutter
  // and fallback pools stay): MemcachedClient::SetServers. Queued
  // replication is placed again, not lost. L1 copies stay, and are
  // revalidated against the new placement after max_staleness as always.
  absl::Status SetServers(const std::vector<std::string>& servers);

  // This replica's L1 copy of `key` (the value as written, without
  // TieredCache's header), fresh or not; L2 is not asked. It is an L1 access
  // like any other: counted in Stats().l1, and it refreshes the entry's rank.
  std::optional<std::string> GetL1Copy(std::string_view key);

  const TieredOptions& options() const;
  // Both tiers' statistics; `l1` is this replica's L1 (its entries' charge
  // includes the 16-byte header).
  TieredStats Stats() const;

  class Impl;

 private:
  friend absl::StatusOr<std::unique_ptr<TieredCache>> mirror_internal::CreateTieredCache(
      TieredOptions options, std::unique_ptr<mirror_internal::L2Tier> l2);
  explicit TieredCache(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace tiercache

#endif  // TIERCACHE_TIERED_CACHE_H_
