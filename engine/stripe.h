// One stripe: a complete single-lock cache (LRU or W-TinyLFU) with per-entry
// expiry.
//
// The striped `Cache` is a thin router over N of these. Every public method
// takes the lock; `...Locked` helpers assume it. Hashes are computed once by
// the caller and passed in: the stripe's hash table uses the low bits, the
// router used the high bits to pick the stripe.
//
// Per stripe, holding the same linked records (lifecycle in entry.h):
//   - `arena_`: the records themselves, addressed by 32-bit refs (arena.h);
//   - `table_`: tsl::robin_set<Ref>, found by key (transparent lookup);
//   - the LRU list: a circular list through the sentinel record at ref 0,
//     most recent first, linked by the refs in each record's header. With
//     EvictionPolicy::kTinyLfu that list is W-TinyLFU's admission window,
//     and two more lists with their own sentinels hold the main region
//     (probation and protected): see "W-TinyLFU" below;
//   - `expiry_heap_`: a lazy min-heap of (expiry, ref) for records that
//     expire. Writes pop a few expired records, and before evicting a live
//     record the stripe reclaims any expired one, so dead entries never push
//     out live ones.

#ifndef TIERCACHE_ENGINE_STRIPE_H_
#define TIERCACHE_ENGINE_STRIPE_H_

#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <new>
#include <random>
#include <string>
#include <string_view>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/hash/hash.h"
#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "arena.h"
#include "entry.h"
#include "frequency_sketch.h"
#include "hill_climber.h"
#include "spin_lock.h"
#include "tiercache/cache.h"
#include "tiercache/clock.h"
#include "tsl/robin_set.h"

namespace tiercache::engine_internal {

inline uint64_t HashKey(std::string_view key) {
  return absl::Hash<absl::string_view>{}(absl::string_view(key.data(), key.size()));
}

inline int64_t NowNanos(const Clock& clock) { return absl::ToUnixNanos(clock.Now()); }

// The key's hash for W-TinyLFU's sketch: the same in every run (absl::Hash
// is seeded per process), so a fixed policy_seed replays exactly; the sketch
// mixes in its own seed.
inline uint64_t SketchHash(std::string_view key) { return std::hash<std::string_view>{}(key); }

// The table stores refs; its hash and equality look through the arena.
struct RefHash {
  using is_transparent = void;
  const Arena* arena;
  size_t operator()(Ref ref) const {
    return HashKey(reinterpret_cast<const Entry*>(arena->Ptr(ref))->key());
  }
  size_t operator()(std::string_view key) const { return HashKey(key); }
};

struct RefKeyEqual {
  using is_transparent = void;
  const Arena* arena;
  std::string_view KeyOf(Ref ref) const {
    return reinterpret_cast<const Entry*>(arena->Ptr(ref))->key();
  }
  bool operator()(Ref a, Ref b) const { return a == b; }
  bool operator()(Ref a, std::string_view b) const { return KeyOf(a) == b; }
  bool operator()(std::string_view a, Ref b) const { return a == KeyOf(b); }
};

// Where a stripe's table announces its bucket array, so that a reader can
// start fetching its bucket before it has the lock (the lock's cache line and
// the bucket then arrive together instead of one after the other). Read
// without the lock, hence atomics; a stale pair only makes a useless prefetch,
// which cannot fault.
struct BucketArray {
  std::atomic<const char*> base{nullptr};
  std::atomic<size_t> count{0};
};

// The allocator of a stripe's table: publishes each bucket array it hands
// out, and maps large ones from the system. A table's arrays come and go as
// it grows and shrinks; from malloc, the freed ones stayed in glibc's heap
// (8 MiB of RSS over reserved_bytes in bench/memory_drift, a 64 MiB cache,
// even after Clear()). Mapped, they go back when freed.
template <typename T>
class PublishingAllocator {
 public:
  using value_type = T;
  explicit PublishingAllocator(BucketArray* published) : published_(published) {}
  template <typename U>
  PublishingAllocator(const PublishingAllocator<U>& other) : published_(other.published()) {}

