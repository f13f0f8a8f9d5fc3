// memcached's ASCII authentication (memcached -Y <authfile>), against a real
// memcached started with an authfile written at test time: every operation
// and the Mirror's batches with the right credentials; wrong, missing and
// half-given credentials refused clearly, and the password in no message; a
// restarted server authenticated again on the first call.

#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "memcached_server.h"
#include "tiercache/memcached.h"
#include "tiercache/mirror.h"
#include "tiercache/tiered_cache.h"

namespace tiercache {
namespace {

using ::testing::HasSubstr;
using testing::MemcachedServer;
using ::testing::Not;

constexpr std::string_view kUser = "alice";
constexpr std::string_view kPassword = "s3cret-Pa55";

// An authfile ("user:password" per line) in a temporary folder.
class AuthFile {
 public:
  AuthFile() {
    char dir[] = "/tmp/tiercache-auth-XXXXXX";
    if (::mkdtemp(dir) == nullptr) std::abort();
    dir_ = dir;
    path_ = dir_ + "/authfile";
    std::ofstream(path_) << kUser << ":" << kPassword << "\n";
  }
  ~AuthFile() {
    std::remove(path_.c_str());
    ::rmdir(dir_.c_str());
  }
  const std::string& path() const { return path_; }

 private:
  std::string dir_;
  std::string path_;
};

class AuthTest : public ::testing::Test {
 protected:
  MemcachedOptions Options(std::string_view user, std::string_view password) {
    MemcachedOptions options;
    options.servers = {server_.address()};
    options.username = std::string(user);
    options.password = std::string(password);
    options.op_timeout = absl::Milliseconds(500);
    options.reconnect_backoff = absl::Milliseconds(5);
    options.max_reconnect_backoff = absl::Milliseconds(200);
    return options;
  }
  std::unique_ptr<MemcachedClient> Client(std::string_view user, std::string_view password,
                                          absl::Duration max_backoff = absl::Milliseconds(200)) {
    MemcachedOptions options = Options(user, password);
    options.max_reconnect_backoff = max_backoff;
    auto client = MemcachedClient::Create(options);
    if (!client.ok()) {
      ADD_FAILURE() << client.status();
      return nullptr;
    }
    return *std::move(client);
  }

