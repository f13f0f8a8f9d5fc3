#include "stripe.h"

#include <algorithm>
#include <bit>
#include <cstring>
#include <utility>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_format.h"
#include "check.h"

namespace tiercache::engine_internal {
namespace {

// std::push_heap and friends build max-heaps: "later" puts the earliest on top.
bool Later(const auto& a, const auto& b) { return a.expiry_ns > b.expiry_ns; }

}  // namespace

Stripe::Stripe(size_t max_bytes, size_t max_items, const Clock* clock, EvictionPolicy policy,
               uint64_t seed)
    : tiny_lfu_(policy == EvictionPolicy::kTinyLfu),
      max_bytes_(max_bytes),
      max_items_(max_items),
      item_weight_(max_items == 0 ? 0 : (max_bytes + max_items - 1) / max_items),
      clock_(clock),
      arena_(),
      table_(0, RefHash{&arena_}, RefKeyEqual{&arena_}, PublishingAllocator<Ref>(&buckets_)),
      sketch_(seed),
      admission_random_(static_cast<uint32_t>(seed ^ (seed >> 32))) {
  SpinLockHolder hold(&lock_);
  table_.max_load_factor(kMaxLoadFactor);
  table_.min_load_factor(kMinLoadFactor);
  ResetSentinelLocked();
  ResetPolicyLocked();
}

Stripe::~Stripe() = default;

namespace {

void WriteSentinel(void* at, Ref self) {
  Entry* sentinel = new (at) Entry;
  sentinel->prev = sentinel->next = self;
  sentinel->expiry_ns = kNever;
  sentinel->cas_and_key_size = 0;
  sentinel->flags = 0;
  sentinel->value_size = 0;
}

}  // namespace

void Stripe::ResetSentinelLocked() { WriteSentinel(arena_.Ptr(kSentinel), kSentinel); }

void Stripe::ResetPolicyLocked() {
  if (!tiny_lfu_) return;
  // Two more sentinels, from the arena (refs must address them); a fixed
  // 64 bytes per stripe, not charged to any entry.
  probation_ = arena_.Allocate(sizeof(Entry));
  WriteSentinel(arena_.Ptr(probation_), probation_);
  protected_ = arena_.Allocate(sizeof(Entry));
  WriteSentinel(arena_.Ptr(protected_), protected_);
  window_weight_ = protected_weight_ = 0;
  // Caffeine starts with a 1% window; the climber moves it from there.
  window_target_ = std::max<size_t>(Capacity() / ClimberUnit() / 100, 1) * ClimberUnit();
  // Sized for the entries the stripe can hold: max_items, unless the byte
  // budget cannot hold that many of even the smallest entry.
  const size_t most_entries = max_bytes_ / Charge(1, 0, false);
  sketch_.Resize(max_items_ != 0 ? std::min(max_items_, most_entries)
                                 : FrequencySketch::kMinEntries);
  // The climber starts once the stripe is full (EvictTinyLfuLocked): while it
  // fills, the hit ratio rises whatever the window's size.
  climber_started_ = false;
}

void Stripe::CountRequestLocked(uint64_t hash) {
  // Bounded by bytes, the entry count is known only as it grows: the sketch
  // follows it, at one counter word per 1 to 2 entries (a resize forgets the
  // counts, which happens log2(n) times). Half of Caffeine's 1 to 2 words per
  // entry: measured at 10M entries (bench/memory_per_entry), a word per entry
  // or more put kTinyLfu 13.5 bytes per entry above kLru.
  if (max_items_ == 0 && std::bit_floor(stats_.items) > sketch_.capacity()) {
    sketch_.Resize(std::bit_floor(stats_.items));
    climber_.Reset(Capacity() / ClimberUnit(), sketch_.sample_size(), hits_, misses_);
  }
  sketch_.Increment(hash);
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
  if (record.large_block.ptr != nullptr) return arena_.AdoptLarge(record.large_block, size);
  const Ref ref = arena_.Allocate(size);
  WriteRecord(arena_.Ptr(ref), record);
  return ref;
}

StoreResult Stripe::Store(const NewRecord& record, uint64_t hash, StoreMode mode,
                          uint64_t expected_cas, int64_t now_ns, Graveyard* dead) {
  PrefetchBucket(hash);
  // Hashed before the lock, and the sketch's block fetched while the batch
  // drains and the key is looked up (the increment's miss was 6% of a
  // 90/10 operation with kTinyLfu, bench/engine_bench).
  const uint64_t sketch_hash = tiny_lfu_ ? SketchHash(record.key) : 0;
  SpinLockHolder hold(&lock_);
  if (tiny_lfu_) sketch_.Prefetch(sketch_hash);
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
  if (tiny_lfu_) CountRequestLocked(sketch_hash);
  if (old != kSentinel) {
    ReplaceLocked(old, fresh, hash, dead);
  } else {
    table_.insert(fresh);
    LinkLocked(fresh);
  }
  ++stats_.sets;
  EnforceBudgetLocked(now_ns, dead, RecordSize(record.key.size(), record.value.size()));
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
  const size_t old_weight = WeightOf(*e);
  e->expiry_ns = expiry_ns;
  stats_.bytes += Charge(*e);
  if (tiny_lfu_ && e->segment() != Segment::kProbation) {
    // Bounded by bytes, the weight is the charge, which the TTL changes.
    size_t& region = e->segment() == Segment::kWindow ? window_weight_ : protected_weight_;
    region = region - old_weight + WeightOf(*e);
  }
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
  table_.rehash(0);                               // the buckets go too (clear() keeps them)
  std::vector<HeapElement>().swap(expiry_heap_);  // and the heap's memory
  expiring_ = 0;
  arena_.Reset();
  ResetSentinelLocked();
  ResetPolicyLocked();
  stats_.items = 0;
  stats_.bytes = 0;
}

StripeStats Stripe::Stats() const {
  SpinLockHolder hold(&lock_);
  StripeStats stats = stats_;
  stats.hits = hits_;
  stats.misses = misses_;
  stats.reserved_bytes = arena_.reserved_bytes() + table_.bucket_count() * kBucketBytes +
                         expiry_heap_.capacity() * sizeof(HeapElement) +
                         (tiny_lfu_ ? sketch_.bytes() : 0);
  return stats;
}

void Stripe::InsertAfterLocked(Ref after, Ref ref) {
  TIERCACHE_ASSERT(ref != kSentinel && ref != after, "linking a list's sentinel, or after itself");
  Entry* e = At(ref);
  Entry* before = At(after);
  e->prev = after;
  e->next = before->next;
  At(before->next)->prev = ref;
  before->next = ref;
}

void Stripe::RemoveFromListLocked(Ref ref) {
  TIERCACHE_ASSERT(ref != kSentinel && ref != probation_ && ref != protected_,
                   "unlinking a list's sentinel");
  const Entry* e = At(ref);
  At(e->prev)->next = e->next;
  At(e->next)->prev = e->prev;
}

void Stripe::LinkLocked(Ref ref, Ref after) {
  Entry* e = At(ref);
  last_cas_ = (last_cas_ + 1) & kCasMask;
  if (last_cas_ == 0) last_cas_ = 1;  // 0 means "no CAS"; wraps after 2^46 writes
  e->set_cas(last_cas_);
  InsertAfterLocked(after, ref);
  if (tiny_lfu_) {
    if (e->segment() == Segment::kWindow) window_weight_ += WeightOf(*e);
    if (e->segment() == Segment::kProtected) protected_weight_ += WeightOf(*e);
  }
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
  if (!tiny_lfu_) {
    DetachLocked(old, RemovalReason::kReplaced, dead);
    LinkLocked(fresh);
    return;
  }
  // W-TinyLFU: the new record takes the old one's place and segment, and the
  // write counts as an access (as in Caffeine).
  const Ref after = At(old)->prev;
  const Segment segment = At(old)->segment();
  DetachLocked(old, RemovalReason::kReplaced, dead);
  At(fresh)->set_segment(segment);
  LinkLocked(fresh, after);
  OnAccessLocked(fresh);
}

void Stripe::UnlinkLocked(Ref ref, RemovalReason reason, Graveyard* dead) {
  table_.erase(ref);
  DetachLocked(ref, reason, dead);
}

void Stripe::DetachLocked(Ref ref, RemovalReason reason, Graveyard* dead) {
  Entry* e = At(ref);
  RemoveFromListLocked(ref);
  TIERCACHE_ASSERT(stats_.items > 0 && stats_.bytes >= Charge(*e),
                   "removing an entry the stripe's counts do not include");
  if (tiny_lfu_) {
    TIERCACHE_ASSERT(
        e->segment() == Segment::kProbation ||
            (e->segment() == Segment::kWindow ? window_weight_ : protected_weight_) >= WeightOf(*e),
        "a W-TinyLFU region weighs less than an entry it holds");
    if (e->segment() == Segment::kWindow) window_weight_ -= WeightOf(*e);
    if (e->segment() == Segment::kProtected) protected_weight_ -= WeightOf(*e);
  }
  if (e->expires()) --expiring_;
  --stats_.items;
  stats_.bytes -= Charge(*e);
  if (reason == RemovalReason::kEvicted) ++stats_.evictions;
  if (reason == RemovalReason::kExpired) ++stats_.expirations;
  if (dead->keep_contents) {
    dead->removed.push_back({reason, e->flags, e->key_size(),
                             std::string(e->key_data(), e->key_size() + e->value_size)});
  }
  if (const LargeBlock block = arena_.Free(ref, e->record_size()); block.ptr != nullptr) {
    dead->blocks.push_back(block);
  }
}

void Stripe::RecordAccessLocked(Ref ref) {
  if (!tiny_lfu_ &&
      (access_count_ != 0 ? accesses_[access_count_ - 1] == ref : At(kSentinel)->next == ref)) {
    return;  // already the most recent
  }
  accesses_[access_count_++] = ref;
  if (access_count_ == kAccessBatch) DrainAccessesLocked();
}

void Stripe::DrainAccessesLocked() {
  if (access_count_ == 0) return;
  std::array<uint64_t, kAccessBatch> sketch_hashes;
  for (size_t i = 0; i < access_count_; ++i) {
    const Entry* e = At(accesses_[i]);
    __builtin_prefetch(arena_.Ptr(e->prev), /*rw=*/1);
    __builtin_prefetch(arena_.Ptr(e->next), /*rw=*/1);
    if (tiny_lfu_) {
      sketch_hashes[i] = SketchHash(e->key());
      sketch_.Prefetch(sketch_hashes[i]);
    }
  }
  if (tiny_lfu_) {
    for (size_t i = 0; i < access_count_; ++i) {
      CountRequestLocked(sketch_hashes[i]);
      OnAccessLocked(accesses_[i]);
    }
  } else {
    for (size_t i = 0; i < access_count_; ++i) MakeMostRecentLocked(accesses_[i]);
  }
  access_count_ = 0;
}

void Stripe::MakeMostRecentLocked(Ref ref) {
  if (tiny_lfu_) {
    OnAccessLocked(ref);
    return;
  }
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

void Stripe::EnforceBudgetLocked(int64_t now_ns, Graveyard* dead, size_t written_bytes) {
  for (int i = 0; i < kExpiredTrimPerWrite; ++i) {
    const Ref ref = EarliestExpiredLocked(now_ns);
    if (ref == kSentinel) break;
    UnlinkLocked(ref, RemovalReason::kExpired, dead);
  }
  while (OverBudgetLocked()) {
    // Dead entries go before live ones, whatever their place in the LRU.
    if (const Ref expired = EarliestExpiredLocked(now_ns); expired != kSentinel) {
      UnlinkLocked(expired, RemovalReason::kExpired, dead);
    } else if (tiny_lfu_) {
      break;
    } else {
      UnlinkLocked(At(kSentinel)->prev, RemovalReason::kEvicted, dead);
    }
  }
  if (tiny_lfu_) EvictTinyLfuLocked(dead);
  TIERCACHE_ASSERT(!OverBudgetLocked(), "a write left the stripe over its budget");
  // Moving twice what was written, and 4 KiB more, outpaces the
  // fragmentation a write can cause (the records it pushed out weigh about
  // what it wrote).
  CompactLocked(2 * written_bytes + 4096);
}

void Stripe::CompactLocked(size_t budget_bytes) {
  // Called by the arena during this call, so under the lock; the analysis
  // cannot follow it through the arena's templates.
  const auto size_of = [this](Ref ref)
                           ABSL_NO_THREAD_SAFETY_ANALYSIS { return At(ref)->record_size(); };
  size_t moved = 0;
  while (moved < budget_bytes) {
    if (!arena_.evacuating()) {
      if (arena_.free_page_bytes() <= CompactionSlack()) return;
      if (!arena_.BeginEvacuation(size_of)) return;
      // Starting a page (a look at every page, a walk of this one) is paid
      // from the same budget, so a call starts at most a few.
      moved += kPageBytes / 8;
    }
    const Ref ref = arena_.NextToEvacuate(size_of);
    if (ref == Arena::kNoFree) {  // cannot happen: the page goes with its last record
      arena_.AbandonEvacuation(size_of);
      return;
    }
    moved += MoveRecordLocked(ref);
  }
}

size_t Stripe::MoveRecordLocked(Ref ref) {
  const size_t size = At(ref)->record_size();
  const std::string_view old_key = At(ref)->key();
  auto it = table_.find(old_key, HashKey(old_key));
  if (it == table_.end() || *it != ref) {
    // Not linked: a record a write built and never linked because an
    // allocation after it threw (out of memory). Nothing refers to it.
    arena_.Free(ref, size);
    return size;
  }
  const Ref fresh = arena_.Allocate(size);
  std::memcpy(arena_.Ptr(fresh), arena_.Ptr(ref), size);
  Entry* e = At(fresh);
  const_cast<Ref&>(*it) = fresh;
  At(e->prev)->next = fresh;
  At(e->next)->prev = fresh;
  if (e->expires()) HeapPushLocked(fresh);
  arena_.Free(ref, size);  // small: nothing to release outside the lock
  ++stats_.compacted;
  return size;
}

void Stripe::OnAccessLocked(Ref ref) {
  Entry* e = At(ref);
  switch (e->segment()) {
    case Segment::kWindow:
      if (At(kSentinel)->next == ref) return;
      RemoveFromListLocked(ref);
      InsertAfterLocked(kSentinel, ref);
      return;
    case Segment::kProtected:
      if (At(protected_)->next == ref) return;
      RemoveFromListLocked(ref);
      InsertAfterLocked(protected_, ref);
      return;
    case Segment::kProbation:
      RemoveFromListLocked(ref);
      e->set_segment(Segment::kProtected);
      protected_weight_ += WeightOf(*e);
      InsertAfterLocked(protected_, ref);
      DemoteProtectedLocked(ref);
      return;
  }
}

void Stripe::DemoteProtectedLocked(Ref keep) {
  while (protected_weight_ > ProtectedMaxLocked()) {
    const Ref oldest = At(protected_)->prev;
    if (oldest == protected_ || oldest == keep) break;
    Entry* o = At(oldest);
    RemoveFromListLocked(oldest);
    TIERCACHE_ASSERT(o->segment() == Segment::kProtected && protected_weight_ >= WeightOf(*o),
                     "demoting an entry protected's weight does not include");
    protected_weight_ -= WeightOf(*o);
    o->set_segment(Segment::kProbation);
    InsertAfterLocked(probation_, oldest);
  }
}

bool Stripe::AdmitLocked(Ref candidate, Ref victim) {
  const uint64_t victim_hash = SketchHash(At(victim)->key());
  const uint64_t candidate_hash = SketchHash(At(candidate)->key());
  sketch_.Prefetch(candidate_hash);  // the two misses overlap
  const int victim_frequency = sketch_.Frequency(victim_hash);
  const int candidate_frequency = sketch_.Frequency(candidate_hash);
  if (candidate_frequency > victim_frequency) return true;
  // A hash-flooding attacker can make its own keys look frequent and keep
  // every newcomer out; a warm candidate still gets in now and then.
  if (candidate_frequency > 5) return (admission_random_() & 127) == 0;
  return false;
}

void Stripe::EvictTinyLfuLocked(Graveyard* dead) {
  if (!climber_started_) {
    if (OverBudgetLocked() || (max_items_ != 0 && stats_.items >= max_items_)) {
      climber_started_ = true;
      climber_.Reset(Capacity() / ClimberUnit(), sketch_.sample_size(), hits_, misses_);
    }
  } else if (const int64_t adjustment = climber_.TakeAdjustment(hits_, misses_); adjustment != 0) {
    const int64_t target =
        static_cast<int64_t>(window_target_) + adjustment * static_cast<int64_t>(ClimberUnit());
    window_target_ =
        static_cast<size_t>(std::clamp<int64_t>(target, 0, static_cast<int64_t>(Capacity())));
  }
  // Protected may have grown past its share without a promotion (a larger
  // value replaced, a TTL added, the window's target shrunk).
  DemoteProtectedLocked(kSentinel);
  // The window's overflow becomes probation's newest: the candidates.
  size_t candidates = 0;
  while (window_weight_ > window_target_ && At(kSentinel)->prev != kSentinel) {
    const Ref oldest = At(kSentinel)->prev;
    Entry* e = At(oldest);
    RemoveFromListLocked(oldest);
    TIERCACHE_ASSERT(e->segment() == Segment::kWindow && window_weight_ >= WeightOf(*e),
                     "moving an entry the window's weight does not include");
    window_weight_ -= WeightOf(*e);
    e->set_segment(Segment::kProbation);
    InsertAfterLocked(probation_, oldest);
    ++candidates;
  }
  // Candidates are taken newest first, victims oldest first: probation's,
  // then protected's, then the window's. The loser of each comparison goes.
  // "None" is the list's sentinel.
  Ref victim_list = probation_;
  Ref victim = At(probation_)->prev;
  Ref candidate = candidates > 0 ? At(probation_)->next : probation_;
  const auto evict = [&](Ref ref) ABSL_EXCLUSIVE_LOCKS_REQUIRED(lock_) {
    UnlinkLocked(ref, RemovalReason::kEvicted, dead);
  };
  while (OverBudgetLocked()) {
    if (candidates == 0) candidate = probation_;
    if (victim == victim_list) {  // this list is exhausted
      if (victim_list == probation_) {
        victim_list = protected_;
        victim = At(protected_)->prev;
        continue;
      }
      if (victim_list == protected_) {
        victim_list = kSentinel;
        victim = At(kSentinel)->prev;
        continue;
      }
      if (candidate == probation_) break;  // nothing left to evict
    }
    if (victim == victim_list) {
      const Ref next = At(candidate)->next;
      evict(candidate);
      candidate = next;
      --candidates;
      continue;
    }
    if (candidate == probation_ || candidate == victim) {
      if (candidate == victim) {
        candidate = probation_;
        candidates = 0;
      }
      const Ref next = At(victim)->prev;
      evict(victim);
      victim = next;
      continue;
    }
    --candidates;
    if (AdmitLocked(candidate, victim)) {
      const Ref next = At(victim)->prev;
      evict(victim);
      victim = next;
      candidate = At(candidate)->next;
    } else {
      const Ref next = At(candidate)->next;
      evict(candidate);
      candidate = next;
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
  ForEachLinkedLocked([&](Ref ref) ABSL_EXCLUSIVE_LOCKS_REQUIRED(lock_) {
    if (At(ref)->expires()) expiry_heap_.push_back({At(ref)->expiry_ns, ref});
  });
  // Its memory follows the expiring entries down, too.
  if (expiry_heap_.capacity() > 2 * expiry_heap_.size() + 64) expiry_heap_.shrink_to_fit();
  std::make_heap(expiry_heap_.begin(), expiry_heap_.end(), Later<HeapElement, HeapElement>);
}

absl::Status Stripe::VerifyInvariants() const {
  SpinLockHolder hold(&lock_);
  size_t listed = 0, bytes = 0, expiring = 0;
  absl::flat_hash_set<std::pair<Ref, int64_t>> in_heap;
  for (const HeapElement& element : expiry_heap_) in_heap.insert({element.ref, element.expiry_ns});
  // Segment order: the window (or kLru's only list), probation, protected.
  const Ref sentinels[] = {kSentinel, probation_, protected_};
  size_t weights[] = {0, 0, 0};
  for (int list = 0; list < (tiny_lfu_ ? 3 : 1); ++list) {
    const Ref sentinel = sentinels[list];
    for (Ref ref = At(sentinel)->next; ref != sentinel; ref = At(ref)->next) {
      const Entry* e = At(ref);
      if (At(e->next)->prev != ref) return absl::InternalError("LRU list links disagree");
      if (static_cast<int>(e->segment()) != list) {
        return absl::InternalError(absl::StrFormat("entry '%s' of segment %d is on list %d",
                                                   std::string(e->key()),
                                                   static_cast<int>(e->segment()), list));
      }
      weights[list] += WeightOf(*e);
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
  }
  if (tiny_lfu_ && (weights[0] != window_weight_ || weights[2] != protected_weight_)) {
    return absl::InternalError(
        absl::StrFormat("window weighs %d (recorded %d), protected %d (recorded %d)", weights[0],
                        window_weight_, weights[2], protected_weight_));
  }
  if (window_target_ > Capacity()) return absl::InternalError("window target over capacity");
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
