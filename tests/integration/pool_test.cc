// A pool of two real memcached servers: keys are placed as libmemcached's
// ketama places them (a libmemcached client reads what we wrote), GetMany and
// the Mirror span the pool, and one server down leaves the other's keys served.

#include <libmemcached/memcached.h>

#include <atomic>
#include <cstdio>
#include <fstream>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "client/client_core.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "memcached_server.h"
#include "tiercache/memcached.h"
#include "tiercache/mirror.h"
#include "tiercache/tiered_cache.h"

namespace tiercache {
namespace {

class PoolTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(a_.running() && b_.running());
    MemcachedOptions options;
    options.servers = {a_.address(), b_.address()};
    // Every call to a running server must succeed here, even on a busy,
    // sanitized machine; a stopped server refuses at once, not at a timeout.
    options.op_timeout = absl::Seconds(2);
    pool_ = *MemcachedClient::Create(options);
    only_a_ = Single(a_);
    only_b_ = Single(b_);
  }
  static std::unique_ptr<MemcachedClient> Single(const testing::MemcachedServer& server) {
    MemcachedOptions options;
    options.servers = {server.address()};
    return *MemcachedClient::Create(options);
  }

  testing::MemcachedServer a_, b_;
  std::unique_ptr<MemcachedClient> pool_, only_a_, only_b_;
};

TEST_F(PoolTest, EachKeyLivesOnOneServerWhereLibmemcachedLooksForIt) {
  memcached_st* memc = memcached_create(nullptr);
  memcached_behavior_set(memc, MEMCACHED_BEHAVIOR_KETAMA_WEIGHTED, 1);
  memcached_server_add(memc, "127.0.0.1", static_cast<in_port_t>(a_.port()));
  memcached_server_add(memc, "127.0.0.1", static_cast<in_port_t>(b_.port()));
  int on_a = 0, on_b = 0;
  for (int i = 0; i < 300; ++i) {
    const std::string key = absl::StrCat("key:", i), value = absl::StrCat("value ", i);
    ASSERT_TRUE(pool_->Set(key, value).ok());
    const bool in_a = (*only_a_->Get(key)).has_value();
    const bool in_b = (*only_b_->Get(key)).has_value();
    EXPECT_NE(in_a, in_b) << key;  // exactly one server holds it
    on_a += in_a;
    on_b += in_b;
    // libmemcached, configured the same way, finds it.
    size_t length = 0;
    uint32_t flags = 0;
    memcached_return_t rc;
    char* got = memcached_get(memc, key.data(), key.size(), &length, &flags, &rc);
    ASSERT_EQ(rc, MEMCACHED_SUCCESS) << key << ": " << memcached_strerror(memc, rc);
    EXPECT_EQ(std::string(got, length), value);
    free(got);
  }
  EXPECT_GT(on_a, 50);
  EXPECT_GT(on_b, 50);
  memcached_free(memc);
}

TEST_F(PoolTest, GetManyAndTheMirrorSpanThePool) {
  auto mirror = *Mirror::Create(pool_.get());
  std::vector<std::string> keys;
  for (int i = 0; i < 500; ++i) {
    keys.push_back(absl::StrCat("m", i));
    ASSERT_TRUE(mirror->ReplicateValue(keys.back(), absl::StrCat("v", i)).ok());
  }
  ASSERT_TRUE(mirror->Flush(absl::Seconds(10)).ok());
  EXPECT_EQ(mirror->Stats().replicated, 500u);
  std::vector<std::string_view> views(keys.begin(), keys.end());
  auto found = pool_->GetMany(views);
  ASSERT_TRUE(found.ok()) << found.status();
  ASSERT_EQ(found->size(), 500u);
  EXPECT_EQ((*found)["m499"].value, "v499");
}