  AuthFile authfile_;
  MemcachedServer server_{MemcachedServer::Options{false, {"-Y", authfile_.path()}}};
};

TEST_F(AuthTest, EveryOperationWorksWithTheRightCredentials) {
  ASSERT_TRUE(server_.running());
  auto client = Client(kUser, kPassword);
  ASSERT_TRUE(client->Set("k", "v", {absl::Hours(1), 3}).ok());
  absl::StatusOr<std::optional<Item>> item = client->Get("k");
  ASSERT_TRUE(item.ok() && item->has_value()) << item.status();
  EXPECT_EQ((*item)->value, "v");
  EXPECT_EQ(*client->Add("k", "x"), StoreResult::kNotStored);
  EXPECT_EQ(*client->Replace("k", "w"), StoreResult::kStored);
  EXPECT_EQ(*client->Append("k", "+"), StoreResult::kStored);
  EXPECT_EQ(*client->Prepend("k", "-"), StoreResult::kStored);
  EXPECT_EQ((*client->Get("k"))->value, "-w+");
  EXPECT_EQ(*client->CompareAndSwap("k", "c", (*client->Get("k"))->cas), StoreResult::kStored);
  EXPECT_TRUE(*client->Touch("k", absl::Hours(2)));
  ASSERT_TRUE(client->Set("n", "41").ok());
  EXPECT_EQ(*client->Increment("n", 1), 42u);
  EXPECT_EQ(*client->Decrement("n", 2), 40u);
  std::vector<std::string_view> keys = {"k", "n", "absent", "with space"};
  absl::StatusOr<absl::flat_hash_map<std::string, Item>> found = client->GetMany(keys);
  ASSERT_TRUE(found.ok()) << found.status();
  EXPECT_EQ(found->size(), 2u);
  EXPECT_TRUE(*client->Delete("k"));
  // The Mirror's pipelined quiet batches, on authenticated connections.
  auto mirror = Mirror::Create(client.get());
  ASSERT_TRUE(mirror.ok());
  for (int i = 0; i < 500; ++i) {
    ASSERT_TRUE((*mirror)->ReplicateValue(absl::StrCat("m", i), "v").ok());
  }
  ASSERT_TRUE((*mirror)->Flush(absl::Seconds(5)).ok());
  EXPECT_EQ((*mirror)->Stats().replicated, 500u);
  EXPECT_EQ((*client->Get("m499"))->value, "v");
}

TEST_F(AuthTest, AWrongPasswordIsPermissionDeniedAndNotRetriedAtOnce) {
  // A long backoff, so that "at once" below has room on a loaded machine.
  auto client = Client(kUser, "wrong-password", absl::Seconds(5));
  ASSERT_NE(client, nullptr);
  absl::StatusOr<std::optional<Item>> item = client->Get("k");
  EXPECT_TRUE(absl::IsPermissionDenied(item.status())) << item.status();
  const std::string message(item.status().message());
  EXPECT_THAT(message,
              HasSubstr("authentication failed for user alice on memcached " + server_.address()));
  EXPECT_THAT(message, Not(HasSubstr("wrong-password")));
  // Within max_reconnect_backoff the next call fails at once, still naming
  // the cause, without trying the server again.
  const absl::Time start = absl::Now();
  absl::StatusOr<std::optional<Item>> again = client->Get("k");
  EXPECT_LT(absl::Now() - start, absl::Seconds(1));
  EXPECT_TRUE(absl::IsPermissionDenied(again.status())) << again.status();
  EXPECT_THAT(std::string(again.status().message()), HasSubstr("authentication failed"));
  EXPECT_THAT(std::string(again.status().message()), Not(HasSubstr("wrong-password")));
}

TEST_F(AuthTest, NoCredentialsAgainstAnAuthServerSaySo) {
  MemcachedOptions options;
  options.servers = {server_.address()};
  auto client = *MemcachedClient::Create(options);
  absl::StatusOr<std::optional<Item>> item = client->Get("k");
  EXPECT_TRUE(absl::IsPermissionDenied(item.status())) << item.status();
  EXPECT_THAT(std::string(item.status().message()), HasSubstr("requires authentication"));
  std::vector<std::string_view> keys = {"a", "b"};
  absl::Status many = client->GetMany(keys).status();
  EXPECT_TRUE(absl::IsPermissionDenied(many)) << many;
  // The Mirror's writes fail and are counted, each reported with the cause.
  int permission_denied = 0;
  MirrorOptions mirror_options;
  mirror_options.on_error = [&](std::string_view, const absl::Status& why) {
    permission_denied += absl::IsPermissionDenied(why);
  };
  auto mirror = Mirror::Create(client.get(), mirror_options);
  ASSERT_TRUE(mirror.ok());
  ASSERT_TRUE((*mirror)->ReplicateValue("a", "v").ok());
  ASSERT_TRUE((*mirror)->Flush(absl::Seconds(5)).ok());
  EXPECT_EQ((*mirror)->Stats().failed, 1u) << (*mirror)->Stats().replicated;
  EXPECT_EQ(permission_denied, 1);
}

// A server started without -Y (a misconfiguration) answers the
// authentication STORED: the client works, and the credentials are stored
// already expired, so no client can read them back.
TEST(AuthWithoutYTest, APlainServerDoesNotKeepTheCredentials) {
  MemcachedServer plain;
  MemcachedOptions options;
  options.servers = {plain.address()};
  options.username = std::string(kUser);
  options.password = std::string(kPassword);
  auto client = *MemcachedClient::Create(options);
  ASSERT_TRUE(client->Set("k", "v").ok());
  MemcachedOptions anonymous;
  anonymous.servers = {plain.address()};
  auto other = *MemcachedClient::Create(anonymous);
  absl::StatusOr<std::optional<Item>> stored = other->Get("tiercache:auth");
  ASSERT_TRUE(stored.ok()) << stored.status();
  EXPECT_FALSE(stored->has_value());
}

TEST_F(AuthTest, BadOrHalfGivenCredentialsAreRefusedAtCreate) {
  absl::StatusOr<std::unique_ptr<MemcachedClient>> half =
      MemcachedClient::Create(Options(kUser, ""));
  EXPECT_TRUE(absl::IsInvalidArgument(half.status()));
  EXPECT_THAT(std::string(half.status().message()), HasSubstr("give both or neither"));
  absl::StatusOr<std::unique_ptr<MemcachedClient>> spaced =
      MemcachedClient::Create(Options(kUser, "two words"));
  EXPECT_TRUE(absl::IsInvalidArgument(spaced.status()));
  EXPECT_THAT(std::string(spaced.status().message()), Not(HasSubstr("two words")));
  EXPECT_TRUE(absl::IsInvalidArgument(MemcachedClient::Create(Options("a b", "x")).status()));
}

TEST_F(AuthTest, ARestartedServerIsAuthenticatedAgainOnTheFirstCall) {
  auto client = Client(kUser, kPassword);
  ASSERT_TRUE(client->Set("k", "v").ok());
  server_.Stop();
  server_.Start();
  ASSERT_TRUE(server_.running());
  // The idle connection the old server closed is replaced, and the new one
  // authenticates before the request is sent.
  EXPECT_TRUE(client->Set("k", "after").ok());
  EXPECT_EQ((*client->Get("k"))->value, "after");
}

TEST_F(AuthTest, TieredCacheAuthenticatesItsPool) {
  TieredOptions options;
  options.l1.max_bytes = 1 << 20;
  options.l2 = Options(kUser, kPassword);
  auto cache = TieredCache::Create(options);
  ASSERT_TRUE(cache.ok()) << cache.status();
  int loads = 0;
  auto loader = [&](std::string_view) -> absl::StatusOr<std::string> {
    ++loads;
    return "loaded";
  };
  EXPECT_EQ(*(*cache)->GetOrLoad("t", loader), "loaded");
  EXPECT_EQ((*cache)->Stats().lease_wins, 1u);  // the lease went through memcached
  EXPECT_EQ((*cache)->Stats().l2_errors, 0u);
  auto direct = Client(kUser, kPassword);
  EXPECT_EQ((*direct->Get("t"))->value, "loaded");
}

}  // namespace
}  // namespace tiercache
