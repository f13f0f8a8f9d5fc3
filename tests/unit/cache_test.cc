#include "tiercache/cache.h"

#include <atomic>
#include <condition_variable>
#include <map>
#include <mutex>
#include <optional>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "event.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "status_matchers.h"

namespace tiercache {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::Optional;

using ::tiercache::testing::IsOkAndHolds;

using testing::Event;

// Records every removal, as leveldb's cache tests record deletions.
struct RemovalLog {
  std::mutex mu;
  std::vector<std::string> events;  // "<reason>:<key>=<value>"
  std::function<void(const Removal&)> Listener() {
    return [this](const Removal& r) {
      std::lock_guard<std::mutex> hold(mu);
      events.push_back(absl::StrCat(std::string(RemovalReasonName(r.reason)), ":",
                                    std::string(r.key), "=", std::string(r.value)));
    };
  }
  std::vector<std::string> Take() {
    std::lock_guard<std::mutex> hold(mu);
    return std::exchange(events, {});
  }
};

class CacheTest : public ::testing::Test {
 protected:
  std::unique_ptr<Cache> Make(CacheOptions options) {
    options.clock = &clock_;
    options.on_removal = log_.Listener();
    auto cache = Cache::Create(std::move(options));
    EXPECT_TRUE(cache.ok()) << cache.status();
    return *std::move(cache);
  }
  std::unique_ptr<Cache> MakeOneStripe(size_t max_items, size_t max_bytes = 1 << 20) {
    CacheOptions options;
    options.max_bytes = max_bytes;
    options.max_items = max_items;
    options.stripes = 1;
    return Make(std::move(options));
  }

