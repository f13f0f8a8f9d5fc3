// TLS to a real memcached (memcached -Z) with certificates made at test time
// (tls_certificates.h): every operation, the Mirror's batches and
// TieredCache over TLS; an unknown CA, a wrong name, a plaintext server, a
// plaintext client, a missing client certificate under mutual TLS each fail
// in time with a message naming the cause (never a miss, never plaintext);
// authentication over TLS; a TLS server restarted mid-run.

#include <atomic>
#include <fstream>
#include <memory>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "memcached_server.h"
#include "tiercache/memcached.h"
#include "tiercache/mirror.h"
#include "tiercache/tiered_cache.h"
#include "tls_certificates.h"

namespace tiercache {
namespace {

using ::testing::AnyOf;
using ::testing::HasSubstr;
using testing::MemcachedServer;
using testing::TlsCertificates;

constexpr absl::Duration kConnectTimeout = absl::Milliseconds(500);
constexpr absl::Duration kOpTimeout = absl::Milliseconds(500);
// What a failing call may take at most: connect_timeout + op_timeout, and
// scheduling slack on a busy machine.
const absl::Duration kFailWithin = absl::Milliseconds(1500);  // connect + op timeouts + slack

class TlsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(certificates_.ok()) << "openssl could not make the test certificates";
    ASSERT_TRUE(server_->running());
  }
  MemcachedOptions Options(const std::string& address) {
    MemcachedOptions options;
    options.servers = {address};
    options.connect_timeout = kConnectTimeout;
    options.op_timeout = kOpTimeout;
    options.reconnect_backoff = absl::Milliseconds(5);
    options.max_reconnect_backoff = absl::Milliseconds(50);
    options.tls.enable = true;
    options.tls.ca_file = certificates_.ca();
    return options;
  }
  std::unique_ptr<MemcachedClient> Client(MemcachedOptions options) {
    auto client = MemcachedClient::Create(std::move(options));
    EXPECT_TRUE(client.ok()) << client.status();
    return client.ok() ? *std::move(client) : nullptr;
  }
  // The first call's error, and how long it took.
  absl::Status FirstCallFails(MemcachedClient& client, absl::Duration* took) {
    const absl::Time start = absl::Now();
    absl::StatusOr<std::optional<Item>> item = client.Get("k");
    *took = absl::Now() - start;
    EXPECT_FALSE(item.ok()) << "a call that should fail returned "
                            << (item.ok() && item->has_value() ? "a value" : "a miss");
    return item.status();
  }

  TlsCertificates certificates_;
  std::unique_ptr<MemcachedServer> server_ = std::make_unique<MemcachedServer>(
      MemcachedServer::Options{false, certificates_.ServerArgs()});
};

TEST_F(TlsTest, EveryOperationRoundTripsOverTls) {
  auto client = Client(Options(server_->address()));
  ASSERT_NE(client, nullptr);
  ASSERT_TRUE(client->Set("k", "v", {absl::Hours(1), 5}).ok());
  absl::StatusOr<std::optional<Item>> item = client->Get("k");
  ASSERT_TRUE(item.ok() && item->has_value()) << item.status();
  EXPECT_EQ((*item)->value, "v");
  EXPECT_EQ((*item)->flags, 5u);
  EXPECT_EQ(*client->Add("k", "x"), StoreResult::kNotStored);
  EXPECT_EQ(*client->Append("k", "+"), StoreResult::kStored);
  EXPECT_EQ(*client->CompareAndSwap("k", "c", (*client->Get("k"))->cas), StoreResult::kStored);
  EXPECT_TRUE(*client->Touch("k", absl::Hours(2)));
  ASSERT_TRUE(client->Set("n", "1").ok());
  EXPECT_EQ(*client->Increment("n", 41), 42u);
  // A value larger than a TLS record (16 KiB) comes back whole.
  const std::string big(300 << 10, 'b');
  ASSERT_TRUE(client->Set("big", big).ok());
  EXPECT_EQ((*client->Get("big"))->value, big);
  std::vector<std::string> keys;
  for (int i = 0; i < 300; ++i) {
    keys.push_back(absl::StrCat("many:", i));
    ASSERT_TRUE(client->Set(keys.back(), absl::StrCat("v", i)).ok());
  }
  std::vector<std::string_view> views(keys.begin(), keys.end());
  absl::StatusOr<absl::flat_hash_map<std::string, Item>> found = client->GetMany(views);
  ASSERT_TRUE(found.ok()) << found.status();
  ASSERT_EQ(found->size(), 300u);
  EXPECT_EQ(found->at("many:299").value, "v299");
  EXPECT_TRUE(*client->Delete("k"));
  // The Mirror's pipelined batches.
  auto mirror = Mirror::Create(client.get());
  ASSERT_TRUE(mirror.ok());
  for (int i = 0; i < 5000; ++i) {
    ASSERT_TRUE((*mirror)->ReplicateValue(absl::StrCat("m", i), std::string(100, 'm')).ok());
  }
  ASSERT_TRUE((*mirror)->Flush(absl::Seconds(10)).ok());
  EXPECT_EQ((*mirror)->Stats().replicated, 5000u);
  EXPECT_EQ((*client->Get("m4999"))->value, std::string(100, 'm'));
}

