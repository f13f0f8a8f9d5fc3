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
// Memory comes from the operating system and goes back to it (issue 11: the
// budget you set is the memory you spend, whatever the mix of sizes):
//   - Small records (at most kMaxSmallRecord = 16 KiB) live in pages of
//     64 KiB mapped with mmap. A freed small record goes on the free list of
//     its exact size (in 8-byte units); an allocation takes from its own
//     list, else splits the smallest larger free record, else carves from the
//     current page. A page whose records are all free is unmapped at once.
//   - Large records are mapped one by one (rounded up to 4 KiB: at most 20%
//     more than the record, since it is over 16 KiB) and unmapped when
//     removed, so their memory goes back at once too. If the system refuses
//     a mapping (vm.max_map_count), the record is a malloc block instead.
// Neither rests in glibc's heap, which keeps what is freed in its middle.
//
// Free records carry their own header (FreeRecord): kFreeMark where a live
// record's `prev` link is (a ref no record can have: it would need 2^31 - 1
// large records), their size, and the links of a doubly-linked free list, so
// that a page's free records can leave their lists when the page goes.
//
// Reference layout: bit 31 set: large, bits 0..30 index the slot table;
// otherwise page index << kPageShift | offset in 8-byte units. Reference 0
// is the first record of page 0: the stripe's LRU sentinel, never freed; page
// 0 is never unmapped.
//
// Not thread-safe: the owning stripe's lock guards it.

#ifndef TIERCACHE_ENGINE_ARENA_H_
#define TIERCACHE_ENGINE_ARENA_H_

#include <algorithm>
#include <array>
#include <bit>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "spin_lock.h"

namespace tiercache::engine_internal {

using Ref = uint32_t;

inline constexpr size_t kUnit = 8;
inline constexpr size_t kMinRecordUnits = 4;  // a record header is 32 bytes
inline constexpr size_t kMaxSmallRecord = 16 * 1024;
inline constexpr size_t kMaxSmallUnits = kMaxSmallRecord / kUnit;
inline constexpr size_t kPageBytes = 64 * 1024;
inline constexpr size_t kPageUnits = kPageBytes / kUnit;
inline constexpr int kPageShift = 13;  // log2(kPageUnits)
inline constexpr size_t kOsPage = 4096;
inline constexpr Ref kLargeBit = Ref{1} << 31;
static_assert(size_t{1} << kPageShift == kPageUnits);

inline constexpr size_t UnitsFor(size_t bytes) { return (bytes + kUnit - 1) / kUnit; }
inline constexpr bool IsSmallRecord(size_t bytes) { return bytes <= kMaxSmallRecord; }
inline constexpr size_t RoundUpToOsPage(size_t bytes) {
  return (bytes + kOsPage - 1) / kOsPage * kOsPage;
}

// The bytes a record of `size` bytes holds: its units in a page, or its
// mapping plus its slot.
inline size_t RecordBytes(size_t size) {
  return IsSmallRecord(size) ? std::max(UnitsFor(size), kMinRecordUnits) * kUnit
                             : RoundUpToOsPage(size) + sizeof(void*);
}

// A large record's memory: mapped (or malloc'd, if the system refuses the
// mapping). Built and released outside the stripe lock.
struct LargeBlock {
  void* ptr = nullptr;
  size_t mapped_bytes = 0;  // 0: a malloc block
};
// Never fails (throws std::bad_alloc if the system is out of memory).
LargeBlock AllocateLargeBlock(size_t size);
void ReleaseLargeBlock(const LargeBlock& block);

// Mapped large-record blocks that were freed, kept for the next large
// records of the same size (in 4 KiB pages), up to a byte limit: a fresh
// mapping costs a system call, its page faults and, when it goes, a TLB
// shootdown, and with values of 16-64 KiB that made writes 6x slower than
// reusing malloc's blocks (bench/memory_drift, phase 4). One per Cache,
// shared by its stripes, with its own lock; used outside the stripe locks.
class LargeBlockPool {
 public:
  explicit LargeBlockPool(size_t max_bytes) : max_bytes_(max_bytes) {}
  ~LargeBlockPool() { Clear(); }
  LargeBlockPool(const LargeBlockPool&) = delete;
  LargeBlockPool& operator=(const LargeBlockPool&) = delete;

  // A block for a record of `size` bytes: a kept one of the same size, or a
  // new one.
  LargeBlock Take(size_t size);
  // Keeps `block` if it is mapped and the pool has room; else releases it.
  void Put(const LargeBlock& block);
  // Releases every kept block.
  void Clear();
  size_t bytes() const;

