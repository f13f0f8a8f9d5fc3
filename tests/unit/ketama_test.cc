// Our ketama placement must agree with libmemcached's KETAMA_WEIGHTED on every
// key, so that tiercache and libmemcached clients of one pool find each
// other's items. libmemcached's memcached_server_by_key() is the oracle (it
// places keys without connecting).

#include "client/ketama.h"

#include <libmemcached/memcached.h>

#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"

namespace tiercache::mirror_internal {
namespace {

struct Server {
  std::string host;
  uint16_t port;
};

void ExpectSamePlacement(const std::vector<Server>& servers) {
  memcached_st* memc = memcached_create(nullptr);
  ASSERT_NE(memc, nullptr);
  ASSERT_EQ(memcached_behavior_set(memc, MEMCACHED_BEHAVIOR_KETAMA_WEIGHTED, 1), MEMCACHED_SUCCESS);
  std::vector<std::string> names;
  for (const Server& server : servers) {
    ASSERT_EQ(memcached_server_add(memc, server.host.c_str(), server.port), MEMCACHED_SUCCESS);
    names.push_back(Ketama::NameFor(server.host, server.port));
  }
  const Ketama ketama(names);
  std::vector<int> per_server(servers.size(), 0);
  for (int i = 0; i < 20000; ++i) {
    const std::string key = i % 2 == 0 ? absl::StrCat("key:", i) : absl::StrCat("user/", i * 7919);
    memcached_return_t rc = MEMCACHED_SUCCESS;
    const memcached_instance_st* oracle =
        memcached_server_by_key(memc, key.data(), key.size(), &rc);
    ASSERT_NE(oracle, nullptr) << memcached_strerror(memc, rc);
    const size_t ours = ketama.ServerFor(key);
    ASSERT_LT(ours, servers.size());
    EXPECT_EQ(servers[ours].host, memcached_server_name(oracle)) << key;
    EXPECT_EQ(servers[ours].port, memcached_server_port(oracle)) << key;
    ++per_server[ours];
  }
  // Equal weights: every server gets a fair share.
  for (size_t s = 0; s < servers.size(); ++s) {
    EXPECT_GT(per_server[s], 20000 / static_cast<int>(servers.size()) / 3) << "server " << s;
  }
  memcached_free(memc);
}

TEST(KetamaTest, AgreesWithLibmemcachedOnTwoServers) {
  ExpectSamePlacement({{"10.0.0.1", 11211}, {"10.0.0.2", 11211}});
}

TEST(KetamaTest, AgreesWithLibmemcachedWithPortsInTheName) {
  ExpectSamePlacement({{"10.0.0.1", 11211}, {"10.0.0.2", 11212}, {"10.0.0.3", 22122}});
}

TEST(KetamaTest, AgreesWithLibmemcachedOnFiveServers) {
  ExpectSamePlacement({{"127.0.0.1", 40001},
                       {"127.0.0.1", 40002},
                       {"127.0.0.1", 40003},
                       {"127.0.0.1", 40004},
                       {"127.0.0.1", 40005}});
}

TEST(KetamaTest, RemovingAServerMovesOnlyItsKeys) {
  const Ketama three({"a:1", "b:2", "c:3"});
  const Ketama two({"a:1", "b:2"});
  int moved = 0;
  for (int i = 0; i < 10000; ++i) {
    const std::string key = absl::StrCat("k", i);
    const size_t before = three.ServerFor(key);
    if (before != 2) moved += two.ServerFor(key) != before;
  }
  EXPECT_EQ(moved, 0);  // keys of the surviving servers stay where they were
}

}  // namespace
}  // namespace tiercache::mirror_internal
