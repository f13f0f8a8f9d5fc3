// MemcachedClient against a real memcached (Debian's), started per test on a
// free loopback port or a unix socket.

#include <atomic>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "memcached_server.h"
#include "status_matchers.h"
#include "test_transport.h"
#include "tiercache/memcached.h"

namespace tiercache {
namespace {

using ::testing::HasSubstr;
using testing::MemcachedServer;

using ::tiercache::testing::IsOkAndHolds;

std::unique_ptr<MemcachedClient> Connect(const std::string& address,
                                         MemcachedOptions options = {}) {
  options.servers = {address};
  auto client = MemcachedClient::Create(testing::WithTransport(options));
  EXPECT_TRUE(client.ok()) << client.status();
  return *std::move(client);
}

class MemcachedClientTest : public ::testing::Test {
 protected:
  MemcachedServer server_{testing::ServerOptions()};
  std::unique_ptr<MemcachedClient> client_ = Connect(server_.address());
};

TEST_F(MemcachedClientTest, ErrorMissAndHitAreDifferent) {
  ASSERT_TRUE(server_.running());
  absl::StatusOr<std::optional<Item>> miss = client_->Get("absent");
  ASSERT_TRUE(miss.ok()) << miss.status();
  EXPECT_FALSE(miss->has_value());

  EXPECT_THAT(client_->Set("k", "v", {absl::InfiniteDuration(), 42}),
              IsOkAndHolds(StoreResult::kStored));
  absl::StatusOr<std::optional<Item>> hit = client_->Get("k");
  ASSERT_TRUE(hit.ok() && hit->has_value());
  EXPECT_EQ((*hit)->value, "v");
  EXPECT_EQ((*hit)->flags, 42u);
  EXPECT_NE((*hit)->cas, 0u);
  EXPECT_EQ((*hit)->expiry, absl::InfiniteFuture());

  server_.Stop();
  absl::StatusOr<std::optional<Item>> error = client_->Get("k");
  EXPECT_TRUE(absl::IsUnavailable(error.status())) << error.status();
}

TEST_F(MemcachedClientTest, BinaryValuesRoundTrip) {
  const std::string value("a\r\nEN\r\n\0\xff", 9);
  ASSERT_TRUE(client_->Set("bin", value).ok());
  EXPECT_EQ((*client_->Get("bin"))->value, value);
  ASSERT_TRUE(client_->Set("empty", "").ok());
  EXPECT_EQ((*client_->Get("empty"))->value, "");
}

TEST_F(MemcachedClientTest, KeysCannotInjectCommands) {
  ASSERT_TRUE(client_->Set("keep1", "1").ok());
  ASSERT_TRUE(client_->Set("keep2", "2").ok());
  for (const std::string& key :
       {std::string("a\r\nflush_all"), std::string("a b"), std::string("a\r\nflush_all\r\n"),
        std::string("x\0y", 3), std::string("caf\xc3\xa9")}) {
    EXPECT_THAT(client_->Set(key, "injected?"), IsOkAndHolds(StoreResult::kStored));
    EXPECT_EQ((*client_->Get(key))->value, "injected?");
  }
  // Every other item is still there: nothing was flushed or overwritten.
  EXPECT_EQ((*client_->Get("keep1"))->value, "1");
  EXPECT_EQ((*client_->Get("keep2"))->value, "2");
  EXPECT_FALSE(client_->Get("a")->has_value());
}

TEST_F(MemcachedClientTest, KeysThatCannotFitAreRefusedBeforeSending) {
  absl::StatusOr<StoreResult> r = client_->Set(std::string(251, 'k'), "v");
  EXPECT_TRUE(absl::IsInvalidArgument(r.status()));
  EXPECT_THAT(r.status().message(), HasSubstr("250"));
  EXPECT_TRUE(absl::IsInvalidArgument(client_->Get("").status()));
  // 187 bytes with a space need 252 bytes of base64.
  EXPECT_TRUE(absl::IsInvalidArgument(client_->Get(std::string(186, 'k') + " ").status()));
  EXPECT_TRUE(client_->Get(std::string(250, 'k')).ok());
}

TEST_F(MemcachedClientTest, PrefixNamespacesKeysAndCountsInTheLimit) {
  MemcachedOptions options;
  options.key_prefix = "app1:";
  auto app1 = Connect(server_.address(), options);
  ASSERT_TRUE(app1->Set("k", "one").ok());
  EXPECT_EQ((*client_->Get("app1:k"))->value, "one");  // the same item, unprefixed
  EXPECT_FALSE(client_->Get("k")->has_value());
  EXPECT_TRUE(absl::IsInvalidArgument(app1->Get(std::string(246, 'k')).status()));
  EXPECT_TRUE(app1->Get(std::string(245, 'k')).ok());
}

TEST_F(MemcachedClientTest, TtlsOnTheWire) {
  // Over 30 days goes as an absolute time; memcached would treat 40 days of
  // relative seconds as a time in 1970 and drop the item at once.
  ASSERT_TRUE(client_->Set("40d", "v", {absl::Hours(24 * 40), 0}).ok());
  absl::StatusOr<std::optional<Item>> item = client_->Get("40d");
  ASSERT_TRUE(item.ok() && item->has_value());
  EXPECT_GT((*item)->expiry, absl::Now() + absl::Hours(24 * 39));
  EXPECT_LT((*item)->expiry, absl::Now() + absl::Hours(24 * 41));
  // Sub-second rounds up to a second: stored, not already expired.
  ASSERT_TRUE(client_->Set("short", "v", {absl::Milliseconds(300), 0}).ok());
  EXPECT_TRUE(client_->Get("short")->has_value());
  // Negative and zero TTLs are refused.
  EXPECT_TRUE(absl::IsInvalidArgument(client_->Set("neg", "v", {absl::Seconds(-1), 0}).status()));
  EXPECT_TRUE(absl::IsInvalidArgument(client_->Touch("40d", absl::ZeroDuration()).status()));
}

TEST_F(MemcachedClientTest, ConditionalWrites) {
  EXPECT_THAT(client_->Replace("k", "v"), IsOkAndHolds(StoreResult::kNotStored));
  EXPECT_THAT(client_->Add("k", "1"), IsOkAndHolds(StoreResult::kStored));
  EXPECT_THAT(client_->Add("k", "2"), IsOkAndHolds(StoreResult::kNotStored));
  EXPECT_THAT(client_->Replace("k", "3"), IsOkAndHolds(StoreResult::kStored));
  EXPECT_THAT(client_->Append("k", ">"), IsOkAndHolds(StoreResult::kStored));
  EXPECT_THAT(client_->Prepend("k", "<"), IsOkAndHolds(StoreResult::kStored));
  EXPECT_EQ((*client_->Get("k"))->value, "<3>");
  EXPECT_THAT(client_->Append("missing", "x"), IsOkAndHolds(StoreResult::kNotStored));

  const uint64_t cas = (*client_->Get("k"))->cas;
  ASSERT_TRUE(client_->Set("k", "other writer").ok());
  EXPECT_THAT(client_->CompareAndSwap("k", "stale", cas), IsOkAndHolds(StoreResult::kExists));
  const uint64_t fresh = (*client_->Get("k"))->cas;
  EXPECT_THAT(client_->CompareAndSwap("k", "mine", fresh), IsOkAndHolds(StoreResult::kStored));
  EXPECT_EQ((*client_->Get("k"))->value, "mine");
  EXPECT_THAT(client_->CompareAndSwap("gone", "x", fresh), IsOkAndHolds(StoreResult::kNotFound));
}

TEST_F(MemcachedClientTest, AppendKeepsFlagsAndTtl) {
  ASSERT_TRUE(client_->Set("k", "a", {absl::Seconds(100), 16}).ok());
  ASSERT_TRUE(client_->Append("k", "b").ok());
  absl::StatusOr<std::optional<Item>> item = client_->Get("k");
  ASSERT_TRUE(item.ok() && item->has_value());
  EXPECT_EQ((*item)->value, "ab");
  EXPECT_EQ((*item)->flags, 16u);
  EXPECT_LT((*item)->expiry, absl::Now() + absl::Seconds(101));
}

TEST_F(MemcachedClientTest, DeleteAndTouch) {
  EXPECT_THAT(client_->Delete("k"), IsOkAndHolds(false));
  ASSERT_TRUE(client_->Set("k", "v").ok());
  EXPECT_THAT(client_->Touch("k", absl::Seconds(100)), IsOkAndHolds(true));
  EXPECT_LT((*client_->Get("k"))->expiry, absl::Now() + absl::Seconds(101));
  EXPECT_THAT(client_->Touch("missing", absl::Seconds(100)), IsOkAndHolds(false));
  EXPECT_THAT(client_->Delete("k"), IsOkAndHolds(true));
  EXPECT_FALSE(client_->Get("k")->has_value());
}

TEST_F(MemcachedClientTest, Counters) {
  EXPECT_TRUE(absl::IsNotFound(client_->Increment("n", 1).status()));
  ASSERT_TRUE(client_->Set("n", "10").ok());
  EXPECT_THAT(client_->Increment("n", 5), IsOkAndHolds(15u));
  EXPECT_THAT(client_->Decrement("n", 100), IsOkAndHolds(0u));
  ASSERT_TRUE(client_->Set("max", "18446744073709551615").ok());
  EXPECT_THAT(client_->Increment("max", 2), IsOkAndHolds(1u));
  ASSERT_TRUE(client_->Set("text", "abc").ok());
  absl::StatusOr<uint64_t> r = client_->Increment("text", 1);
  EXPECT_TRUE(absl::IsFailedPrecondition(r.status())) << r.status();
  // The connection is still in step after an error line.
  EXPECT_EQ((*client_->Get("text"))->value, "abc");
}

TEST_F(MemcachedClientTest, GetManyInOneRoundTrip) {
  std::vector<std::string> keys;
  for (int i = 0; i < 100; ++i) {
    keys.push_back(absl::StrCat("key", i));
    if (i % 3 == 0) {
      ASSERT_TRUE(client_->Set(keys.back(), absl::StrCat("value", i)).ok());
    }
  }
  keys.push_back("with space");
  ASSERT_TRUE(client_->Set("with space", "spaced").ok());
  std::vector<std::string_view> views(keys.begin(), keys.end());
  auto found = client_->GetMany(views);
  ASSERT_TRUE(found.ok()) << found.status();
  EXPECT_EQ(found->size(), 35u);
  EXPECT_EQ((*found)["key99"].value, "value99");
  EXPECT_EQ((*found)["with space"].value, "spaced");
  EXPECT_FALSE(found->contains("key1"));
  // Still in step afterwards.
  EXPECT_EQ((*client_->Get("key0"))->value, "value0");
}

// 1200 keys on one server: 4 parts of 300 keys, each sent as 3 classic
// gets of up to 100 keys: every hit must land on its own key, whichever gets
// and place in it answered it (and misses stay misses), and keys asked twice
// are answered once each time.
TEST_F(MemcachedClientTest, GetManyMapsEveryAnswerOfEveryGetsToItsKey) {
  std::vector<std::string> keys;
  for (int i = 0; i < 1200; ++i) {
    keys.push_back(absl::StrCat("many:", i));
    if (i % 7 != 3) {
      ASSERT_TRUE(client_->Set(keys.back(), absl::StrCat("v", i, "-", i * 31)).ok());
    }
  }
  keys.push_back("many:5");  // asked twice
  std::vector<std::string_view> views(keys.begin(), keys.end());
  absl::StatusOr<absl::flat_hash_map<std::string, Item>> found = client_->GetMany(views);
  ASSERT_TRUE(found.ok()) << found.status();
  size_t expected = 0;
  for (int i = 0; i < 1200; ++i) {
    const std::string key = absl::StrCat("many:", i);
    if (i % 7 == 3) {
      EXPECT_FALSE(found->contains(key)) << key;
      continue;
    }
    ++expected;
    ASSERT_TRUE(found->contains(key)) << key;
    EXPECT_EQ(found->at(key).value, absl::StrCat("v", i, "-", i * 31)) << key;
    EXPECT_NE(found->at(key).cas, 0u) << key;
  }
  EXPECT_EQ(found->size(), expected);
  EXPECT_EQ((*client_->Get("many:0"))->value, "v0-0");  // still in step
}

TEST_F(MemcachedClientTest, ValuesOverTheItemLimitAreRefused) {
  absl::StatusOr<StoreResult> r = client_->Set("big", std::string(2 << 20, 'x'));
  EXPECT_TRUE(absl::IsInvalidArgument(r.status()));
  EXPECT_THAT(r.status().message(), HasSubstr("item size limit"));
  // A client told the limit is larger than the server's: the server's refusal
  // is reported, never silently lost, and the connection stays usable.
  MemcachedOptions options;
  options.max_item_size = 4 << 20;
  auto optimistic = Connect(server_.address(), options);
  r = optimistic->Set("big", std::string(2 << 20, 'x'));
  EXPECT_FALSE(r.ok());
  EXPECT_THAT(r.status().message(), HasSubstr("too large"));
  EXPECT_TRUE(optimistic->Set("small", "ok").ok());
}

TEST_F(MemcachedClientTest, ServerDownFailsFastAndRecovers) {
  MemcachedOptions options;
  options.op_timeout = absl::Milliseconds(200);
  options.reconnect_backoff = absl::Milliseconds(10);
  options.max_reconnect_backoff = absl::Milliseconds(50);
  auto client = Connect(server_.address(), options);
  ASSERT_TRUE(client->Set("k", "v").ok());

  server_.Stop();
  for (int i = 0; i < 20; ++i) {
    const absl::Time start = absl::Now();
    absl::StatusOr<std::optional<Item>> r = client->Get("k");
    EXPECT_FALSE(r.ok());
    EXPECT_TRUE(absl::IsUnavailable(r.status()) || absl::IsDeadlineExceeded(r.status()))
        << r.status();
    EXPECT_LE(absl::Now() - start, options.op_timeout + absl::Milliseconds(400));
  }

  server_.Start();  // same port, empty
  ASSERT_TRUE(server_.running());
  // Recovers by itself once the backoff allows a reconnect (bounded wait).
  absl::StatusOr<StoreResult> stored;
  for (int i = 0; i < 200; ++i) {
    stored = client->Set("k", "again");
    if (stored.ok()) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  ASSERT_TRUE(stored.ok()) << stored.status();
  EXPECT_EQ((*client->Get("k"))->value, "again");
}

TEST_F(MemcachedClientTest, FirstCallAfterARestartSucceeds) {
  ASSERT_TRUE(client_->Set("k", "v").ok());
  server_.Stop();
  server_.Start();
  ASSERT_TRUE(server_.running());
  // The idle connection was closed by the old server; it is replaced before
  // the request goes out, so the very first call works.
  absl::StatusOr<std::optional<Item>> r = client_->Get("k");
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_FALSE(r->has_value());
}

TEST_F(MemcachedClientTest, HungServerHitsTheDeadline) {
  MemcachedOptions options;
  options.op_timeout = absl::Milliseconds(200);
  auto client = Connect(server_.address(), options);
  ASSERT_TRUE(client->Set("k", "v").ok());
  server_.Pause();
  const absl::Time start = absl::Now();
  absl::StatusOr<std::optional<Item>> r = client->Get("k");
  const absl::Duration took = absl::Now() - start;
  server_.Resume();
  EXPECT_FALSE(r.ok());
  // No caller waits past its deadline. The slack absorbs scheduling on a
  // loaded machine (sanitizers, parallel tests), not a second timeout.
  EXPECT_LE(took, options.op_timeout + absl::Milliseconds(400));
  EXPECT_GE(took, options.op_timeout - absl::Milliseconds(5));
}

TEST(MemcachedClientUnixTest, UnixSocket) {
  MemcachedServer::Options options;
  options.unix_socket = true;
  MemcachedServer server(testing::ServerOptions(options));
  ASSERT_TRUE(server.running());
  auto client = Connect(server.address());
  absl::StatusOr<StoreResult> stored = client->Set("k", "over a unix socket");
  ASSERT_TRUE(stored.ok()) << stored.status();
  EXPECT_EQ((*client->Get("k"))->value, "over a unix socket");
}

TEST_F(MemcachedClientTest, ManyThreadsShareOneClient) {
  constexpr int kThreads = 8, kOps = 500;
  std::atomic<int> wrong{0}, failed{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kOps; ++i) {
        const std::string key = absl::StrCat("t", t, ":", i % 50);
        const std::string value = absl::StrCat("v", t, ":", i);
        if (!client_->Set(key, value).ok()) ++failed;
        absl::StatusOr<std::optional<Item>> got = client_->Get(key);
        if (!got.ok()) {
          ++failed;
        } else if (!got->has_value() || (*got)->value != value) {
          ++wrong;  // each thread owns its keys: it must read its own write
        }
      }
    });
  }
  for (auto& thread : threads) thread.join();
  EXPECT_EQ(failed.load(), 0);
  EXPECT_EQ(wrong.load(), 0);
}

TEST(MemcachedClientOptionsTest, BadOptionsAreRejected) {
  EXPECT_TRUE(absl::IsInvalidArgument(MemcachedClient::Create({}).status()));
  MemcachedOptions options;
  options.servers = {"localhost"};
  EXPECT_THAT(MemcachedClient::Create(options).status().message(), HasSubstr("host:port"));
  options.servers = {"127.0.0.1:99999"};
  EXPECT_THAT(MemcachedClient::Create(options).status().message(), HasSubstr("1..65535"));
  options.servers = {"127.0.0.1:11311"};
  options.op_timeout = absl::ZeroDuration();
  EXPECT_TRUE(absl::IsInvalidArgument(MemcachedClient::Create(options).status()));
}

}  // namespace
}  // namespace tiercache