 private:
  mutable SpinLock lock_;
  // Kept blocks by size in 4 KiB pages (index), up to kMaxPages.
  static constexpr size_t kMaxPages = 64;
  std::array<std::vector<void*>, kMaxPages + 1> kept_ ABSL_GUARDED_BY(lock_);
  size_t bytes_ ABSL_GUARDED_BY(lock_) = 0;
  const size_t max_bytes_;
};

class Arena {
 public:
  static constexpr Ref kNoFree = 0;  // ref 0 is the sentinel, never on a list

  Arena();
  ~Arena();
  Arena(const Arena&) = delete;
  Arena& operator=(const Arena&) = delete;

  char* Ptr(Ref ref) const {
    if (ref & kLargeBit) return static_cast<char*>(large_[ref & ~kLargeBit].ptr);
    return pages_[ref >> kPageShift] + (ref & (kPageUnits - 1)) * kUnit;
  }

  // True if `bytes` bytes at `ref` lie within memory the arena has handed out
  // and still holds (whether or not a record still starts there).
  bool MayHoldRecord(Ref ref, size_t bytes = kMinRecordUnits * kUnit) const {
    if (ref & kLargeBit) {
      const Ref slot = ref & ~kLargeBit;
      return slot < large_.size() && large_[slot].ptr != nullptr;
    }
    const size_t page = ref >> kPageShift;
    const size_t end = (ref & (kPageUnits - 1)) * kUnit + bytes;
    return page < pages_.size() && pages_[page] != nullptr &&
           end <= (page == current_ ? bump_ : kPageUnits) * kUnit;
  }

  // A record of `size` bytes: small ones from pages, large ones mapped.
  // Never fails (throws std::bad_alloc if the system is out of memory).
  Ref Allocate(size_t size);
  // Takes ownership of a large record's block, built outside the lock.
  Ref AdoptLarge(const LargeBlock& block, size_t size);
  // Releases a record of `size` bytes. A large record's block is returned,
  // not released, so the caller can release it after dropping the stripe
  // lock; a small record's page may be unmapped at once.
  LargeBlock Free(Ref ref, size_t size);
  // Frees everything but the sentinel, and unmaps every page but page 0.
  void Reset();

  // Compaction: the owner moves the live records out of one page at a time
  // (the one with the least live, never page 0 or the current page), so that
  // the page can be unmapped. While a page is being evacuated its free
  // records are off their lists, so nothing moves into it.
  bool evacuating() const { return evacuating_ != kNoPage; }
  // Picks the page and takes its free records off their lists (the live
  // ones' sizes from `size_of(ref)`). False if no page is at most 15/16
  // live (and then, until a record is freed, without looking again).
  template <typename SizeOf>
  bool BeginEvacuation(SizeOf&& size_of);
  // The next live record of the page being evacuated (its size from
  // `size_of(ref)`), or kNoFree when none is left. The owner copies it
  // elsewhere (Allocate never returns memory in this page), repoints every
  // reference to it, and frees it; the page is unmapped when its last live
  // record is freed.
  template <typename SizeOf>
  Ref NextToEvacuate(SizeOf&& size_of);
  // Stops an evacuation (its free records go back on their lists).
  template <typename SizeOf>
  void AbandonEvacuation(SizeOf&& size_of);

  // Bytes taken from the system: the pages (the current one as far as it
  // has been touched) and the large records' mappings. Exceeds the sum of
  // live records by the free records in pages.
  // (A current page that was the spare one counts whole: it was touched.)
  size_t reserved_bytes() const {
    return (live_pages_ - 1 + (spare_ != nullptr ? 1 : 0)) * kPageBytes +
           (current_was_spare_ ? kPageBytes : RoundUpToOsPage(bump_ * kUnit)) + large_bytes_;
  }
  // Of which, free records in pages (and the unusable ends of pages), but
  // not the spare page.
  size_t free_page_bytes() const {
    return reserved_bytes() - large_bytes_ - live_units_total_ * kUnit -
           (spare_ != nullptr ? kPageBytes : 0);
  }

 private:
  static constexpr size_t kNoPage = ~size_t{0};

  // A free small record's header.
  struct FreeRecord {
    Ref mark;  // kFreeMark
    uint32_t units;
    Ref next;  // on the free list of its size; kNoFree ends it
    Ref prev;
  };
  static constexpr Ref kFreeMark = ~Ref{0};
  FreeRecord* AsFree(Ref ref) const { return reinterpret_cast<FreeRecord*>(Ptr(ref)); }

