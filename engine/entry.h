// The cache entry: one heap block holding a fixed header, then the key bytes,
// then the value bytes.
//
// Lifecycle. An entry is created (NewEntry) outside any lock and filled. It
// then either never enters a stripe (a failed Add/Replace/CAS: freed at once)
// or is *linked*: it is in its stripe's hash table, on the stripe's LRU list,
// and — iff its expiry is finite — in the stripe's expiry heap. All three
// memberships begin and end together, under the stripe lock. Unlinking moves
// the entry to a Graveyard; after the lock is released the removal listener
// sees it and it is freed. No entry is ever freed while linked, and no linked
// entry is ever modified except its LRU links, heap index and expiry (Touch):
// a write that changes the key's value links a new entry and unlinks the old.
//
// Layout: 48 bytes of header. A single block per entry keeps a hit to one or
// two cache lines (header + key for the compare, then the value).

#ifndef TIERCACHE_ENGINE_ENTRY_H_
#define TIERCACHE_ENGINE_ENTRY_H_

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <new>
#include <string_view>

#include "absl/container/inlined_vector.h"
#include "tiercache/cache.h"

namespace tiercache::engine_internal {

inline constexpr int64_t kNever = std::numeric_limits<int64_t>::max();
inline constexpr uint32_t kNotInHeap = std::numeric_limits<uint32_t>::max();

struct ListNode {
  ListNode* prev = this;
  ListNode* next = this;
};

struct Entry : ListNode {
  int64_t expiry_ns;    // Unix nanoseconds; kNever when it does not expire
  uint64_t cas;         // assigned by the stripe when linked
  uint32_t flags;       // client flags, opaque to the cache
  uint32_t value_size;
  uint32_t heap_index;  // position in the stripe's expiry heap, or kNotInHeap
  uint16_t key_size;

  char* key_data() { return reinterpret_cast<char*>(this + 1); }
  const char* key_data() const { return reinterpret_cast<const char*>(this + 1); }
  char* value_data() { return key_data() + key_size; }
  const char* value_data() const { return key_data() + key_size; }
  std::string_view key() const { return {key_data(), key_size}; }
  std::string_view value() const { return {value_data(), value_size}; }
  bool Expired(int64_t now_ns) const { return now_ns >= expiry_ns; }
};
static_assert(sizeof(Entry) == 48);

// Allocates an entry for `key` with room for `value_size` value bytes, which
// the caller fills. REQUIRES: key.size() <= 65535, value_size < 2^32.
inline Entry* NewEntry(std::string_view key, size_t value_size, uint32_t flags,
                       int64_t expiry_ns) {
  void* block = std::malloc(sizeof(Entry) + key.size() + value_size);
  if (block == nullptr) throw std::bad_alloc();
  Entry* e = new (block) Entry;
  e->expiry_ns = expiry_ns;
  e->cas = 0;
  e->flags = flags;
  e->value_size = static_cast<uint32_t>(value_size);
  e->heap_index = kNotInHeap;
  e->key_size = static_cast<uint16_t>(key.size());
  std::memcpy(e->key_data(), key.data(), key.size());
  return e;
}

inline void FreeEntry(Entry* e) {
  e->~Entry();
  std::free(e);
}

// Bytes the allocator really spends on a block of `size` bytes, modelled on
// glibc malloc on 64-bit: an 8-byte size header, 16-byte alignment, a 32-byte
// minimum; blocks past the mmap threshold take whole pages plus a 16-byte
// header. tests/unit/cache_test.cc checks this against malloc_usable_size().
inline size_t AllocatedBytes(size_t size) {
  constexpr size_t kMmapThreshold = 128 * 1024;
  constexpr size_t kPage = 4096;
  if (size + 8 >= kMmapThreshold) return (size + 16 + kPage - 1) / kPage * kPage;
  size_t chunk = (size + 8 + 15) & ~size_t{15};
  return chunk < 32 ? 32 : chunk;
}

// A removed entry waiting, outside the lock, for the listener and free().
struct Removed {
  Entry* entry;
  RemovalReason reason;
};
using Graveyard = absl::InlinedVector<Removed, 2>;

}  // namespace tiercache::engine_internal

#endif  // TIERCACHE_ENGINE_ENTRY_H_
