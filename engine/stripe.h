// One stripe: a complete single-lock LRU cache with per-entry expiry.
//
// The striped `Cache` is a thin router over N of these. Every public method
// takes the lock; `...Locked` helpers assume it. Hashes are computed once by
// the caller and passed in: the stripe's hash table uses the low bits, the
// router used the high bits to pick the stripe.
//
// Three structures per stripe, all holding the same linked entries (see the
// lifecycle in entry.h):
//   - `table_`: tsl::robin_set<Entry*>, found by key (transparent lookup);
//   - `lru_`: a circular list through a sentinel, most recent first;
//   - `expiry_heap_`: a binary min-heap by expiry of the entries that expire,
//     each entry knowing its index, so removal is O(log n) and the earliest
//     expiry is O(1). Writes pop a few expired entries, and before evicting a
//     live entry the stripe reclaims any expired one, so dead entries never
//     push out live ones.

#ifndef TIERCACHE_ENGINE_STRIPE_H_
#define TIERCACHE_ENGINE_STRIPE_H_

#include <cstddef>
#include <cstdint>
#include <string_view>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/hash/hash.h"
#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "entry.h"
#include "spin_lock.h"
#include "tiercache/cache.h"
#include "tiercache/clock.h"
#include "tsl/robin_set.h"

namespace tiercache::engine_internal {

inline uint64_t HashKey(std::string_view key) {
  return absl::Hash<absl::string_view>{}(absl::string_view(key.data(), key.size()));
}

inline int64_t NowNanos(const Clock& clock) { return absl::ToUnixNanos(clock.Now()); }

struct EntryHash {
  using is_transparent = void;
  size_t operator()(const Entry* e) const { return HashKey(e->key()); }
  size_t operator()(std::string_view key) const { return HashKey(key); }
};

struct EntryKeyEqual {
  using is_transparent = void;
  bool operator()(const Entry* a, const Entry* b) const { return a == b; }
  bool operator()(const Entry* a, std::string_view b) const { return a->key() == b; }
  bool operator()(std::string_view a, const Entry* b) const { return a == b->key(); }
};

using EntryTable = tsl::robin_set<Entry*, EntryHash, EntryKeyEqual>;

// Robin hood hashing stays fast at high load; 0.8 keeps the table's share of
// each entry small. With power-of-two growth the load is in (0.4, 0.8], so an
// entry's mean share of the table is one bucket / 0.6.
inline constexpr float kMaxLoadFactor = 0.8f;
inline constexpr size_t kBucketBytes = sizeof(tsl::detail_robin_hash::bucket_entry<Entry*, false>);
inline constexpr size_t kTableShareBytes = (kBucketBytes * 5 + 2) / 3;

inline size_t Charge(size_t key_size, size_t value_size) {
  return AllocatedBytes(sizeof(Entry) + key_size + value_size) + kTableShareBytes;
}
inline size_t Charge(const Entry& e) { return Charge(e.key_size, e.value_size); }

enum class StoreMode : int { kSet, kAdd, kReplace, kCompareAndSwap };

struct StripeStats {
  uint64_t hits = 0, misses = 0, sets = 0, evictions = 0, expirations = 0;
  uint64_t items = 0, bytes = 0;
};

class alignas(64) Stripe {
 public:
  Stripe(size_t max_bytes, size_t max_items, const Clock* clock);
  ~Stripe();  // REQUIRES: Clear() was called (the Cache owns the listener)
  Stripe(const Stripe&) = delete;
  Stripe& operator=(const Stripe&) = delete;

  size_t max_bytes() const { return max_bytes_; }

  // Finds a live entry, makes it the most recent and calls `read(entry)` under
  // the lock. Returns false on a miss. An expired entry found on the way is
  // moved to `dead`.
  template <typename ReadFn>
  bool Read(std::string_view key, uint64_t hash, ReadFn&& read, Graveyard* dead);

  // Links `fresh` (key, value, flags and expiry filled in) according to
  // `mode`. On kStored the stripe owns `fresh`; otherwise the caller does.
  StoreResult Store(Entry* fresh, uint64_t hash, StoreMode mode, uint64_t expected_cas,
                    int64_t now_ns, Graveyard* dead);

  // Replaces the live entry for `key` with `mutate(old)`, which allocates the
  // new entry (the stripe copies expiry and flags) or returns an error.
  // NotFound when the key is missing.
  template <typename MutateFn>
  absl::Status Mutate(std::string_view key, uint64_t hash, int64_t now_ns, MutateFn&& mutate,
                      Graveyard* dead);

  bool Delete(std::string_view key, uint64_t hash, int64_t now_ns, Graveyard* dead);
  bool Touch(std::string_view key, uint64_t hash, int64_t now_ns, int64_t expiry_ns,
             Graveyard* dead);
  size_t ReclaimExpired(int64_t now_ns, Graveyard* dead);
  void Clear(Graveyard* dead);
  StripeStats Stats() const;
  // O(n): every structure agrees and the budget holds. For tests.
  absl::Status VerifyInvariants(int64_t now_ns) const;

