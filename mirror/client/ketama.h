// Placement of keys on a pool of memcached servers, exactly as libmemcached's
// KETAMA_WEIGHTED distribution (equal weights) and twemproxy's ketama place
// them, so that other clients of the same pool agree on where a key lives.
// Facts: shared/memcached-protocol.md ("Ketama placement"); checked against
// libmemcached's own memcached_server_by_key() in tests/unit/ketama_test.cc.
//
// Each server gets 160 points on a 32-bit circle, from MD5 digests of
// "<name>-<n>" (four points per digest, little-endian); a key goes to the
// server of the first point at or after the first four bytes of MD5(key).
// Adding or removing one server moves only about 1/N of the keys.

#ifndef TIERCACHE_MIRROR_CLIENT_KETAMA_H_
#define TIERCACHE_MIRROR_CLIENT_KETAMA_H_

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace tiercache::mirror_internal {

class Ketama {
 public:
  // `names` in the configured order, as libmemcached names them: the host
  // alone when the port is 11211, else "host:port" (see NameFor).
  explicit Ketama(const std::vector<std::string>& names);

  // The index in `names` of the server that holds `key`.
  // REQUIRES: at least one name.
  size_t ServerFor(std::string_view key) const;

  static std::string NameFor(std::string_view host, uint16_t port);

 private:
  struct Point {
    uint32_t value;
    uint32_t server;
  };
  std::vector<Point> points_;  // sorted by value
};

}  // namespace tiercache::mirror_internal

#endif  // TIERCACHE_MIRROR_CLIENT_KETAMA_H_
