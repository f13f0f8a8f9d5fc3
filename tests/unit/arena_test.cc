// The record allocator on its own: reuse, splitting, large records, and the
// bounds check the lazy expiry heap relies on.

#include "arena.h"

#include <cstring>
#include <set>
#include <vector>

#include "gtest/gtest.h"

namespace tiercache::engine_internal {
namespace {

TEST(ArenaTest, RefZeroIsReservedAndRecordsDoNotOverlap) {
  Arena arena(1 << 20);
  std::set<Ref> refs;
  std::vector<std::pair<Ref, size_t>> records;
  for (size_t size : {32u, 40u, 33u, 1000u, 1024u, 64u}) {
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
  Arena arena(1 << 20);
  const Ref a = arena.Allocate(80);
  arena.Allocate(80);
  const size_t reserved = arena.reserved_bytes();
  EXPECT_EQ(arena.Free(a, 80), nullptr);
  EXPECT_EQ(arena.Allocate(77), a);  // 77 bytes round up to the same 10 units
  EXPECT_EQ(arena.reserved_bytes(), reserved);
}

TEST(ArenaTest, LargerFreeRecordIsSplit) {
  Arena arena(1 << 20);
  const Ref big = arena.Allocate(800);  // 100 units
  arena.Allocate(40);                   // keeps the bump pointer past `big`
  arena.Free(big, 800);
  const Ref small = arena.Allocate(80);  // 10 units, from the front of `big`
  EXPECT_EQ(small, big);
  const Ref next = arena.Allocate(160);  // 20 units, from the remainder
  EXPECT_EQ(next, big + 10);
}

TEST(ArenaTest, PagesFollowTheBudget) {
  Arena tiny(4096);  // pages of 1 KiB
  EXPECT_EQ(tiny.reserved_bytes(), 1024u);
  Arena big(size_t{1} << 30);  // pages of 64 KiB
  EXPECT_EQ(big.reserved_bytes(), 65536u);
  // A full page moves to a new one; reserved grows by a page.
  for (int i = 0; i < 40; ++i) tiny.Allocate(64);
  EXPECT_EQ(tiny.reserved_bytes(), 3u * 1024);
}

TEST(ArenaTest, LargeRecordsAreMallocBlocksReturnedOnFree) {
  Arena arena(1 << 20);
  const Ref ref = arena.Allocate(5000);
  EXPECT_NE(ref & kLargeBit, 0u);
  std::memset(arena.Ptr(ref), 7, 5000);
  EXPECT_TRUE(arena.MayHoldRecord(ref));
  void* block = arena.Free(ref, 5000);
  ASSERT_NE(block, nullptr);
  std::free(block);
  EXPECT_FALSE(arena.MayHoldRecord(ref));  // its slot is empty now
}

TEST(ArenaTest, MayHoldRecordStaysWithinHandedOutMemory) {
  Arena arena(1 << 20);
  const Ref ref = arena.Allocate(64);
  EXPECT_TRUE(arena.MayHoldRecord(ref, 64));
  EXPECT_FALSE(arena.MayHoldRecord(ref, 64 + 8));    // past the bump pointer
  EXPECT_FALSE(arena.MayHoldRecord(ref + 1000));     // never handed out
  EXPECT_FALSE(arena.MayHoldRecord(Ref{1} << 20));   // no such page
  EXPECT_FALSE(arena.MayHoldRecord(kLargeBit | 5));  // no such slot
}

TEST(ArenaTest, ResetKeepsOnlyTheSentinel) {
  Arena arena(1 << 20);
  for (int i = 0; i < 5000; ++i) arena.Allocate(100);
  void* block = arena.Free(arena.Allocate(4000), 4000);
  std::free(block);
  arena.Allocate(4000);
  arena.Reset();
  EXPECT_EQ(arena.reserved_bytes(), 65536u);
  EXPECT_EQ(arena.Allocate(32), 4u);  // right after the sentinel
}

}  // namespace
}  // namespace tiercache::engine_internal
