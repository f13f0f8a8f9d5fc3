// Tutorial step 12: memcached behind TLS and a password. The program makes a
// certificate authority and a server certificate on the spot (the tests'
// helper; in production they come from your PKI), starts a private memcached
// with TLS (-Z) and authentication (-Y), and talks to it with both.
// See docs/tutorial.md.

#include <fstream>
#include <iostream>
#include <string>

#include "absl/strings/str_cat.h"
#include "check.h"
#include "memcached_server.h"
#include "tiercache/tiered_cache.h"
#include "tls_certificates.h"

int main() {
  tiercache::testing::TlsCertificates certificates;
  TUTORIAL_CHECK(certificates.ok());
  std::ofstream(certificates.Path("authfile")) << "shop:correct-horse\n";
  std::vector<std::string> args = certificates.ServerArgs();  // -Z and its certificate
  args.insert(args.end(), {"-Y", certificates.Path("authfile")});
  tiercache::testing::MemcachedServer memcached({false, args});
  TUTORIAL_CHECK(memcached.running());

  tiercache::TieredOptions options;
  options.l1.max_bytes = 64 << 20;
  options.l2.servers = {memcached.address()};
  options.l2.tls.enable = true;
  options.l2.tls.ca_file = certificates.ca();  // the CA that signed the server
  options.l2.username = "shop";
  options.l2.password = "correct-horse";
  auto cache = tiercache::TieredCache::Create(options);
  TUTORIAL_CHECK(cache.ok());
  auto loaded = (*cache)->GetOrLoad("cart:7", [](std::string_view key) {
    return absl::StatusOr<std::string>(absl::StrCat("contents of ", std::string(key)));
  });
  TUTORIAL_CHECK(loaded.ok() && *loaded == "contents of cart:7");
  TUTORIAL_CHECK((*cache)->Stats().l2_errors == 0);

  // A server that is not who it claims to be is refused, with the reason.
  tiercache::MemcachedOptions impostor = options.l2;
  impostor.tls.ca_file = certificates.other_ca();
  auto client = *tiercache::MemcachedClient::Create(impostor);
  absl::StatusOr<std::optional<tiercache::Item>> item = client->Get("cart:7");
  TUTORIAL_CHECK(absl::IsUnavailable(item.status()));
  std::cout << item.status().message() << "\n";

  // So is a wrong password, and it is never printed.
  tiercache::MemcachedOptions wrong = options.l2;
  wrong.password = "battery-staple";
  client = *tiercache::MemcachedClient::Create(wrong);
  item = client->Get("cart:7");
  TUTORIAL_CHECK(absl::IsPermissionDenied(item.status()));
  std::cout << item.status().message() << "\n";
  return 0;
}
