// The record allocator on its own: reuse, splitting, large records, pages
// going back to the system, and the bounds check the lazy expiry heap relies
// on.

#include "arena.h"

#include <cstring>
#include <set>
#include <vector>

#include "gtest/gtest.h"

namespace tiercache::engine_internal {
namespace {

TEST(ArenaTest, RefZeroIsReservedAndRecordsDoNotOverlap) {
  Arena arena;
  std::set<Ref> refs;
  std::vector<std::pair<Ref, size_t>> records;
  for (size_t size : {32u, 40u, 33u, 1000u, 1024u, 64u, 16384u, 5000u}) {
    const Ref ref = arena.Allocate(size);
    EXPECT_NE(ref, 0u);
    EXPECT_TRUE(refs.insert(ref).second);
    std::memset(arena.Ptr(ref), static_cast<int>(size & 0xff), size);
    records.push_back({ref, size});
  }
  for (const auto& [ref, size] : records) {  // nothing was overwritten by a neighbour
    const unsigned char* p = reinterpret_cast<unsigned char*>(arena.Ptr(ref));
    for (size_t i = 0; i < size; ++i) ASSERT_EQ(p[i], size & 0xff) << "record of " << size;
  }
}

TEST(ArenaTest, FreedRecordIsReusedForTheSameSize) {
  Arena arena;
  const Ref a = arena.Allocate(80);
  arena.Allocate(80);
  const size_t reserved = arena.reserved_bytes();
  EXPECT_EQ(arena.Free(a, 80).ptr, nullptr);
  EXPECT_EQ(arena.Allocate(77), a);  // 77 bytes round up to the same 10 units
  EXPECT_EQ(arena.reserved_bytes(), reserved);
}

TEST(ArenaTest, LargerFreeRecordIsSplit) {
  Arena arena;
  const Ref big = arena.Allocate(800);  // 100 units
  arena.Allocate(40);                   // keeps the bump pointer past `big`
  arena.Free(big, 800);
  const Ref small = arena.Allocate(80);  // 10 units, from the front of `big`
  EXPECT_EQ(small, big);
  const Ref next = arena.Allocate(160);  // 20 units, from the remainder
  EXPECT_EQ(next, big + 10);
}

// Reserved: whole pages, but the current one only as far as it is touched
// (in 4 KiB steps), and large records' mappings.
TEST(ArenaTest, ReservedCountsTouchedPagesAndMappings) {
  Arena arena;
  EXPECT_EQ(arena.reserved_bytes(), 4096u);          // the sentinel's first 4 KiB
  for (int i = 0; i < 100; ++i) arena.Allocate(64);  // 32 + 6400 bytes
  EXPECT_EQ(arena.reserved_bytes(), 8192u);
  // Filling the page starts another: the first counts whole. 1100 records
  // of 8 units after the sentinel's 4: 1023 fill page 0, 77 go to page 1.
  for (int i = 0; i < 1000; ++i) arena.Allocate(64);
  EXPECT_EQ(arena.reserved_bytes(), kPageBytes + 8192u);
  const Ref large = arena.Allocate(20000);
  EXPECT_NE(large & kLargeBit, 0u);
  EXPECT_EQ(arena.reserved_bytes(), kPageBytes + 8192u + 20480u);
  ReleaseLargeBlock(arena.Free(large, 20000));
  EXPECT_EQ(arena.reserved_bytes(), kPageBytes + 8192u);
}

// A page whose records are all free leaves at once, and its free records
// leave their lists (so nothing is handed out from it). The first such page
// is kept as the spare (still reserved) for the next new page; a second
// one would go back to the system.
TEST(ArenaTest, AnEmptyPageIsUnmapped) {
  Arena arena;
  std::vector<Ref> first_page, second_page;
  while (arena.reserved_bytes() < kPageBytes) first_page.push_back(arena.Allocate(1000));
  // Now carving page 1; fill some of it, then empty page... page 0 never
  // goes (the sentinel), so fill page 1, move on to page 2, and empty page 1.
  for (int i = 0; i < 70; ++i) second_page.push_back(arena.Allocate(1000));
  const size_t reserved = arena.reserved_bytes();
  size_t in_page_1 = 0;
  for (const Ref ref : second_page) {
    if ((ref >> kPageShift) == 1) {
      arena.Free(ref, 1000);
      ++in_page_1;
    }
  }
  ASSERT_GT(in_page_1, 0u);
  EXPECT_EQ(arena.reserved_bytes(), reserved);  // it is the spare now
  EXPECT_FALSE(arena.MayHoldRecord(Ref{1} << kPageShift));
  // The next allocations of that size come from elsewhere, never page 1,
  // until a new page reuses its index.
  for (int i = 0; i < 5; ++i) {
    const Ref ref = arena.Allocate(1000);
    EXPECT_NE(ref >> kPageShift, 1u);
    std::memset(arena.Ptr(ref), 1, 1000);
  }
  // Emptying page 0's records too does not release page 0 (the sentinel's).
  for (const Ref ref : first_page) arena.Free(ref, 1000);
  EXPECT_TRUE(arena.MayHoldRecord(Ref{0}));
}

// Records up to 16 KiB are small (in pages); larger ones are mapped.
TEST(ArenaTest, RecordsUpTo16KiBLiveInPages) {
  Arena arena;
  EXPECT_EQ(arena.Allocate(kMaxSmallRecord) & kLargeBit, 0u);
  EXPECT_NE(arena.Allocate(kMaxSmallRecord + 1) & kLargeBit, 0u);
  EXPECT_EQ(RecordBytes(kMaxSmallRecord), kMaxSmallRecord);
  EXPECT_EQ(RecordBytes(kMaxSmallRecord + 1), 20480u + sizeof(void*));
}

TEST(ArenaTest, LargeRecordsAreMappedAndReturnedOnFree) {
  Arena arena;
  const Ref ref = arena.Allocate(50000);
  EXPECT_NE(ref & kLargeBit, 0u);
  std::memset(arena.Ptr(ref), 7, 50000);
  EXPECT_TRUE(arena.MayHoldRecord(ref));
  const LargeBlock block = arena.Free(ref, 50000);
  ASSERT_NE(block.ptr, nullptr);
  EXPECT_EQ(block.mapped_bytes, 53248u);
  ReleaseLargeBlock(block);
  EXPECT_FALSE(arena.MayHoldRecord(ref));  // its slot is empty now
}

TEST(ArenaTest, MayHoldRecordStaysWithinHandedOutMemory) {
  Arena arena;
  const Ref ref = arena.Allocate(64);
  EXPECT_TRUE(arena.MayHoldRecord(ref, 64));
  EXPECT_FALSE(arena.MayHoldRecord(ref, 64 + 8));    // past the bump pointer
  EXPECT_FALSE(arena.MayHoldRecord(ref + 1000));     // never handed out
  EXPECT_FALSE(arena.MayHoldRecord(Ref{1} << 20));   // no such page
  EXPECT_FALSE(arena.MayHoldRecord(kLargeBit | 5));  // no such slot
}

TEST(ArenaTest, ResetKeepsOnlyTheSentinel) {
  Arena arena;
  for (int i = 0; i < 5000; ++i) arena.Allocate(100);
  ReleaseLargeBlock(arena.Free(arena.Allocate(40000), 40000));
  arena.Allocate(40000);
  arena.Reset();
  EXPECT_EQ(arena.reserved_bytes(), 4096u);
  EXPECT_EQ(arena.Allocate(32), 4u);  // right after the sentinel
}

}  // namespace
}  // namespace tiercache::engine_internal