TEST_F(PoolTest, OneServerDownLeavesTheOthersKeysServed) {
  for (int i = 0; i < 100; ++i) ASSERT_TRUE(pool_->Set(absl::StrCat("k", i), "v").ok());
  b_.Stop();
  int served = 0, unavailable = 0;
  for (int i = 0; i < 100; ++i) {
    absl::StatusOr<std::optional<Item>> r = pool_->Get(absl::StrCat("k", i));
    if (r.ok()) {
      EXPECT_TRUE(r->has_value());
      ++served;
    } else {
      EXPECT_TRUE(absl::IsUnavailable(r.status()) || absl::IsDeadlineExceeded(r.status()));
      ++unavailable;
    }
  }
  EXPECT_GT(served, 10);       // a's keys
  EXPECT_GT(unavailable, 10);  // b's keys fail, fast, without moving to a
}

// SetServers: a third server joins, then the first leaves.
class PoolChangeTest : public PoolTest {
 protected:
  // Established TCP connections of this machine to 127.0.0.1:`port`, from
  // /proc/net/tcp (the tests' memcached servers are private: every one is
  // this process's).
  static int ConnectionsTo(int port) {
    std::ifstream tcp("/proc/net/tcp");
    std::string line;
    std::getline(tcp, line);  // the header
    int count = 0;
    const std::string remote = absl::StrFormat("0100007F:%04X", port);
    while (std::getline(tcp, line)) {
      const std::vector<std::string> fields = absl::StrSplit(line, ' ', absl::SkipEmpty());
      if (fields.size() > 3 && fields[2] == remote && fields[3] == "01") ++count;
    }
    return count;
  }

  // The name libmemcached, configured with `servers` (KETAMA_WEIGHTED),
  // gives the server of `key`.
  static std::vector<std::string> LibmemcachedPlacement(
      const std::vector<const testing::MemcachedServer*>& servers,
      const std::vector<std::string>& keys) {
    memcached_st* memc = memcached_create(nullptr);
    memcached_behavior_set(memc, MEMCACHED_BEHAVIOR_KETAMA_WEIGHTED, 1);
    for (const testing::MemcachedServer* server : servers) {
      memcached_server_add(memc, "127.0.0.1", static_cast<in_port_t>(server->port()));
    }
    std::vector<std::string> placed;
    for (const std::string& key : keys) {
      memcached_return_t rc;
      const memcached_instance_st* instance =
          memcached_server_by_key(memc, key.data(), key.size(), &rc);
      placed.push_back(
          absl::StrCat(memcached_server_name(instance), ":", memcached_server_port(instance)));
    }
    memcached_free(memc);
    return placed;
  }

  testing::MemcachedServer c_;
};

TEST_F(PoolChangeTest, PlacementIsLibmemcachedsForEachNewList) {
  ASSERT_TRUE(c_.running());
  std::vector<std::string> keys;
  for (int i = 0; i < 20000; ++i) keys.push_back(absl::StrCat("placed:", i));
  const auto check = [&](const std::vector<const testing::MemcachedServer*>& servers) {
    const std::vector<std::string> expected = LibmemcachedPlacement(servers, keys);
    int wrong = 0;
    for (size_t i = 0; i < keys.size(); ++i) {
      wrong += mirror_internal::CoreOf(*pool_).ServerNameFor(keys[i]) != expected[i];
    }
    EXPECT_EQ(wrong, 0);
  };
  check({&a_, &b_});
  for (int i = 0; i < 50; ++i) ASSERT_TRUE(pool_->Set(keys[i], "v").ok());  // connects to a
  ASSERT_GE(ConnectionsTo(a_.port()), 1);
  ASSERT_TRUE(pool_->SetServers({a_.address(), b_.address(), c_.address()}).ok());
  check({&a_, &b_, &c_});
  ASSERT_TRUE(pool_->SetServers({b_.address(), c_.address()}).ok());
  check({&b_, &c_});
  // The removed server's connections were idle: closed at once.
  EXPECT_EQ(ConnectionsTo(a_.port()), 0);
  // The states follow the list.
  const std::vector<ServerStatus> states = pool_->ServerStates();
  ASSERT_EQ(states.size(), 2u);
  EXPECT_EQ(states[0].server, b_.address());
  EXPECT_EQ(states[1].server, c_.address());
  // And what is written lands where libmemcached looks for it.
  ASSERT_TRUE(pool_->Set("placed:0", "here").ok());
  const std::string home = LibmemcachedPlacement({&b_, &c_}, {"placed:0"})[0];
  EXPECT_EQ((*Single(home == b_.address() ? b_ : c_)->Get("placed:0"))->value, "here");
}

