// Values written by tiercache are read by pymemcache (the classic tutorial's
// Python client, Debian's python3-pymemcache) and back, through one real
// memcached: bytes (flags 0), text (flags 16) and integers (flags 2).

#include <cstdlib>
#include <string>

#include "gtest/gtest.h"
#include "memcached_server.h"
#include "tiercache/memcached.h"
#include "tls_certificates.h"

namespace tiercache {
namespace {

constexpr uint32_t kBytes = 0, kInt = 2, kText = 16;  // pymemcache's serde flags

// Writes tc_* with tiercache, has pymemcache check them and write py_*, and
// checks those. `ca`: both sides over TLS, pymemcache verifying with it.
void ValuesCrossBothWays(const testing::MemcachedServer& server, MemcachedOptions options,
                         const std::string& ca) {
  // Debian installs pymemcache for the system interpreter only.
  if (std::system("/usr/bin/python3 -c 'import pymemcache' 2>/dev/null") != 0) {
    GTEST_FAIL() << "python3-pymemcache is not installed for /usr/bin/python3";
  }
  ASSERT_TRUE(server.running());
  options.servers = {server.address()};
  auto client = MemcachedClient::Create(options);
  ASSERT_TRUE(client.ok()) << client.status();

  ASSERT_TRUE(
      (*client)
          ->Set("tc_bytes", std::string("\x00\x01raw bytes\r\n", 13), {std::nullopt, kBytes})
          .ok());
  ASSERT_TRUE((*client)->Set("tc_text", "h\xc3\xa9llo, w\xc3\xb6rld", {std::nullopt, kText}).ok());
  ASSERT_TRUE((*client)->Set("tc_int", "42", {std::nullopt, kInt}).ok());

  const std::string command = std::string("/usr/bin/python3 ") + TIERCACHE_PYMEMCACHE_PEER +
                              " 127.0.0.1 " + std::to_string(server.port()) +
                              (ca.empty() ? "" : " " + ca);
  ASSERT_EQ(std::system(command.c_str()), 0) << "pymemcache disagreed: see its output above";

  absl::StatusOr<std::optional<Item>> bytes = (*client)->Get("py_bytes");
  ASSERT_TRUE(bytes.ok() && bytes->has_value());
  EXPECT_EQ((*bytes)->value, std::string("\x00py raw", 7));
  EXPECT_EQ((*bytes)->flags, kBytes);
  absl::StatusOr<std::optional<Item>> text = (*client)->Get("py_text");
  ASSERT_TRUE(text.ok() && text->has_value());
  EXPECT_EQ((*text)->value, "t\xc3\xabxt from python");
  EXPECT_EQ((*text)->flags, kText);
  absl::StatusOr<std::optional<Item>> number = (*client)->Get("py_int");
  ASSERT_TRUE(number.ok() && number->has_value());
  EXPECT_EQ((*number)->value, "7");
  EXPECT_EQ((*number)->flags, kInt);
}

TEST(PymemcacheInteropTest, ValuesCrossBothWays) {
  testing::MemcachedServer server;
  ValuesCrossBothWays(server, MemcachedOptions{}, "");
}

TEST(PymemcacheInteropTest, ValuesCrossBothWaysOverTls) {
  testing::TlsCertificates certificates;
  ASSERT_TRUE(certificates.ok());
  testing::MemcachedServer server({false, certificates.ServerArgs()});
  MemcachedOptions options;
  options.tls.enable = true;
  options.tls.ca_file = certificates.ca();
  ValuesCrossBothWays(server, options, certificates.ca());
}

}  // namespace
}  // namespace tiercache
