// TieredCache in one process: two instances are two replicas (each with its
// own L1 and its own fake clock) on one real memcached, so what each read
// returns is exact. tests/integration/replica_test.cc does the same across
// real processes.

#include "tiercache/tiered_cache.h"

#include <atomic>
#include <condition_variable>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"
#include "event.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "memcached_server.h"
#include "status_matchers.h"
#include "test_transport.h"

namespace tiercache {
namespace {

using ::testing::HasSubstr;
using testing::IsOkAndHolds;
using testing::MemcachedServer;
using ::testing::Optional;

using testing::Event;

class TieredCacheTest : public ::testing::Test {
 protected:
  TieredOptions Options(FakeClock* clock = nullptr) {
    TieredOptions options;
    options.l1.max_bytes = 8 << 20;
    options.l1.clock = clock;
    options.l2.servers = {server_.address()};
    // The exact counts below (loads, lease wins and waits) hold only if every
    // call to the running server is answered: a margin for a busy, sanitized
    // machine. A stopped server refuses at once, not at a timeout.
    options.l2.op_timeout = absl::Seconds(2);
    options.l2.reconnect_backoff = absl::Milliseconds(5);
    options.l2.max_reconnect_backoff = absl::Milliseconds(20);
    options.max_staleness = absl::Seconds(1);
    options.l2 = testing::WithTransport(options.l2);
    return options;
  }
  std::unique_ptr<TieredCache> Make(TieredOptions options) {
    absl::StatusOr<std::unique_ptr<TieredCache>> cache = TieredCache::Create(std::move(options));
    EXPECT_TRUE(cache.ok()) << cache.status();
    return *std::move(cache);
  }
  std::unique_ptr<MemcachedClient> Direct(const std::string& address) {
    MemcachedOptions options;
    options.servers = {address};
    return *MemcachedClient::Create(testing::WithTransport(options));
  }