TEST_F(PoolChangeTest, BadListsChangeNothing) {
  EXPECT_EQ(pool_->SetServers({}).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(pool_->SetServers({a_.address(), a_.address()}).message(),
            a_.address() + " is listed twice in the servers");
  EXPECT_EQ(pool_->SetServers({a_.address(), "no-port"}).code(),
            absl::StatusCode::kInvalidArgument);
  ASSERT_EQ(pool_->ServerStates().size(), 2u);
  EXPECT_TRUE(pool_->Set("still", "works").ok());
}

TEST_F(PoolChangeTest, CallersDuringTheChangeSeeNoErrorButForTheRemovedServer) {
  ASSERT_TRUE(c_.running());
  std::atomic<bool> stop{false};
  std::atomic<int> calls{0};
  std::mutex mu;
  std::vector<std::string> unexpected;
  std::vector<std::thread> threads;
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&, t] {
      for (int n = 0; !stop.load(); ++n) {
        const std::string key = absl::StrCat("busy:", t, ":", n % 500);
        const absl::Status set = pool_->Set(key, "v").status();
        const absl::Status get = pool_->Get(key).status();
        calls += 2;
        for (const absl::Status& s : {set, get}) {
          // A call that started on a (removed) may fail naming it.
          if (!s.ok() && !absl::StrContains(s.message(), a_.address())) {
            std::lock_guard<std::mutex> hold(mu);
            unexpected.push_back(s.ToString());
          }
        }
      }
    });
  }
  absl::SleepFor(absl::Milliseconds(100));
  ASSERT_TRUE(pool_->SetServers({a_.address(), b_.address(), c_.address()}).ok());
  absl::SleepFor(absl::Milliseconds(100));
  ASSERT_TRUE(pool_->SetServers({b_.address(), c_.address()}).ok());
  absl::SleepFor(absl::Milliseconds(100));
  stop = true;
  for (std::thread& thread : threads) thread.join();
  EXPECT_THAT(unexpected, ::testing::IsEmpty());
  EXPECT_GT(calls.load(), 1000);
}

TEST_F(PoolChangeTest, QueuedReplicationIsPlacedAgainNotLost) {
  ASSERT_TRUE(c_.running());
  MemcachedOptions patient;
  patient.servers = {a_.address(), b_.address()};
  patient.op_timeout = absl::Seconds(20);  // waits out the pause below
  auto pool = *MemcachedClient::Create(patient);
  MirrorOptions options;
  options.max_batch = 16;  // many small batches
  auto mirror = *Mirror::Create(pool.get(), options);
  // Both servers hang while the writes are queued: the sender's first
  // batches wait on the wire, and everything else is still queued at the
  // change, however fast the sender would otherwise be.
  a_.Pause();
  b_.Pause();
  constexpr int kWrites = 20000;
  for (int i = 0; i < kWrites; ++i) {
    ASSERT_TRUE(mirror->ReplicateValue(absl::StrCat("q:", i), absl::StrCat("v", i)).ok());
  }
  ASSERT_TRUE(pool->SetServers({b_.address(), c_.address()}).ok());
  a_.Resume();
  b_.Resume();
  ASSERT_TRUE(mirror->Flush(absl::Seconds(30)).ok());
  const MirrorStats stats = mirror->Stats();
  EXPECT_EQ(stats.failed, 0u);
  EXPECT_EQ(stats.replicated, static_cast<uint64_t>(kWrites));
  // Writes the sender had already put on the wire before the change went
  // where the old pool placed them, as any write done before the change;
  // every write still queued was placed again, and is where the new pool
  // looks for it. None is lost: each is under one placement or the other.
  MemcachedOptions fresh;
  fresh.servers = {b_.address(), c_.address()};
  auto new_pool = *MemcachedClient::Create(fresh);
  fresh.servers = {a_.address(), b_.address()};
  auto old_pool = *MemcachedClient::Create(fresh);
  int in_new = 0, in_either = 0;
  for (int i = 0; i < kWrites; ++i) {
    const std::string key = absl::StrCat("q:", i), value = absl::StrCat("v", i);
    absl::StatusOr<std::optional<Item>> item = new_pool->Get(key);
    ASSERT_TRUE(item.ok()) << item.status();
    const bool there = item->has_value() && (*item)->value == value;
    in_new += there;
    if (!there) {
      item = old_pool->Get(key);
      ASSERT_TRUE(item.ok()) << item.status();
    }
    in_either += there || (item->has_value() && (*item)->value == value);
  }
  EXPECT_EQ(in_either, kWrites);
  // All but the batches on the wire at the change (at most 4 of 16).
  EXPECT_GE(stats.rerouted, static_cast<uint64_t>(kWrites - 4 * 16));
  // Placed again means found under the new placement.
  EXPECT_GE(in_new, static_cast<int>(stats.rerouted));
  std::printf("queued at the change and placed again: %llu of %d; under the new placement: %d\n",
              static_cast<unsigned long long>(stats.rerouted), kWrites, in_new);
}