// 8 threads on 2 connections: requests pipelined on one TLS session while a
// reader reads it (the session's mutex, and the kick that gets memcached to
// read records that arrived together).
TEST_F(TlsTest, EightThreadsShareTwoTlsConnections) {
  MemcachedOptions options = Options(server_->address());
  options.connections_per_server = 2;
  auto client = Client(options);
  for (int i = 0; i < 64; ++i) ASSERT_TRUE(client->Set(absl::StrCat("t", i), absl::StrCat(i)).ok());
  std::atomic<int> wrong{0};
  std::atomic<int> failed{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&, t] {
      for (int n = 0; n < 300; ++n) {
        const int i = (t * 13 + n) % 64;
        if (n % 5 == 0) {
          if (!client->Set(absl::StrCat("t", i), absl::StrCat(i)).ok()) ++failed;
          continue;
        }
        absl::StatusOr<std::optional<Item>> item = client->Get(absl::StrCat("t", i));
        if (!item.ok()) {
          ++failed;
        } else if (!item->has_value() || (*item)->value != absl::StrCat(i)) {
          ++wrong;
        }
      }
    });
  }
  for (std::thread& thread : threads) thread.join();
  EXPECT_EQ(wrong.load(), 0);
  EXPECT_EQ(failed.load(), 0);
}

// The server dies while the Mirror streams batches into the session: every
// write is accounted for, replicated or failed. (The session writes with
// MSG_NOSIGNAL, so a write after a reset cannot raise SIGPIPE; this run does
// not reliably produce such a write: the reader usually sees the close
// first.)
TEST_F(TlsTest, AServerKilledMidWriteFailsTheWritesNotTheProcess) {
  auto client = Client(Options(server_->address()));
  ASSERT_TRUE(client->Set("warm", "up").ok());
  auto mirror = Mirror::Create(client.get());
  ASSERT_TRUE(mirror.ok());
  const std::string value(4000, 'w');
  for (int i = 0; i < 20000; ++i) {
    if (i == 5000) server_->Stop();
    (void)(*mirror)->ReplicateValue(absl::StrCat("w", i), value);
  }
  (void)(*mirror)->Flush(absl::Seconds(10));
  const MirrorStats stats = (*mirror)->Stats();
  EXPECT_GT(stats.failed + stats.dropped, 0u);
  EXPECT_EQ(stats.replicated + stats.failed, stats.queued);
}

TEST_F(TlsTest, TieredCacheAndItsLeasesWorkOverTlsWithAuthentication) {
  // A second server with TLS and -Y: authentication goes inside the session.
  std::ofstream(certificates_.Path("authfile")) << "alice:pw\n";
  std::vector<std::string> args = certificates_.ServerArgs();
  args.insert(args.end(), {"-Y", certificates_.Path("authfile")});
  MemcachedServer secured(MemcachedServer::Options{false, args});
  ASSERT_TRUE(secured.running());
  TieredOptions options;
  options.l1.max_bytes = 1 << 20;
  options.l2 = Options(secured.address());
  options.l2.username = "alice";
  options.l2.password = "pw";
  auto cache = TieredCache::Create(options);
  ASSERT_TRUE(cache.ok()) << cache.status();
  auto loader = [](std::string_view key) -> absl::StatusOr<std::string> {
    return "row " + std::string(key);
  };
  EXPECT_EQ(*(*cache)->GetOrLoad("t", loader), "row t");
  EXPECT_EQ((*cache)->Stats().lease_wins, 1u);
  ASSERT_TRUE((*cache)->Set("s", "v").ok());
  ASSERT_TRUE((*cache)->Flush(absl::Seconds(5)).ok());
  EXPECT_EQ((*cache)->Stats().l2_errors, 0u);
  MemcachedOptions wrong = Options(secured.address());
  wrong.username = "alice";
  wrong.password = "nope";
  auto refused = Client(wrong);
  ASSERT_NE(refused, nullptr);
  absl::Duration took;
  absl::Status status = FirstCallFails(*refused, &took);
  EXPECT_TRUE(absl::IsPermissionDenied(status)) << status;
  EXPECT_THAT(std::string(status.message()), ::testing::Not(HasSubstr("nope")));
}