  MemcachedServer server_{testing::ServerOptions()};
  FakeClock clock_a_;
  FakeClock clock_b_;
};

TEST_F(TieredCacheTest, ReadsComeFromL1ThenL2) {
  auto a = Make(Options(&clock_a_));
  auto b = Make(Options(&clock_b_));
  ASSERT_TRUE(a->Set("k", "v", {std::nullopt, 7}).ok());
  ASSERT_TRUE(a->Flush(absl::Seconds(5)).ok());
  EXPECT_THAT(a->Get("k"), Optional(std::string("v")));  // its own L1
  EXPECT_THAT(b->Get("k"), Optional(std::string("v")));  // L2, filling b's L1
  EXPECT_THAT(b->Get("k"), Optional(std::string("v")));  // b's L1
  EXPECT_EQ(b->Get("absent"), std::nullopt);
  TieredStats stats = b->Stats();
  EXPECT_EQ(stats.l2_hits, 1u);
  EXPECT_EQ(stats.l1_hits, 1u);
  EXPECT_EQ(stats.l2_misses, 1u);
  EXPECT_EQ(stats.l2_errors, 0u);
  EXPECT_EQ(stats.l1.items, 1u);
  EXPECT_EQ((*Direct(server_.address())->Get("k"))->flags, 7u);
}

// TieredOptions::l1.policy reaches the L1: a scan through a TieredCache
// pushes the hot keys out of an LRU L1, not out of a W-TinyLFU one.
TEST_F(TieredCacheTest, TheL1EvictsByThePolicyOfItsOptions) {
  for (const EvictionPolicy policy : {EvictionPolicy::kLru, EvictionPolicy::kTinyLfu}) {
    SCOPED_TRACE(policy == EvictionPolicy::kLru ? "kLru" : "kTinyLfu");
    TieredOptions options = Options(&clock_a_);
    options.l1.max_items = 100;
    options.l1.stripes = 1;
    options.l1.policy = policy;
    options.l1.policy_seed = 1;
    options.l2.key_prefix = policy == EvictionPolicy::kLru ? "lru:" : "tinylfu:";
    auto cache = Make(options);
    auto load = [](std::string_view key) -> absl::StatusOr<std::string> {
      return "value of " + std::string(key);
    };
    for (int pass = 0; pass < 4; ++pass) {
      for (int i = 0; i < 50; ++i)
        ASSERT_TRUE(cache->GetOrLoad(absl::StrCat("hot:", i), load).ok());
    }
    for (int i = 0; i < 200; ++i)
      ASSERT_TRUE(cache->GetOrLoad(absl::StrCat("scan:", i), load).ok());
    const uint64_t l1_hits_before = cache->Stats().l1_hits;
    for (int i = 0; i < 50; ++i) ASSERT_TRUE(cache->GetOrLoad(absl::StrCat("hot:", i), load).ok());
    const uint64_t l1_hits = cache->Stats().l1_hits - l1_hits_before;
    if (policy == EvictionPolicy::kLru) {
      EXPECT_EQ(l1_hits, 0u);  // the scan's 200 keys pushed all 50 out
    } else {
      EXPECT_EQ(l1_hits, 50u);  // keys read once were not admitted over them
    }
  }
}

TEST_F(TieredCacheTest, UnchangedCopiesAreRevalidatedByCasAndKept) {
  TieredOptions options = Options(&clock_b_);
  auto a = Make(Options(&clock_a_));
  std::vector<std::string> removed;
  options.l1.on_removal = [&](const Removal& r) { removed.push_back(std::string(r.value)); };
  auto b = Make(options);
  ASSERT_TRUE(a->Set("k", "v1").ok());
  ASSERT_TRUE(a->Flush(absl::Seconds(5)).ok());
  ASSERT_THAT(b->Get("k"), Optional(std::string("v1")));
  for (int i = 0; i < 3; ++i) {
    clock_b_.Advance(absl::Seconds(1));
    EXPECT_THAT(b->Get("k"), Optional(std::string("v1")));
  }
  TieredStats stats = b->Stats();
  EXPECT_EQ(stats.revalidations, 3u);
  EXPECT_EQ(stats.revalidated_unchanged, 3u);
  EXPECT_EQ(stats.l2_hits, 1u);  // the value crossed the wire once
  // Restamping rewrites the entry; the listener sees the value, not the header.
  EXPECT_THAT(removed, ::testing::Each(std::string("v1")));
}

TEST_F(TieredCacheTest, AChangedOrDeletedL2ItemReplacesOrDropsTheCopy) {
  auto a = Make(Options(&clock_a_));
  auto b = Make(Options(&clock_b_));
  ASSERT_TRUE(a->Set("k", "v1").ok());
  ASSERT_TRUE(a->Flush(absl::Seconds(5)).ok());
  ASSERT_THAT(b->Get("k"), Optional(std::string("v1")));
  ASSERT_TRUE(a->Set("k", "v2").ok());
  ASSERT_TRUE(a->Flush(absl::Seconds(5)).ok());
  clock_b_.Advance(absl::Milliseconds(999));
  EXPECT_THAT(b->Get("k"), Optional(std::string("v1")));  // within max_staleness
  clock_b_.Advance(absl::Milliseconds(1));
  EXPECT_THAT(b->Get("k"), Optional(std::string("v2")));
  EXPECT_EQ(b->Stats().revalidated_changed, 1u);

  ASSERT_TRUE(a->Delete("k").ok());
  EXPECT_EQ(a->Get("k"), std::nullopt);  // read-your-delete, though writes are async
  EXPECT_THAT(b->Get("k"), Optional(std::string("v2")));
  clock_b_.Advance(absl::Seconds(1));
  EXPECT_EQ(b->Get("k"), std::nullopt);
  EXPECT_EQ(b->Stats().revalidated_gone, 1u);
  EXPECT_EQ(b->Stats().l1.items, 0u);
}

TEST_F(TieredCacheTest, GetOrLoadLoadsOncePerProcess) {
  auto cache = Make(Options());
  std::atomic<int> calls{0};
  Event release;
  std::vector<std::thread> threads;
  std::vector<absl::StatusOr<std::string>> results(8, absl::UnknownError("not run"));
  for (int i = 0; i < 8; ++i) {
    threads.emplace_back([&, i] {
      results[i] = cache->GetOrLoad("k", [&](std::string_view key) -> absl::StatusOr<std::string> {
        calls.fetch_add(1);
        release.Wait();
        return absl::StrCat("loaded ", std::string(key));
      });
    });
  }
  // The loader holds until all 8 callers are in: 7 wait on its flight.
  while (calls.load() == 0) std::this_thread::yield();
  release.Notify();
  for (std::thread& t : threads) t.join();
  for (const auto& result : results) EXPECT_THAT(result, IsOkAndHolds(std::string("loaded k")));
  EXPECT_EQ(calls.load(), 1);
  EXPECT_EQ(cache->Stats().loads, 1u);
  EXPECT_EQ(cache->Stats().lease_wins, 1u);
  EXPECT_EQ((*Direct(server_.address())->Get("k"))->value, "loaded k");
}

TEST_F(TieredCacheTest, AReplicaWaitsForTheLeaseHoldersLoad) {
  auto a = Make(Options());
  auto b = Make(Options());
  Event a_loading;
  std::thread holder([&] {
    EXPECT_THAT(a->GetOrLoad("k",
                             [&](std::string_view) -> absl::StatusOr<std::string> {
                               a_loading.Notify();
                               // Holds the lease until b is waiting for it.
                               while (b->Stats().lease_waits == 0) std::this_thread::yield();
                               return "from a";
                             }),
                IsOkAndHolds(std::string("from a")));
  });
  a_loading.Wait();
  EXPECT_THAT(b->GetOrLoad("k",
                           [](std::string_view) -> absl::StatusOr<std::string> {
                             ADD_FAILURE() << "b loaded although a held the lease";
                             return "from b";
                           }),
              IsOkAndHolds(std::string("from a")));
  holder.join();
  EXPECT_EQ(b->Stats().loads, 0u);
  EXPECT_EQ(b->Stats().lease_timeouts, 0u);
}

TEST_F(TieredCacheTest, AFailedLoadReleasesTheLeaseAndIsNotCached) {
  auto a = Make(Options());
  TieredOptions patient = Options();
  patient.lease_wait = absl::Seconds(20);
  auto b = Make(patient);
  Event a_loading;
  std::thread holder([&] {
    absl::StatusOr<std::string> result =
        a->GetOrLoad("k", [&](std::string_view) -> absl::StatusOr<std::string> {
          a_loading.Notify();
          while (b->Stats().lease_waits == 0) std::this_thread::yield();
          return absl::UnavailableError("database down");
        });
    EXPECT_EQ(result.status(), absl::UnavailableError("database down"));
  });
  a_loading.Wait();
  // b does not wait out lease_wait: the stub is deleted, b wins a new lease.
  EXPECT_THAT(
      b->GetOrLoad("k", [](std::string_view) -> absl::StatusOr<std::string> { return "from b"; }),
      IsOkAndHolds(std::string("from b")));
  holder.join();
  EXPECT_EQ(b->Stats().lease_wins, 1u);
  EXPECT_EQ(b->Stats().lease_timeouts, 0u);
  EXPECT_EQ(a->Stats().load_failures, 1u);
  EXPECT_EQ(a->Get("k"), "from b");
}

TEST_F(TieredCacheTest, EarlyRefreshReloadsOnOneReplicaWhileOthersServe) {
  auto a = Make(Options());
  auto b = Make(Options());
  auto direct = Direct(server_.address());
  ASSERT_TRUE(direct->Set("hot", "old", {absl::Seconds(10), 0}).ok());
  const LoadOptions refresh{.refresh_ahead = absl::Seconds(30)};  // 10 s left < 30 s
  Event a_loading;
  Event b_served;
  std::thread refresher([&] {
    EXPECT_THAT(a->GetOrLoad(
                    "hot",
                    [&](std::string_view) -> absl::StatusOr<std::string> {
                      a_loading.Notify();
                      b_served.Wait();
                      return "new";
                    },
                    {absl::Seconds(100), 0}, refresh),
                IsOkAndHolds(std::string("new")));
  });
  a_loading.Wait();
  EXPECT_THAT(b->GetOrLoad(
                  "hot",
                  [](std::string_view) -> absl::StatusOr<std::string> {
                    ADD_FAILURE() << "two replicas refreshed";
                    return "b";
                  },
                  {absl::Seconds(100), 0}, refresh),
              IsOkAndHolds(std::string("old")));
  b_served.Notify();
  refresher.join();
  EXPECT_EQ(a->Stats().refreshes, 1u);
  absl::StatusOr<std::optional<Item>> item = direct->Get("hot");
  ASSERT_TRUE(item.ok() && item->has_value());
  EXPECT_EQ((*item)->value, "new");
  EXPECT_GT((*item)->expiry, absl::Now() + absl::Seconds(60));
}

TEST_F(TieredCacheTest, AnOldPoolWarmsTheNewOneWithoutOverwritingNewerData) {
  MemcachedServer old_pool{testing::ServerOptions()};
  auto old_direct = Direct(old_pool.address());
  for (int i = 0; i < 50; ++i) {
    ASSERT_TRUE(old_direct->Set(absl::StrCat("k", i), absl::StrCat("old", i)).ok());
  }
  auto new_direct = Direct(server_.address());
  ASSERT_TRUE(new_direct->Set("k0", "newer").ok());  // written since the migration began

  TieredOptions options = Options();
  options.fallback_servers = {old_pool.address()};
  auto cache = Make(options);
  int loader_calls = 0;
  auto loader = [&](std::string_view) -> absl::StatusOr<std::string> {
    ++loader_calls;
    return "loaded";
  };
  EXPECT_THAT(cache->GetOrLoad("k0", loader), IsOkAndHolds(std::string("newer")));
  for (int i = 1; i < 25; ++i) {
    EXPECT_THAT(cache->GetOrLoad(absl::StrCat("k", i), loader),
                IsOkAndHolds(absl::StrCat("old", i)));
  }
  for (int i = 25; i < 50; ++i) {
    EXPECT_THAT(cache->Get(absl::StrCat("k", i)), Optional(absl::StrCat("old", i)));
  }
  EXPECT_EQ(loader_calls, 0);
  EXPECT_EQ(cache->Stats().fallback_hits, 49u);
  // Copied into the primary: the next replica reads them there.
  for (int i = 1; i < 50; ++i) {
    EXPECT_EQ((*new_direct->Get(absl::StrCat("k", i)))->value, absl::StrCat("old", i));
  }
  EXPECT_EQ((*new_direct->Get("k0"))->value, "newer");
  EXPECT_THAT(cache->GetOrLoad("k50", loader), IsOkAndHolds(std::string("loaded")));
  EXPECT_EQ(loader_calls, 1);
  // A delete reaches the old pool too, so it cannot come back from there.
  ASSERT_TRUE(cache->Delete("k1").ok());
  EXPECT_FALSE(old_direct->Get("k1")->has_value());
}

// Regression: GetOrLoad of a copy that revalidation found gone from the new
// pool read the old pool back into it, resurrecting what was deleted there.
TEST_F(TieredCacheTest, AKeyGoneFromTheNewPoolIsNotReadBackFromTheOldOne) {
  MemcachedServer old_pool{testing::ServerOptions()};
  ASSERT_TRUE(Direct(old_pool.address())->Set("k", "old").ok());
  TieredOptions options = Options(&clock_a_);
  options.fallback_servers = {old_pool.address()};
  auto cache = Make(options);
  auto new_pool = Direct(server_.address());
  ASSERT_TRUE(new_pool->Set("k", "new").ok());
  ASSERT_THAT(cache->Get("k"), Optional(std::string("new")));
  ASSERT_TRUE(*new_pool->Delete("k"));  // deleted by another client
  clock_a_.Advance(absl::Seconds(1));
  EXPECT_THAT(cache->GetOrLoad(
                  "k", [](std::string_view) -> absl::StatusOr<std::string> { return "loaded"; }),
              IsOkAndHolds(std::string("loaded")));
  EXPECT_EQ(cache->Stats().fallback_hits, 0u);
  EXPECT_EQ(cache->Stats().revalidated_gone, 1u);
}

// The old pool may still serve clients that take leases there: their 0-byte
// stub is a miss, never an empty value copied into the new pool.
TEST_F(TieredCacheTest, ALeaseStubInTheOldPoolIsAMiss) {
  MemcachedServer old_pool{testing::ServerOptions()};
  TieredOptions old_options = Options();
  old_options.l2.servers = {old_pool.address()};
  auto old_fleet = Make(old_options);  // a replica of the old deployment
  Event stub_taken;
  Event release;
  std::thread loading_in_old_pool([&] {
    EXPECT_THAT(old_fleet->GetOrLoad("k",
                                     [&](std::string_view) -> absl::StatusOr<std::string> {
                                       stub_taken.Notify();
                                       release.Wait();
                                       return "old";
                                     }),
                IsOkAndHolds(std::string("old")));
  });
  stub_taken.Wait();  // the old pool holds a lease stub for "k"

  TieredOptions options = Options();
  options.fallback_servers = {old_pool.address()};
  auto cache = Make(options);
  EXPECT_THAT(cache->GetOrLoad(
                  "k", [](std::string_view) -> absl::StatusOr<std::string> { return "loaded"; }),
              IsOkAndHolds(std::string("loaded")));
  EXPECT_EQ(cache->Stats().fallback_hits, 0u);
  EXPECT_EQ(cache->Get("absent-too"), std::nullopt);
  release.Notify();
  loading_in_old_pool.join();
  EXPECT_EQ((*Direct(server_.address())->Get("k"))->value, "loaded");
}

// Regression: a revalidation that found the key gone from L2 deleted the L1
// entry unconditionally, and so also a value this replica had written while
// the revalidation waited for memcached.
TEST_F(TieredCacheTest, ARevalidationDoesNotDropAWriteMadeWhileItWaited) {
  // Items over 1 KiB are refused by this memcached: b's second write stays in
  // b's L1, and L2 says "gone" whichever request memcached serves first.
  MemcachedServer small_items(testing::ServerOptions(
      {.unix_socket = false, .extra_args = {"-I", "1k", "-o", "slab_chunk_max=1024"}}));
  TieredOptions options = Options(&clock_b_);
  options.l2.servers = {small_items.address()};
  options.l2.op_timeout = absl::Seconds(30);
  auto b = Make(options);
  auto direct = Direct(small_items.address());
  ASSERT_TRUE(direct->Set("k", "v1").ok());
  ASSERT_THAT(b->Get("k"), Optional(std::string("v1")));
  ASSERT_TRUE(*direct->Delete("k"));   // gone from L2
  clock_b_.Advance(absl::Seconds(1));  // b's copy is due for revalidation

  small_items.Pause();  // the revalidation waits for memcached
  std::optional<std::string> during = std::string("not run");
  std::thread reader([&] { during = b->Get("k"); });
  while (b->Stats().revalidations == 0) std::this_thread::yield();  // it has the old copy
  const std::string v2(2000, '2');
  ASSERT_TRUE(b->Set("k", v2).ok());  // queued; memcached will refuse it
  small_items.Resume();
  reader.join();
  ASSERT_TRUE(b->Flush(absl::Seconds(30)).ok());
  EXPECT_EQ(b->Stats().mirror.failed, 1u);
  EXPECT_EQ(during, std::nullopt);  // the read began before the write
  EXPECT_EQ(b->Stats().revalidated_gone, 1u);
  const std::optional<std::string> after = b->Get("k");
  ASSERT_TRUE(after.has_value()) << "the revalidation dropped the newer write";
  EXPECT_TRUE(*after == v2);
}

TEST_F(TieredCacheTest, CompareAndSwapAcrossReplicasAddsUpExactly) {
  auto a = Make(Options());
  auto b = Make(Options());
  ASSERT_TRUE(a->Set("counter", "0", {}).ok());
  ASSERT_TRUE(a->Flush(absl::Seconds(5)).ok());
  auto increment = [](TieredCache& cache) {
    for (int i = 0; i < 300; ++i) {
      while (true) {
        absl::StatusOr<std::optional<Item>> item = cache.GetItem("counter");
        ASSERT_TRUE(item.ok() && item->has_value());
        const int value = std::stoi((*item)->value);
        absl::StatusOr<StoreResult> stored =
            cache.CompareAndSwap("counter", std::to_string(value + 1), (*item)->cas);
        ASSERT_TRUE(stored.ok()) << stored.status();
        if (*stored == StoreResult::kStored) break;
      }
    }
  };
  std::thread ta([&] { increment(*a); });
  std::thread tb([&] { increment(*b); });
  ta.join();
  tb.join();
  EXPECT_EQ((*Direct(server_.address())->Get("counter"))->value, "600");
  EXPECT_THAT(a->CompareAndSwap("counter", "x", 1), IsOkAndHolds(StoreResult::kExists));
  EXPECT_THAT(a->CompareAndSwap("absent", "x", 1), IsOkAndHolds(StoreResult::kNotFound));
}

TEST_F(TieredCacheTest, CountersLiveInL2) {
  auto a = Make(Options());
  auto b = Make(Options());
  EXPECT_TRUE(absl::IsNotFound(a->Increment("hits", 1).status()));
  ASSERT_TRUE(a->Set("hits", "10", {}).ok());
  ASSERT_TRUE(a->Flush(absl::Seconds(5)).ok());
  EXPECT_THAT(b->Get("hits"), Optional(std::string("10")));
  EXPECT_THAT(a->Increment("hits", 5), IsOkAndHolds(15u));
  EXPECT_THAT(b->Increment("hits", 5), IsOkAndHolds(20u));
  EXPECT_THAT(b->Decrement("hits", 5), IsOkAndHolds(15u));
  EXPECT_THAT(a->Get("hits"), Optional(std::string("15")));
  EXPECT_THAT(b->Get("hits"), Optional(std::string("15")));
}

TEST_F(TieredCacheTest, BadInputIsRejectedAndNothingIsWritten) {
  TieredOptions options = Options();
  options.l1.max_value_size = 100;
  options.l2.key_prefix = std::string(200, 'p');
  auto cache = Make(options);
  EXPECT_THAT(cache->Set("", "v").message(), HasSubstr("key is empty"));
  EXPECT_TRUE(
      absl::IsInvalidArgument(cache->Set(std::string(60, 'k'), "v")));  // prefix + key > 250
  EXPECT_THAT(cache->Set("k", std::string(101, 'v')).message(), HasSubstr("101 bytes"));
  EXPECT_THAT(cache->Set("k", "v", {absl::Seconds(-1), 0}).message(), HasSubstr("ttl"));
  EXPECT_TRUE(
      absl::IsInvalidArgument(cache
                                  ->GetOrLoad("k",
                                              [](std::string_view) -> absl::StatusOr<std::string> {
                                                return std::string(101, 'x');
                                              })
                                  .status()));
  EXPECT_TRUE(absl::IsInvalidArgument(cache->Delete("")));
  // memcached 1.6.18 keeps expiry times in 32 bits: past 2038 is refused
  // before anything is written, by Set and by GetOrLoad alike.
  const WriteOptions too_far{absl::Hours(24 * 365 * 20), 0};
  EXPECT_THAT(cache->Set("k", "v", too_far).message(), HasSubstr("2038"));
  EXPECT_THAT(cache
                  ->GetOrLoad(
                      "k",
                      [](std::string_view) -> absl::StatusOr<std::string> {
                        ADD_FAILURE() << "loaded despite a bad TTL";
                        return "x";
                      },
                      too_far)
                  .status()
                  .message(),
              HasSubstr("2038"));
  EXPECT_THAT(
      cache
          ->GetOrLoad("k", [](std::string_view) -> absl::StatusOr<std::string> { return "x"; }, {},
                      {.refresh_ahead = absl::InfiniteDuration()})
          .status()
          .message(),
      HasSubstr("refresh_ahead"));
  EXPECT_TRUE(absl::IsInvalidArgument(cache->GetItem(std::string(60, 'k')).status()));
  EXPECT_EQ(cache->Get(""), std::nullopt);
  ASSERT_TRUE(cache->Flush(absl::Seconds(5)).ok());
  EXPECT_EQ(cache->Stats().l1.items, 0u);
  EXPECT_EQ(cache->Stats().mirror.queued, 0u);

  TieredOptions bad = Options();
  bad.lease_ttl = absl::Milliseconds(500);
  EXPECT_THAT(TieredCache::Create(bad).status().message(), HasSubstr("lease_ttl"));
  bad = Options();
  bad.max_staleness = absl::Seconds(-1);
  EXPECT_THAT(TieredCache::Create(bad).status().message(), HasSubstr("max_staleness"));
  bad = Options();
  bad.l2.servers.clear();
  EXPECT_FALSE(TieredCache::Create(bad).ok());
}

TEST_F(TieredCacheTest, DuringAnOutageL1ServesAndTheLoaderAnswers) {
  TieredOptions options = Options(&clock_a_);
  std::atomic<int> reported{0};
  options.on_l2_error = [&](std::string_view, const absl::Status&) { reported.fetch_add(1); };
  auto cache = Make(options);
  ASSERT_TRUE(cache->Set("k", "v").ok());
  ASSERT_TRUE(cache->Flush(absl::Seconds(5)).ok());
  server_.Stop();
  clock_a_.Advance(absl::Seconds(5));  // stale, and L2 cannot revalidate it
  EXPECT_THAT(cache->Get("k"), Optional(std::string("v")));
  EXPECT_THAT(cache->GetOrLoad(
                  "new", [](std::string_view) -> absl::StatusOr<std::string> { return "loaded"; }),
              IsOkAndHolds(std::string("loaded")));
  EXPECT_EQ(cache->Get("never"), std::nullopt);
  EXPECT_TRUE(absl::IsUnavailable(cache->GetItem("k").status()));
  EXPECT_FALSE(cache->Delete("k").ok());  // the invalidation did not reach L2: said so
  ASSERT_TRUE(cache->Flush(absl::Seconds(5)).ok());
  TieredStats stats = cache->Stats();
  // Each call above failed on L2 once: the revalidation, the lease, the two
  // reads and the delete; and the mirror lost the loaded value of "new".
  EXPECT_EQ(stats.l2_errors, 5u);
  EXPECT_EQ(stats.mirror.failed, 1u);
  EXPECT_EQ(reported.load(), 6);
}

TEST_F(TieredCacheTest, GetManyReadsL1ThenOnePipelinedRoundTrip) {
  auto a = Make(Options(&clock_a_));
  auto b = Make(Options(&clock_b_));
  for (const char* key : {"m1", "m2", "m3"}) ASSERT_TRUE(a->Set(key, absl::StrCat("v", key)).ok());
  ASSERT_TRUE(a->Flush(absl::Seconds(5)).ok());
  ASSERT_THAT(b->Get("m1"), Optional(std::string("vm1")));
  const std::vector<std::string_view> keys = {"m1", "m2", "m3", "absent"};
  absl::StatusOr<absl::flat_hash_map<std::string, std::string>> got = b->GetMany(keys);
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(*got, (absl::flat_hash_map<std::string, std::string>{
                      {"m1", "vm1"}, {"m2", "vm2"}, {"m3", "vm3"}}));
  TieredStats stats = b->Stats();
  EXPECT_EQ(stats.l1_hits, 1u);
  EXPECT_EQ(stats.l2_hits, 3u);  // m1 by Get, m2 and m3 by GetMany
  EXPECT_EQ(stats.l2_misses, 1u);
  // A change reaches b's copies through the batch's revalidation.
  ASSERT_TRUE(a->Set("m2", "changed").ok());
  ASSERT_TRUE(a->Flush(absl::Seconds(5)).ok());
  clock_b_.Advance(absl::Seconds(1));
  got = b->GetMany(keys);
  ASSERT_TRUE(got.ok());
  EXPECT_EQ(got->at("m2"), "changed");
  EXPECT_EQ(b->Stats().revalidated_changed, 1u);
  EXPECT_EQ(b->Stats().revalidated_unchanged, 2u);
}

// Two replicas, two threads each, ask for the same 40 keys at once: every key
// is loaded exactly once in all (the leases), in few loader calls.
TEST_F(TieredCacheTest, GetOrLoadManyLoadsEachKeyOnceAcrossReplicas) {
  std::vector<std::unique_ptr<TieredCache>> replicas;
  replicas.push_back(Make(Options()));
  replicas.push_back(Make(Options()));
  std::vector<std::string> names;
  for (int i = 0; i < 40; ++i) names.push_back(absl::StrCat("bulk:", i));
  const std::vector<std::string_view> keys(names.begin(), names.end());
  std::mutex mu;
  absl::flat_hash_map<std::string, int> loaded;  // key -> loads
  int calls = 0;
  auto loader = [&](absl::Span<const std::string_view> asked)
      -> absl::StatusOr<absl::flat_hash_map<std::string, std::string>> {
    absl::SleepFor(absl::Milliseconds(50));  // a slow query
    absl::flat_hash_map<std::string, std::string> values;
    std::lock_guard<std::mutex> hold(mu);
    ++calls;
    for (std::string_view key : asked) {
      ++loaded[std::string(key)];
      values[std::string(key)] = "row " + std::string(key);
    }
    return values;
  };
  std::vector<std::thread> threads;
  std::atomic<int> complete{0};
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      absl::StatusOr<absl::flat_hash_map<std::string, std::string>> got =
          replicas[t % 2]->GetOrLoadMany(keys, loader);
      if (got.ok() && got->size() == keys.size() && got->at("bulk:7") == "row bulk:7") ++complete;
    });
  }
  for (std::thread& thread : threads) thread.join();
  EXPECT_EQ(complete.load(), 4);
  EXPECT_EQ(loaded.size(), 40u);
  for (const auto& [key, loads] : loaded) EXPECT_EQ(loads, 1) << key;
  EXPECT_LE(calls, 4);
  EXPECT_EQ(replicas[0]->Stats().lease_timeouts + replicas[1]->Stats().lease_timeouts, 0u);
}

}  // namespace
}  // namespace tiercache
