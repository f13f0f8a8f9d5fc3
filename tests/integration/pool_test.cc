// A pool of two real memcached servers: keys are placed as libmemcached's
// ketama places them (a libmemcached client reads what we wrote), GetMany and
// the Mirror span the pool, and one server down leaves the other's keys served.

#include <libmemcached/memcached.h>

#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "memcached_server.h"
#include "tiercache/memcached.h"
#include "tiercache/mirror.h"

namespace tiercache {
namespace {

class PoolTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(a_.running() && b_.running());
    MemcachedOptions options;
    options.servers = {a_.address(), b_.address()};
    options.op_timeout = absl::Milliseconds(300);
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

}  // namespace
}  // namespace tiercache