  T* allocate(size_t n) {
    T* p;
    if (n * sizeof(T) >= kMapAtLeast) {
      const LargeBlock block = AllocateLargeBlock(n * sizeof(T));
      if (block.mapped_bytes == 0) {  // malloc's fallback: deallocate could not tell
        ReleaseLargeBlock(block);
        throw std::bad_alloc();
      }
      p = static_cast<T*>(block.ptr);
    } else {
      p = std::allocator<T>().allocate(n);
    }
    published_->base.store(reinterpret_cast<const char*>(p), std::memory_order_relaxed);
    published_->count.store(n, std::memory_order_relaxed);
    return p;
  }
  void deallocate(T* p, size_t n) {
    if (n * sizeof(T) >= kMapAtLeast) {
      ReleaseLargeBlock(LargeBlock{p, RoundUpToOsPage(n * sizeof(T))});
    } else {
      std::allocator<T>().deallocate(p, n);
    }
  }
  BucketArray* published() const { return published_; }
  static constexpr size_t kMapAtLeast = 64 * 1024;
  friend bool operator==(const PublishingAllocator& a, const PublishingAllocator& b) {
    return a.published_ == b.published_;
  }

 private:
  BucketArray* published_;
};

using RefTable = tsl::robin_set<Ref, RefHash, RefKeyEqual, PublishingAllocator<Ref>>;

// Robin hood hashing stays fast at high load; 0.8 keeps the table's share of
// each entry small. With power-of-two growth the load is in (0.4, 0.8], so an
// entry's mean share of the table is one bucket / 0.6.
inline constexpr float kMaxLoadFactor = 0.8f;
// And when entries leave (large values replacing small ones, say), the table
// shrinks on the next insert once its load is under 0.25: it never holds more
// than ~2.5x the buckets its entries were charged for, and a shrink brings the
// load back into (0.4, 0.8].
inline constexpr float kMinLoadFactor = 0.25f;
inline constexpr size_t kBucketBytes = sizeof(tsl::detail_robin_hash::bucket_entry<Ref, false>);
inline constexpr size_t kTableShareBytes = (kBucketBytes * 5 + 2) / 3;
// An expiring entry's heap element, plus as much again for the stale elements
// the lazy heap may hold (it is rebuilt when they outnumber live ones).
inline constexpr size_t kExpiryShareBytes = 2 * 16;

inline size_t Charge(size_t key_size, size_t value_size, bool expires) {
  return RecordBytes(RecordSize(key_size, value_size)) + kTableShareBytes +
         (expires ? kExpiryShareBytes : 0);
}
inline size_t Charge(const Entry& e) { return Charge(e.key_size(), e.value_size, e.expires()); }

enum class StoreMode : int { kSet, kAdd, kReplace, kCompareAndSwap };

struct StripeStats {
  uint64_t hits = 0, misses = 0, sets = 0, evictions = 0, expirations = 0;
  uint64_t items = 0, bytes = 0, reserved_bytes = 0, compacted = 0;
};

class alignas(64) Stripe {
 public:
  // `seed`: kTinyLfu's sketch hashing and admission randomness.
  Stripe(size_t max_bytes, size_t max_items, const Clock* clock,
         EvictionPolicy policy = EvictionPolicy::kLru, uint64_t seed = 1);
  ~Stripe();
  Stripe(const Stripe&) = delete;
  Stripe& operator=(const Stripe&) = delete;

  size_t max_bytes() const { return max_bytes_; }

  // Finds a live entry, makes it the most recent and calls `read(entry)` under
  // the lock. Returns false on a miss. An expired entry found on the way is
  // unlinked into `dead`. `count` false: a re-check that is not a request.
  template <typename ReadFn>
  bool Read(std::string_view key, uint64_t hash, ReadFn&& read, Graveyard* dead, bool count = true);

  // Stores `record` according to `mode`. If the result is not kStored, a
  // `record.large_block` stays the caller's to free.
  StoreResult Store(const NewRecord& record, uint64_t hash, StoreMode mode, uint64_t expected_cas,
                    int64_t now_ns, Graveyard* dead);

  // Replaces the live entry for `key` by one whose value `mutate(old, &value)`
  // computes; flags and expiry are kept. NotFound when the key is missing;
  // mutate's error leaves the entry as it was.
  template <typename MutateFn>
  absl::Status Mutate(std::string_view key, uint64_t hash, int64_t now_ns, MutateFn&& mutate,
                      Graveyard* dead);

  // `cas` 0: whatever the entry's CAS; otherwise only if it is still `cas`.
  bool Delete(std::string_view key, uint64_t hash, int64_t now_ns, uint64_t cas, Graveyard* dead);
  bool Touch(std::string_view key, uint64_t hash, int64_t now_ns, int64_t expiry_ns,
             Graveyard* dead);
  size_t ReclaimExpired(int64_t now_ns, Graveyard* dead);
  void Clear(Graveyard* dead);
  StripeStats Stats() const;
  // O(n): every structure agrees and the budget holds. For tests.
  absl::Status VerifyInvariants() const;

 private:
  // Writes reclaim up to this many expired entries even when there is room, so
  // an idle-but-written cache returns dead memory without a reaper.
  static constexpr int kExpiredTrimPerWrite = 2;
  static constexpr Ref kSentinel = 0;