 private:
  // Writes reclaim up to this many expired entries even when there is room, so
  // an idle-but-written cache returns dead memory without a reaper.
  static constexpr int kExpiredTrimPerWrite = 2;

  // Finds a live entry; an expired one is unlinked (kExpired) and missed.
  Entry* FindLiveLocked(std::string_view key, uint64_t hash, int64_t now_ns, Graveyard* dead)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(lock_);
  void LinkLocked(Entry* e) ABSL_EXCLUSIVE_LOCKS_REQUIRED(lock_);
  // Puts `fresh` in `old`'s place in every structure; `old` goes to `dead`.
  void ReplaceLocked(Entry* old, Entry* fresh, uint64_t hash, Graveyard* dead)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(lock_);
  // Takes `e` out of every structure and into `dead`.
  void UnlinkLocked(Entry* e, RemovalReason reason, Graveyard* dead)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(lock_);
  // As UnlinkLocked, but leaves the table alone (the caller has fixed it).
  void DetachLocked(Entry* e, RemovalReason reason, Graveyard* dead)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(lock_);
  void MakeMostRecentLocked(Entry* e) ABSL_EXCLUSIVE_LOCKS_REQUIRED(lock_);
  bool OverBudgetLocked() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(lock_);
  void EnforceBudgetLocked(int64_t now_ns, Graveyard* dead) ABSL_EXCLUSIVE_LOCKS_REQUIRED(lock_);
  bool EarliestExpiredLocked(int64_t now_ns) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(lock_);

  void HeapPushLocked(Entry* e) ABSL_EXCLUSIVE_LOCKS_REQUIRED(lock_);
  void HeapRemoveLocked(Entry* e) ABSL_EXCLUSIVE_LOCKS_REQUIRED(lock_);
  void HeapFixLocked(size_t index) ABSL_EXCLUSIVE_LOCKS_REQUIRED(lock_);
  bool HeapSiftUpLocked(size_t index) ABSL_EXCLUSIVE_LOCKS_REQUIRED(lock_);
  void HeapSiftDownLocked(size_t index) ABSL_EXCLUSIVE_LOCKS_REQUIRED(lock_);
  void HeapPlaceLocked(size_t index, Entry* e) ABSL_EXCLUSIVE_LOCKS_REQUIRED(lock_);

  const size_t max_bytes_;
  const size_t max_items_;  // 0: unbounded
  const Clock* const clock_;

  mutable SpinLock lock_;
  EntryTable table_ ABSL_GUARDED_BY(lock_);
  ListNode lru_ ABSL_GUARDED_BY(lock_);  // lru_.next: most recent; lru_.prev: least
  std::vector<Entry*> expiry_heap_ ABSL_GUARDED_BY(lock_);
  uint64_t last_cas_ ABSL_GUARDED_BY(lock_) = 0;
  StripeStats stats_ ABSL_GUARDED_BY(lock_);
};

template <typename ReadFn>
bool Stripe::Read(std::string_view key, uint64_t hash, ReadFn&& read, Graveyard* dead) {
  SpinLockHolder hold(&lock_);
  auto it = table_.find(key, hash);
  if (it == table_.end()) {
    ++stats_.misses;
    return false;
  }
  Entry* e = *it;
  // Only entries that expire need the time: reading the clock is the
  // costliest step of a hit on an entry without a TTL.
  if (e->expiry_ns != kNever && e->Expired(NowNanos(*clock_))) {
    UnlinkLocked(e, RemovalReason::kExpired, dead);
    ++stats_.misses;
    return false;
  }
  MakeMostRecentLocked(e);
  ++stats_.hits;
  read(static_cast<const Entry&>(*e));
  return true;
}

template <typename MutateFn>
absl::Status Stripe::Mutate(std::string_view key, uint64_t hash, int64_t now_ns,
                            MutateFn&& mutate, Graveyard* dead) {
  SpinLockHolder hold(&lock_);
  Entry* old = FindLiveLocked(key, hash, now_ns, dead);
  if (old == nullptr) return absl::NotFoundError("key not found");
  auto fresh = mutate(static_cast<const Entry&>(*old));
  if (!fresh.ok()) return fresh.status();
  Entry* e = *fresh;
  e->flags = old->flags;
  e->expiry_ns = old->expiry_ns;
  ReplaceLocked(old, e, hash, dead);
  ++stats_.sets;
  EnforceBudgetLocked(now_ns, dead);
  return absl::OkStatus();
}

}  // namespace tiercache::engine_internal

#endif  // TIERCACHE_ENGINE_STRIPE_H_
