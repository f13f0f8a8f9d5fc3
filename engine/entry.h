// The cache entry: a 32-byte header, then the key bytes, then the value
// bytes, in one record of the stripe's Arena (arena.h).
//
// Lifecycle. A record is created under the stripe lock (or, when large, built
// outside it and adopted) and *linked* at once: it is in the stripe's hash
// table, on the stripe's LRU list, and counted in its stats. Linked records
// with a finite expiry also have an element in the stripe's expiry heap. A
// record leaves all of these together, under the lock, when it is unlinked:
// its reason, key and value are copied to the Graveyard if a removal listener
// wants them, and its memory goes back to the arena at once (a large record's
// block is freed after the lock is dropped). Nothing in a linked record changes
// but its list links, its W-TinyLFU segment and, for Touch, its expiry: a write
// that changes the value
// links a new record and unlinks the old one, so readers under the lock never
// see a half-written value.
//
// The expiry heap is lazy: its elements are (expiry, ref) pairs that are not
// removed when their record goes away. By then `ref` may start a free record
// or another key's record, point into the middle of a record (its page was
// unmapped and its index reused), or into no memory at all (the page is
// unmapped). An element is acted on only if the arena still holds the bytes
// at `ref` (Arena::MayHoldRecord), the hash table maps the key found there
// back to `ref` and the expiry matches (Stripe::IsCurrentLocked); the bytes at
// ref are never trusted alone.

#ifndef TIERCACHE_ENGINE_ENTRY_H_
#define TIERCACHE_ENGINE_ENTRY_H_

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <limits>
#include <new>
#include <string>
#include <string_view>

#include "absl/container/inlined_vector.h"
#include "arena.h"
#include "tiercache/cache.h"

namespace tiercache::engine_internal {

inline constexpr int64_t kNever = std::numeric_limits<int64_t>::max();
inline constexpr uint64_t kCasMask = (uint64_t{1} << 46) - 1;
inline constexpr int kSegmentShift = 46;

// Which of W-TinyLFU's lists a record is on (stripe.h); kLru stripes keep
// every record in kWindow, their only list.
enum class Segment : uint8_t { kWindow = 0, kProbation = 1, kProtected = 2 };

struct Entry {
  Ref prev;  // list neighbours; each list has a sentinel record (the LRU's: ref 0)
  Ref next;
  int64_t expiry_ns;          // Unix nanoseconds; kNever when it does not expire
  uint64_t cas_and_key_size;  // CAS in the low 46 bits, Segment in 2, key size in the high 16
  uint32_t flags;             // client flags, opaque to the cache
  uint32_t value_size;

  uint64_t cas() const { return cas_and_key_size & kCasMask; }
  size_t key_size() const { return cas_and_key_size >> 48; }
  void set_cas(uint64_t cas) { cas_and_key_size = (cas_and_key_size & ~kCasMask) | cas; }
  Segment segment() const { return static_cast<Segment>((cas_and_key_size >> kSegmentShift) & 3); }
  void set_segment(Segment segment) {
    cas_and_key_size = (cas_and_key_size & ~(uint64_t{3} << kSegmentShift)) |
                       (uint64_t{static_cast<uint8_t>(segment)} << kSegmentShift);
  }
  const char* key_data() const { return reinterpret_cast<const char*>(this + 1); }
  char* key_data() { return reinterpret_cast<char*>(this + 1); }
  const char* value_data() const { return key_data() + key_size(); }
  char* value_data() { return key_data() + key_size(); }
  std::string_view key() const { return {key_data(), key_size()}; }
  std::string_view value() const { return {value_data(), value_size}; }
  size_t record_size() const { return sizeof(Entry) + key_size() + value_size; }
  bool expires() const { return expiry_ns != kNever; }
  bool Expired(int64_t now_ns) const { return now_ns >= expiry_ns; }
};
static_assert(sizeof(Entry) == 32);
static_assert(sizeof(Entry) == kMinRecordUnits * kUnit);

inline size_t RecordSize(size_t key_size, size_t value_size) {
  return sizeof(Entry) + key_size + value_size;
}

// What a write stores. Large records are built by the caller before taking
// the lock (`large_block`, from AllocateLargeBlock); small ones are written into
// the arena under the lock.
struct NewRecord {
  std::string_view key;
  std::string_view value;
  uint32_t flags = 0;
  int64_t expiry_ns = kNever;
  LargeBlock large_block;  // ptr nullptr: small
};

// Writes the header, key and value into `at` (RecordSize bytes); CAS 0.
inline Entry* WriteRecord(void* at, const NewRecord& r) {
  Entry* e = new (at) Entry;
  e->prev = e->next = 0;
  e->expiry_ns = r.expiry_ns;
  e->cas_and_key_size = uint64_t{r.key.size()} << 48;
  e->flags = r.flags;
  e->value_size = static_cast<uint32_t>(r.value.size());
  if (!r.key.empty()) std::memcpy(e->key_data(), r.key.data(), r.key.size());
  if (!r.value.empty()) std::memcpy(e->value_data(), r.value.data(), r.value.size());
  return e;
}

// What the removal listener will see, and blocks to free, once the stripe
// lock is dropped.
struct Graveyard {
  struct Removed {
    RemovalReason reason;
    uint32_t flags;
    size_t key_size;
    std::string key_and_value;
  };
  explicit Graveyard(bool keep) : keep_contents(keep) {}
  const bool keep_contents;  // a listener is set: copy key and value out
  absl::InlinedVector<Removed, 1> removed;
  absl::InlinedVector<LargeBlock, 1> blocks;
  bool empty() const { return removed.empty() && blocks.empty(); }
};

}  // namespace tiercache::engine_internal

#endif  // TIERCACHE_ENGINE_ENTRY_H_
