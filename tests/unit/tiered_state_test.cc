// The tiered state machine of docs/tiered.md, transition by transition, on a
// fake L2 and a fake clock: revalidation (unchanged, changed, gone, L2 down),
// leases (win, wait, timeout, holder death, a failed load), early refresh,
// warm-up, outages, a replica's own pending writes, delete and CAS. No
// memcached, no sleeps, exact outcomes. The same paths against a real
// memcached are in tests/integration/tiered_cache_test.cc.

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "fake_l2.h"
#include "gtest/gtest.h"
#include "status_matchers.h"
#include "tiercache/clock.h"
#include "tiercache/tiered_cache.h"

namespace tiercache {
namespace {

using testing::FakeL2;
using testing::FakeMemcached;

class TieredStateTest : public ::testing::Test {
 protected:
  TieredOptions Options() {
    TieredOptions options;
    options.l1.max_bytes = 1 << 20;
    options.l1.clock = &clock_;
    options.max_staleness = absl::Seconds(1);
    options.lease_ttl = absl::Seconds(30);
    options.lease_wait = absl::Seconds(2);
    return options;
  }
  // A replica: its own L1 and replication queue over the shared fake.
  std::unique_ptr<TieredCache> Replica(FakeL2** l2_out = nullptr,
                                       std::optional<TieredOptions> options = std::nullopt) {
    auto l2 = std::make_unique<FakeL2>(&memcached_, with_old_pool_ ? &old_pool_ : nullptr);
    if (l2_out != nullptr) *l2_out = l2.get();
    absl::StatusOr<std::unique_ptr<TieredCache>> cache =
        mirror_internal::CreateTieredCache(options.value_or(Options()), std::move(l2));
    EXPECT_TRUE(cache.ok()) << cache.status();
    return *std::move(cache);
  }
  // A loader (kept alive by the caller's full expression: Loader is a
  // FunctionRef, so the callable must outlive the call).
  static std::function<absl::StatusOr<std::string>(std::string_view)> Counting(int* calls,
                                                                               std::string value) {
    return [calls, value](std::string_view) -> absl::StatusOr<std::string> {
      ++*calls;
      return value;
    };
  }

