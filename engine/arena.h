// A stripe's record allocator: 32-bit references to records packed in pages.
//
// Why not malloc per entry: for the benchmark's 16-byte keys and 32-byte
// values, glibc spends 8 bytes of header and up to 15 of rounding per block,
// and a 64-bit pointer in the hash table makes each bucket 16 bytes. Together
// with a 48-byte header that was 91 bytes per entry beyond key and value
// (bench/results/memory.txt before this allocator). With records packed at
// 8-byte granularity and 4-byte references (8-byte buckets, 4-byte list links)
// the same entry costs 46.
//
// Small records (at most kMaxSmallRecord bytes) live in pages of 1..64 KiB.
// A freed small record goes on the free list of its exact size (in 8-byte
// units); an allocation takes from its own list, else splits the smallest
// larger free record, else carves from the current page. Large records are
// separate malloc blocks reached through a slot table, so a large value's
// memory goes back to the system when it is removed.
//
// Reference layout: bit 31 set: large, bits 0..30 index the slot table;
// otherwise page index << page_shift | offset in 8-byte units. Reference 0 is
// the first record of page 0: the stripe's LRU sentinel, never freed.
//
// Not thread-safe: the owning stripe's lock guards it.

#ifndef TIERCACHE_ENGINE_ARENA_H_
#define TIERCACHE_ENGINE_ARENA_H_

#include <array>
#include <bit>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <vector>

namespace tiercache::engine_internal {

using Ref = uint32_t;

inline constexpr size_t kUnit = 8;
inline constexpr size_t kMinRecordUnits = 4;  // a record header is 32 bytes
inline constexpr size_t kMaxSmallRecord = 1024;
inline constexpr size_t kMaxSmallUnits = kMaxSmallRecord / kUnit;
inline constexpr Ref kLargeBit = Ref{1} << 31;

inline constexpr size_t UnitsFor(size_t bytes) { return (bytes + kUnit - 1) / kUnit; }
inline constexpr bool IsSmallRecord(size_t bytes) { return bytes <= kMaxSmallRecord; }

// Bytes glibc malloc really spends on a block of `size` bytes on 64-bit: an
// 8-byte size header, 16-byte alignment, a 32-byte minimum; blocks past the
// mmap threshold take whole pages plus a 16-byte header. Checked against
// malloc_usable_size() in tests/unit/cache_test.cc.
inline size_t AllocatedBytes(size_t size) {
  constexpr size_t kMmapThreshold = 128 * 1024;
  constexpr size_t kPage = 4096;
  if (size + 8 >= kMmapThreshold) return (size + 16 + kPage - 1) / kPage * kPage;
  size_t chunk = (size + 8 + 15) & ~size_t{15};
  return chunk < 32 ? 32 : chunk;
}

// The bytes a record of `size` bytes holds: its units in a page, or its
// malloc block plus its slot.
inline size_t RecordBytes(size_t size) {
  return IsSmallRecord(size) ? UnitsFor(size) * kUnit : AllocatedBytes(size) + sizeof(void*);
}

class Arena {
 public:
  // `budget` (the stripe's max_bytes) sizes the pages: about 1/16 of it,
  // between 1 and 64 KiB, so a small cache does not reserve far more than it
  // may hold.
  explicit Arena(size_t budget);
  ~Arena();
  Arena(const Arena&) = delete;
  Arena& operator=(const Arena&) = delete;

  char* Ptr(Ref ref) const {
    if (ref & kLargeBit) return static_cast<char*>(large_[ref & ~kLargeBit]);
    return pages_[ref >> page_shift_] + (ref & offset_mask_) * kUnit;
  }

  // True if `bytes` bytes at `ref` lie within memory the arena has handed out
  // (whether or not a record still starts there).
  bool MayHoldRecord(Ref ref, size_t bytes = kMinRecordUnits * kUnit) const {
    if (ref & kLargeBit) {
      const Ref slot = ref & ~kLargeBit;
      return slot < large_.size() && large_[slot] != nullptr;
    }
    const size_t page = ref >> page_shift_;
    const size_t end = (ref & offset_mask_) * kUnit + bytes;
    return page < pages_.size() && end <= (page + 1 == pages_.size() ? bump_ : page_units_) * kUnit;
  }

  // A record of `size` bytes; small ones come from pages, large ones from
  // malloc. Never fails (throws std::bad_alloc if the system is out of memory).
  Ref Allocate(size_t size);
  // Takes ownership of a malloc block of `size` bytes: a large record built
  // outside the lock.
  Ref AdoptLarge(void* block, size_t size);
  // Releases a record of `size` bytes. A large record's block is returned, not
  // freed, so the caller can free it after dropping the stripe lock.
  void* Free(Ref ref, size_t size);
  // Frees everything but the sentinel.
  void Reset();

  // Bytes taken from the system: pages plus large blocks. Exceeds the sum of
  // live records by the free lists and the unused end of the current page.
  size_t reserved_bytes() const { return reserved_bytes_; }

 private:
  static constexpr Ref kNoFree = 0;  // ref 0 is the sentinel, never on a list

  Ref AllocateSmall(size_t units);
  void PushFree(Ref ref, size_t units);
  Ref PopFree(size_t units);
  Ref* NextFree(Ref ref) const { return reinterpret_cast<Ref*>(Ptr(ref)); }
  void NewPage();
  void FreeAll();

  const size_t page_units_;
  const int page_shift_;
  const Ref offset_mask_;
  const size_t max_pages_;

  std::vector<char*> pages_;
  size_t bump_ = 0;                             // next free unit in pages_.back()
  std::array<Ref, kMaxSmallUnits + 1> free_{};  // by size in units
  // Bit u set: free_[u] is not empty; finds the smallest larger free record.
  std::array<uint64_t, (kMaxSmallUnits + 64) / 64> nonempty_{};
  std::vector<void*> large_;
  std::vector<Ref> free_large_slots_;
  size_t reserved_bytes_ = 0;
};

}  // namespace tiercache::engine_internal

#endif  // TIERCACHE_ENGINE_ARENA_H_