TEST_F(TlsTest, AnUnknownCaFailsNamingTheCertificate) {
  MemcachedOptions options = Options(server_->address());
  options.tls.ca_file = certificates_.other_ca();
  auto client = Client(options);
  absl::Duration took;
  const absl::Status status = FirstCallFails(*client, &took);
  EXPECT_TRUE(absl::IsUnavailable(status)) << status;
  EXPECT_THAT(std::string(status.message()), HasSubstr("TLS handshake failed"));
  EXPECT_THAT(std::string(status.message()), HasSubstr("certificate verify failed"));
  EXPECT_LT(took, kFailWithin);
}

TEST_F(TlsTest, AWrongNameFailsNamingTheMismatch) {
  MemcachedOptions options = Options(server_->address());
  options.tls.server_name = "memcached.example.org";
  auto client = Client(options);
  absl::Duration took;
  const absl::Status status = FirstCallFails(*client, &took);
  EXPECT_TRUE(absl::IsUnavailable(status)) << status;
  EXPECT_THAT(std::string(status.message()), HasSubstr("hostname mismatch"));
  // The certificate's own name works.
  options.tls.server_name = "localhost";
  auto named = Client(options);
  EXPECT_TRUE(named->Set("k", "v").ok());
}

TEST_F(TlsTest, ATlsClientAgainstAPlaintextServerFailsInTime) {
  MemcachedServer plain;
  ASSERT_TRUE(plain.running());
  auto client = Client(Options(plain.address()));
  absl::Duration took;
  const absl::Status status = FirstCallFails(*client, &took);
  EXPECT_THAT(status.code(),
              AnyOf(absl::StatusCode::kUnavailable, absl::StatusCode::kDeadlineExceeded))
      << status;
  EXPECT_THAT(std::string(status.message()), HasSubstr("TLS"));
  EXPECT_LT(took, kFailWithin);
}

TEST_F(TlsTest, APlaintextClientAgainstATlsServerFailsInTime) {
  MemcachedOptions options = Options(server_->address());
  options.tls.enable = false;
  auto client = Client(options);
  absl::Duration took;
  const absl::Status status = FirstCallFails(*client, &took);
  EXPECT_LT(took, kFailWithin);
  EXPECT_THAT(std::string(status.message()), HasSubstr("memcached " + server_->address()));
  // And a write is not reported as done.
  EXPECT_FALSE(client->Set("k", "v").ok());
}

TEST_F(TlsTest, MutualTlsRequiresTheClientCertificate) {
  MemcachedServer mutual(MemcachedServer::Options{false, certificates_.ServerArgs(true)});
  ASSERT_TRUE(mutual.running());
  MemcachedOptions options = Options(mutual.address());
  auto anonymous = Client(options);
  absl::Duration took;
  const absl::Status status = FirstCallFails(*anonymous, &took);
  EXPECT_LT(took, kFailWithin);
  EXPECT_THAT(std::string(status.message()), HasSubstr("memcached " + mutual.address()));
  options.tls.cert_file = certificates_.client_cert();
  options.tls.key_file = certificates_.client_key();
  auto identified = Client(options);
  EXPECT_TRUE(identified->Set("k", "v").ok());
  EXPECT_EQ((*identified->Get("k"))->value, "v");
}

TEST_F(TlsTest, BadTlsOptionsAreRefusedAtCreate) {
  MemcachedOptions options = Options(server_->address());
  options.tls.ca_file = certificates_.Path("no-such-file.pem");
  absl::StatusOr<std::unique_ptr<MemcachedClient>> missing = MemcachedClient::Create(options);
  EXPECT_TRUE(absl::IsInvalidArgument(missing.status()));
  EXPECT_THAT(std::string(missing.status().message()), HasSubstr("no-such-file.pem"));
  options = Options(server_->address());
  options.tls.cert_file = certificates_.client_cert();
  EXPECT_TRUE(absl::IsInvalidArgument(MemcachedClient::Create(options).status()));
  options.tls.key_file = certificates_.Path("server.key");  // not the certificate's key
  absl::StatusOr<std::unique_ptr<MemcachedClient>> mismatch = MemcachedClient::Create(options);
  EXPECT_TRUE(absl::IsInvalidArgument(mismatch.status()));
  EXPECT_THAT(std::string(mismatch.status().message()),
              HasSubstr("is it the key of " + certificates_.client_cert()));
}

TEST_F(TlsTest, ARestartedTlsServerWorksOnTheFirstCall) {
  auto client = Client(Options(server_->address()));
  ASSERT_TRUE(client->Set("k", "v").ok());
  // Idle, with the session tickets a TLS 1.3 server sends after the
  // handshake waiting on it: the next call works.
  EXPECT_EQ((*client->Get("k"))->value, "v");
  server_->Stop();
  server_->Start();
  ASSERT_TRUE(server_->running());
  EXPECT_TRUE(client->Set("k", "after").ok());
  EXPECT_EQ((*client->Get("k"))->value, "after");
}

}  // namespace
}  // namespace tiercache
