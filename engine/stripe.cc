#include "stripe.h"

#include <utility>

#include "absl/strings/str_format.h"

namespace tiercache::engine_internal {

Stripe::Stripe(size_t max_bytes, size_t max_items, const Clock* clock)
    : max_bytes_(max_bytes), max_items_(max_items), clock_(clock) {
  SpinLockHolder hold(&lock_);
  table_.max_load_factor(kMaxLoadFactor);
}

Stripe::~Stripe() = default;

Entry* Stripe::FindLiveLocked(std::string_view key, uint64_t hash, int64_t now_ns,
                              Graveyard* dead) {
  auto it = table_.find(key, hash);
  if (it == table_.end()) return nullptr;
  Entry* e = *it;
  if (e->Expired(now_ns)) {
    UnlinkLocked(e, RemovalReason::kExpired, dead);
    return nullptr;
  }
  return e;
}

StoreResult Stripe::Store(Entry* fresh, uint64_t hash, StoreMode mode, uint64_t expected_cas,
                          int64_t now_ns, Graveyard* dead) {
  SpinLockHolder hold(&lock_);
  Entry* old = FindLiveLocked(fresh->key(), hash, now_ns, dead);
  switch (mode) {
    case StoreMode::kSet:
      break;
    case StoreMode::kAdd:
      if (old != nullptr) return StoreResult::kNotStored;
      break;
    case StoreMode::kReplace:
      if (old == nullptr) return StoreResult::kNotStored;
      break;
    case StoreMode::kCompareAndSwap:
      if (old == nullptr) return StoreResult::kNotFound;
      if (old->cas != expected_cas) return StoreResult::kExists;
      break;
  }
  if (old != nullptr) {
    ReplaceLocked(old, fresh, hash, dead);
  } else {
    table_.insert(fresh);
    LinkLocked(fresh);
  }
  ++stats_.sets;
  EnforceBudgetLocked(now_ns, dead);
  return StoreResult::kStored;
}

bool Stripe::Delete(std::string_view key, uint64_t hash, int64_t now_ns, Graveyard* dead) {
  SpinLockHolder hold(&lock_);
  Entry* e = FindLiveLocked(key, hash, now_ns, dead);
  if (e == nullptr) return false;
  UnlinkLocked(e, RemovalReason::kDeleted, dead);
  return true;
}

bool Stripe::Touch(std::string_view key, uint64_t hash, int64_t now_ns, int64_t expiry_ns,
                   Graveyard* dead) {
  SpinLockHolder hold(&lock_);
  Entry* e = FindLiveLocked(key, hash, now_ns, dead);
  if (e == nullptr) return false;
  if (e->heap_index != kNotInHeap) HeapRemoveLocked(e);
  e->expiry_ns = expiry_ns;
  if (expiry_ns != kNever) HeapPushLocked(e);
  MakeMostRecentLocked(e);
  return true;
}

size_t Stripe::ReclaimExpired(int64_t now_ns, Graveyard* dead) {
  SpinLockHolder hold(&lock_);
  size_t reclaimed = 0;
  while (EarliestExpiredLocked(now_ns)) {
    UnlinkLocked(expiry_heap_.front(), RemovalReason::kExpired, dead);
    ++reclaimed;
  }
  return reclaimed;
}

void Stripe::Clear(Graveyard* dead) {
  SpinLockHolder hold(&lock_);
  dead->reserve(dead->size() + table_.size());
  for (Entry* e : table_) dead->push_back({e, RemovalReason::kCleared});
  table_.clear();
  expiry_heap_.clear();
  lru_.prev = lru_.next = &lru_;
  stats_.items = 0;
  stats_.bytes = 0;
}

StripeStats Stripe::Stats() const {
  SpinLockHolder hold(&lock_);
  return stats_;
}

void Stripe::LinkLocked(Entry* e) {
  e->cas = ++last_cas_;
  e->prev = &lru_;
  e->next = lru_.next;
  lru_.next->prev = e;
  lru_.next = e;
  if (e->expiry_ns != kNever) HeapPushLocked(e);
  ++stats_.items;
  stats_.bytes += Charge(*e);
}

void Stripe::ReplaceLocked(Entry* old, Entry* fresh, uint64_t hash, Graveyard* dead) {
  // `fresh` has the same key, hence the same hash and bucket: swapping the
  // pointer in place keeps the table consistent without a second probe.
  auto it = table_.find(old->key(), hash);
  const_cast<Entry*&>(*it) = fresh;
  DetachLocked(old, RemovalReason::kReplaced, dead);
  LinkLocked(fresh);
}

void Stripe::UnlinkLocked(Entry* e, RemovalReason reason, Graveyard* dead) {
  table_.erase(e);
  DetachLocked(e, reason, dead);
}

void Stripe::DetachLocked(Entry* e, RemovalReason reason, Graveyard* dead) {
  e->prev->next = e->next;
  e->next->prev = e->prev;
  if (e->heap_index != kNotInHeap) HeapRemoveLocked(e);
  --stats_.items;
  stats_.bytes -= Charge(*e);
  if (reason == RemovalReason::kEvicted) ++stats_.evictions;
  if (reason == RemovalReason::kExpired) ++stats_.expirations;
  dead->push_back({e, reason});
}

void Stripe::MakeMostRecentLocked(Entry* e) {
  if (lru_.next == e) return;  // hot keys are usually already at the front
  e->prev->next = e->next;
  e->next->prev = e->prev;
  e->prev = &lru_;
  e->next = lru_.next;
  lru_.next->prev = e;
  lru_.next = e;
}

bool Stripe::OverBudgetLocked() const {
  return stats_.bytes > max_bytes_ || (max_items_ != 0 && stats_.items > max_items_);
}

bool Stripe::EarliestExpiredLocked(int64_t now_ns) const {
  return !expiry_heap_.empty() && expiry_heap_.front()->Expired(now_ns);
}

void Stripe::EnforceBudgetLocked(int64_t now_ns, Graveyard* dead) {
  for (int i = 0; i < kExpiredTrimPerWrite && EarliestExpiredLocked(now_ns); ++i) {
    UnlinkLocked(expiry_heap_.front(), RemovalReason::kExpired, dead);
  }
  while (OverBudgetLocked()) {
    // Dead entries go before live ones, whatever their place in the LRU.
    Entry* victim = EarliestExpiredLocked(now_ns) ? expiry_heap_.front()
                                                  : static_cast<Entry*>(lru_.prev);
    UnlinkLocked(victim,
                 victim->Expired(now_ns) ? RemovalReason::kExpired : RemovalReason::kEvicted,
                 dead);
  }
}

// The expiry heap: expiry_heap_[i]->heap_index == i for every i.

void Stripe::HeapPlaceLocked(size_t index, Entry* e) {
  expiry_heap_[index] = e;
  e->heap_index = static_cast<uint32_t>(index);
}

bool Stripe::HeapSiftUpLocked(size_t index) {
  Entry* e = expiry_heap_[index];
  const size_t start = index;
  while (index > 0) {
    size_t parent = (index - 1) / 2;
    if (expiry_heap_[parent]->expiry_ns <= e->expiry_ns) break;
    HeapPlaceLocked(index, expiry_heap_[parent]);
    index = parent;
  }
  HeapPlaceLocked(index, e);
  return index != start;
}

void Stripe::HeapSiftDownLocked(size_t index) {
  Entry* e = expiry_heap_[index];
  const size_t size = expiry_heap_.size();
  while (true) {
    size_t child = 2 * index + 1;
    if (child >= size) break;
    if (child + 1 < size && expiry_heap_[child + 1]->expiry_ns < expiry_heap_[child]->expiry_ns) {
      ++child;
    }
    if (e->expiry_ns <= expiry_heap_[child]->expiry_ns) break;
    HeapPlaceLocked(index, expiry_heap_[child]);
    index = child;
  }
  HeapPlaceLocked(index, e);
}

void Stripe::HeapFixLocked(size_t index) {
  if (!HeapSiftUpLocked(index)) HeapSiftDownLocked(index);
}

void Stripe::HeapPushLocked(Entry* e) {
  expiry_heap_.push_back(e);
  e->heap_index = static_cast<uint32_t>(expiry_heap_.size() - 1);
  HeapSiftUpLocked(expiry_heap_.size() - 1);
}

void Stripe::HeapRemoveLocked(Entry* e) {
  size_t index = e->heap_index;
  Entry* last = expiry_heap_.back();
  expiry_heap_.pop_back();
  e->heap_index = kNotInHeap;
  if (last != e) {
    HeapPlaceLocked(index, last);
    HeapFixLocked(index);
  }
}

absl::Status Stripe::VerifyInvariants(int64_t now_ns) const {
  SpinLockHolder hold(&lock_);
  (void)now_ns;
  size_t listed = 0, bytes = 0, expiring = 0;
  for (const ListNode* n = lru_.next; n != &lru_; n = n->next) {
    const Entry* e = static_cast<const Entry*>(n);
    if (n->next->prev != n) return absl::InternalError("LRU list links disagree");
    auto it = table_.find(e->key());
    if (it == table_.end() || *it != e) {
      return absl::InternalError(absl::StrFormat("entry '%s' is listed but not in the table",
                                                 std::string(e->key())));
    }
    bytes += Charge(*e);
    if (e->expiry_ns != kNever) {
      ++expiring;
      if (e->heap_index >= expiry_heap_.size() || expiry_heap_[e->heap_index] != e) {
        return absl::InternalError("expiring entry is not at its heap index");
      }
    } else if (e->heap_index != kNotInHeap) {
      return absl::InternalError("entry without expiry has a heap index");
    }
    if (++listed > table_.size()) return absl::InternalError("LRU list longer than the table");
  }
  if (listed != table_.size() || listed != stats_.items) {
    return absl::InternalError(absl::StrFormat("%d listed, %d in table, %d counted", listed,
                                               table_.size(), stats_.items));
  }
  if (bytes != stats_.bytes) {
    return absl::InternalError(
        absl::StrFormat("charged bytes %d != sum over live entries %d", stats_.bytes, bytes));
  }
  if (expiring != expiry_heap_.size()) return absl::InternalError("heap holds stale entries");
  for (size_t i = 1; i < expiry_heap_.size(); ++i) {
    if (expiry_heap_[(i - 1) / 2]->expiry_ns > expiry_heap_[i]->expiry_ns) {
      return absl::InternalError("expiry heap out of order");
    }
  }
  if (bytes > max_bytes_ || (max_items_ != 0 && listed > max_items_)) {
    return absl::InternalError(absl::StrFormat("over budget: %d bytes of %d, %d items of %d",
                                               bytes, max_bytes_, listed, max_items_));
  }
  return absl::OkStatus();
}

}  // namespace tiercache::engine_internal
