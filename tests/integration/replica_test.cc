// TieredCache across real processes: each replica is a separate process with
// its own L1 (tests/integration/replica_main.cc), all on one real memcached.

#include <signal.h>

#include <chrono>
#include <cstdio>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "memcached_server.h"
#include "replica_process.h"
#include "tiercache/memcached.h"

namespace tiercache {
namespace {

using ::testing::HasSubstr;
using testing::MemcachedServer;
using testing::ReplicaProcess;
using ::testing::StartsWith;

class ReplicaTest : public ::testing::Test {
 protected:
  std::unique_ptr<ReplicaProcess> Start(std::vector<std::string> extra = {}) {
    std::vector<std::string> args = {"--server=" + server_.address()};
    args.insert(args.end(), extra.begin(), extra.end());
    auto replica = std::make_unique<ReplicaProcess>(args);
    EXPECT_TRUE(replica->running());
    return replica;
  }
  std::unique_ptr<MemcachedClient> Direct() {
    MemcachedOptions options;
    options.servers = {server_.address()};
    return *MemcachedClient::Create(options);
  }

  MemcachedServer server_;
};

// Replicas on fake clocks: "advance" moves one replica's time past
// max_staleness without sleeping, so what each read returns is exact.
TEST_F(ReplicaTest, WritesAndDeletesReachOtherReplicasWithinMaxStaleness) {
  auto writer = Start({"--mode=sync", "--fake_clock", "--max_staleness_ms=1000"});
  auto reader = Start({"--mode=sync", "--fake_clock", "--max_staleness_ms=1000"});
  ASSERT_EQ(writer->Call("set k v1"), "ok");
  EXPECT_EQ(reader->Call("get k"), "hit v1");  // from L2, now in the reader's L1

  ASSERT_EQ(writer->Call("set k v2"), "ok");
  EXPECT_EQ(reader->Call("get k"), "hit v1");  // its L1 copy is younger than max_staleness
  EXPECT_EQ(reader->Call("advance 999"), "ok");
  EXPECT_EQ(reader->Call("get k"), "hit v1");
  EXPECT_EQ(reader->Call("advance 1"), "ok");
  EXPECT_EQ(reader->Call("get k"), "hit v2");  // revalidated: L2 changed

  ASSERT_EQ(writer->Call("delete k"), "ok");
  EXPECT_EQ(writer->Call("get k"), "miss");  // the writer's own L1 and L2
  EXPECT_EQ(reader->Call("get k"), "hit v2");
  EXPECT_EQ(reader->Call("advance 1000"), "ok");
  EXPECT_EQ(reader->Call("get k"), "miss");  // revalidated: gone from L2
  EXPECT_EQ(reader->Stats()["revalidations"], 2u);
}

TEST_F(ReplicaTest, AsyncWritesAreSeenAfterFlushPlusMaxStaleness) {
  auto writer = Start({"--fake_clock"});
  auto reader = Start({"--fake_clock"});
  ASSERT_EQ(writer->Call("set k v1"), "ok");
  ASSERT_EQ(writer->Call("flush"), "ok");
  EXPECT_EQ(reader->Call("get k"), "hit v1");
  ASSERT_EQ(writer->Call("set k v2"), "ok");
  ASSERT_EQ(writer->Call("flush"), "ok");
  EXPECT_EQ(reader->Call("advance 1000"), "ok");
  EXPECT_EQ(reader->Call("get k"), "hit v2");
  // The writer's own copy, revalidated by value (an async write returns no
  // CAS), stays its value.
  EXPECT_EQ(writer->Call("advance 1000"), "ok");
  EXPECT_EQ(writer->Call("get k"), "hit v2");
}

TEST_F(ReplicaTest, OneLoadForAKeyRequestedByFourProcessesOfFourThreads) {
  std::vector<std::unique_ptr<ReplicaProcess>> replicas;
  for (int i = 0; i < 4; ++i) replicas.push_back(Start());
  // All at once; the loader takes 300 ms, long enough that every replica
  // asks while the first load runs.
  for (auto& replica : replicas) replica->Send("load hot 4 300");
  uint64_t calls = 0;
  std::string value;
  for (auto& replica : replicas) {
    const std::string answer = replica->ReadLine();
    ASSERT_THAT(answer, StartsWith("loaded calls=")) << answer;
    calls += answer[13] - '0';
    const std::string this_value = answer.substr(answer.find("value=") + 6);
    if (value.empty()) value = this_value;
    EXPECT_EQ(this_value, value);  // every thread of every replica got the one load
  }
  EXPECT_EQ(calls, 1u);
  uint64_t wins = 0;
  for (auto& replica : replicas) wins += replica->Stats()["lease_wins"];
  EXPECT_EQ(wins, 1u);
  EXPECT_EQ((*Direct()->Get("hot"))->value, value);
}

TEST_F(ReplicaTest, ARestartedReplicaStartsWarmFromL2) {
  auto first = Start();
  for (int i = 0; i < 100; ++i) ASSERT_EQ(first->Call(absl::StrCat("set k", i, " v", i)), "ok");
  first->Quit();  // flushes its queue on the way out

  auto restarted = Start();
  for (int i = 0; i < 100; ++i) {
    ASSERT_EQ(restarted->Call(absl::StrCat("get k", i)), absl::StrCat("hit v", i));
  }
  ASSERT_THAT(restarted->Call("load k7 1 0"), StartsWith("loaded calls=0 value=v7"));
  std::map<std::string, uint64_t> stats = restarted->Stats();
  EXPECT_EQ(stats["l2_hits"], 100u);
  EXPECT_EQ(stats["l1_hits"], 1u);
  EXPECT_EQ(stats["loads"], 0u);
}

TEST_F(ReplicaTest, FourProcessesOfCasIncrementsAddUpExactly) {
  ASSERT_EQ(Direct()->Set("counter", "0").status(), absl::OkStatus());
  std::vector<std::unique_ptr<ReplicaProcess>> replicas;
  for (int i = 0; i < 4; ++i) replicas.push_back(Start());
  for (auto& replica : replicas) replica->Send("cas-incr counter 500");
  for (auto& replica : replicas) EXPECT_THAT(replica->ReadLine(), StartsWith("ok retries="));
  EXPECT_EQ((*Direct()->Get("counter"))->value, "2000");
}

TEST_F(ReplicaTest, AWinnerThatDiesMidLoadHoldsTheKeyOnlyUntilItsLeaseExpires) {
  // Started first: memcached's clock ticks in seconds, so a 2 s stub may be
  // gone 1 s after it was made, and a process started after it (slow under a
  // sanitizer) might find no stub to wait on.
  auto survivor = Start({"--lease_ttl_s=2"});
  auto doomed = Start({"--lease_ttl_s=2"});
  doomed->Send("hang k");
  ASSERT_EQ(doomed->ReadLine(), "loading");  // it holds the lease
  doomed->Kill();

  // Waits are bounded by lease_wait (20 s here), but the stub expires after
  // 2 s: this replica waits on it, then wins the next lease and loads once.
  EXPECT_THAT(survivor->Call("load k 2 10"), StartsWith("loaded calls=1"));
  std::map<std::string, uint64_t> stats = survivor->Stats();
  EXPECT_EQ(stats["lease_wins"], 1u);
  EXPECT_EQ(stats["lease_waits"], 1u);
  EXPECT_EQ(stats["lease_timeouts"], 0u);
}

TEST_F(ReplicaTest, AWaiterLoadsItselfAfterLeaseWait) {
  auto holder = Start();
  holder->Send("hang k");
  ASSERT_EQ(holder->ReadLine(), "loading");
  auto waiter = Start({"--lease_wait_ms=300"});
  const auto start = std::chrono::steady_clock::now();
  EXPECT_THAT(waiter->Call("load k 1 10"), StartsWith("loaded calls=1"));
  const auto waited = std::chrono::steady_clock::now() - start;
  EXPECT_GE(waited, std::chrono::milliseconds(300));
  std::map<std::string, uint64_t> stats = waiter->Stats();
  EXPECT_EQ(stats["lease_timeouts"], 1u);
  EXPECT_EQ(stats["lease_wins"], 0u);
}

TEST_F(ReplicaTest, AnL2OutageIsSurvivedAndReplicationResumes) {
  auto replica = Start({"--op_timeout_ms=200", "--lease_wait_ms=1000"});
  ASSERT_EQ(replica->Call("set cached v"), "ok");
  ASSERT_EQ(replica->Call("flush"), "ok");

  server_.Stop();
  EXPECT_EQ(replica->Call("get cached"), "hit v");  // L1 keeps serving
  // A missing key: the L2 call fails within op_timeout, the loader answers.
  EXPECT_THAT(replica->Call("load fresh 2 10"), StartsWith("loaded calls=1"));
  EXPECT_THAT(replica->Call("get fresh"), StartsWith("hit v-"));  // and L1 keeps it
  ASSERT_EQ(replica->Call("set lost v"), "ok");                   // queued; cannot be replicated
  EXPECT_THAT(replica->Call("flush"), StartsWith("ok"));          // finished: failed, and counted
  std::map<std::string, uint64_t> stats = replica->Stats();
  EXPECT_GE(stats["failed"], 1u);  // what L2 lost
  EXPECT_GE(stats["l2_errors"], 1u);

  server_.Start();  // same port, empty
  // Until the client's next reconnect attempt (backoff: 10..100 ms here) the
  // server still counts as down and writes fail fast; then they land again.
  bool resumed = false;
  for (int i = 0; i < 200 && !resumed; ++i) {
    ASSERT_EQ(replica->Call(absl::StrCat("set after", i, " v2")), "ok");
    ASSERT_EQ(replica->Call("flush"), "ok");
    absl::StatusOr<std::optional<Item>> item = Direct()->Get(absl::StrCat("after", i));
    ASSERT_TRUE(item.ok()) << item.status();
    resumed = item->has_value() && (*item)->value == "v2";
    if (!resumed) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  EXPECT_TRUE(resumed);
  EXPECT_FALSE(Direct()->Get("lost")->has_value());
}

// Issue 14's scenario: two primaries, one of them dead or hung, four replica
// processes of four threads asking for 200 keys nobody has loaded. Without a
// gutter the dead server's keys fail fast, no lease can be taken, and every
// replica loads them itself (measured before the gutter: 464 loads for 200
// keys); with one, the leases and values of those keys live in the gutter and
// each key is loaded about once.
class GutterReplicaTest : public ::testing::TestWithParam<int> {
 protected:
  std::unique_ptr<ReplicaProcess> Start() {
    auto replica = std::make_unique<ReplicaProcess>(std::vector<std::string>{
        "--server=" + a_.address() + "," + b_.address(), "--gutter=" + gutter_.address(),
        "--gutter_ttl_ms=10000", "--op_timeout_ms=200", "--lease_wait_ms=5000"});
    EXPECT_TRUE(replica->running());
    return replica;
  }
  static bool AllUp(ReplicaProcess& replica) {
    const absl::Time until = absl::Now() + absl::Seconds(10);
    while (absl::Now() < until) {
      if (replica.Call("servers") == "servers 1 1 1") return true;
      absl::SleepFor(absl::Milliseconds(20));
    }
    return false;
  }

  MemcachedServer a_, b_, gutter_;
};

TEST_P(GutterReplicaTest, OneLoadPerKeyAcrossReplicasWhileAPrimaryIsOut) {
  const int signal = GetParam();
  std::vector<std::unique_ptr<ReplicaProcess>> replicas;
  for (int i = 0; i < 4; ++i) replicas.push_back(Start());
  if (signal == SIGKILL) {
    a_.Stop();
  } else {
    a_.Pause();
  }
  for (auto& replica : replicas) replica->Send("loadmany fresh: 200 4 5");
  uint64_t calls = 0;
  for (auto& replica : replicas) {
    const std::string answer = replica->ReadLine();
    ASSERT_THAT(answer, StartsWith("loaded calls=")) << answer;
    std::map<std::string, uint64_t> fields;
    for (const std::string& field :
         std::vector<std::string>(absl::StrSplit(answer.substr(7), ' '))) {
      std::pair<std::string, std::string> kv = absl::StrSplit(field, '=');
      uint64_t n = 0;
      ASSERT_TRUE(absl::SimpleAtoi(kv.second, &n)) << answer;
      fields[kv.first] = n;
    }
    calls += fields["calls"];
    EXPECT_EQ(fields["errors"], 0u) << answer;
  }
  // At most 1.1 loads per key. (A hung server costs a few more: a replica's
  // first timeouts_before_down requests to it time out before it knows.)
  EXPECT_LE(calls, 220u);
  std::printf("loader calls for 200 keys, 4 replicas x 4 threads, one primary %s: %llu\n",
              signal == SIGKILL ? "killed" : "hung", static_cast<unsigned long long>(calls));

  if (signal == SIGKILL) {
    a_.Start();
  } else {
    a_.Resume();
  }
  for (auto& replica : replicas) EXPECT_TRUE(AllUp(*replica));
}

// After a hung primary returns, no replica reads a value that was rewritten
// or deleted during the outage for longer than max_staleness: replicas on
// fake clocks, so "after max_staleness" is exact.
TEST_F(GutterReplicaTest, NothingRewrittenOrDeletedInTheOutageIsReadAfterMaxStaleness) {
  const auto start = [&] {
    return std::make_unique<ReplicaProcess>(std::vector<std::string>{
        "--server=" + a_.address() + "," + b_.address(), "--gutter=" + gutter_.address(),
        "--op_timeout_ms=200", "--mode=sync", "--fake_clock", "--max_staleness_ms=1000"});
  };
  auto writer = start();
  auto reader = start();
  // Two keys on the primary that will hang (found by where they land).
  MemcachedOptions direct;
  direct.servers = {a_.address()};
  auto on_a = *MemcachedClient::Create(direct);
  std::vector<std::string> keys;
  for (int n = 0; keys.size() < 2; ++n) {
    const std::string key = absl::StrCat("k", n);
    ASSERT_EQ(writer->Call("set " + key + " old"), "ok");
    if ((*on_a->Get(key)).has_value()) keys.push_back(key);
  }
  const std::string rewritten = keys[0], deleted = keys[1];
  EXPECT_EQ(reader->Call("get " + rewritten), "hit old");  // both now in the reader's L1
  EXPECT_EQ(reader->Call("get " + deleted), "hit old");

  a_.Pause();
  // The writer's first calls time out until it marks the primary down; then
  // they go to the gutter.
  std::string set, del;
  for (int i = 0; i < 10 && set != "ok"; ++i) set = writer->Call("set " + rewritten + " new");
  for (int i = 0; i < 10 && del != "ok"; ++i) del = writer->Call("delete " + deleted);
  ASSERT_EQ(set, "ok");
  ASSERT_EQ(del, "ok");
  a_.Resume();
  ASSERT_TRUE(AllUp(*writer));
  ASSERT_TRUE(AllUp(*reader));
  // The reader's copies are younger than max_staleness: still served (the
  // documented bound) ...
  EXPECT_EQ(reader->Call("get " + rewritten), "hit old");
  // ... and once max_staleness has passed, revalidated against the primary,
  // which the writer flushed when it came back: never "old" again.
  ASSERT_EQ(reader->Call("advance 1000"), "ok");
  EXPECT_NE(reader->Call("get " + rewritten), "hit old");
  EXPECT_NE(reader->Call("get " + deleted), "hit old");
  EXPECT_FALSE((*on_a->Get(rewritten)).has_value());  // flushed
}

INSTANTIATE_TEST_SUITE_P(Outage, GutterReplicaTest, ::testing::Values(SIGKILL, SIGSTOP),
                         [](const ::testing::TestParamInfo<int>& outage) {
                           return std::string(outage.param == SIGKILL ? "Killed" : "Hung");
                         });

}  // namespace
}  // namespace tiercache
