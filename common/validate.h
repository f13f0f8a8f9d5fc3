// The rules every layer applies to what a caller hands it — keys, values and
// TTLs — each written once, with one message per rule, so that the L1, the
// memcached client, the Mirror and TieredCache refuse the same input with the
// same words. A layer with a limit of its own (memcached's 250-byte wire key,
// its item size, its 2038 expiry horizon) checks that limit in the one place
// that knows it (mirror/client/) and calls these for the shared rules.
//
// Every check returns InvalidArgument naming the value and the limit, and
// nothing else: a check never touches state.

#ifndef TIERCACHE_COMMON_VALIDATE_H_
#define TIERCACHE_COMMON_VALIDATE_H_

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/strings/str_format.h"
#include "absl/time/time.h"

namespace tiercache::common_internal {

// A key is 1..max_key_size bytes.
inline absl::Status CheckKey(std::string_view key, size_t max_key_size) {
  if (key.empty()) return absl::InvalidArgumentError("key is empty");
  if (key.size() > max_key_size) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "key is %d bytes; the limit is %d (max_key_size)", key.size(), max_key_size));
  }
  return absl::OkStatus();
}

// A value is at most max_value_size bytes.
inline absl::Status CheckValueSize(size_t value_size, size_t max_value_size) {
  if (value_size > max_value_size) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "value is %d bytes; the limit is %d (max_value_size)", value_size, max_value_size));
  }
  return absl::OkStatus();
}

// A TTL (named `what` in the message: "ttl", "default_ttl", ...) is positive;
// InfiniteDuration means "never expires".
inline absl::Status CheckTtl(absl::Duration ttl, std::string_view what = "ttl") {
  if (ttl <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError(
        absl::StrFormat("%s is %s; it must be positive (InfiniteDuration: never expire)",
                        std::string(what), absl::FormatDuration(ttl)));
  }
  return absl::OkStatus();
}
inline absl::Status CheckTtl(const std::optional<absl::Duration>& ttl) {
  return ttl.has_value() ? CheckTtl(*ttl) : absl::OkStatus();
}

}  // namespace tiercache::common_internal

#endif  // TIERCACHE_COMMON_VALIDATE_H_