  Ref AllocateSmall(size_t units);
  void PushFree(Ref ref, size_t units);
  void Unlink(Ref ref);
  Ref PopFree(size_t units);
  // Starts a new current page (reusing an unmapped page's index first).
  // False when the refs are exhausted.
  bool NewPage();
  // The page BeginEvacuation takes, or kNoPage.
  size_t PickEvacuee() const;
  // Calls fn(ref, free) for each record of `page` (which is not the current
  // one), in order.
  template <typename SizeOf, typename Fn>
  void ForEachRecordInPage(size_t page, SizeOf&& size_of, Fn&& fn);
  // Unmaps `page`, whose records are all free.
  void ReleasePage(size_t page);
  void FreeAll();

  std::vector<char*> pages_;  // nullptr: unmapped
  char* spare_ = nullptr;     // an emptied page, kept for the next new one
  bool current_was_spare_ = false;
  // Frees since BeginEvacuation last found no page worth evacuating: until
  // one happens, it would find none again, so it does not look.
  bool freed_since_no_evacuee_ = true;
  std::vector<uint32_t> live_units_;  // per page: units in live records
  std::vector<uint32_t> unmapped_;    // indices of unmapped pages, to reuse
  size_t live_pages_ = 0;
  size_t live_units_total_ = 0;
  size_t current_ = 0;  // the page being carved
  size_t bump_ = 0;     // next free unit in the current page
  // By size in units. On the heap, not in the stripe: 8 KiB of heads inline
  // put the stripe's table 8 KiB past its lock, and Get hits at 1 and 2
  // threads lost 10-15% (bench/engine_bench).
  std::vector<Ref> free_ = std::vector<Ref>(kMaxSmallUnits + 1, kNoFree);
  // Bit u set: free_[u] is not empty; finds the smallest larger free record.
  std::array<uint64_t, (kMaxSmallUnits + 64) / 64> nonempty_{};
  size_t evacuating_ = kNoPage;  // the page being evacuated
  size_t cursor_ = 0;            // in it, in units: records before it are done
  std::vector<LargeBlock> large_;
  std::vector<Ref> free_large_slots_;
  size_t large_bytes_ = 0;
};

template <typename SizeOf, typename Fn>
void Arena::ForEachRecordInPage(size_t page, SizeOf&& size_of, Fn&& fn) {
  for (size_t offset = 0; offset + kMinRecordUnits <= kPageUnits;) {
    const Ref ref = static_cast<Ref>((page << kPageShift) | offset);
    const FreeRecord* f = AsFree(ref);
    const bool free = f->mark == kFreeMark;
    // Read the size first: fn may change the record.
    offset += free ? f->units : std::max(UnitsFor(size_of(ref)), kMinRecordUnits);
    fn(ref, free);
  }
}

template <typename SizeOf>
bool Arena::BeginEvacuation(SizeOf&& size_of) {
  if (!freed_since_no_evacuee_) return false;
  const size_t page = PickEvacuee();
  if (page == kNoPage) {
    freed_since_no_evacuee_ = false;
    return false;
  }
  ForEachRecordInPage(page, size_of, [this](Ref ref, bool free) {
    if (free) Unlink(ref);
  });
  evacuating_ = page;
  cursor_ = 0;
  return true;
}

template <typename SizeOf>
void Arena::AbandonEvacuation(SizeOf&& size_of) {
  if (evacuating_ == kNoPage) return;
  const size_t page = evacuating_;
  evacuating_ = kNoPage;
  ForEachRecordInPage(page, size_of, [this](Ref ref, bool free) {
    if (free) PushFree(ref, AsFree(ref)->units);
  });
}

template <typename SizeOf>
Ref Arena::NextToEvacuate(SizeOf&& size_of) {
  while (evacuating_ != kNoPage && cursor_ + kMinRecordUnits <= kPageUnits) {
    const Ref ref = static_cast<Ref>((evacuating_ << kPageShift) | cursor_);
    const FreeRecord* f = AsFree(ref);
    if (f->mark == kFreeMark) {
      cursor_ += f->units;
      continue;
    }
    cursor_ += std::max(UnitsFor(size_of(ref)), kMinRecordUnits);
    return ref;
  }
  return kNoFree;
}

}  // namespace tiercache::engine_internal

#endif  // TIERCACHE_ENGINE_ARENA_H_