  FakeClock clock_;
  FakeMemcached memcached_{&clock_};
  FakeMemcached old_pool_{&clock_};
  bool with_old_pool_ = false;
};

// --- Revalidation ------------------------------------------------------------

TEST_F(TieredStateTest, AFreshCopyIsServedWithoutAskingL2) {
  auto cache = Replica();
  memcached_.Put("k", "v1");
  EXPECT_EQ(cache->Get("k"), "v1");  // L2 hit fills L1
  const int fetches = memcached_.fetches();
  clock_.Advance(absl::Milliseconds(999));
  EXPECT_EQ(cache->Get("k"), "v1");
  EXPECT_EQ(memcached_.fetches(), fetches);
  EXPECT_EQ(cache->Stats().l1_hits, 1u);
  EXPECT_EQ(cache->Stats().l2_hits, 1u);
}

TEST_F(TieredStateTest, AnUnchangedCopyCostsOneCasCheckAndIsRestamped) {
  auto cache = Replica();
  memcached_.Put("k", "v1");
  ASSERT_EQ(cache->Get("k"), "v1");
  clock_.Advance(absl::Seconds(1));
  const int fetches = memcached_.fetches();
  EXPECT_EQ(cache->Get("k"), "v1");
  EXPECT_EQ(memcached_.fetches(), fetches + 1);  // the CAS check only
  TieredStats stats = cache->Stats();
  EXPECT_EQ(stats.revalidations, 1u);
  EXPECT_EQ(stats.revalidated_unchanged, 1u);
  // Restamped: fresh for another max_staleness.
  clock_.Advance(absl::Milliseconds(999));
  EXPECT_EQ(cache->Get("k"), "v1");
  EXPECT_EQ(memcached_.fetches(), fetches + 1);
}

TEST_F(TieredStateTest, AChangedCopyIsReplacedByL2sValue) {
  auto cache = Replica();
  memcached_.Put("k", "v1");
  ASSERT_EQ(cache->Get("k"), "v1");
  memcached_.Put("k", "v2");         // another replica's write
  EXPECT_EQ(cache->Get("k"), "v1");  // within max_staleness
  clock_.Advance(absl::Seconds(1));
  const int fetches = memcached_.fetches();
  EXPECT_EQ(cache->Get("k"), "v2");
  EXPECT_EQ(memcached_.fetches(), fetches + 2);  // CAS check, then the value
  EXPECT_EQ(cache->Stats().revalidated_changed, 1u);
  EXPECT_EQ(cache->GetL1Copy("k"), "v2");
}

TEST_F(TieredStateTest, ACopyGoneFromL2IsDroppedAndIsAMiss) {
  auto cache = Replica();
  memcached_.Put("k", "v1");
  ASSERT_EQ(cache->Get("k"), "v1");
  memcached_.Erase("k");
  clock_.Advance(absl::Seconds(1));
  EXPECT_EQ(cache->Get("k"), std::nullopt);
  EXPECT_EQ(cache->Stats().revalidated_gone, 1u);
  EXPECT_EQ(cache->GetL1Copy("k"), std::nullopt);
}

TEST_F(TieredStateTest, WhenL2IsDownAStaleCopyIsServedAndTheErrorCounted) {
  auto cache = Replica();
  memcached_.Put("k", "v1");
  ASSERT_EQ(cache->Get("k"), "v1");
  memcached_.SetDown(true);
  clock_.Advance(absl::Seconds(5));
  EXPECT_EQ(cache->Get("k"), "v1");
  EXPECT_EQ(cache->Stats().l2_errors, 1u);
  // Back up: the next read revalidates again.
  memcached_.SetDown(false);
  memcached_.Put("k", "v2");
  EXPECT_EQ(cache->Get("k"), "v2");
}

TEST_F(TieredStateTest, AnL1CopyNeverOutlivesItsL2Item) {
  auto cache = Replica();
  memcached_.Put("k", "v1", absl::Seconds(10));
  ASSERT_EQ(cache->Get("k"), "v1");
  clock_.Advance(absl::Seconds(10));
  memcached_.SetDown(true);  // even with no L2 to ask, the copy has expired
  EXPECT_EQ(cache->GetL1Copy("k"), std::nullopt);
}

// --- Leases --------------------------------------------------------------------

TEST_F(TieredStateTest, TheLeaseWinnerLoadsOnceAndStoresOverTheStub) {
  auto cache = Replica();
  int loads = 0;
  EXPECT_EQ(*cache->GetOrLoad("k", Counting(&loads, "loaded")), "loaded");
  EXPECT_EQ(loads, 1);
  TieredStats stats = cache->Stats();
  EXPECT_EQ(stats.lease_wins, 1u);
  EXPECT_EQ(stats.loads, 1u);
  std::optional<FakeMemcached::Item> item = memcached_.Peek("k");
  ASSERT_TRUE(item.has_value());
  EXPECT_FALSE(item->stub);
  EXPECT_EQ(item->value, "loaded");
  // Another replica reads it from L2: no second load.
  auto other = Replica();
  EXPECT_EQ(*other->GetOrLoad("k", Counting(&loads, "again")), "loaded");
  EXPECT_EQ(loads, 1);
}

TEST_F(TieredStateTest, AWaiterPollsOnTheClockUntilTheHolderStores) {
  auto holder = Replica();
  auto waiter = Replica();
  // The holder wins the lease (its loader is still running).
  ASSERT_TRUE(
      memcached_
          .Fetch("k",
                 {.value = true, .lease_ttl = absl::Seconds(30), .recache_below = std::nullopt})
          ->won);
  int polls = 0;
  memcached_.on_fetch = [&] {
    if (++polls == 4) memcached_.Put("k", "from the holder");
  };
  int loads = 0;
  const absl::Time start = clock_.Now();
  EXPECT_EQ(*waiter->GetOrLoad("k", Counting(&loads, "mine")), "from the holder");
  EXPECT_EQ(loads, 0);
  EXPECT_EQ(waiter->Stats().lease_waits, 1u);
  EXPECT_EQ(waiter->Stats().lease_timeouts, 0u);
  // Three sleeps between four polls: 1 + 2 + 4 ms.
  EXPECT_EQ(clock_.sleeps(), 3u);
  EXPECT_EQ(clock_.Now() - start, absl::Milliseconds(7));
  // The wait is one sample of the lease_wait latency, exactly 7 ms (the
  // 5..10 ms bucket).
  const LatencyHistogram wait = waiter->Stats().l2_latency[L2Op::kLeaseWait];
  EXPECT_EQ(wait.count, 1u);
  EXPECT_DOUBLE_EQ(wait.sum_seconds, 0.007);
  EXPECT_EQ(wait.counts[7], 1u);  // bounds: 50, 100, 250, 500 µs, 1, 2.5, 5, 10 ms, ...
}

TEST_F(TieredStateTest, AWaiterLoadsItselfAfterLeaseWait) {
  auto waiter = Replica();
  ASSERT_TRUE(
      memcached_
          .Fetch("k",
                 {.value = true, .lease_ttl = absl::Seconds(30), .recache_below = std::nullopt})
          ->won);
  int loads = 0;
  const absl::Time start = clock_.Now();
  EXPECT_EQ(*waiter->GetOrLoad("k", Counting(&loads, "mine")), "mine");
  EXPECT_EQ(loads, 1);
  EXPECT_EQ(clock_.Now() - start, absl::Seconds(2));  // exactly lease_wait
  EXPECT_EQ(waiter->Stats().lease_timeouts, 1u);
  // Its value replaced the stub (the holder had not stored).
  EXPECT_EQ(memcached_.Peek("k")->value, "mine");
}

TEST_F(TieredStateTest, AHolderThatDiedLosesItsLeaseAfterLeaseTtl) {
  TieredOptions options = Options();
  options.lease_ttl = absl::Seconds(1);
  options.lease_wait = absl::Seconds(10);
  auto waiter = Replica(nullptr, options);
  // A holder took the lease and died.
  ASSERT_TRUE(
      memcached_
          .Fetch("k", {.value = true, .lease_ttl = absl::Seconds(1), .recache_below = std::nullopt})
          ->won);
  int loads = 0;
  EXPECT_EQ(*waiter->GetOrLoad("k", Counting(&loads, "mine")), "mine");
  EXPECT_EQ(loads, 1);
  TieredStats stats = waiter->Stats();
  EXPECT_EQ(stats.lease_waits, 1u);
  EXPECT_EQ(stats.lease_wins, 1u);  // the stub expired; the waiter won a new lease
  EXPECT_EQ(stats.lease_timeouts, 0u);
}

TEST_F(TieredStateTest, AFailedLoadReleasesTheLease) {
  auto cache = Replica();
  auto failing = [](std::string_view) -> absl::StatusOr<std::string> {
    return absl::UnavailableError("database down");
  };
  EXPECT_TRUE(absl::IsUnavailable(cache->GetOrLoad("k", failing).status()));
  EXPECT_EQ(memcached_.Peek("k"), std::nullopt);  // no stub left to wait on
  EXPECT_EQ(cache->Stats().load_failures, 1u);
  int loads = 0;
  auto other = Replica();
  EXPECT_EQ(*other->GetOrLoad("k", Counting(&loads, "v")), "v");
  EXPECT_EQ(other->Stats().lease_waits, 0u);
}

// --- Early refresh -------------------------------------------------------------

TEST_F(TieredStateTest, EarlyRefreshReloadsOnceWhileOthersServeTheCurrentValue) {
  auto first = Replica();
  auto second = Replica();
  memcached_.Put("k", "v1", absl::Seconds(60));
  const LoadOptions refresh{absl::Seconds(10)};
  int loads = 0;
  ASSERT_EQ(*first->GetOrLoad("k", Counting(&loads, "v2"), {}, refresh), "v1");
  ASSERT_EQ(*second->GetOrLoad("k", Counting(&loads, "v2"), {}, refresh), "v1");
  EXPECT_EQ(loads, 0);
  // 55 s later both copies are stale and inside the 10 s window: memcached
  // gives the refresh to the first to ask; the other keeps serving v1.
  clock_.Advance(absl::Seconds(55));
  EXPECT_EQ(*first->GetOrLoad("k", Counting(&loads, "v2"), {}, refresh), "v2");
  EXPECT_EQ(first->Stats().refreshes, 1u);
  EXPECT_EQ(loads, 1);
  EXPECT_EQ(memcached_.Peek("k")->value, "v2");
  // The other replica's copy is in the window too, but L2's item is the new
  // one (no TTL): it reads v2 and does not reload.
  EXPECT_EQ(*second->GetOrLoad("k", Counting(&loads, "v3"), {}, refresh), "v2");
  EXPECT_EQ(loads, 1);
  EXPECT_EQ(second->Stats().refreshes, 0u);
}

TEST_F(TieredStateTest, ALoserOfTheRefreshServesTheCurrentValue) {
  auto second = Replica();
  memcached_.Put("k", "v1", absl::Seconds(60));
  const LoadOptions refresh{absl::Seconds(10)};
  int loads = 0;
  ASSERT_EQ(*second->GetOrLoad("k", Counting(&loads, "v2"), {}, refresh), "v1");
  clock_.Advance(absl::Seconds(55));
  // Another replica won the refresh and is reloading.
  ASSERT_TRUE(
      memcached_
          .Fetch("k",
                 {.value = true, .lease_ttl = std::nullopt, .recache_below = absl::Seconds(10)})
          ->won);
  EXPECT_EQ(*second->GetOrLoad("k", Counting(&loads, "v2"), {}, refresh), "v1");
  EXPECT_EQ(loads, 0);
  EXPECT_EQ(second->Stats().refreshes, 0u);
}

// --- Warm-up -------------------------------------------------------------------

TEST_F(TieredStateTest, AMissIsAnsweredByTheOldPoolAndCopiedToTheNewOne) {
  with_old_pool_ = true;
  auto cache = Replica();
  old_pool_.Put("k", "old", absl::Seconds(100), 7);
  int loads = 0;
  EXPECT_EQ(*cache->GetOrLoad("k", Counting(&loads, "db")), "old");
  EXPECT_EQ(loads, 0);
  EXPECT_EQ(cache->Stats().fallback_hits, 1u);
  std::optional<FakeMemcached::Item> item = memcached_.Peek("k");
  ASSERT_TRUE(item.has_value());
  EXPECT_EQ(item->value, "old");
  EXPECT_EQ(item->flags, 7u);
  // Get (no loader) adds: the new pool keeps data written there while the
  // old pool was being read, and the answer is not kept in L1.
  old_pool_.Put("j", "old j");
  old_pool_.on_fetch = [&] { memcached_.Put("j", "newer j"); };
  EXPECT_EQ(cache->Get("j"), "old j");
  EXPECT_EQ(memcached_.Peek("j")->value, "newer j");
  EXPECT_EQ(cache->GetL1Copy("j"), std::nullopt);
  old_pool_.on_fetch = nullptr;
  // With no newer data the old value is added to the new pool.
  old_pool_.Put("i", "old i");
  EXPECT_EQ(cache->Get("i"), "old i");
  EXPECT_EQ(memcached_.Peek("i")->value, "old i");
}

// --- Outages and the replica's own writes -------------------------------------

TEST_F(TieredStateTest, DuringAnOutageGetOrLoadLoadsAndGetMisses) {
  auto cache = Replica();
  memcached_.SetDown(true);
  int loads = 0;
  EXPECT_EQ(*cache->GetOrLoad("k", Counting(&loads, "v")), "v");
  EXPECT_EQ(loads, 1);
  EXPECT_EQ(cache->Get("absent"), std::nullopt);
  TieredStats stats = cache->Stats();
  EXPECT_EQ(stats.l2_errors, 2u);
  EXPECT_EQ(stats.mirror.failed, 1u);  // the loaded value could not be replicated
  EXPECT_EQ(cache->GetL1Copy("k"), "v");
}

TEST_F(TieredStateTest, APendingWriteIsServedPastMaxStalenessThenCheckedByValue) {
  FakeL2* l2 = nullptr;
  auto cache = Replica(&l2);
  l2->HoldReplication(true);
  ASSERT_TRUE(cache->Set("k", "mine").ok());
  clock_.Advance(absl::Seconds(10));
  const int fetches = memcached_.fetches();
  EXPECT_EQ(cache->Get("k"), "mine");  // its write has not reached memcached
  EXPECT_EQ(memcached_.fetches(), fetches);
  l2->Deliver();
  EXPECT_EQ(cache->Get("k"), "mine");  // now checked, by value (no CAS known)
  EXPECT_EQ(memcached_.fetches(), fetches + 1);
  EXPECT_EQ(cache->Stats().revalidated_unchanged, 1u);
  // From then on by CAS.
  clock_.Advance(absl::Seconds(1));
  EXPECT_EQ(cache->Get("k"), "mine");
  EXPECT_EQ(memcached_.fetches(), fetches + 2);
  EXPECT_EQ(cache->Stats().revalidated_unchanged, 2u);
}

TEST_F(TieredStateTest, DeleteLetsQueuedWritesLandFirst) {
  FakeL2* l2 = nullptr;
  auto cache = Replica(&l2);
  l2->HoldReplication(true);
  ASSERT_TRUE(cache->Set("k", "v").ok());
  ASSERT_TRUE(cache->Delete("k").ok());
  // The queued set reached memcached before the delete, not after it: once
  // the queue may run again, nothing is left in it to land afterwards.
  l2->HoldReplication(false);
  EXPECT_EQ(memcached_.Peek("k"), std::nullopt);
  EXPECT_EQ(cache->Stats().mirror.queue_depth, 0u);
  EXPECT_EQ(cache->GetL1Copy("k"), std::nullopt);
  memcached_.SetDown(true);
  EXPECT_TRUE(absl::IsUnavailable(cache->Delete("k")));
  EXPECT_EQ(cache->Stats().l2_errors, 1u);
}

TEST_F(TieredStateTest, CompareAndSwapKeepsTheWinnerAndDropsALosersCopy) {
  auto a = Replica();
  auto b = Replica();
  memcached_.Put("k", "1");
  absl::StatusOr<std::optional<Item>> seen_a = a->GetItem("k");
  absl::StatusOr<std::optional<Item>> seen_b = b->GetItem("k");
  ASSERT_TRUE(seen_a.ok() && seen_a->has_value() && seen_b.ok() && seen_b->has_value());
  EXPECT_EQ(*a->CompareAndSwap("k", "2", (*seen_a)->cas), StoreResult::kStored);
  EXPECT_EQ(a->GetL1Copy("k"), "2");
  ASSERT_EQ(b->Get("k"), "2");  // b reads the winner (and now holds a copy)
  EXPECT_EQ(*b->CompareAndSwap("k", "3", (*seen_b)->cas), StoreResult::kExists);
  EXPECT_EQ(b->GetL1Copy("k"), std::nullopt);
  EXPECT_EQ(memcached_.Peek("k")->value, "2");
}

TEST_F(TieredStateTest, GetItemMeasuresExpiryOnTheInjectedClock) {
  auto cache = Replica();
  memcached_.Put("k", "v", absl::Seconds(30));
  absl::StatusOr<std::optional<Item>> item = cache->GetItem("k");
  ASSERT_TRUE(item.ok() && item->has_value());
  EXPECT_EQ((*item)->expiry, clock_.Now() + absl::Seconds(30));
}

// --- Bulk reads ----------------------------------------------------------------

// A loader of many keys that counts its calls and the keys it was asked for.
struct BulkCounter {
  int calls = 0;
  std::vector<std::string> asked;
  absl::flat_hash_set<std::string> absent;  // keys it has no value for
  absl::StatusOr<absl::flat_hash_map<std::string, std::string>> operator()(
      absl::Span<const std::string_view> keys) {
    ++calls;
    absl::flat_hash_map<std::string, std::string> values;
    for (std::string_view key : keys) {
      asked.emplace_back(key);
      if (!absent.contains(std::string(key))) values[std::string(key)] = "db:" + std::string(key);
    }
    return values;
  }
};

TEST_F(TieredStateTest, GetManyAnswersFromL1ThenOneL2RoundTripForTheRest) {
  auto cache = Replica();
  memcached_.Put("a", "A");
  memcached_.Put("b", "B");
  ASSERT_EQ(cache->Get("a"), "A");  // a is in L1 now
  const int fetches = memcached_.fetches();
  const std::vector<std::string_view> keys = {"a", "b", "c", "b"};
  absl::StatusOr<absl::flat_hash_map<std::string, std::string>> got = cache->GetMany(keys);
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(*got, (absl::flat_hash_map<std::string, std::string>{{"a", "A"}, {"b", "B"}}));
  EXPECT_EQ(memcached_.fetches(), fetches + 2);  // b and c (b asked once)
  EXPECT_EQ(cache->GetL1Copy("b"), "B");
  TieredStats stats = cache->Stats();
  EXPECT_EQ(stats.l1_hits, 1u);
  EXPECT_EQ(stats.l2_hits, 2u);
  EXPECT_EQ(stats.l2_misses, 1u);
}

TEST_F(TieredStateTest, GetManyRevalidatesStaleCopiesInTheSameRoundTrip) {
  auto cache = Replica();
  memcached_.Put("same", "1");
  memcached_.Put("changed", "1");
  memcached_.Put("gone", "1");
  const std::vector<std::string_view> keys = {"same", "changed", "gone"};
  ASSERT_EQ(cache->GetMany(keys)->size(), 3u);
  memcached_.Put("changed", "2");
  memcached_.Erase("gone");
  clock_.Advance(absl::Seconds(1));
  absl::StatusOr<absl::flat_hash_map<std::string, std::string>> got = cache->GetMany(keys);
  ASSERT_TRUE(got.ok());
  EXPECT_EQ(*got, (absl::flat_hash_map<std::string, std::string>{{"same", "1"}, {"changed", "2"}}));
  TieredStats stats = cache->Stats();
  EXPECT_EQ(stats.revalidations, 3u);
  EXPECT_EQ(stats.revalidated_unchanged, 1u);
  EXPECT_EQ(stats.revalidated_changed, 1u);
  EXPECT_EQ(stats.revalidated_gone, 1u);
  EXPECT_EQ(cache->GetL1Copy("gone"), std::nullopt);
  // The unchanged and changed copies are fresh again.
  const int fetches = memcached_.fetches();
  EXPECT_EQ(cache->GetMany(keys)->size(), 2u);
  EXPECT_EQ(memcached_.fetches(), fetches + 1);  // only "gone" is asked again
}

TEST_F(TieredStateTest, GetManyServesStaleCopiesWhenL2IsDown) {
  auto cache = Replica();
  memcached_.Put("a", "A");
  ASSERT_EQ(cache->Get("a"), "A");
  memcached_.SetDown(true);
  clock_.Advance(absl::Seconds(5));
  const std::vector<std::string_view> keys = {"a", "b"};
  absl::StatusOr<absl::flat_hash_map<std::string, std::string>> got = cache->GetMany(keys);
  ASSERT_TRUE(got.ok());
  EXPECT_EQ(*got, (absl::flat_hash_map<std::string, std::string>{{"a", "A"}}));
  EXPECT_EQ(cache->Stats().l2_errors, 1u);
}

TEST_F(TieredStateTest, GetManyRefusesABadKeyBeforeAskingAnything) {
  auto cache = Replica();
  const std::string long_key(300, 'k');
  const std::vector<std::string_view> keys = {"a", long_key};
  EXPECT_TRUE(absl::IsInvalidArgument(cache->GetMany(keys).status()));
  EXPECT_EQ(memcached_.fetches(), 0);
}

TEST_F(TieredStateTest, GetOrLoadManyLoadsTheMissingKeysInOneCall) {
  auto cache = Replica();
  memcached_.Put("a", "A");
  BulkCounter loader;
  loader.absent = {"nowhere"};
  const std::vector<std::string_view> keys = {"a", "b", "c", "nowhere"};
  absl::StatusOr<absl::flat_hash_map<std::string, std::string>> got =
      cache->GetOrLoadMany(keys, std::ref(loader));
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(*got, (absl::flat_hash_map<std::string, std::string>{
                      {"a", "A"}, {"b", "db:b"}, {"c", "db:c"}}));
  EXPECT_EQ(loader.calls, 1);
  EXPECT_EQ(loader.asked, (std::vector<std::string>{"b", "c", "nowhere"}));
  EXPECT_EQ(cache->Stats().lease_wins, 3u);
  // Stored over the stubs; the key the loader has no value for left no stub.
  EXPECT_EQ(memcached_.Peek("b")->value, "db:b");
  EXPECT_FALSE(memcached_.Peek("b")->stub);
  EXPECT_EQ(memcached_.Peek("nowhere"), std::nullopt);
  // Another replica finds them all in L2.
  auto other = Replica();
  BulkCounter second;
  EXPECT_EQ(other->GetOrLoadMany({"b", "c"}, std::ref(second))->size(), 2u);
  EXPECT_EQ(second.calls, 0);
}

TEST_F(TieredStateTest, GetOrLoadManyWaitsForKeysAnotherReplicaIsLoading) {
  auto cache = Replica();
  // Another replica holds the leases of x and y; it stores x after a while
  // and never stores y.
  for (std::string_view key : {"x", "y"}) {
    ASSERT_TRUE(
        memcached_
            .Fetch(key,
                   {.value = true, .lease_ttl = absl::Seconds(30), .recache_below = std::nullopt})
            ->won);
  }
  int polls = 0;
  memcached_.on_fetch = [&] {
    if (++polls == 6) memcached_.Put("x", "from the holder");
  };
  BulkCounter loader;
  const absl::Time start = clock_.Now();
  const std::vector<std::string_view> keys = {"x", "y", "z"};
  absl::StatusOr<absl::flat_hash_map<std::string, std::string>> got =
      cache->GetOrLoadMany(keys, std::ref(loader));
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(*got, (absl::flat_hash_map<std::string, std::string>{
                      {"x", "from the holder"}, {"y", "db:y"}, {"z", "db:z"}}));
  // z at once; y after lease_wait, in a second call.
  EXPECT_EQ(loader.calls, 2);
  EXPECT_EQ(loader.asked, (std::vector<std::string>{"z", "y"}));
  EXPECT_EQ(clock_.Now() - start, absl::Seconds(2));
  TieredStats stats = cache->Stats();
  EXPECT_EQ(stats.lease_waits, 2u);
  EXPECT_EQ(stats.lease_timeouts, 1u);
  EXPECT_EQ(memcached_.Peek("y")->value, "db:y");  // stored over the dead holder's stub
}

TEST_F(TieredStateTest, AFailedBulkLoadReleasesEveryLease) {
  auto cache = Replica();
  const std::vector<std::string_view> keys = {"a", "b"};
  auto failing = [](absl::Span<const std::string_view>)
      -> absl::StatusOr<absl::flat_hash_map<std::string, std::string>> {
    return absl::UnavailableError("database down");
  };
  EXPECT_TRUE(absl::IsUnavailable(cache->GetOrLoadMany(keys, failing).status()));
  EXPECT_EQ(memcached_.Peek("a"), std::nullopt);
  EXPECT_EQ(memcached_.Peek("b"), std::nullopt);
  EXPECT_EQ(cache->Stats().load_failures, 1u);
}

TEST_F(TieredStateTest, GetOrLoadManyLoadsEverythingMissingWhenL2IsDown) {
  auto cache = Replica();
  memcached_.SetDown(true);
  BulkCounter loader;
  const std::vector<std::string_view> keys = {"a", "b"};
  EXPECT_EQ(cache->GetOrLoadMany(keys, std::ref(loader))->size(), 2u);
  EXPECT_EQ(loader.calls, 1);
  EXPECT_EQ(cache->GetL1Copy("a"), "db:a");
  EXPECT_EQ(cache->Stats().mirror.failed, 2u);  // replication failed too
}

}  // namespace
}  // namespace tiercache