  FakeClock clock_;
  RemovalLog log_;
};

TEST_F(CacheTest, SetThenGet) {
  auto cache = MakeOneStripe(10);
  ASSERT_TRUE(cache->Set("a", "1").ok());
  EXPECT_THAT(cache->Get("a"), Optional(std::string("1")));
  EXPECT_EQ(cache->Get("b"), std::nullopt);
  CacheStats stats = cache->Stats();
  EXPECT_EQ(stats.hits, 1u);
  EXPECT_EQ(stats.misses, 1u);
  EXPECT_EQ(stats.sets, 1u);
  EXPECT_EQ(stats.items, 1u);
  EXPECT_EQ(stats.bytes, Cache::ChargeFor(1, 1));
}

TEST_F(CacheTest, BinaryKeysAndValues) {
  auto cache = MakeOneStripe(10);
  const std::string key("k\0\r\n y", 6), value("\0\xff\x01", 3);
  ASSERT_TRUE(cache->Set(key, value).ok());
  EXPECT_THAT(cache->Get(key), Optional(value));
  EXPECT_EQ(cache->Get("k"), std::nullopt);
  ASSERT_TRUE(cache->Set("empty", "").ok());
  EXPECT_THAT(cache->Get("empty"), Optional(std::string()));
}

TEST_F(CacheTest, GetReusingBuffer) {
  auto cache = MakeOneStripe(10);
  ASSERT_TRUE(cache->Set("a", "hello").ok());
  std::string value = "previous contents that are longer";
  EXPECT_TRUE(cache->Get("a", &value));
  EXPECT_EQ(value, "hello");
  EXPECT_FALSE(cache->Get("missing", &value));
}

TEST_F(CacheTest, ReplacingReportsTheOldValue) {
  auto cache = MakeOneStripe(10);
  ASSERT_TRUE(cache->Set("a", "1").ok());
  ASSERT_TRUE(cache->Set("a", "2").ok());
  EXPECT_THAT(cache->Get("a"), Optional(std::string("2")));
  EXPECT_THAT(log_.Take(), ElementsAre("replaced:a=1"));
  EXPECT_EQ(cache->Stats().items, 1u);
}

TEST_F(CacheTest, BadInputIsRejectedAndChangesNothing) {
  CacheOptions options;
  options.max_bytes = 4096;
  options.stripes = 1;
  options.max_key_size = 8;
  options.max_value_size = 100;
  auto cache = Make(options);
  ASSERT_TRUE(cache->Set("keep", "v").ok());

  absl::Status s = cache->Set("", "v");
  EXPECT_TRUE(absl::IsInvalidArgument(s));
  EXPECT_THAT(s.message(), HasSubstr("key is empty"));

  s = cache->Set("123456789", "v");
  EXPECT_TRUE(absl::IsInvalidArgument(s));
  EXPECT_THAT(s.message(), HasSubstr("key is 9 bytes; the limit is 8"));

  s = cache->Set("k", std::string(101, 'x'));
  EXPECT_TRUE(absl::IsInvalidArgument(s));
  EXPECT_THAT(s.message(), HasSubstr("value is 101 bytes; the limit is 100"));

  s = cache->Set("k", "v", WriteOptions{absl::Seconds(-1), 0});
  EXPECT_TRUE(absl::IsInvalidArgument(s));
  EXPECT_THAT(s.message(), HasSubstr("ttl is -1s; it must be positive"));

  s = cache->Set("k", "v", WriteOptions{absl::ZeroDuration(), 0});
  EXPECT_TRUE(absl::IsInvalidArgument(s));

  EXPECT_TRUE(absl::IsInvalidArgument(cache->Add("", "v").status()));
  EXPECT_TRUE(absl::IsInvalidArgument(cache->Increment("123456789", 1).status()));
  EXPECT_FALSE(cache->Touch("keep", absl::Seconds(-5)));

  EXPECT_THAT(cache->Get("keep"), Optional(std::string("v")));
  EXPECT_EQ(cache->Stats().items, 1u);
  EXPECT_TRUE(log_.Take().empty());  // nothing stored, nothing evicted
}

TEST_F(CacheTest, ValueLargerThanAStripeIsRejected) {
  CacheOptions options;
  options.max_bytes = 64 * 1024;
  options.stripes = 4;  // 16 KiB each
  auto cache = Make(options);
  ASSERT_TRUE(cache->Set("small", "v").ok());
  absl::Status s = cache->Set("big", std::string(20000, 'x'));
  EXPECT_TRUE(absl::IsInvalidArgument(s));
  EXPECT_THAT(s.message(), HasSubstr("exceeds a stripe's whole budget of 16384 bytes"));
  EXPECT_THAT(cache->Get("small"), Optional(std::string("v")));
  EXPECT_TRUE(log_.Take().empty());
}

TEST_F(CacheTest, InvalidOptionsAreRejected) {
  auto bad = [](auto mutate) {
    CacheOptions o;
    mutate(o);
    return Cache::Create(o).status();
  };
  EXPECT_THAT(bad([](CacheOptions& o) { o.max_bytes = 0; }).message(), HasSubstr("max_bytes"));
  EXPECT_THAT(bad([](CacheOptions& o) { o.stripes = 3; }).message(),
              HasSubstr("stripes is 3; it must be 0 (automatic) or a power of two"));
  EXPECT_THAT(bad([](CacheOptions& o) { o.default_ttl = absl::ZeroDuration(); }).message(),
              HasSubstr("default_ttl is 0"));
  EXPECT_THAT(bad([](CacheOptions& o) { o.max_key_size = 70000; }).message(),
              HasSubstr("max_key_size is 70000"));
  EXPECT_THAT(bad([](CacheOptions& o) {
                o.stripes = 8;
                o.max_items = 4;
              }).message(),
              HasSubstr("max_items is 4, fewer than the 8 stripes"));
  EXPECT_THAT(bad([](CacheOptions& o) { o.reap_interval = absl::Seconds(-1); }).message(),
              HasSubstr("reap_interval"));
}

TEST_F(CacheTest, AutomaticStripesFitTheBudget) {
  CacheOptions options;
  options.max_bytes = 1 << 30;
  EXPECT_EQ((*Cache::Create(options))->stripe_count(), 64u);
  options.max_bytes = 8 << 20;  // 1 MiB values: each stripe must hold one
  EXPECT_EQ((*Cache::Create(options))->stripe_count(), 4u);
  options.max_bytes = 1 << 30;
  options.max_items = 1000;  // at least 128 items per stripe
  EXPECT_EQ((*Cache::Create(options))->stripe_count(), 4u);
  options.max_items = 100;
  EXPECT_EQ((*Cache::Create(options))->stripe_count(), 1u);
}

// --- Eviction -------------------------------------------------------------

TEST_F(CacheTest, EvictsLeastRecentlyUsedByItems) {
  auto cache = MakeOneStripe(3);
  ASSERT_TRUE(cache->Set("a", "1").ok());
  ASSERT_TRUE(cache->Set("b", "2").ok());
  ASSERT_TRUE(cache->Set("c", "3").ok());
  EXPECT_TRUE(cache->Get("a").has_value());  // b is now the least recent
  ASSERT_TRUE(cache->Set("d", "4").ok());
  EXPECT_THAT(log_.Take(), ElementsAre("evicted:b=2"));
  EXPECT_EQ(cache->Get("b"), std::nullopt);
  ASSERT_TRUE(cache->Set("e", "5").ok());
  EXPECT_THAT(log_.Take(), ElementsAre("evicted:c=3"));
  EXPECT_EQ(cache->Stats().evictions, 2u);
  EXPECT_EQ(cache->Stats().items, 3u);
}

TEST_F(CacheTest, EvictsByBytesAndNeverExceedsTheBudget) {
  const size_t entry = Cache::ChargeFor(2, 100);
  auto cache = MakeOneStripe(0, 5 * entry + entry / 2);  // room for five
  for (int i = 0; i < 20; ++i) {
    ASSERT_TRUE(cache->Set(absl::StrCat("k", i % 10), std::string(100, 'v')).ok());
    CacheStats stats = cache->Stats();
    EXPECT_LE(stats.bytes, 5 * entry + entry / 2);
    EXPECT_EQ(stats.bytes, stats.items * entry);
  }
  EXPECT_EQ(cache->Stats().items, 5u);
  for (int i = 5; i < 10; ++i) EXPECT_TRUE(cache->Get(absl::StrCat("k", i)).has_value());
  ASSERT_TRUE(cache->VerifyInvariants().ok());
}

TEST_F(CacheTest, ALargeValuePushesOutSeveralSmallOnes) {
  const size_t small = Cache::ChargeFor(2, 10);
  auto cache = MakeOneStripe(0, 10 * small);
  for (int i = 0; i < 10; ++i) ASSERT_TRUE(cache->Set(absl::StrCat("k", i), "0123456789").ok());
  log_.Take();
  ASSERT_TRUE(cache->Set("big", std::string(3 * small, 'x')).ok());
  std::vector<std::string> events = log_.Take();
  ASSERT_GE(events.size(), 3u);
  EXPECT_EQ(events[0], "evicted:k0=0123456789");
  EXPECT_LE(cache->Stats().bytes, 10 * small);
  EXPECT_TRUE(cache->Get("big").has_value());
}

TEST_F(CacheTest, ChargeIsTheRecordPlusItsShares) {
  // A small record is a 32-byte header + key + value rounded up to 8 bytes.
  const size_t table_share = Cache::ChargeFor(0, 0) - 32;
  EXPECT_EQ(Cache::ChargeFor(16, 32), 80 + table_share);
  EXPECT_EQ(Cache::ChargeFor(16, 33), 88 + table_share);
  EXPECT_EQ(Cache::ChargeFor(16, 32, /*expires=*/true) - Cache::ChargeFor(16, 32), 32u);
  EXPECT_LE(table_share, 16u);
  // Up to 16 KiB a record is in a page, at 8-byte granularity; over that it
  // is mapped on its own, in 4 KiB pages, plus an 8-byte slot.
  EXPECT_EQ(Cache::ChargeFor(0, 16384 - 32), 16384 + table_share);
  EXPECT_EQ(Cache::ChargeFor(0, 16384 - 31), 20480 + sizeof(void*) + table_share);
  EXPECT_EQ(Cache::ChargeFor(0, 100000 - 32), 102400 + sizeof(void*) + table_share);
}

// --- Memory under drifting value sizes (issue 11) ----------------------------

// The documented bound on reserved bytes: 1.1x max_bytes, plus per stripe
// four 64 KiB pages (the one being carved, the one being evacuated, page 0,
// an emptied one kept for reuse) and 16 KiB (free-list heads, a small table).
size_t ReservedBound(const Cache& cache) {
  return cache.options().max_bytes * 11 / 10 + cache.stripe_count() * (4 * 65536 + 16384);
}

// A value that says whose it is: `key`, then `version` and filler to `size`.
std::string ValueFor(std::string_view key, uint64_t version, size_t size) {
  std::string value = absl::StrCat(std::string(key), "#", version, "#");
  value.resize(std::max(size, value.size()), static_cast<char>('a' + version % 26));
  return value;
}

// Small values, then 2-4 KiB ones, small again, then 1 B - 64 KiB: after
// every write the reserved bytes stay within their bound; every hit returns
// the value last written for its key (records that moved kept their bytes);
// the invariants hold.
TEST_F(CacheTest, DriftingSizesStayWithinTheReservedBound) {
  struct Variant {
    size_t stripes;
    EvictionPolicy policy;
    bool ttl;  // every write expires (in an hour: nothing does during the test)
  };
  for (const Variant variant :
       {Variant{1, EvictionPolicy::kLru, false}, Variant{4, EvictionPolicy::kLru, false},
        Variant{1, EvictionPolicy::kLru, true}, Variant{4, EvictionPolicy::kTinyLfu, false}}) {
    const size_t stripes = variant.stripes;
    SCOPED_TRACE(absl::StrCat(stripes, " stripes, policy ", static_cast<int>(variant.policy),
                              variant.ttl ? ", with TTLs" : ""));
    CacheOptions options;
    options.max_bytes = 4 << 20;
    options.stripes = stripes;
    options.policy = variant.policy;
    options.policy_seed = 1;
    if (variant.ttl) options.default_ttl = absl::Hours(1);
    options.clock = &clock_;
    auto cache = *Cache::Create(options);
    std::mt19937_64 rng(11);
    constexpr size_t kKeys = 20000;
    std::vector<std::pair<uint64_t, size_t>> last(kKeys);  // (version, size) per key
    uint64_t version = 0;
    size_t peak = 0;
    struct Phase {
      int writes;
      size_t min, max;
    };
    for (const Phase& phase : {Phase{60000, 40, 40}, Phase{4000, 2048, 4096}, Phase{60000, 40, 40},
                               Phase{1500, 1, 65536}, Phase{60000, 40, 40}}) {
      for (int i = 0; i < phase.writes; ++i) {
        const size_t k = rng() % kKeys;
        const std::string key = absl::StrCat("key", k);
        const size_t size = phase.min + rng() % (phase.max - phase.min + 1);
        ASSERT_TRUE(cache->Set(key, ValueFor(key, ++version, size)).ok());
        last[k] = {version, size};
        const size_t reserved = cache->Stats().reserved_bytes;
        peak = std::max(peak, reserved);
        ASSERT_LE(reserved, ReservedBound(*cache)) << "write " << i;
        if (i % 16 == 0) {  // a read of another key
          const size_t r = rng() % kKeys;
          const std::string other = absl::StrCat("key", r);
          std::optional<std::string> got = cache->Get(other);
          if (got.has_value()) {
            ASSERT_EQ(*got, ValueFor(other, last[r].first, last[r].second));
          }
        }
      }
      ASSERT_TRUE(cache->VerifyInvariants().ok()) << cache->VerifyInvariants();
    }
    for (size_t k = 0; k < kKeys; ++k) {
      const std::string key = absl::StrCat("key", k);
      std::optional<std::string> got = cache->Get(key);
      if (got.has_value()) {
        ASSERT_EQ(*got, ValueFor(key, last[k].first, last[k].second));
      }
    }
    const CacheStats stats = cache->Stats();
    EXPECT_GT(stats.compacted, 0u);
    std::printf("%zu stripes: peak reserved %.2fx max_bytes, %llu records compacted\n", stripes,
                static_cast<double>(peak) / static_cast<double>(options.max_bytes),
                static_cast<unsigned long long>(stats.compacted));
    cache->Clear();
    EXPECT_LE(cache->Stats().reserved_bytes, stripes * 8192);  // page 0's touched part, and so on
  }
}

// A record that compaction moves keeps its value, flags, CAS, expiry and
// place in the LRU order: one stripe, so the order is exact.
TEST_F(CacheTest, CompactionKeepsEveryFieldAndTheLruOrder) {
  auto cache = MakeOneStripe(0, 8 << 20);
  constexpr int kKeys = 6000;
  for (int i = 0; i < kKeys; ++i) {
    const std::string key = absl::StrCat("k", i);
    ASSERT_TRUE(cache->Set(key, ValueFor(key, 1, 60), {absl::Hours(1 + i % 5), 7u * i}).ok());
  }
  // Reading in key order makes the LRU order the key order.
  std::map<int, Item> before;
  for (int i = 0; i < kKeys; ++i) before[i] = *cache->GetItem(absl::StrCat("k", i));
  // Two keys of three go: the pages are a third live.
  for (int i = 0; i < kKeys; ++i) {
    if (i % 3 != 0) {
      ASSERT_TRUE(cache->Delete(absl::StrCat("k", i)));
    }
  }
  log_.Take();
  // Writes of new keys let compaction run, moving the survivors.
  for (int i = 0; i < 200; ++i) ASSERT_TRUE(cache->Set(absl::StrCat("new", i), "v").ok());
  ASSERT_GT(cache->Stats().compacted, 0u);
  ASSERT_TRUE(cache->VerifyInvariants().ok()) << cache->VerifyInvariants();
  // Every field is as it was. Reading in key order keeps the survivors in
  // key order, now all more recent than the new keys.
  for (int i = 0; i < kKeys; i += 3) {
    std::optional<Item> item = cache->GetItem(absl::StrCat("k", i));
    ASSERT_TRUE(item.has_value()) << i;
    EXPECT_EQ(item->value, before[i].value);
    EXPECT_EQ(item->flags, before[i].flags);
    EXPECT_EQ(item->cas, before[i].cas);
    EXPECT_EQ(item->expiry, before[i].expiry);
  }
  // Filling the cache with new entries evicts in exact LRU order: the 200
  // new keys, then the survivors in key order.
  std::vector<std::string> expected;
  for (int i = 0; i < 200; ++i) expected.push_back(absl::StrCat("new", i));
  for (int i = 0; i < kKeys; i += 3) expected.push_back(absl::StrCat("k", i));
  const std::string filler(4000, 'f');
  std::vector<std::string> evicted;
  for (int i = 0; evicted.size() < expected.size(); ++i) {
    ASSERT_LT(i, 100000);
    ASSERT_TRUE(cache->Set(absl::StrCat("fill", i), filler).ok());
    for (const std::string& event : log_.Take()) {
      if (event.rfind("evicted:", 0) != 0) continue;
      const std::string key = event.substr(8, event.find('=') - 8);
      if (key.rfind("fill", 0) != 0) evicted.push_back(key);
    }
  }
  EXPECT_EQ(evicted, expected);
}

// --- TTL ------------------------------------------------------------------

TEST_F(CacheTest, EntryExpiresExactlyAtItsTtl) {
  auto cache = MakeOneStripe(10);
  ASSERT_TRUE(cache->Set("a", "1", WriteOptions{absl::Seconds(10), 0}).ok());
  clock_.Advance(absl::Seconds(10) - absl::Nanoseconds(1));
  EXPECT_THAT(cache->Get("a"), Optional(std::string("1")));
  clock_.Advance(absl::Nanoseconds(1));
  EXPECT_EQ(cache->Get("a"), std::nullopt);
  EXPECT_THAT(log_.Take(), ElementsAre("expired:a=1"));
  CacheStats stats = cache->Stats();
  EXPECT_EQ(stats.expirations, 1u);
  EXPECT_EQ(stats.items, 0u);
  EXPECT_EQ(stats.bytes, 0u);
}

TEST_F(CacheTest, DefaultTtlAppliesAndWritesOverrideIt) {
  CacheOptions options;
  options.stripes = 1;
  options.default_ttl = absl::Minutes(1);
  auto cache = Make(options);
  ASSERT_TRUE(cache->Set("default", "v").ok());
  ASSERT_TRUE(cache->Set("long", "v", WriteOptions{absl::Hours(1), 0}).ok());
  ASSERT_TRUE(cache->Set("forever", "v", WriteOptions{absl::InfiniteDuration(), 0}).ok());
  EXPECT_EQ(cache->GetItem("default")->expiry, clock_.Now() + absl::Minutes(1));
  EXPECT_EQ(cache->GetItem("forever")->expiry, absl::InfiniteFuture());
  clock_.Advance(absl::Minutes(1));
  EXPECT_EQ(cache->Get("default"), std::nullopt);
  EXPECT_TRUE(cache->Get("long").has_value());
  clock_.Advance(absl::Hours(1000));
  EXPECT_EQ(cache->Get("long"), std::nullopt);
  EXPECT_TRUE(cache->Get("forever").has_value());
}

TEST_F(CacheTest, ExpiredEntriesAreNotVisibleToAnyOperation) {
  auto cache = MakeOneStripe(10);
  const WriteOptions ttl{absl::Seconds(1), 7};
  ASSERT_TRUE(cache->Set("n", "5", ttl).ok());
  clock_.Advance(absl::Seconds(1));
  EXPECT_EQ(cache->GetItem("n"), std::nullopt);
  ASSERT_TRUE(cache->Set("n", "5", ttl).ok());
  clock_.Advance(absl::Seconds(1));
  EXPECT_TRUE(absl::IsNotFound(cache->Increment("n", 1).status()));
  ASSERT_TRUE(cache->Set("n", "5", ttl).ok());
  clock_.Advance(absl::Seconds(1));
  EXPECT_THAT(cache->Append("n", "x"), IsOkAndHolds(StoreResult::kNotStored));
  ASSERT_TRUE(cache->Set("n", "5", ttl).ok());
  clock_.Advance(absl::Seconds(1));
  EXPECT_THAT(cache->Replace("n", "x"), IsOkAndHolds(StoreResult::kNotStored));
  EXPECT_THAT(cache->Add("n", "fresh"), IsOkAndHolds(StoreResult::kStored));  // add over the dead
  EXPECT_THAT(cache->Get("n"), Optional(std::string("fresh")));
  ASSERT_TRUE(cache->Set("d", "v", ttl).ok());
  clock_.Advance(absl::Seconds(1));
  EXPECT_FALSE(cache->Delete("d"));
  EXPECT_FALSE(cache->Touch("d", absl::Hours(1)));
}

TEST_F(CacheTest, ReclaimExpiredRemovesDeadEntriesWithoutReadingThem) {
  auto cache = MakeOneStripe(100);
  for (int i = 0; i < 10; ++i) {
    ASSERT_TRUE(cache->Set(absl::StrCat("k", i), "v", WriteOptions{absl::Seconds(i + 1), 0}).ok());
  }
  ASSERT_TRUE(cache->Set("forever", "v").ok());
  clock_.Advance(absl::Seconds(5));
  EXPECT_EQ(cache->ReclaimExpired(), 5u);
  EXPECT_THAT(log_.Take(), ElementsAre("expired:k0=v", "expired:k1=v", "expired:k2=v",
                                       "expired:k3=v", "expired:k4=v"));
  EXPECT_EQ(cache->Stats().items, 6u);
  EXPECT_EQ(cache->ReclaimExpired(), 0u);
  clock_.Advance(absl::Hours(1));
  EXPECT_EQ(cache->ReclaimExpired(), 5u);
  EXPECT_EQ(cache->Stats().items, 1u);
  ASSERT_TRUE(cache->VerifyInvariants().ok());
}

TEST_F(CacheTest, WritesTrimExpiredEntries) {
  auto cache = MakeOneStripe(100);
  for (int i = 0; i < 4; ++i) {
    ASSERT_TRUE(cache->Set(absl::StrCat("old", i), "v", WriteOptions{absl::Seconds(1), 0}).ok());
  }
  clock_.Advance(absl::Seconds(2));
  ASSERT_TRUE(cache->Set("new1", "v").ok());
  ASSERT_TRUE(cache->Set("new2", "v").ok());
  EXPECT_EQ(cache->Stats().expirations, 4u);  // two per write
  EXPECT_EQ(cache->Stats().items, 2u);
}

TEST_F(CacheTest, ExpiredEntriesGoBeforeLiveOnesWhenFull) {
  auto cache = MakeOneStripe(3);
  ASSERT_TRUE(cache->Set("live1", "v").ok());
  ASSERT_TRUE(cache->Set("live2", "v").ok());
  ASSERT_TRUE(cache->Set("dies", "v", WriteOptions{absl::Seconds(1), 0}).ok());
  clock_.Advance(absl::Seconds(1));
  log_.Take();
  ASSERT_TRUE(cache->Set("live3", "v").ok());
  // The dead entry is the most recent, yet it is the one reclaimed.
  EXPECT_THAT(log_.Take(), ElementsAre("expired:dies=v"));
  EXPECT_TRUE(cache->Get("live1").has_value());
}

TEST_F(CacheTest, StaleExpiryElementsNeverRemoveTheWrongEntry) {
  auto cache = MakeOneStripe(100);
  const WriteOptions ttl{absl::Seconds(10), 0};
  // "b" reuses "a"'s record (same size) with the same expiry: the heap now
  // holds two elements for that ref, one of them stale.
  ASSERT_TRUE(cache->Set("a", "1", ttl).ok());
  EXPECT_TRUE(cache->Delete("a"));
  ASSERT_TRUE(cache->Set("b", "2", ttl).ok());
  // Overwrites and touches leave more stale elements behind.
  for (int i = 0; i < 50; ++i) {
    ASSERT_TRUE(cache->Set("c", std::string(static_cast<size_t>(i), 'c'), ttl).ok());
    EXPECT_TRUE(cache->Touch("c", absl::Seconds(5 + i % 3)));
  }
  ASSERT_TRUE(cache->Set("forever", "v").ok());
  log_.Take();
  clock_.Advance(absl::Seconds(10));
  EXPECT_EQ(cache->ReclaimExpired(), 2u);
  EXPECT_THAT(log_.Take(),
              ::testing::UnorderedElementsAre("expired:b=2", "expired:c=" + std::string(49, 'c')));
  EXPECT_EQ(cache->Stats().expirations, 2u);
  EXPECT_EQ(cache->Stats().items, 1u);
  EXPECT_TRUE(cache->Get("forever").has_value());
  ASSERT_TRUE(cache->VerifyInvariants().ok());
}

TEST_F(CacheTest, TouchExtendsAndShortensLife) {
  auto cache = MakeOneStripe(10);
  ASSERT_TRUE(cache->Set("a", "1", WriteOptions{absl::Seconds(10), 0}).ok());
  const uint64_t cas = cache->GetItem("a")->cas;
  clock_.Advance(absl::Seconds(9));
  EXPECT_TRUE(cache->Touch("a", absl::Seconds(10)));
  EXPECT_EQ(cache->GetItem("a")->cas, cas);  // touch does not change the value
  clock_.Advance(absl::Seconds(9));
  EXPECT_TRUE(cache->Get("a").has_value());
  EXPECT_TRUE(cache->Touch("a", absl::InfiniteDuration()));
  clock_.Advance(absl::Hours(100));
  EXPECT_TRUE(cache->Get("a").has_value());
  EXPECT_TRUE(cache->Touch("a", absl::Seconds(1)));
  clock_.Advance(absl::Seconds(1));
  EXPECT_EQ(cache->Get("a"), std::nullopt);
  EXPECT_FALSE(cache->Touch("missing", absl::Seconds(1)));
  ASSERT_TRUE(cache->VerifyInvariants().ok());
}

TEST_F(CacheTest, BackgroundReaperReclaimsAnIdleCache) {
  CacheOptions options;
  options.stripes = 1;
  options.reap_interval = absl::Milliseconds(1);
  Event reclaimed;
  options.clock = &clock_;
  options.on_removal = [&](const Removal& r) {
    if (r.reason == RemovalReason::kExpired && !reclaimed.HasBeenNotified()) reclaimed.Notify();
  };
  auto cache = *Cache::Create(options);
  ASSERT_TRUE(cache->Set("a", "1", WriteOptions{absl::Seconds(1), 0}).ok());
  clock_.Advance(absl::Seconds(1));
  // No call touches the cache: only the reaper can reclaim the entry.
  reclaimed.Wait();
  EXPECT_EQ(cache->Stats().expirations, 1u);
}

// --- Conditional writes ---------------------------------------------------

TEST_F(CacheTest, AddAndReplace) {
  auto cache = MakeOneStripe(10);
  EXPECT_THAT(cache->Replace("a", "1"), IsOkAndHolds(StoreResult::kNotStored));
  EXPECT_THAT(cache->Add("a", "1"), IsOkAndHolds(StoreResult::kStored));
  EXPECT_THAT(cache->Add("a", "2"), IsOkAndHolds(StoreResult::kNotStored));
  EXPECT_THAT(cache->Get("a"), Optional(std::string("1")));
  EXPECT_THAT(cache->Replace("a", "3", WriteOptions{std::nullopt, 9}),
              IsOkAndHolds(StoreResult::kStored));
  EXPECT_EQ(cache->GetItem("a")->value, "3");
  EXPECT_EQ(cache->GetItem("a")->flags, 9u);
  EXPECT_EQ(cache->Stats().sets, 2u);
}

TEST_F(CacheTest, CompareAndSwapDetectsConflicts) {
  auto cache = MakeOneStripe(10);
  EXPECT_THAT(cache->CompareAndSwap("a", "x", 1), IsOkAndHolds(StoreResult::kNotFound));
  ASSERT_TRUE(cache->Set("a", "1").ok());
  const uint64_t cas = cache->GetItem("a")->cas;
  // Another writer gets in first.
  ASSERT_TRUE(cache->Set("a", "2").ok());
  const uint64_t cas2 = cache->GetItem("a")->cas;
  EXPECT_NE(cas, cas2);
  EXPECT_THAT(cache->CompareAndSwap("a", "from stale read", cas),
              IsOkAndHolds(StoreResult::kExists));
  EXPECT_THAT(cache->Get("a"), Optional(std::string("2")));
  EXPECT_THAT(cache->CompareAndSwap("a", "3", cas2), IsOkAndHolds(StoreResult::kStored));
  EXPECT_THAT(cache->Get("a"), Optional(std::string("3")));
  EXPECT_THAT(cache->CompareAndSwap("a", "4", cas2), IsOkAndHolds(StoreResult::kExists));
}

TEST_F(CacheTest, CasChangesOnEveryModification) {
  auto cache = MakeOneStripe(10);
  ASSERT_TRUE(cache->Set("n", "1").ok());
  uint64_t last = cache->GetItem("n")->cas;
  auto changed = [&] {
    uint64_t now = cache->GetItem("n")->cas;
    bool different = now != last;
    last = now;
    return different;
  };
  ASSERT_TRUE(cache->Increment("n", 1).ok());
  EXPECT_TRUE(changed());
  ASSERT_TRUE(cache->Append("n", "0").ok());
  EXPECT_TRUE(changed());
  ASSERT_TRUE(cache->Prepend("n", "1").ok());
  EXPECT_TRUE(changed());
  ASSERT_TRUE(cache->Replace("n", "7").ok());
  EXPECT_TRUE(changed());
}

TEST_F(CacheTest, ConcurrentCasIncrementsLoseNothing) {
  CacheOptions options;
  options.max_bytes = 1 << 20;
  auto cache = Make(options);
  ASSERT_TRUE(cache->Set("counter", "0").ok());
  constexpr int kThreads = 4, kPerThread = 500;
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&] {
      for (int done = 0; done < kPerThread;) {
        std::optional<Item> item = cache->GetItem("counter");
        ASSERT_TRUE(item.has_value());
        const std::string next = std::to_string(std::stoull(item->value) + 1);
        if (*cache->CompareAndSwap("counter", next, item->cas) == StoreResult::kStored) ++done;
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_THAT(cache->Get("counter"), Optional(std::to_string(kThreads * kPerThread)));
}

TEST_F(CacheTest, AppendAndPrependKeepFlagsAndExpiry) {
  auto cache = MakeOneStripe(10);
  EXPECT_THAT(cache->Append("a", "x"), IsOkAndHolds(StoreResult::kNotStored));
  ASSERT_TRUE(cache->Set("a", "mid", WriteOptions{absl::Seconds(10), 42}).ok());
  EXPECT_THAT(cache->Append("a", ">"), IsOkAndHolds(StoreResult::kStored));
  EXPECT_THAT(cache->Prepend("a", "<"), IsOkAndHolds(StoreResult::kStored));
  std::optional<Item> item = cache->GetItem("a");
  EXPECT_EQ(item->value, "<mid>");
  EXPECT_EQ(item->flags, 42u);
  EXPECT_EQ(item->expiry, clock_.Now() + absl::Seconds(10));
  clock_.Advance(absl::Seconds(10));
  EXPECT_EQ(cache->Get("a"), std::nullopt);
}

TEST_F(CacheTest, AppendPastTheValueLimitIsAnError) {
  CacheOptions options;
  options.stripes = 1;
  options.max_value_size = 10;
  auto cache = Make(options);
  ASSERT_TRUE(cache->Set("a", "0123456789").ok());
  absl::StatusOr<StoreResult> r = cache->Append("a", "x");
  EXPECT_TRUE(absl::IsInvalidArgument(r.status()));
  EXPECT_THAT(r.status().message(), HasSubstr("Append would make the value is 11 bytes"));
  EXPECT_THAT(cache->Get("a"), Optional(std::string("0123456789")));
}

// --- Counters -------------------------------------------------------------

TEST_F(CacheTest, IncrementAndDecrementFollowMemcached) {
  auto cache = MakeOneStripe(10);
  EXPECT_TRUE(absl::IsNotFound(cache->Increment("n", 1).status()));
  ASSERT_TRUE(cache->Set("n", "10", WriteOptions{absl::Seconds(30), 5}).ok());
  EXPECT_THAT(cache->Increment("n", 5), IsOkAndHolds(15u));
  EXPECT_THAT(cache->Decrement("n", 3), IsOkAndHolds(12u));
  EXPECT_THAT(cache->Decrement("n", 100), IsOkAndHolds(0u));  // stops at 0
  EXPECT_THAT(cache->Get("n"), Optional(std::string("0")));
  EXPECT_EQ(cache->GetItem("n")->flags, 5u);
  EXPECT_EQ(cache->GetItem("n")->expiry, clock_.Now() + absl::Seconds(30));

  ASSERT_TRUE(cache->Set("max", "18446744073709551615").ok());
  EXPECT_THAT(cache->Increment("max", 2), IsOkAndHolds(1u));  // wraps at 2^64
  EXPECT_THAT(cache->Get("max"), Optional(std::string("1")));
}

TEST_F(CacheTest, IncrementRejectsNonNumbers) {
  auto cache = MakeOneStripe(10);
  for (const char* bad : {"abc", "", "-1", "12x", "18446744073709551616"}) {
    ASSERT_TRUE(cache->Set("n", bad).ok());
    absl::StatusOr<uint64_t> r = cache->Increment("n", 1);
    EXPECT_TRUE(absl::IsFailedPrecondition(r.status())) << "'" << bad << "'";
    EXPECT_EQ(r.status().message(),
              "cannot increment key 'n': its value is not a number memcached would accept");
    EXPECT_THAT(cache->Get("n"), Optional(std::string(bad)));  // unchanged
  }
  ASSERT_TRUE(cache->Set("n", "007").ok());
  EXPECT_THAT(cache->Increment("n", 1), IsOkAndHolds(8u));

  ASSERT_TRUE(cache->Set("a\nkey", "x").ok());  // the key is escaped in the message
  EXPECT_EQ(cache->Decrement("a\nkey", 1).status().message(),
            "cannot decrement key 'a\\nkey': its value is not a number memcached would accept");
}

// The values memcached 1.6.18 counts are those its safe_strtoull accepts, not
// just 1..20 plain digits: " 5" + 1 was FailedPrecondition here and 6 in
// memcached. Each row was measured against a real memcached 1.6.18 (set the
// value, then incr/decr); kNotANumber is its CLIENT_ERROR.
TEST_F(CacheTest, IncrementAcceptsWhatMemcachedAccepts) {
  constexpr std::optional<uint64_t> kNotANumber = std::nullopt;
  struct Case {
    std::string value;
    bool increment;
    uint64_t delta;
    std::optional<uint64_t> result;
  };
  const Case cases[] = {
      {" 5 ", true, 1, 6},
      {"+5", true, 1, 6},
      {"5ab", true, 1, kNotANumber},
      {"5 ab", true, 1, 6},
      {"-0", true, 1, 1},
      {"\t7\n", true, 1, 8},
      {"18446744073709551615", true, 1, 0},  // wraps at 2^64
      {"018446744073709551615", false, 1, 18446744073709551614u},
      {" ", true, 1, kNotANumber},
      {"", true, 1, kNotANumber},
      {"000000000000000000000000000005", false, 1, 4},  // 30 bytes
      {"-5 ", true, 1, kNotANumber},
      {"5\n", true, 1, 6},
      {std::string("5\0", 2), true, 1, 6},
      {"   \t9", true, 1, 10},
      {"-18446744073709551615", true, 0, 1},           // strtoull: -(2^64 - 1) mod 2^64
      {"18446744073709551616", true, 1, kNotANumber},  // overflow
  };
  auto cache = MakeOneStripe(10);
  for (const Case& c : cases) {
    SCOPED_TRACE(
        absl::StrCat("value \"", absl::CEscape(c.value), "\" ", c.increment ? "+" : "-", c.delta));
    ASSERT_TRUE(cache->Set("n", c.value).ok());
    absl::StatusOr<uint64_t> r =
        c.increment ? cache->Increment("n", c.delta) : cache->Decrement("n", c.delta);
    if (c.result.has_value()) {
      EXPECT_THAT(r, IsOkAndHolds(*c.result));
      // Stored as the plain number; memcached would pad it with spaces to the
      // old length when it is shorter.
      EXPECT_THAT(cache->Get("n"), Optional(absl::StrCat(*c.result)));
    } else {
      EXPECT_TRUE(absl::IsFailedPrecondition(r.status())) << r.status();
      EXPECT_THAT(cache->Get("n"), Optional(c.value));  // unchanged
    }
  }
}

// --- Delete, Clear, GetMany, SetMany ----------------------------------------

TEST_F(CacheTest, DeleteAndClear) {
  auto cache = MakeOneStripe(10);
  ASSERT_TRUE(cache->Set("a", "1").ok());
  ASSERT_TRUE(cache->Set("b", "2").ok());
  EXPECT_TRUE(cache->Delete("a"));
  EXPECT_FALSE(cache->Delete("a"));
  EXPECT_THAT(log_.Take(), ElementsAre("deleted:a=1"));
  cache->Clear();
  EXPECT_THAT(log_.Take(), ElementsAre("cleared:b=2"));
  EXPECT_EQ(cache->Stats().items, 0u);
  EXPECT_EQ(cache->Stats().bytes, 0u);
  ASSERT_TRUE(cache->Set("c", "3").ok());
  EXPECT_THAT(cache->Get("c"), Optional(std::string("3")));
}

TEST_F(CacheTest, DeleteWithCasRemovesOnlyTheVersionRead) {
  auto cache = MakeOneStripe(10);
  ASSERT_TRUE(cache->Set("a", "1").ok());
  const uint64_t first = cache->GetItem("a")->cas;
  ASSERT_TRUE(cache->Set("a", "2").ok());
  log_.Take();
  EXPECT_FALSE(cache->Delete("a", first));  // modified since: kept
  EXPECT_THAT(cache->Get("a"), Optional(std::string("2")));
  EXPECT_TRUE(cache->Delete("a", cache->GetItem("a")->cas));
  EXPECT_THAT(log_.Take(), ElementsAre("deleted:a=2"));
  EXPECT_FALSE(cache->Delete("a", first));  // missing
}

TEST_F(CacheTest, DestructionReportsRemainingEntries) {
  auto cache = MakeOneStripe(10);
  ASSERT_TRUE(cache->Set("a", "1").ok());
  cache.reset();
  EXPECT_THAT(log_.Take(), ElementsAre("cleared:a=1"));
}

TEST_F(CacheTest, GetManyAndSetMany) {
  CacheOptions options;
  options.max_bytes = 1 << 20;
  auto cache = Make(options);
  std::vector<std::pair<std::string_view, std::string_view>> items = {
      {"a", "1"}, {"b", "2"}, {"c", "3"}};
  ASSERT_TRUE(cache->SetMany(items, WriteOptions{std::nullopt, 3}).ok());
  std::vector<std::string_view> keys = {"a", "c", "missing", "a"};
  auto found = cache->GetMany(keys);
  ASSERT_EQ(found.size(), 2u);
  EXPECT_EQ(found["a"].value, "1");
  EXPECT_EQ(found["c"].value, "3");
  EXPECT_EQ(found["c"].flags, 3u);

  items = {{"d", "4"}, {"", "bad"}};
  absl::Status s = cache->SetMany(items);
  EXPECT_TRUE(absl::IsInvalidArgument(s));
  EXPECT_THAT(s.message(), HasSubstr("SetMany stored nothing: key is empty"));
  EXPECT_EQ(cache->Get("d"), std::nullopt);
}

// --- Removal listener runs outside the locks --------------------------------

TEST_F(CacheTest, ListenerMayCallBackIntoTheCache) {
  CacheOptions options;
  options.stripes = 1;
  options.max_items = 1;
  Cache* self = nullptr;
  std::vector<std::string> seen;
  options.on_removal = [&](const Removal& r) {
    // Would deadlock if the stripe lock were held.
    seen.push_back(absl::StrCat(std::string(r.key), ":", self->Get(r.key).has_value() ? 1 : 0));
  };
  auto cache = *Cache::Create(options);
  self = cache.get();
  ASSERT_TRUE(cache->Set("a", "1").ok());
  ASSERT_TRUE(cache->Set("b", "2").ok());
  EXPECT_THAT(seen, ElementsAre("a:0"));
  cache->Clear();
}

// --- GetOrLoad --------------------------------------------------------------

TEST_F(CacheTest, GetOrLoadLoadsOnceThenHits) {
  auto cache = MakeOneStripe(10);
  int calls = 0;
  auto loader = [&](std::string_view key) -> absl::StatusOr<std::string> {
    ++calls;
    return absl::StrCat("value of ", std::string(key));
  };
  EXPECT_THAT(cache->GetOrLoad("k", loader), IsOkAndHolds(std::string("value of k")));
  EXPECT_THAT(cache->GetOrLoad("k", loader), IsOkAndHolds(std::string("value of k")));
  EXPECT_EQ(calls, 1);
  EXPECT_EQ(cache->Stats().loads, 1u);
}

TEST_F(CacheTest, GetOrLoadAppliesWriteOptions) {
  auto cache = MakeOneStripe(10);
  auto loader = [](std::string_view) -> absl::StatusOr<std::string> { return "v"; };
  ASSERT_TRUE(cache->GetOrLoad("k", loader, WriteOptions{absl::Seconds(5), 11}).ok());
  EXPECT_EQ(cache->GetItem("k")->flags, 11u);
  clock_.Advance(absl::Seconds(5));
  EXPECT_EQ(cache->Get("k"), std::nullopt);
}

TEST_F(CacheTest, GetOrLoadCallsTheLoaderOnceForManyThreads) {
  CacheOptions options;
  options.max_bytes = 1 << 20;
  auto cache = Make(options);
  constexpr int kThreads = 16;
  std::atomic<int> calls{0};
  Event release;
  auto loader = [&](std::string_view) -> absl::StatusOr<std::string> {
    calls.fetch_add(1);
    release.Wait();  // hold the flight open until every other caller waits on it
    return "loaded";
  };
  std::vector<std::thread> threads;
  std::vector<absl::StatusOr<std::string>> results(kThreads);
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] { results[t] = cache->GetOrLoad("hot", loader); });
  }
  while (cache->Stats().load_waits < kThreads - 1) std::this_thread::yield();
  release.Notify();
  for (auto& t : threads) t.join();
  for (const auto& r : results) EXPECT_THAT(r, IsOkAndHolds(std::string("loaded")));
  EXPECT_EQ(calls.load(), 1);
  EXPECT_EQ(cache->Stats().loads, 1u);
  EXPECT_EQ(cache->Stats().misses, static_cast<uint64_t>(kThreads));
}