// Writers keep submitting while the pool changes back and forth: every
// write is accounted for (none failed, none left unfinished), and each key's
// last value is under the final placement or was sent before a change.
TEST_F(PoolChangeTest, ReplicationKeepsGoingWhileThePoolChanges) {
  ASSERT_TRUE(c_.running());
  MirrorOptions options;
  options.max_batch = 8;
  auto mirror = *Mirror::Create(pool_.get(), options);
  std::atomic<bool> stop{false};
  std::atomic<int> accepted{0};
  std::vector<std::thread> writers;
  for (int t = 0; t < 4; ++t) {
    writers.emplace_back([&, t] {
      for (int n = 0; !stop.load(); ++n) {
        if (mirror->ReplicateValue(absl::StrCat("w:", t, ":", n % 200), "v").ok()) ++accepted;
      }
    });
  }
  const std::vector<std::vector<std::string>> lists = {{a_.address(), b_.address(), c_.address()},
                                                       {b_.address(), c_.address()},
                                                       {a_.address(), c_.address()},
                                                       {a_.address(), b_.address(), c_.address()}};
  for (const std::vector<std::string>& list : lists) {
    absl::SleepFor(absl::Milliseconds(50));
    ASSERT_TRUE(pool_->SetServers(list).ok());
  }
  absl::SleepFor(absl::Milliseconds(50));
  stop = true;
  for (std::thread& writer : writers) writer.join();
  ASSERT_TRUE(mirror->Flush(absl::Seconds(30)).ok());
  const MirrorStats stats = mirror->Stats();
  EXPECT_EQ(stats.queued, static_cast<uint64_t>(accepted.load()));
  EXPECT_EQ(stats.replicated + stats.failed, stats.queued);
  // Servers stay up: nothing may fail but a write caught on a connection a
  // change retired (sent to its old home just before the change).
  EXPECT_LE(stats.failed, stats.queued / 100);
}

TEST_F(PoolChangeTest, TieredCacheFollowsTheNewPool) {
  ASSERT_TRUE(c_.running());
  TieredOptions options;
  options.l2.servers = {a_.address()};
  options.mirror.mode = MirrorMode::kSync;
  auto cache = *TieredCache::Create(options);
  ASSERT_TRUE(cache->Set("moved", "v1").ok());
  EXPECT_EQ((*only_a_->Get("moved"))->value, "v1");
  ASSERT_TRUE(cache->SetServers({c_.address()}).ok());
  ASSERT_TRUE(cache->Set("moved", "v2").ok());
  EXPECT_EQ((*Single(c_)->Get("moved"))->value, "v2");
  const TieredStats stats = cache->Stats();
  ASSERT_EQ(stats.l2_servers.size(), 1u);
  EXPECT_EQ(stats.l2_servers[0].server, c_.address());
  EXPECT_EQ(cache->SetServers({}).code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace tiercache