  struct HeapElement {
    int64_t expiry_ns;
    Ref ref;
  };

  void PrefetchBucket(uint64_t hash) const {
    const size_t count = buckets_.count.load(std::memory_order_relaxed);
    const char* base = buckets_.base.load(std::memory_order_relaxed);
    if (count != 0) __builtin_prefetch(base + (hash & (count - 1)) * kBucketBytes);
  }
  Entry* At(Ref ref) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(lock_) {
    return reinterpret_cast<Entry*>(arena_.Ptr(ref));
  }
  void ResetSentinelLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(lock_);
  // The live entry for `key`, or 0; an expired one is unlinked (kExpired).
  Ref FindLiveLocked(std::string_view key, uint64_t hash, int64_t now_ns, Graveyard* dead)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(lock_);
  // Allocates and fills a record for `record` (or adopts its large block).
  Ref MaterializeLocked(const NewRecord& record) ABSL_EXCLUSIVE_LOCKS_REQUIRED(lock_);
  // Assigns a CAS, puts `ref` on a list right after `after` (the front of
  // the LRU list / window by default) and in the heap.
  void LinkLocked(Ref ref, Ref after = kSentinel) ABSL_EXCLUSIVE_LOCKS_REQUIRED(lock_);
  // Puts `fresh` in `old`'s place in every structure; `old` goes to `dead`.
  void ReplaceLocked(Ref old, Ref fresh, uint64_t hash, Graveyard* dead)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(lock_);
  // Takes `ref` out of every structure, into `dead`, and frees it.
  void UnlinkLocked(Ref ref, RemovalReason reason, Graveyard* dead)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(lock_);
  // As UnlinkLocked, but leaves the table alone (the caller has fixed it).
  void DetachLocked(Ref ref, RemovalReason reason, Graveyard* dead)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(lock_);
  void MakeMostRecentLocked(Ref ref) ABSL_EXCLUSIVE_LOCKS_REQUIRED(lock_);
  // A hit's move to the front of the LRU list is deferred into `accesses_`
  // and applied in order, in batches, before anything else reads or changes
  // the list. The order that results is exactly the one immediate moves would
  // give, so eviction stays exact LRU; but a batch can fetch the neighbours of
  // all its entries at once instead of taking two cache misses per hit in
  // turn (relinking was ~8% of a hit at 2 threads, bench/engine_bench).
  // kTinyLfu defers the hit's count in the sketch the same way (every hit is
  // recorded, even of the most recent entry): the batch hashes its keys and
  // fetches their sketch blocks together, and since every write drains the
  // batch before it reads the sketch, admission sees exactly the counts
  // immediate increments would give.
  void RecordAccessLocked(Ref ref) ABSL_EXCLUSIVE_LOCKS_REQUIRED(lock_);
  void DrainAccessesLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(lock_);
  bool OverBudgetLocked() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(lock_);
  // Evicts until the budget holds, then compacts in proportion to
  // `written_bytes`, the size of the record the call wrote.
  void EnforceBudgetLocked(int64_t now_ns, Graveyard* dead, size_t written_bytes = 0)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(lock_);

  // Compaction (issue 11). When the arena's pages hold more free bytes than
  // kCompactionSlack allows, live records are moved out of the sparsest page
  // (Arena::BeginEvacuation) so that it can be unmapped: at most
  // `budget_bytes` of records per call, so a call's pause is bounded by what
  // it wrote, never by the cache's size. A move keeps everything but the
  // record's address: key, value, flags, CAS, expiry, list position and
  // segment (the table's ref and the neighbours' links are repointed, and the
  // expiry heap gets an element for the new address; the old one goes stale).
  // The access batch must be empty (writes drain it first).
  void CompactLocked(size_t budget_bytes) ABSL_EXCLUSIVE_LOCKS_REQUIRED(lock_);
  // Moves one record; returns its size.
  size_t MoveRecordLocked(Ref ref) ABSL_EXCLUSIVE_LOCKS_REQUIRED(lock_);
  // Free bytes in pages that are left alone: 1/32 of the budget, and at
  // least two pages (one being carved, one being evacuated).
  size_t CompactionSlack() const { return std::max(max_bytes_ / 32, 2 * kPageBytes); }

  // List primitives, for any of the lists.
  void InsertAfterLocked(Ref after, Ref ref) ABSL_EXCLUSIVE_LOCKS_REQUIRED(lock_);
  void RemoveFromListLocked(Ref ref) ABSL_EXCLUSIVE_LOCKS_REQUIRED(lock_);
  // Calls fn(ref) for every linked record, on every list.
  template <typename Fn>
  void ForEachLinkedLocked(Fn&& fn) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(lock_);