TEST_F(CacheTest, GetOrLoadErrorReachesEveryWaiterAndIsNotCached) {
  CacheOptions options;
  options.max_bytes = 1 << 20;
  auto cache = Make(options);
  constexpr int kThreads = 8;
  std::atomic<int> calls{0};
  Event release;
  auto failing = [&](std::string_view) -> absl::StatusOr<std::string> {
    calls.fetch_add(1);
    release.Wait();
    return absl::UnavailableError("database is down");
  };
  std::vector<absl::StatusOr<std::string>> results(kThreads);
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] { results[t] = cache->GetOrLoad("k", failing); });
  }
  while (cache->Stats().load_waits < kThreads - 1) std::this_thread::yield();
  release.Notify();
  for (auto& t : threads) t.join();
  EXPECT_EQ(calls.load(), 1);
  for (const auto& r : results) {
    EXPECT_TRUE(absl::IsUnavailable(r.status())) << r.status();
    EXPECT_THAT(r.status().message(), HasSubstr("database is down"));
  }
  EXPECT_EQ(cache->Get("k"), std::nullopt);
  EXPECT_EQ(cache->Stats().load_failures, 1u);
  // Not cached: the next call loads again.
  auto ok = [](std::string_view) -> absl::StatusOr<std::string> { return "back"; };
  EXPECT_THAT(cache->GetOrLoad("k", ok), IsOkAndHolds(std::string("back")));
  EXPECT_EQ(cache->Stats().loads, 2u);
}

