#include "client/ketama.h"

#include <md5.h>

#include <algorithm>

#include "absl/strings/str_cat.h"

namespace tiercache::mirror_internal {
namespace {

constexpr int kPointsPerServer = 160;
constexpr int kPointsPerDigest = 4;

void Md5(std::string_view bytes, uint8_t digest[MD5_DIGEST_LENGTH]) {
  MD5_CTX context;
  MD5Init(&context);
  MD5Update(&context, reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size());
  MD5Final(digest, &context);
}

uint32_t LittleEndian32(const uint8_t* bytes) {
  return uint32_t{bytes[0]} | uint32_t{bytes[1]} << 8 | uint32_t{bytes[2]} << 16 |
         uint32_t{bytes[3]} << 24;
}

}  // namespace

std::string Ketama::NameFor(std::string_view host, uint16_t port) {
  if (port == 11211) return std::string(host);
  return absl::StrCat(absl::string_view(host.data(), host.size()), ":", port);
}

Ketama::Ketama(const std::vector<std::string>& names) {
  points_.reserve(names.size() * kPointsPerServer);
  for (uint32_t server = 0; server < names.size(); ++server) {
    for (int n = 0; n < kPointsPerServer / kPointsPerDigest; ++n) {
      uint8_t digest[MD5_DIGEST_LENGTH];
      Md5(absl::StrCat(names[server], "-", n), digest);
      for (int x = 0; x < kPointsPerDigest; ++x) {
        points_.push_back({LittleEndian32(digest + 4 * x), server});
      }
    }
  }
  std::sort(points_.begin(), points_.end(), [](const Point& a, const Point& b) {
    return a.value != b.value ? a.value < b.value : a.server < b.server;
  });
}

size_t Ketama::ServerFor(std::string_view key) const {
  uint8_t digest[MD5_DIGEST_LENGTH];
  Md5(key, digest);
  const uint32_t hash = LittleEndian32(digest);
  auto it =
      std::lower_bound(points_.begin(), points_.end(), hash,
                       [](const Point& point, uint32_t value) { return point.value < value; });
  if (it == points_.end()) it = points_.begin();
  return it->server;
}

}  // namespace tiercache::mirror_internal
