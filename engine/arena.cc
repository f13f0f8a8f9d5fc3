#include "arena.h"

#include <algorithm>
#include <new>

namespace tiercache::engine_internal {
namespace {

constexpr size_t kMinPageBytes = 1024;
constexpr size_t kMaxPageBytes = 64 * 1024;

size_t PageUnitsFor(size_t budget) {
  size_t page = std::bit_floor(std::max<size_t>(budget / 16, 1));
  return std::clamp(page, kMinPageBytes, kMaxPageBytes) / kUnit;
}

void* MallocOrThrow(size_t size) {
  void* block = std::malloc(size);
  if (block == nullptr) throw std::bad_alloc();
  return block;
}

}  // namespace

Arena::Arena(size_t budget)
    : page_units_(PageUnitsFor(budget)),
      page_shift_(std::countr_zero(page_units_)),
      offset_mask_(static_cast<Ref>(page_units_ - 1)),
      max_pages_(size_t{1} << (31 - page_shift_)) {
  NewPage();
  bump_ = kMinRecordUnits;  // ref 0: the sentinel
}

Arena::~Arena() { FreeAll(); }

void Arena::FreeAll() {
  for (char* page : pages_) std::free(page);
  for (void* block : large_) std::free(block);
  pages_.clear();
  large_.clear();
  free_large_slots_.clear();
  free_.fill(kNoFree);
  nonempty_.fill(0);
  reserved_bytes_ = 0;
}

void Arena::Reset() {
  FreeAll();
  NewPage();
  bump_ = kMinRecordUnits;
}

void Arena::NewPage() {
  pages_.push_back(static_cast<char*>(MallocOrThrow(page_units_ * kUnit)));
  reserved_bytes_ += page_units_ * kUnit;
  bump_ = 0;
}

void Arena::PushFree(Ref ref, size_t units) {
  *NextFree(ref) = free_[units];
  free_[units] = ref;
  nonempty_[units / 64] |= uint64_t{1} << (units % 64);
}

Ref Arena::PopFree(size_t units) {
  const Ref ref = free_[units];
  free_[units] = *NextFree(ref);
  if (free_[units] == kNoFree) nonempty_[units / 64] &= ~(uint64_t{1} << (units % 64));
  return ref;
}

Ref Arena::AllocateSmall(size_t units) {
  if (free_[units] != kNoFree) return PopFree(units);
  // Split the smallest free record that leaves a usable remainder.
  for (size_t from = units + kMinRecordUnits; from <= kMaxSmallUnits;) {
    const uint64_t word = nonempty_[from / 64] >> (from % 64);
    if (word == 0) {
      from = (from / 64 + 1) * 64;
      continue;
    }
    from += std::countr_zero(word);
    if (from > kMaxSmallUnits) break;
    const Ref ref = PopFree(from);
    PushFree(ref + static_cast<Ref>(units), from - units);
    return ref;
  }
  if (bump_ + units > page_units_) {
    if (pages_.size() == max_pages_) return kNoFree;  // the caller goes large
    const size_t tail = page_units_ - bump_;
    if (tail >= kMinRecordUnits) {
      PushFree(static_cast<Ref>(((pages_.size() - 1) << page_shift_) | bump_), tail);
    }
    NewPage();
  }
  const Ref ref = static_cast<Ref>(((pages_.size() - 1) << page_shift_) | bump_);
  bump_ += units;
  return ref;
}

Ref Arena::Allocate(size_t size) {
  if (IsSmallRecord(size)) {
    const size_t units = std::max(UnitsFor(size), kMinRecordUnits);
    const Ref ref = AllocateSmall(units);
    if (ref != kNoFree) return ref;
  }
  return AdoptLarge(MallocOrThrow(size), size);
}

Ref Arena::AdoptLarge(void* block, size_t size) {
  Ref slot;
  if (!free_large_slots_.empty()) {
    slot = free_large_slots_.back();
    free_large_slots_.pop_back();
    large_[slot] = block;
  } else {
    slot = static_cast<Ref>(large_.size());
    large_.push_back(block);
  }
  reserved_bytes_ += AllocatedBytes(size);
  return slot | kLargeBit;
}

void* Arena::Free(Ref ref, size_t size) {
  if (ref & kLargeBit) {
    const Ref slot = ref & ~kLargeBit;
    void* block = large_[slot];
    large_[slot] = nullptr;
    free_large_slots_.push_back(slot);
    reserved_bytes_ -= AllocatedBytes(size);
    return block;
  }
  PushFree(ref, std::max(UnitsFor(size), kMinRecordUnits));
  return nullptr;
}

}  // namespace tiercache::engine_internal
