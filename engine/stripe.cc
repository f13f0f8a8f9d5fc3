#include "stripe.h"

#include <algorithm>
#include <utility>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_format.h"

namespace tiercache::engine_internal {
namespace {

// std::push_heap and friends build max-heaps: "later" puts the earliest on top.
bool Later(const auto& a, const auto& b) { return a.expiry_ns > b.expiry_ns; }

}  // namespace

Stripe::Stripe(size_t max_bytes, size_t max_items, const Clock* clock)
    : max_bytes_(max_bytes),
      max_items_(max_items),
      clock_(clock),
      arena_(max_bytes),
      table_(0, RefHash{&arena_}, RefKeyEqual{&arena_}, PublishingAllocator<Ref>(&buckets_)) {
  SpinLockHolder hold(&lock_);
  table_.max_load_factor(kMaxLoadFactor);
  ResetSentinelLocked();
}

Stripe::~Stripe() = default;

void Stripe::ResetSentinelLocked() {
  Entry* sentinel = new (arena_.Ptr(kSentinel)) Entry;
  sentinel->prev = sentinel->next = kSentinel;
  sentinel->expiry_ns = kNever;
  sentinel->cas_and_key_size = 0;
  sentinel->flags = 0;
  sentinel->value_size = 0;
}

Ref Stripe::FindLiveLocked(std::string_view key, uint64_t hash, int64_t now_ns, Graveyard* dead) {
  auto it = table_.find(key, hash);
  if (it == table_.end()) return kSentinel;
  const Ref ref = *it;
  if (At(ref)->Expired(now_ns)) {
    UnlinkLocked(ref, RemovalReason::kExpired, dead);
    return kSentinel;
  }
  return ref;
}

Ref Stripe::MaterializeLocked(const NewRecord& record) {
  const size_t size = RecordSize(record.key.size(), record.value.size());
  if (record.large_block != nullptr) return arena_.AdoptLarge(record.large_block, size);
  const Ref ref = arena_.Allocate(size);
  WriteRecord(arena_.Ptr(ref), record);
  return ref;
}

StoreResult Stripe::Store(const NewRecord& record, uint64_t hash, StoreMode mode,
                          uint64_t expected_cas, int64_t now_ns, Graveyard* dead) {
  PrefetchBucket(hash);
  SpinLockHolder hold(&lock_);
  DrainAccessesLocked();
  const Ref old = FindLiveLocked(record.key, hash, now_ns, dead);
  switch (mode) {
    case StoreMode::kSet:
      break;
    case StoreMode::kAdd:
      if (old != kSentinel) return StoreResult::kNotStored;
      break;
    case StoreMode::kReplace:
      if (old == kSentinel) return StoreResult::kNotStored;
      break;
    case StoreMode::kCompareAndSwap:
      if (old == kSentinel) return StoreResult::kNotFound;
      if (At(old)->cas() != expected_cas) return StoreResult::kExists;
      break;
  }
  const Ref fresh = MaterializeLocked(record);
  if (old != kSentinel) {
    ReplaceLocked(old, fresh, hash, dead);
  } else {
    table_.insert(fresh);
    LinkLocked(fresh);
  }
  ++stats_.sets;
  EnforceBudgetLocked(now_ns, dead);
  return StoreResult::kStored;
}

bool Stripe::Delete(std::string_view key, uint64_t hash, int64_t now_ns, uint64_t cas,
                    Graveyard* dead) {
  SpinLockHolder hold(&lock_);
  DrainAccessesLocked();
  const Ref ref = FindLiveLocked(key, hash, now_ns, dead);
  if (ref == kSentinel) return false;
  if (cas != 0 && At(ref)->cas() != cas) return false;
  UnlinkLocked(ref, RemovalReason::kDeleted, dead);
  return true;
}

bool Stripe::Touch(std::string_view key, uint64_t hash, int64_t now_ns, int64_t expiry_ns,
                   Graveyard* dead) {
  SpinLockHolder hold(&lock_);
  DrainAccessesLocked();
  const Ref ref = FindLiveLocked(key, hash, now_ns, dead);
  if (ref == kSentinel) return false;
  Entry* e = At(ref);
  // The charge depends on whether the entry expires; the old heap element
  // goes stale by itself (its expiry no longer matches).
  stats_.bytes -= Charge(*e);
  if (e->expires()) --expiring_;
  e->expiry_ns = expiry_ns;
  stats_.bytes += Charge(*e);
  if (e->expires()) {
    ++expiring_;
    HeapPushLocked(ref);
  }
  MakeMostRecentLocked(ref);
  EnforceBudgetLocked(now_ns, dead);
  return true;
}

size_t Stripe::ReclaimExpired(int64_t now_ns, Graveyard* dead) {
  SpinLockHolder hold(&lock_);
  DrainAccessesLocked();
  size_t reclaimed = 0;
  for (Ref ref; (ref = EarliestExpiredLocked(now_ns)) != kSentinel; ++reclaimed) {
    UnlinkLocked(ref, RemovalReason::kExpired, dead);
  }
  return reclaimed;
}

void Stripe::Clear(Graveyard* dead) {
  SpinLockHolder hold(&lock_);
  DrainAccessesLocked();
  if (dead->keep_contents) {
    dead->removed.reserve(dead->removed.size() + table_.size());
    for (Ref ref : table_) {
      const Entry* e = At(ref);
      dead->removed.push_back({RemovalReason::kCleared, e->flags, e->key_size(),
                               std::string(e->key_data(), e->key_size() + e->value_size)});
    }
  }
  table_.clear();
  expiry_heap_.clear();
  expiring_ = 0;
  arena_.Reset();
  ResetSentinelLocked();
  stats_.items = 0;
  stats_.bytes = 0;
}

StripeStats Stripe::Stats() const {
  SpinLockHolder hold(&lock_);
  StripeStats stats = stats_;
  stats.hits = hits_;
  stats.misses = misses_;
  stats.reserved_bytes = arena_.reserved_bytes() + table_.bucket_count() * kBucketBytes +
                         expiry_heap_.capacity() * sizeof(HeapElement);
  return stats;
}

void Stripe::LinkLocked(Ref ref) {
  Entry* e = At(ref);
  Entry* sentinel = At(kSentinel);
  last_cas_ = (last_cas_ + 1) & kCasMask;
  if (last_cas_ == 0) last_cas_ = 1;  // 0 means "no CAS"; wraps after 2^48 writes
  e->set_cas(last_cas_);
  e->prev = kSentinel;
  e->next = sentinel->next;
  At(sentinel->next)->prev = ref;
  sentinel->next = ref;
  if (e->expires()) {
    ++expiring_;
    HeapPushLocked(ref);
  }
  ++stats_.items;
  stats_.bytes += Charge(*e);
}

void Stripe::ReplaceLocked(Ref old, Ref fresh, uint64_t hash, Graveyard* dead) {
  // `fresh` has the same key, hence the same hash and bucket: swapping the ref
  // in place keeps the table consistent without a second probe.
  auto it = table_.find(At(old)->key(), hash);
  const_cast<Ref&>(*it) = fresh;
  DetachLocked(old, RemovalReason::kReplaced, dead);
  LinkLocked(fresh);
}

void Stripe::UnlinkLocked(Ref ref, RemovalReason reason, Graveyard* dead) {
  table_.erase(ref);
  DetachLocked(ref, reason, dead);
}

void Stripe::DetachLocked(Ref ref, RemovalReason reason, Graveyard* dead) {
  Entry* e = At(ref);
  At(e->prev)->next = e->next;
  At(e->next)->prev = e->prev;
  if (e->expires()) --expiring_;
  --stats_.items;
  stats_.bytes -= Charge(*e);
  if (reason == RemovalReason::kEvicted) ++stats_.evictions;
  if (reason == RemovalReason::kExpired) ++stats_.expirations;
  if (dead->keep_contents) {
    dead->removed.push_back({reason, e->flags, e->key_size(),
                             std::string(e->key_data(), e->key_size() + e->value_size)});
  }
  if (void* block = arena_.Free(ref, e->record_size())) dead->blocks.push_back(block);
}

void Stripe::RecordAccessLocked(Ref ref) {
  if (access_count_ != 0 ? accesses_[access_count_ - 1] == ref : At(kSentinel)->next == ref) {
    return;  // already the most recent
  }
  accesses_[access_count_++] = ref;
  if (access_count_ == kAccessBatch) DrainAccessesLocked();
}

void Stripe::DrainAccessesLocked() {
  for (size_t i = 0; i < access_count_; ++i) {
    const Entry* e = At(accesses_[i]);
    __builtin_prefetch(arena_.Ptr(e->prev), /*rw=*/1);
    __builtin_prefetch(arena_.Ptr(e->next), /*rw=*/1);
  }
  for (size_t i = 0; i < access_count_; ++i) MakeMostRecentLocked(accesses_[i]);
  access_count_ = 0;
}

void Stripe::MakeMostRecentLocked(Ref ref) {
  Entry* sentinel = At(kSentinel);
  if (sentinel->next == ref) return;  // hot keys are usually already at the front
  Entry* e = At(ref);
  At(e->prev)->next = e->next;
  At(e->next)->prev = e->prev;
  e->prev = kSentinel;
  e->next = sentinel->next;
  At(sentinel->next)->prev = ref;
  sentinel->next = ref;
}

bool Stripe::OverBudgetLocked() const {
  return stats_.bytes > max_bytes_ || (max_items_ != 0 && stats_.items > max_items_);
}

void Stripe::EnforceBudgetLocked(int64_t now_ns, Graveyard* dead) {
  for (int i = 0; i < kExpiredTrimPerWrite; ++i) {
    const Ref ref = EarliestExpiredLocked(now_ns);
    if (ref == kSentinel) break;
    UnlinkLocked(ref, RemovalReason::kExpired, dead);
  }
  while (OverBudgetLocked()) {
    // Dead entries go before live ones, whatever their place in the LRU.
    if (const Ref expired = EarliestExpiredLocked(now_ns); expired != kSentinel) {
      UnlinkLocked(expired, RemovalReason::kExpired, dead);
    } else {
      UnlinkLocked(At(kSentinel)->prev, RemovalReason::kEvicted, dead);
    }
  }
}

void Stripe::HeapPushLocked(Ref ref) {
  if (expiry_heap_.size() >= 2 * expiring_ + 64) RebuildHeapLocked();
  expiry_heap_.push_back({At(ref)->expiry_ns, ref});
  std::push_heap(expiry_heap_.begin(), expiry_heap_.end(), Later<HeapElement, HeapElement>);
}

bool Stripe::IsCurrentLocked(const HeapElement& element) const {
  // The record at `element.ref` may be gone, and its bytes reused by another
  // record, possibly at a different offset: only the table says whether a
  // linked record starts there. Read the would-be key only within the arena.
  if (!arena_.MayHoldRecord(element.ref)) return false;
  const Entry* e = At(element.ref);
  if (e->expiry_ns != element.expiry_ns) return false;
  if (!arena_.MayHoldRecord(element.ref, sizeof(Entry) + e->key_size())) return false;
  auto it = table_.find(e->key());
  return it != table_.end() && *it == element.ref;
}

Ref Stripe::EarliestExpiredLocked(int64_t now_ns) {
  while (!expiry_heap_.empty() && expiry_heap_.front().expiry_ns <= now_ns) {
    const HeapElement top = expiry_heap_.front();
    std::pop_heap(expiry_heap_.begin(), expiry_heap_.end(), Later<HeapElement, HeapElement>);
    expiry_heap_.pop_back();
    if (IsCurrentLocked(top)) return top.ref;
  }
  return kSentinel;
}

void Stripe::RebuildHeapLocked() {
  expiry_heap_.clear();
  for (Ref ref = At(kSentinel)->next; ref != kSentinel; ref = At(ref)->next) {
    if (At(ref)->expires()) expiry_heap_.push_back({At(ref)->expiry_ns, ref});
  }
  std::make_heap(expiry_heap_.begin(), expiry_heap_.end(), Later<HeapElement, HeapElement>);
}

absl::Status Stripe::VerifyInvariants() const {
  SpinLockHolder hold(&lock_);
  size_t listed = 0, bytes = 0, expiring = 0;
  absl::flat_hash_set<std::pair<Ref, int64_t>> in_heap;
  for (const HeapElement& element : expiry_heap_) in_heap.insert({element.ref, element.expiry_ns});
  for (Ref ref = At(kSentinel)->next; ref != kSentinel; ref = At(ref)->next) {
    const Entry* e = At(ref);
    if (At(e->next)->prev != ref) return absl::InternalError("LRU list links disagree");
    auto it = table_.find(e->key());
    if (it == table_.end() || *it != ref) {
      return absl::InternalError(
          absl::StrFormat("entry '%s' is listed but not in the table", std::string(e->key())));
    }
    bytes += Charge(*e);
    if (e->expires()) {
      ++expiring;
      if (!in_heap.contains({ref, e->expiry_ns}))
        return absl::InternalError("an expiring entry is missing from the heap");
    }
    if (++listed > table_.size()) return absl::InternalError("LRU list longer than the table");
  }
  if (listed != table_.size() || listed != stats_.items) {
    return absl::InternalError(
        absl::StrFormat("%d listed, %d in table, %d counted", listed, table_.size(), stats_.items));
  }
  if (bytes != stats_.bytes) {
    return absl::InternalError(
        absl::StrFormat("charged bytes %d != sum over live entries %d", stats_.bytes, bytes));
  }
  if (expiring != expiring_) return absl::InternalError("expiring count is off");
  if (bytes > max_bytes_ || (max_items_ != 0 && listed > max_items_)) {
    return absl::InternalError(absl::StrFormat("over budget: %d bytes of %d, %d items of %d", bytes,
                                               max_bytes_, listed, max_items_));
  }
  return absl::OkStatus();
}

}  // namespace tiercache::engine_internal
