// The transport an integration suite runs over: plaintext, or, in a binary
// built with TIERCACHE_TEST_OVER_TLS, TLS to memcached -Z with certificates
// made once per binary (tls_certificates.h). tests/CMakeLists.txt builds the
// client, Mirror and TieredCache suites both ways, so every one of their
// tests also runs over TLS — in the sanitizer builds too.

#ifndef TIERCACHE_TESTS_INTEGRATION_TEST_TRANSPORT_H_
#define TIERCACHE_TESTS_INTEGRATION_TEST_TRANSPORT_H_

#include <string>
#include <utility>

#include "memcached_server.h"
#include "tiercache/memcached.h"
#include "tls_certificates.h"

namespace tiercache::testing {

#ifdef TIERCACHE_TEST_OVER_TLS
inline constexpr bool kOverTls = true;
#else
inline constexpr bool kOverTls = false;
#endif

inline const TlsCertificates& TransportCertificates() {
  static const TlsCertificates certificates;
  return certificates;
}

// A server's options for this binary's transport.
inline MemcachedServer::Options ServerOptions(MemcachedServer::Options options = {}) {
  if (kOverTls) {
    for (std::string& arg : TransportCertificates().ServerArgs()) {
      options.extra_args.push_back(std::move(arg));
    }
  }
  return options;
}

// A client's options for this binary's transport.
inline MemcachedOptions WithTransport(MemcachedOptions options) {
  // memcached -Z serves its TCP listeners with TLS and a unix socket in
  // plaintext (measured: a handshake there fails with "wrong version
  // number"), so a unix-socket server keeps plaintext here too.
  const bool unix_socket = !options.servers.empty() && options.servers.front().starts_with("/");
  if (kOverTls && !unix_socket) {
    options.tls.enable = true;
    options.tls.ca_file = TransportCertificates().ca();
  }
  return options;
}

}  // namespace tiercache::testing

#endif  // TIERCACHE_TESTS_INTEGRATION_TEST_TRANSPORT_H_
