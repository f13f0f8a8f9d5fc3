#include "arena.h"

#include <sys/mman.h>

#include <algorithm>
#include <cstdlib>
#include <new>
#include <utility>

namespace tiercache::engine_internal {
namespace {

// Anonymous memory from the system, or nullptr if it refuses. `populate`:
// fault every page in now, in one call, for memory about to be written
// whole (a large record): one fault per 4 KiB page cost more.
void* Map(size_t bytes, bool populate = false) {
  void* p = mmap(nullptr, bytes, PROT_READ | PROT_WRITE,
                 MAP_PRIVATE | MAP_ANONYMOUS | (populate ? MAP_POPULATE : 0), -1, 0);
  return p == MAP_FAILED ? nullptr : p;
}

// What a large record's block holds: its mapping, or (a malloc block) its size.
size_t BlockBytes(const LargeBlock& block, size_t size) {
  return block.mapped_bytes != 0 ? block.mapped_bytes : size;
}

}  // namespace

LargeBlock AllocateLargeBlock(size_t size) {
  const size_t bytes = RoundUpToOsPage(size);
  if (void* p = Map(bytes, /*populate=*/true)) return {p, bytes};
  // Out of mappings (vm.max_map_count) rather than memory, most likely: a
  // malloc block still works, it just does not go back to the system.
  void* p = std::malloc(size);
  if (p == nullptr) throw std::bad_alloc();
  return {p, 0};
}

void ReleaseLargeBlock(const LargeBlock& block) {
  if (block.ptr == nullptr) return;
  if (block.mapped_bytes != 0) {
    munmap(block.ptr, block.mapped_bytes);
  } else {
    std::free(block.ptr);
  }
}

LargeBlock LargeBlockPool::Take(size_t size) {
  const size_t bytes = RoundUpToOsPage(size);
  const size_t pages = bytes / kOsPage;
  if (pages <= kMaxPages) {
    SpinLockHolder hold(&lock_);
    if (!kept_[pages].empty()) {
      void* p = kept_[pages].back();
      kept_[pages].pop_back();
      bytes_ -= bytes;
      return {p, bytes};
    }
  }
  return AllocateLargeBlock(size);
}

void LargeBlockPool::Put(const LargeBlock& block) {
  const size_t pages = block.mapped_bytes / kOsPage;
  if (block.mapped_bytes != 0 && pages <= kMaxPages) {
    SpinLockHolder hold(&lock_);
    if (bytes_ + block.mapped_bytes <= max_bytes_) {
      kept_[pages].push_back(block.ptr);
      bytes_ += block.mapped_bytes;
      return;
    }
  }
  ReleaseLargeBlock(block);
}

void LargeBlockPool::Clear() {
  std::vector<LargeBlock> blocks;
  {
    SpinLockHolder hold(&lock_);
    for (size_t pages = 0; pages <= kMaxPages; ++pages) {
      for (void* p : kept_[pages]) blocks.push_back({p, pages * kOsPage});
      kept_[pages].clear();
    }
    bytes_ = 0;
  }
  for (const LargeBlock& block : blocks) ReleaseLargeBlock(block);
}

size_t LargeBlockPool::bytes() const {
  SpinLockHolder hold(&lock_);
  return bytes_;
}

Arena::Arena() {
  NewPage();
  bump_ = kMinRecordUnits;  // ref 0: the sentinel
  live_units_[0] = kMinRecordUnits;
  live_units_total_ = kMinRecordUnits;
}

Arena::~Arena() {
  FreeAll();
  if (spare_ != nullptr) munmap(spare_, kPageBytes);
  for (char* page : pages_) {
    if (page != nullptr) munmap(page, kPageBytes);
  }
}

size_t Arena::PickEvacuee() const {
  size_t best = kNoPage;
  for (size_t page = 1; page < pages_.size(); ++page) {
    if (pages_[page] == nullptr || page == current_) continue;
    if (best == kNoPage || live_units_[page] < live_units_[best]) best = page;
  }
  // Moving a page that is more live than this would cost more than 15
  // bytes of copying per byte it gives back.
  if (best == kNoPage || live_units_[best] > kPageUnits / 16 * 15) return kNoPage;
  return best;
}

void Arena::FreeAll() {
  for (const LargeBlock& block : large_) ReleaseLargeBlock(block);
  large_.clear();
  free_large_slots_.clear();
  large_bytes_ = 0;
  std::fill(free_.begin(), free_.end(), kNoFree);
  nonempty_.fill(0);
}

void Arena::Reset() {
  FreeAll();
  // Page 0 stays (it holds the sentinel); the rest go back to the system.
  for (size_t page = 1; page < pages_.size(); ++page) {
    if (pages_[page] != nullptr) munmap(pages_[page], kPageBytes);
  }
  pages_.resize(1);
  if (spare_ != nullptr) munmap(std::exchange(spare_, nullptr), kPageBytes);
  live_units_.assign(1, kMinRecordUnits);
  unmapped_.clear();
  live_pages_ = 1;
  live_units_total_ = kMinRecordUnits;
  current_ = 0;
  current_was_spare_ = false;
  bump_ = kMinRecordUnits;
  evacuating_ = kNoPage;
  freed_since_no_evacuee_ = true;
  // The rest of page 0 is touched memory the system may take back.
  madvise(pages_[0] + kOsPage, kPageBytes - kOsPage, MADV_DONTNEED);
}

bool Arena::NewPage() {
  size_t page;
  if (!unmapped_.empty()) {
    page = unmapped_.back();
  } else {
    page = pages_.size();
    if (page >= (size_t{1} << (31 - kPageShift))) return false;  // refs exhausted
  }
  char* memory = std::exchange(spare_, nullptr);
  current_was_spare_ = memory != nullptr;
  if (memory == nullptr) memory = static_cast<char*>(Map(kPageBytes));
  if (memory == nullptr) throw std::bad_alloc();
  if (page == pages_.size()) {
    pages_.push_back(memory);
    live_units_.push_back(0);
  } else {
    unmapped_.pop_back();
    pages_[page] = memory;
    live_units_[page] = 0;
  }
  ++live_pages_;
  const size_t previous = current_;
  current_ = page;
  bump_ = 0;
  // A page stays while it is being carved, even with nothing live in it.
  if (live_units_[previous] == 0 && previous != 0) ReleasePage(previous);
  return true;
}

void Arena::ReleasePage(size_t page) {
  // Its records are all free and on their lists (unless it was being
  // evacuated): take them off, walking the page record by record (a free
  // record says its size; an end shorter than a record was never one).
  if (page == evacuating_) {
    evacuating_ = kNoPage;
  } else {
    for (size_t offset = 0; offset + kMinRecordUnits <= kPageUnits;) {
      const Ref ref = static_cast<Ref>((page << kPageShift) | offset);
      const size_t units = AsFree(ref)->units;
      Unlink(ref);
      offset += units;
    }
  }
  // One emptied page is kept for the next new page: where pages empty and
  // fill at the same rate (values growing), that saves a mapping, an unmapping
  // and 16 page faults per page. bench/memory_drift, 2-4 KiB values after
  // small ones: 0.13M -> ... writes/s.
  if (spare_ == nullptr) {
    spare_ = pages_[page];
  } else {
    munmap(pages_[page], kPageBytes);
  }
  pages_[page] = nullptr;
  unmapped_.push_back(static_cast<uint32_t>(page));
  --live_pages_;
}

void Arena::PushFree(Ref ref, size_t units) {
  FreeRecord* f = AsFree(ref);
  f->mark = kFreeMark;
  f->units = static_cast<uint32_t>(units);
  f->prev = kNoFree;
  f->next = free_[units];
  if (f->next != kNoFree) AsFree(f->next)->prev = ref;
  free_[units] = ref;
  nonempty_[units / 64] |= uint64_t{1} << (units % 64);
}

void Arena::Unlink(Ref ref) {
  const FreeRecord* f = AsFree(ref);
  if (f->prev != kNoFree) {
    AsFree(f->prev)->next = f->next;
  } else {
    free_[f->units] = f->next;
    if (f->next == kNoFree) nonempty_[f->units / 64] &= ~(uint64_t{1} << (f->units % 64));
  }
  if (f->next != kNoFree) AsFree(f->next)->prev = f->prev;
}

Ref Arena::PopFree(size_t units) {
  const Ref ref = free_[units];
  Unlink(ref);
  return ref;
}

Ref Arena::AllocateSmall(size_t units) {
  Ref ref = kNoFree;
  if (free_[units] != kNoFree) {
    ref = PopFree(units);
  } else {
    // Split the smallest free record that leaves a usable remainder.
    for (size_t from = units + kMinRecordUnits; from <= kMaxSmallUnits;) {
      const uint64_t word = nonempty_[from / 64] >> (from % 64);
      if (word == 0) {
        from = (from / 64 + 1) * 64;
        continue;
      }
      from += std::countr_zero(word);
      if (from > kMaxSmallUnits) break;
      ref = PopFree(from);
      PushFree(ref + static_cast<Ref>(units), from - units);
      break;
    }
  }
  if (ref == kNoFree) {
    if (bump_ + units > kPageUnits) {
      const size_t tail = kPageUnits - bump_;
      const Ref tail_ref = static_cast<Ref>((current_ << kPageShift) | bump_);
      bump_ = kPageUnits;
      if (tail >= kMinRecordUnits) PushFree(tail_ref, tail);
      if (!NewPage()) return kNoFree;  // the caller goes large
    }
    ref = static_cast<Ref>((current_ << kPageShift) | bump_);
    bump_ += units;
  }
  live_units_[ref >> kPageShift] += static_cast<uint32_t>(units);
  live_units_total_ += units;
  return ref;
}

Ref Arena::Allocate(size_t size) {
  if (IsSmallRecord(size)) {
    const size_t units = std::max(UnitsFor(size), kMinRecordUnits);
    const Ref ref = AllocateSmall(units);
    if (ref != kNoFree) return ref;
  }
  return AdoptLarge(AllocateLargeBlock(size), size);
}

Ref Arena::AdoptLarge(const LargeBlock& block, size_t size) {
  Ref slot;
  if (!free_large_slots_.empty()) {
    slot = free_large_slots_.back();
    free_large_slots_.pop_back();
    large_[slot] = block;
  } else {
    slot = static_cast<Ref>(large_.size());
    large_.push_back(block);
  }
  large_bytes_ += BlockBytes(block, size);
  return slot | kLargeBit;
}

LargeBlock Arena::Free(Ref ref, size_t size) {
  if (ref & kLargeBit) {
    const Ref slot = ref & ~kLargeBit;
    const LargeBlock block = large_[slot];
    large_[slot] = LargeBlock{};
    free_large_slots_.push_back(slot);
    large_bytes_ -= BlockBytes(block, size);
    return block;
  }
  const size_t units = std::max(UnitsFor(size), kMinRecordUnits);
  const size_t page = ref >> kPageShift;
  live_units_[page] -= static_cast<uint32_t>(units);
  live_units_total_ -= units;
  freed_since_no_evacuee_ = true;
  if (page == evacuating_) {  // marked, so the walk skips it, but not listed
    FreeRecord* f = AsFree(ref);
    f->mark = kFreeMark;
    f->units = static_cast<uint32_t>(units);
  } else {
    PushFree(ref, units);
  }
  if (live_units_[page] == 0 && page != current_ && page != 0) ReleasePage(page);
  return LargeBlock{};
}

}  // namespace tiercache::engine_internal
