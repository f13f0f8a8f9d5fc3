// Replication of L1 writes to a real memcached, and reads through both tiers.

#include "tiercache/mirror.h"

#include <mutex>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "memcached_server.h"
#include "test_transport.h"

namespace tiercache {
namespace {

using ::testing::HasSubstr;

class MirrorTest : public ::testing::Test {
 protected:
  std::unique_ptr<MemcachedClient> Client(absl::Duration op_timeout = absl::Milliseconds(500)) {
    MemcachedOptions options;
    options.servers = {server_.address()};
    options.op_timeout = op_timeout;
    options.reconnect_backoff = absl::Milliseconds(10);
    options.max_reconnect_backoff = absl::Milliseconds(50);
    auto client = MemcachedClient::Create(testing::WithTransport(options));
    EXPECT_TRUE(client.ok()) << client.status();
    return *std::move(client);
  }
  std::unique_ptr<Mirror> Make(MemcachedClient* l2, MirrorOptions options = {}) {
    options.on_error = [this](std::string_view key, const absl::Status& why) {
      std::lock_guard<std::mutex> hold(mu_);
      errors_.push_back(absl::StrCat(std::string(key), ": ", std::string(why.message())));
    };
    auto mirror = Mirror::Create(l2, std::move(options));
    EXPECT_TRUE(mirror.ok()) << mirror.status();
    return *std::move(mirror);
  }
  std::vector<std::string> Errors() {
    std::lock_guard<std::mutex> hold(mu_);
    return errors_;
  }

  testing::MemcachedServer server_{testing::ServerOptions()};
  std::mutex mu_;
  std::vector<std::string> errors_;
};

TEST_F(MirrorTest, AsyncWritesArriveInOrderAfterFlush) {
  auto l2 = Client();
  auto mirror = Make(l2.get());
  for (int i = 0; i < 2000; ++i) {
    const std::string key = absl::StrCat("k", i % 100);  // 20 writes per key
    ASSERT_TRUE(mirror->ReplicateValue(key, absl::StrCat("v", i), {std::nullopt, 7}).ok());
  }
  ASSERT_TRUE(mirror->ReplicateDelete("k0").ok());
  ASSERT_TRUE(mirror->ReplicateTouch("k1", absl::Seconds(100)).ok());
  ASSERT_TRUE(mirror->Flush(absl::Seconds(10)).ok());

  EXPECT_FALSE((*l2->Get("k0")).has_value());  // the delete came after its sets
  for (int k = 2; k < 100; ++k) {
    absl::StatusOr<std::optional<Item>> item = l2->Get(absl::StrCat("k", k));
    ASSERT_TRUE(item.ok() && item->has_value()) << k;
    EXPECT_EQ((*item)->value, absl::StrCat("v", 1900 + k));  // the last write wins
    EXPECT_EQ((*item)->flags, 7u);
  }
  EXPECT_LT((*l2->Get("k1"))->expiry, absl::Now() + absl::Seconds(101));
  MirrorStats stats = mirror->Stats();
  EXPECT_EQ(stats.queued, 2002u);
  EXPECT_EQ(stats.replicated, 2002u);
  EXPECT_EQ(stats.failed, 0u);
  EXPECT_EQ(stats.dropped, 0u);
  EXPECT_TRUE(Errors().empty());
}

TEST_F(MirrorTest, SyncModeReturnsTheServersAnswer) {
  auto l2 = Client(absl::Milliseconds(200));
  MirrorOptions options;
  options.mode = MirrorMode::kSync;
  auto mirror = Make(l2.get(), options);
  ASSERT_TRUE(mirror->ReplicateValue("k", "v").ok());
  EXPECT_EQ((*l2->Get("k"))->value, "v");  // visible as soon as the call returns
  server_.Stop();
  absl::Status status = mirror->ReplicateValue("k", "w");
  EXPECT_TRUE(absl::IsUnavailable(status)) << status;
  EXPECT_EQ(mirror->Stats().failed, 1u);
  EXPECT_EQ(Errors().size(), 1u);
}

TEST_F(MirrorTest, FailedWritesAreCountedAndReported) {
  auto l2 = Client(absl::Milliseconds(200));
  auto mirror = Make(l2.get());
  server_.Stop();
  for (int i = 0; i < 10; ++i) ASSERT_TRUE(mirror->ReplicateValue(absl::StrCat("k", i), "v").ok());
  ASSERT_TRUE(mirror->Flush(absl::Seconds(5)).ok());  // done: failed, but accounted for
  MirrorStats stats = mirror->Stats();
  EXPECT_EQ(stats.failed, 10u);
  EXPECT_EQ(stats.replicated, 0u);
  ASSERT_EQ(Errors().size(), 10u);
  EXPECT_THAT(Errors()[0], HasSubstr("k0: "));

  // Replication resumes when memcached is back.
  server_.Start();
  ASSERT_TRUE(server_.running());
  bool replicated = false;
  for (int attempt = 0; attempt < 100 && !replicated; ++attempt) {
    ASSERT_TRUE(mirror->ReplicateValue("back", "yes").ok());
    ASSERT_TRUE(mirror->Flush(absl::Seconds(5)).ok());
    absl::StatusOr<std::optional<Item>> item = l2->Get("back");
    replicated = item.ok() && item->has_value();
    if (!replicated) std::this_thread::sleep_for(std::chrono::milliseconds(10));  // backoff
  }
  EXPECT_TRUE(replicated);
}

TEST_F(MirrorTest, AFullQueueDropsValuesButNotDeletesSilently) {
  auto l2 = Client(absl::Milliseconds(200));
  MirrorOptions options;
  options.max_queued_writes = 4;
  options.max_batch = 1;
  auto mirror = Make(l2.get(), options);
  server_.Pause();  // accepts bytes, answers nothing: the queue backs up
  int dropped = 0;
  for (int i = 0; i < 20; ++i) {
    absl::Status s = mirror->ReplicateValue(absl::StrCat("k", i), "v");
    if (absl::IsResourceExhausted(s)) ++dropped;
  }
  EXPECT_GT(dropped, 0);
  // A delete waits for room (up to op_timeout), then says it was not queued.
  const absl::Time start = absl::Now();
  absl::Status deleted = mirror->ReplicateDelete("k0");
  if (!deleted.ok()) {
    EXPECT_TRUE(absl::IsResourceExhausted(deleted)) << deleted;
    EXPECT_GE(absl::Now() - start, absl::Milliseconds(150));
    EXPECT_THAT(deleted.message(), HasSubstr("delete not replicated"));
  }
  server_.Resume();
  ASSERT_TRUE(mirror->Flush(absl::Seconds(10)).ok());
  MirrorStats stats = mirror->Stats();
  EXPECT_EQ(stats.dropped, static_cast<uint64_t>(dropped) + (deleted.ok() ? 0 : 1));
  EXPECT_EQ(stats.queued + stats.dropped, 21u);
  EXPECT_EQ(Errors().size() >= stats.dropped, true);
}

}  // namespace
}  // namespace tiercache