  // W-TinyLFU. (Re)creates the main region's sentinels and resets the
  // window's target, the sketch and the climber (construction, Clear).
  void ResetPolicyLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(lock_);
  // What an entry weighs in the regions' sizes, in bytes: its charge, but at
  // least an item's share of the byte budget (item_weight_) when the stripe
  // has an item bound too. So the regions are measured by whichever bound
  // binds: by items when entries are small (each weighs the same), by bytes
  // when they are large, entry by entry when sizes are mixed. Capacity() is
  // in the same unit. The climber counts in ClimberUnit()s: whole items when
  // there is an item bound, else bytes.
  size_t WeightOf(const Entry& e) const { return std::max(Charge(e), item_weight_); }
  size_t Capacity() const { return max_items_ != 0 ? max_items_ * item_weight_ : max_bytes_; }
  size_t ClimberUnit() const { return max_items_ != 0 ? item_weight_ : 1; }
  size_t ProtectedMaxLocked() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(lock_) {
    return (Capacity() - window_target_) * 4 / 5;
  }
  // A hit (or an update): window -> its front; probation -> protected (whose
  // oldest then go back to probation while it is over its share);
  // protected -> its front.
  void OnAccessLocked(Ref ref) ABSL_EXCLUSIVE_LOCKS_REQUIRED(lock_);
  // Moves protected's oldest back to probation while protected is over its
  // share, stopping at `keep` (an entry just promoted).
  void DemoteProtectedLocked(Ref keep) ABSL_EXCLUSIVE_LOCKS_REQUIRED(lock_);
  // Counts a request for the key in the sketch (and grows the sketch with
  // the stripe, when bounded by bytes).
  void CountRequestLocked(uint64_t hash) ABSL_EXCLUSIVE_LOCKS_REQUIRED(lock_);
  // Moves the window's overflow to probation and evicts, by admission, until
  // the budget holds (expired entries went first).
  void EvictTinyLfuLocked(Graveyard* dead) ABSL_EXCLUSIVE_LOCKS_REQUIRED(lock_);
  // TinyLFU's verdict: keep `candidate` (and evict `victim`)?
  bool AdmitLocked(Ref candidate, Ref victim) ABSL_EXCLUSIVE_LOCKS_REQUIRED(lock_);

  // Expiry heap.
  void HeapPushLocked(Ref ref) ABSL_EXCLUSIVE_LOCKS_REQUIRED(lock_);
  // Drops stale elements from the top; returns the ref of a linked record
  // that has expired by `now_ns`, or 0.
  Ref EarliestExpiredLocked(int64_t now_ns) ABSL_EXCLUSIVE_LOCKS_REQUIRED(lock_);
  // True if `element` still describes a linked record.
  bool IsCurrentLocked(const HeapElement& element) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(lock_);
  void RebuildHeapLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(lock_);

  // First cache line: everything a hit writes. Under Zipf reads two threads
  // keep taking the same hot stripes, and each line a hit writes moves between
  // their cores. Keeping them to this one line (with the deferred LRU moves
  // above, which keep the sentinel out of it) took Get hits at 2 threads from
  // 2.2M/s to 3.5M/s, against 4.0M/s for a bare robin_map (bench/README.md).
  mutable SpinLock lock_;
  uint32_t access_count_ ABSL_GUARDED_BY(lock_) = 0;
  static constexpr size_t kAccessBatch = 8;
  std::array<Ref, kAccessBatch> accesses_ ABSL_GUARDED_BY(lock_);
  uint64_t hits_ ABSL_GUARDED_BY(lock_) = 0;
  uint64_t misses_ ABSL_GUARDED_BY(lock_) = 0;
  // The policy, read by every hit: in this line, so that a hit touches no
  // other line of the stripe header. (kTinyLfu's sketch blocks and addition
  // count are written once per batch of hits, when it is drained; the climber
  // reads hits_ and misses_.)
  const bool tiny_lfu_;

  // Read by every operation, written by writes.
  alignas(64) BucketArray buckets_;
  const size_t max_bytes_;
  const size_t max_items_;    // 0: unbounded
  const size_t item_weight_;  // max_bytes_ / max_items_, rounded up; 0 without an item bound
  const Clock* const clock_;
  Arena arena_ ABSL_GUARDED_BY(lock_);
  RefTable table_ ABSL_GUARDED_BY(lock_);
  std::vector<HeapElement> expiry_heap_ ABSL_GUARDED_BY(lock_);
  size_t expiring_ ABSL_GUARDED_BY(lock_) = 0;  // linked records that expire
  uint64_t last_cas_ ABSL_GUARDED_BY(lock_) = 0;
  StripeStats stats_ ABSL_GUARDED_BY(lock_);  // but hits and misses