TEST_F(CacheTest, GetOrLoadReportsAValueTooLargeToCache) {
  CacheOptions options;
  options.stripes = 1;
  options.max_value_size = 4;
  auto cache = Make(options);
  auto loader = [](std::string_view) -> absl::StatusOr<std::string> { return "too long"; };
  absl::StatusOr<std::string> r = cache->GetOrLoad("k", loader);
  EXPECT_TRUE(absl::IsInvalidArgument(r.status()));
  EXPECT_THAT(r.status().message(), HasSubstr("could not cache the loaded value"));
}

}  // namespace
}  // namespace tiercache

namespace tiercache {
namespace {

// ---------------------------------------------------------------------------
// EvictionPolicy::kTinyLfu

class TinyLfuTest : public CacheTest {
 protected:
  std::unique_ptr<Cache> MakeTinyLfu(size_t max_items, size_t max_bytes, size_t stripes = 1) {
    CacheOptions options;
    options.max_bytes = max_bytes;
    options.max_items = max_items;
    options.stripes = stripes;
    options.policy = EvictionPolicy::kTinyLfu;
    options.policy_seed = 7;
    return Make(std::move(options));
  }
};

// The point of the admission filter: one pass over many keys read once does
// not push out what is read again and again (LRU loses all of it).
TEST_F(TinyLfuTest, AScanDoesNotFlushTheHotKeys) {
  for (const EvictionPolicy policy : {EvictionPolicy::kLru, EvictionPolicy::kTinyLfu}) {
    CacheOptions options;
    options.max_items = 100;
    options.stripes = 1;
    options.policy = policy;
    options.policy_seed = 7;
    auto cache = Make(options);
    std::string value;
    for (int round = 0; round < 5; ++round) {
      for (int i = 0; i < 50; ++i) {
        const std::string key = absl::StrCat("hot", i);
        if (!cache->Get(key, &value)) {
          ASSERT_TRUE(cache->Set(key, "h").ok());
        }
      }
    }
    for (int i = 0; i < 1000; ++i) {
      const std::string key = absl::StrCat("scan", i);
      if (!cache->Get(key, &value)) {
        ASSERT_TRUE(cache->Set(key, "s").ok());
      }
    }
    int kept = 0;
    for (int i = 0; i < 50; ++i) kept += cache->Get(absl::StrCat("hot", i)).has_value();
    if (policy == EvictionPolicy::kLru) {
      EXPECT_EQ(kept, 0);
    } else {
      EXPECT_EQ(kept, 49);  // with this seed; the replay is deterministic
    }
    EXPECT_TRUE(cache->VerifyInvariants().ok()) << cache->VerifyInvariants();
  }
}

// With both bounds set, the regions are sized by the one that binds. Here
// the byte budget holds ~100 entries of 1000 bytes while the item bound is
// 10000: measured in items, the window (1% of 10000) would hold the whole
// cache and a scan would flush it like LRU; measured in bytes it is 1% of
// what fits, and the hot keys stay.
TEST_F(TinyLfuTest, TheRegionsAreSizedByTheBindingBound) {
  for (const bool bytes_bind : {false, true}) {
    SCOPED_TRACE(bytes_bind ? "bytes bind" : "items bind");
    const std::string value(bytes_bind ? 1000 : 10, 'v');
    auto cache =
        MakeTinyLfu(bytes_bind ? 10000 : 100, 100 * Cache::ChargeFor(8, 1000, /*expires=*/false));
    std::string out;
    for (int round = 0; round < 5; ++round) {
      for (int i = 0; i < 50; ++i) {
        const std::string key = absl::StrCat("hot", i);
        if (!cache->Get(key, &out)) {
          ASSERT_TRUE(cache->Set(key, value).ok());
        }
      }
    }
    for (int i = 0; i < 1000; ++i) {
      const std::string key = absl::StrCat("scan", i);
      if (!cache->Get(key, &out)) {
        ASSERT_TRUE(cache->Set(key, value).ok());
      }
    }
    int kept = 0;
    for (int i = 0; i < 50; ++i) kept += cache->Get(absl::StrCat("hot", i)).has_value();
    EXPECT_GE(kept, 48);
    EXPECT_TRUE(cache->VerifyInvariants().ok()) << cache->VerifyInvariants();
  }
}

// Every write operation, TTLs, values of very different sizes and both
// budgets, against the stripe's invariants (each record on the list its
// segment names, the regions' weights, the budget) after every step, and
// every removal reported once.
TEST_F(TinyLfuTest, EveryOperationKeepsTheInvariants) {
  for (const size_t max_items : {size_t{0}, size_t{64}}) {
    for (const size_t stripes : {size_t{1}, size_t{4}}) {
      SCOPED_TRACE(absl::StrCat("max_items ", max_items, ", stripes ", stripes));
      auto cache = MakeTinyLfu(max_items, 48 * 1024, stripes);
      log_.Take();
      std::mt19937_64 random(3);
      std::string value;
      uint64_t removals = 0;
      for (int step = 0; step < 20000; ++step) {
        const std::string key = absl::StrCat("k", random() % (random() % 4 == 0 ? 50 : 400));
        const WriteOptions ttl{absl::Milliseconds(1 + static_cast<int64_t>(random() % 200)), 0};
        const std::string data(random() % 3 == 0 ? random() % 2000 : random() % 40, 'v');
        switch (random() % 12) {
          case 0:
          case 1:
            ASSERT_TRUE(cache->Set(key, data, random() % 2 ? ttl : WriteOptions{}).ok());
            break;
          case 2:
            (void)cache->Add(key, data);
            break;
          case 3:
            (void)cache->Replace(key, data);
            break;
          case 4:
            if (std::optional<Item> item = cache->GetItem(key)) {
              (void)cache->CompareAndSwap(key, data, item->cas);
            }
            break;
          case 5:
            (void)cache->Append(key, "a");
            break;
          case 6:
            cache->Delete(key);
            break;
          case 7:
            cache->Touch(key, absl::Milliseconds(50));
            break;
          case 8:
            if (cache->Set(key, "41").ok()) (void)cache->Increment(key, 1);
            break;
          case 9:
            clock_.Advance(absl::Milliseconds(3));
            if (random() % 50 == 0) cache->ReclaimExpired();
            if (random() % 2000 == 0) cache->Clear();
            break;
          default:
            (void)cache->Get(key, &value);
            break;
        }
        removals += log_.Take().size();
        if (step % 97 == 0) {
          const absl::Status invariants = cache->VerifyInvariants();
          ASSERT_TRUE(invariants.ok()) << "step " << step << ": " << invariants;
        }
      }
      ASSERT_TRUE(cache->VerifyInvariants().ok());
      const CacheStats stats = cache->Stats();
      EXPECT_LE(stats.bytes, 48u * 1024);
      if (max_items != 0) {
        EXPECT_LE(stats.items, max_items);
      }
      EXPECT_GT(stats.evictions, 0u);
      EXPECT_GT(stats.expirations, 0u);
      EXPECT_EQ(stats.sets, removals + stats.items);
    }
  }
}

// Expired entries leave before any live one is weighed for eviction.
TEST_F(TinyLfuTest, ExpiredEntriesLeaveFirst) {
  auto cache = MakeTinyLfu(4, 1 << 20);
  ASSERT_TRUE(cache->Set("short", "x", {absl::Seconds(1), 0}).ok());
  for (const char* key : {"a", "b", "c"}) {
    ASSERT_TRUE(cache->Set(key, "x").ok());
    for (int i = 0; i < 3; ++i) EXPECT_TRUE(cache->Get(key).has_value());
  }
  log_.Take();
  clock_.Advance(absl::Seconds(2));
  ASSERT_TRUE(cache->Set("d", "x").ok());
  EXPECT_THAT(log_.Take(), ::testing::Contains("expired:short=x"));
  for (const char* key : {"a", "b", "c", "d"}) EXPECT_TRUE(cache->Get(key).has_value()) << key;
}

}  // namespace
}  // namespace tiercache