  // W-TinyLFU (EvictionPolicy::kTinyLfu). New records enter the window (the
  // list at kSentinel); the window's oldest move to probation, where each is
  // a candidate: while the stripe is over budget, a candidate and
  // probation's oldest (the victim; then protected's, then the window's) are
  // compared by the sketch's frequency, and the less frequent one is evicted
  // (a candidate with frequency > 5 is admitted at random 1 time in 128
  // anyway, so a flood of collisions cannot keep new keys out for good). A
  // hit in probation promotes to protected, which holds at most 80% of the
  // main region; its overflow goes back to probation. The climber moves the
  // window's target size by the sampled hit ratio.
  // Invariants: a linked record is on the list its segment() names (all on
  // kSentinel's for kLru); window_weight_ and protected_weight_ are the sums
  // of WeightOf over those lists; window_target_ <= Capacity().
  // Regions are measured by WeightOf: in whichever bound binds.
  Ref probation_ ABSL_GUARDED_BY(lock_) = kSentinel;  // sentinel of probation
  Ref protected_ ABSL_GUARDED_BY(lock_) = kSentinel;  // sentinel of protected
  size_t window_weight_ ABSL_GUARDED_BY(lock_) = 0;
  size_t protected_weight_ ABSL_GUARDED_BY(lock_) = 0;
  size_t window_target_ ABSL_GUARDED_BY(lock_) = 0;
  FrequencySketch sketch_ ABSL_GUARDED_BY(lock_);
  HillClimber climber_ ABSL_GUARDED_BY(lock_);
  bool climber_started_ ABSL_GUARDED_BY(lock_) = false;  // see ResetPolicyLocked
  std::minstd_rand admission_random_ ABSL_GUARDED_BY(lock_);
};

template <typename ReadFn>
bool Stripe::Read(std::string_view key, uint64_t hash, ReadFn&& read, Graveyard* dead, bool count) {
  PrefetchBucket(hash);
  SpinLockHolder hold(&lock_);
  auto it = table_.find(key, hash);
  if (it == table_.end()) {
    if (count) ++misses_;
    return false;
  }
  const Ref ref = *it;
  Entry* e = At(ref);
  // Only entries that expire need the time: reading the clock is the
  // costliest step of a hit on an entry without a TTL.
  if (e->expires() && e->Expired(NowNanos(*clock_))) {
    DrainAccessesLocked();
    UnlinkLocked(ref, RemovalReason::kExpired, dead);
    if (count) ++misses_;
    return false;
  }
  read(static_cast<const Entry&>(*e));
  if (count) {
    ++hits_;
    RecordAccessLocked(ref);
  } else if (tiny_lfu_) {
    // Not a request: the entry moves, but the sketch does not count it.
    DrainAccessesLocked();
    OnAccessLocked(ref);
  } else {
    RecordAccessLocked(ref);
  }
  return true;
}

template <typename MutateFn>
absl::Status Stripe::Mutate(std::string_view key, uint64_t hash, int64_t now_ns, MutateFn&& mutate,
                            Graveyard* dead) {
  SpinLockHolder hold(&lock_);
  DrainAccessesLocked();
  const Ref old = FindLiveLocked(key, hash, now_ns, dead);
  if (old == kSentinel) return absl::NotFoundError("key not found");
  std::string value;
  const Entry* e = At(old);
  if (absl::Status s = mutate(*e, &value); !s.ok()) return s;
  NewRecord record{key, value, e->flags, e->expiry_ns, {}};
  // The key bytes live in the old record, and so may `key`: build first.
  const Ref fresh = MaterializeLocked(record);
  if (tiny_lfu_) CountRequestLocked(SketchHash(key));
  ReplaceLocked(old, fresh, hash, dead);
  ++stats_.sets;
  EnforceBudgetLocked(now_ns, dead, RecordSize(key.size(), value.size()));
  return absl::OkStatus();
}

template <typename Fn>
void Stripe::ForEachLinkedLocked(Fn&& fn) const {
  for (const Ref sentinel : {kSentinel, probation_, protected_}) {
    for (Ref ref = At(sentinel)->next; ref != sentinel; ref = At(ref)->next) fn(ref);
    if (!tiny_lfu_) break;
  }
}

}  // namespace tiercache::engine_internal

#endif  // TIERCACHE_ENGINE_STRIPE_H_
